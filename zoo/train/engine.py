"""The shared training loop, built on Hugging Face accelerate.

The same code runs on one CPU, one GPU, many GPUs and many nodes (``accelerate launch``, DDP or FSDP chosen by
accelerate's config). A family plugs in a :class:`Recipe` (model, extra modules such as discriminators,
optimisers, schedulers, losses); :func:`fit` does the rest:

- seeded, deterministic data order and augmentation (see :mod:`zoo.train.data`), gradient accumulation and
  clipping through accelerate, mixed precision on GPU, optional EMA of the model weights;
- checkpoints every ``checkpoint_every`` steps and on interruption (Ctrl-C / SIGTERM), written to a temporary
  folder and renamed into place, holding models, optimisers, schedulers, EMA, RNG states, step and data position;
  ``resume=True`` continues from the latest one so a killed run ends identical to an uninterrupted one;
- a progress bar, a JSONL metrics log (and TensorBoard when installed), periodic evaluation on held-out data,
  codebook utilisation with a warning when it collapses;
- at the end the trained tokenizer is written with ``save_pretrained`` to the output folder, so
  ``zoo.from_pretrained(out)`` loads it.

Checkpoints are read with ``torch.load(weights_only=True)``: nothing pickled is executed.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterator, List, Optional, Type

import torch
from torch import nn

from ..config import ConfigBase
from .data import DataConfig, FolderDataset, collate_skip, split_holdout

log = logging.getLogger("tokenzoo.train")


@dataclass
class TrainConfig(ConfigBase):
    """Loop settings (the ``train:`` section of a training YAML)."""

    max_steps: int = 1000
    batch_size: int = 8  # per process; the global batch is batch_size x processes x grad_accum
    grad_accum: int = 1
    clip_grad_norm: Optional[float] = 1.0
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16" (GPU)
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 1
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    holdout_files: int = 0
    ema_decay: Optional[float] = None
    utilization_warning: float = 0.05
    cpu: bool = False

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "eval_every", "eval_batches",
                     "checkpoint_every", "keep_checkpoints"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"train.{name} must be a positive int, got {v!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"train.mixed_precision must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"train.ema_decay must lie in (0, 1), got {self.ema_decay}")


class Recipe:
    """How to train one family. Subclasses set ``name``, ``config_class`` and implement the hooks.

    The recipe's config (``recipe:`` section) holds loss weights, learning rates and the model config.
    ``notes`` collects facts to record in the saved training config (e.g. "LPIPS disabled: no weights").
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[Type[ConfigBase]] = ConfigBase

    def __init__(self, config: ConfigBase, train: TrainConfig):
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config, self.train = config, train
        self.notes: List[str] = []

    # -- to implement
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def build_aux_modules(self) -> Dict[str, nn.Module]:
        """Extra trained modules (discriminators ...), by name."""
        return {}

    def build_optimizers(self, modules: Dict[str, nn.Module]) -> Dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def build_schedulers(self, optimizers: Dict[str, torch.optim.Optimizer]) -> Dict[str, Any]:
        return {}

    def data_config(self) -> DataConfig:
        raise NotImplementedError

    def training_step(self, ctx: "StepContext", batch: Dict[str, Any]) -> Dict[str, float]:
        raise NotImplementedError

    def evaluate(self, ctx: "StepContext", batch: Dict[str, Any]) -> Dict[str, float]:
        """Held-out losses of one batch (tokenizer recipes report ``recon_loss``). Runs under ``torch.no_grad``."""
        raise NotImplementedError

    def evaluate_set(self, ctx: "StepContext", batches: List[Dict[str, Any]]) -> Dict[str, float]:
        """Held-out numbers over all evaluation batches: the mean of :meth:`evaluate` by default. Override for
        metrics that do not average over batches (balanced accuracy, Cohen's kappa)."""
        totals: Dict[str, float] = {}
        for b in batches:
            for k, v in self.evaluate(ctx, b).items():
                totals[k] = totals.get(k, 0.0) + float(v) / len(batches)
        return totals

    # -- optional
    def warm_start(self, model: nn.Module, pretrained: nn.Module) -> None:
        """Initialise ``model`` from a loaded tokenizer (``--init``): strict state-dict copy by default."""
        from ..registry import load_state_strict

        load_state_strict(model, pretrained.state_dict(), source="--init checkpoint")


@dataclass
class StepContext:
    accelerator: Any
    modules: Dict[str, nn.Module]
    optimizers: Dict[str, Any]
    schedulers: Dict[str, Any]
    train: TrainConfig
    step: int = 0

    def unwrap(self, name: str = "model") -> nn.Module:
        return self.accelerator.unwrap_model(self.modules[name])

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def optimizer_step(self, name: str, clip_modules: Optional[List[str]] = None) -> Optional[float]:
        """Clip (when configured), step and zero the optimiser ``name``; step its scheduler. Returns the norm."""
        opt = self.optimizers[name]
        norm = None
        if self.train.clip_grad_norm and self.accelerator.sync_gradients:
            params = [p for m in (clip_modules or [name if name in self.modules else "model"])
                      for p in self.modules[m].parameters()]
            norm = float(self.accelerator.clip_grad_norm_(params, self.train.clip_grad_norm))
        opt.step()
        opt.zero_grad(set_to_none=True)
        if name in self.schedulers and self.accelerator.sync_gradients:
            self.schedulers[name].step()
        return norm


class _Sampler(torch.utils.data.Sampler):
    """A fresh seeded permutation every epoch (the data order is a function of seed and epoch only)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


class _Interrupt:
    """Turns SIGTERM into a flag so the loop can checkpoint and stop cleanly."""

    def __init__(self):
        self.flag = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not in the main thread
            self._old = None
        return self

    def _handle(self, *_):
        self.flag = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False


def latest_checkpoint(out: Path) -> Optional[Path]:
    pointer = Path(out) / "checkpoints" / "latest.json"
    if not pointer.is_file():
        return None
    name = json.loads(pointer.read_text())["checkpoint"]
    path = pointer.parent / name
    return path if (path / "state.pt").is_file() else None


def fit(recipe: Recipe, data, out, *, resume: bool = False, init=None, eval_data=None,
        progress: bool = True, stop_after: Optional[int] = None) -> Dict[str, Any]:
    """Train ``recipe`` on ``data`` into ``out`` (see ``_fit``). Process-wide torch settings that training needs
    (deterministic algorithms on CPU) are restored when it returns, so that inference run afterwards in the same
    process computes exactly as it would without the training run."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        return _fit(recipe, data, out, resume=resume, init=init, eval_data=eval_data, progress=progress,
                    stop_after=stop_after)
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _fit(recipe: Recipe, data, out, *, resume: bool = False, init=None, eval_data=None,
         progress: bool = True, stop_after: Optional[int] = None) -> Dict[str, Any]:
    """Train ``recipe`` on ``data`` (folder(s) / tar shards) into ``out``; returns a summary.

    ``init``: a registry name, folder or Tokenizer to warm-start from. ``eval_data``: held-out folder (else
    ``train.holdout_files`` files of ``data`` are kept out). ``stop_after``: stop (with a checkpoint) after this
    many steps of this invocation, as a kill would; for tests and time-boxed jobs.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration
    from tqdm.auto import tqdm

    tc = recipe.train
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / "checkpoints"
    use_cpu = tc.cpu or not torch.cuda.is_available()
    # step_scheduler_with_optimizer=False: schedules count optimizer steps (max_steps, warm-up) whatever the number
    # of processes; accelerate's default would step every scheduler once per process per step, so a 2-process
    # run would go through its warm-up and decay twice as fast as the same global batch on one process
    accelerator = Accelerator(cpu=use_cpu, mixed_precision=tc.mixed_precision if not use_cpu else "no",
                              gradient_accumulation_steps=tc.grad_accum, step_scheduler_with_optimizer=False,
                              dataloader_config=DataLoaderConfiguration(split_batches=False, even_batches=True))
    torch.manual_seed(tc.seed)
    if use_cpu:
        torch.use_deterministic_algorithms(True, warn_only=True)

    # data
    from ..tokenize import list_sources

    dcfg = recipe.data_config()
    sources = list_sources(data, dcfg.modality)
    if eval_data is not None:
        train_sources, eval_sources = sources, list_sources(eval_data, dcfg.modality)
    else:
        train_sources, eval_sources = split_holdout(sources, tc.holdout_files, tc.seed)
    train_ds = FolderDataset(None, dcfg, train_sources)
    sampler = _Sampler(len(train_ds), tc.seed)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=tc.batch_size, sampler=sampler,
                                         num_workers=tc.num_workers, collate_fn=collate_skip, drop_last=True)
    if len(loader) == 0:
        raise ValueError(f"{len(train_ds)} training files are fewer than one batch of {tc.batch_size}")
    eval_batches: List[Dict[str, Any]] = []
    if eval_sources:
        eval_ds = FolderDataset(None, dcfg, eval_sources)
        eval_loader = torch.utils.data.DataLoader(eval_ds, batch_size=tc.batch_size, shuffle=False,
                                                  collate_fn=collate_skip)
        for i, b in enumerate(eval_loader):
            if i >= tc.eval_batches:
                break
            if "x" in b:
                eval_batches.append(b)

    # model and friends
    model = recipe.build_model()
    if init is not None:
        from ..registry import from_pretrained

        pretrained = from_pretrained(init) if isinstance(init, (str, os.PathLike)) else init
        recipe.warm_start(model, pretrained)
        recipe.notes.append(f"warm-started from {init if isinstance(init, (str, os.PathLike)) else type(init).__name__}")
    modules = {"model": model, **recipe.build_aux_modules()}
    optimizers = recipe.build_optimizers(modules)
    schedulers = recipe.build_schedulers(optimizers)
    ema = None
    if tc.ema_decay is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay), use_buffers=True)

    names_m, names_o, names_s = list(modules), list(optimizers), list(schedulers)
    prepared = accelerator.prepare(*[modules[n] for n in names_m], *[optimizers[n] for n in names_o],
                                   *[schedulers[n] for n in names_s], loader)
    modules = dict(zip(names_m, prepared[: len(names_m)]))
    optimizers = dict(zip(names_o, prepared[len(names_m): len(names_m) + len(names_o)]))
    schedulers = dict(zip(names_s, prepared[len(names_m) + len(names_o): -1]))
    loader = prepared[-1]
    ctx = StepContext(accelerator, modules, optimizers, schedulers, tc)

    step, epoch, batch_in_epoch = 0, 0, 0
    pending_rng: Optional[Dict[str, Any]] = None
    if resume:
        path = latest_checkpoint(out)
        if path is None:
            log.warning("--resume: no checkpoint in %s, starting from scratch", ckpt_dir)
        else:
            state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
            for n in names_m:
                accelerator.unwrap_model(modules[n]).load_state_dict(state["modules"][n])
            for n in names_o:
                optimizers[n].load_state_dict(state["optimizers"][n])
            for n in names_s:
                schedulers[n].load_state_dict(state["schedulers"][n])
            if ema is not None and state.get("ema") is not None:
                ema.load_state_dict(state["ema"])
            step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
            rng_file = path / f"rng-{accelerator.process_index}.pt"
            if rng_file.is_file():
                # applied once the resumed epoch's data iterator exists (see the loop)
                pending_rng = torch.load(rng_file, map_location="cpu", weights_only=True)
            accelerator.print(f"resumed from {path.name} at step {step}")

    metrics_file = out / "metrics.jsonl"
    tb = None
    if accelerator.is_main_process:
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(out / "tensorboard"))
        except Exception:  # noqa: BLE001 - TensorBoard is optional
            tb = None

    def log_row(row: Dict[str, Any]) -> None:
        if not accelerator.is_main_process:
            return
        with open(metrics_file, "a") as f:
            f.write(json.dumps(row) + "\n")
        if tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step",):
                    tb.add_scalar(f"{row.get('split', 'train')}/{k}", v, row["step"])

    def run_eval() -> Dict[str, float]:
        if not eval_batches:
            return {}
        for m in modules.values():
            m.eval()
        with torch.no_grad():
            totals = {k: float(v) for k, v in recipe.evaluate_set(
                ctx, [{**b, "x": b["x"].to(accelerator.device)} for b in eval_batches]).items()}
        for m in modules.values():
            m.train()
        return totals

    def save_checkpoint() -> Path:
        accelerator.wait_for_everyone()
        name = f"step-{step:08d}"
        final = ckpt_dir / name
        tmp = ckpt_dir / (name + ".tmp")
        if accelerator.is_main_process:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        accelerator.wait_for_everyone()
        state = {
            "modules": {n: accelerator.get_state_dict(modules[n]) for n in names_m},
            "optimizers": {n: optimizers[n].state_dict() for n in names_o},
            "schedulers": {n: schedulers[n].state_dict() for n in names_s},
            "ema": None if ema is None else ema.state_dict(),
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
        }
        torch.save(_rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
        if accelerator.is_main_process:
            torch.save(state, tmp / "state.pt")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            _atomic_json(ckpt_dir / "latest.json", {"checkpoint": name, "step": step})
            kept = sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
            for old in kept[: -tc.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    if step == 0 and eval_batches:
        row = {"step": 0, "split": "eval", **run_eval()}
        log_row(row)
    skipped_total = 0
    start_step = step
    ctx.step = step  # completed steps (recipes with step-dependent losses read it; set on resume too)
    t0 = time.perf_counter()
    bar = tqdm(total=tc.max_steps, initial=step, disable=not (progress and accelerator.is_main_process),
               desc=f"train {recipe.name}", unit="step")
    for m in modules.values():
        m.train()
    interrupted = False
    with _Interrupt() as intr:
        try:
            while step < tc.max_steps:
                loader.set_epoch(epoch)
                train_ds.set_epoch(epoch)
                it = iter(accelerator.skip_first_batches(loader, batch_in_epoch) if batch_in_epoch else loader)
                if pending_rng is not None:
                    # starting a DataLoader iterator draws its base seed from the global RNG (accelerate's loader
                    # does it at the first batch): the uninterrupted run drew it at the start of this epoch, before
                    # the checkpoint saved the RNG, so the saved state is restored only after the first batch is
                    # fetched (restoring it before would shift every later draw -- dropout, k-means and dead-code
                    # sampling -- by one). Fetching data draws nothing from the global RNG (seeded per item).
                    first = next(it, None)
                    _set_rng_state(pending_rng)
                    pending_rng = None
                    it = itertools.chain([first] if first is not None else [], it)
                for batch in it:
                    batch_in_epoch += 1
                    skipped_total += int(batch.get("skipped", 0))
                    if "x" not in batch:
                        continue
                    with accelerator.accumulate(*modules.values()):
                        logs = recipe.training_step(ctx, batch)
                    if not accelerator.sync_gradients:
                        continue
                    step += 1
                    ctx.step = step
                    if ema is not None:
                        ema.update_parameters(accelerator.unwrap_model(modules["model"]))
                    bar.update(1)
                    if step % tc.log_every == 0 or step == tc.max_steps:
                        row = {"step": step, "split": "train", "epoch": epoch, "skipped_files": skipped_total,
                               **{k: float(v) for k, v in logs.items()}}
                        util = logs.get("utilization")
                        if util is not None and float(util) < tc.utilization_warning:
                            warnings.warn(f"step {step}: codebook utilisation {float(util):.3f} is below "
                                          f"{tc.utilization_warning}: the codebook is collapsing")
                        log_row(row)
                        bar.set_postfix({k: f"{float(v):.3g}" for k, v in list(logs.items())[:3]})
                    if step % tc.eval_every == 0 and eval_batches:
                        log_row({"step": step, "split": "eval", **run_eval()})
                    if step % tc.checkpoint_every == 0:
                        save_checkpoint()
                    if intr.flag or (stop_after is not None and step - start_step >= stop_after):
                        interrupted = True
                        break
                    if step >= tc.max_steps:
                        break
                if interrupted or step >= tc.max_steps:
                    break
                epoch += 1
                batch_in_epoch = 0
        except KeyboardInterrupt:
            interrupted = True
    bar.close()
    if interrupted:
        path = save_checkpoint()
        accelerator.print(f"stopped at step {step}; checkpoint {path}; continue with --resume")
        return {"step": step, "interrupted": True, "checkpoint": str(path)}
    final_eval = run_eval() if eval_batches else {}
    if eval_batches and step % tc.eval_every != 0:  # an eval step already logged this row
        log_row({"step": step, "split": "eval", **final_eval})
    save_checkpoint()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        export = accelerator.unwrap_model(modules["model"])
        if ema is not None:
            export.load_state_dict(ema.module.state_dict())
        if hasattr(export, "save_pretrained"):
            export.save_pretrained(out)
        _atomic_json(out / "training.json", {
            "recipe": recipe.name, "recipe_config": recipe.config.to_dict(), "train": tc.to_dict(),
            "notes": recipe.notes, "steps": step, "skipped_files": skipped_total,
            "train_files": len(train_sources), "heldout_files": [s.name for s in eval_sources],
            "final_eval": final_eval, "seconds": time.perf_counter() - t0,
        })
    if tb is not None:
        tb.close()
    return {"step": step, "interrupted": False, "final_eval": final_eval, "skipped_files": skipped_total,
            "seconds": time.perf_counter() - t0, "samples_per_s": (step - start_step) * tc.batch_size *
            accelerator.num_processes * tc.grad_accum / max(time.perf_counter() - t0, 1e-9)}
