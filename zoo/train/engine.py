"""The shared training loop, built on Hugging Face accelerate.

The same code runs on one CPU, one GPU, many GPUs and many nodes (``accelerate launch``, DDP or FSDP chosen by
accelerate's config). A family plugs in a :class:`Recipe` (model, extra modules such as discriminators,
optimisers, schedulers, losses); :func:`fit` does the rest:

- seeded, deterministic data order and augmentation (see :mod:`zoo.train.data`), gradient accumulation and
  clipping through accelerate, mixed precision on GPU, optional EMA of the model weights;
- checkpoints every ``checkpoint_every`` steps and on interruption (SIGTERM, or a first Ctrl-C: both only set a
  flag that the loop reads before each batch, so the checkpoint is taken between two optimiser steps, never in
  the middle of one), written to a temporary folder by the main process and renamed into place, holding models,
  optimisers, schedulers, EMA, every process's RNG state, step and data position; ``resume=True`` continues from
  the latest one so a killed run ends identical to an uninterrupted one;
- with several processes, the decisions that change the control flow (skip an unusable batch, stop) are agreed
  by one small all-reduce per batch, so the processes cannot fall out of step;
- a progress bar, a JSONL metrics log (and TensorBoard when installed), periodic evaluation on held-out data,
  codebook utilisation and perplexity measured over each log window (a recipe returns the batch's
  :class:`~zoo.quantizers.CodebookStats` under the ``"codebook"`` key), with a warning when the codebook collapses;
- at the end the trained tokenizer is written with ``save_pretrained`` to the output folder, so
  ``zoo.from_pretrained(out)`` loads it.

Checkpoints are read with ``torch.load(weights_only=True)``: nothing pickled is executed.

FSDP (chosen in accelerate's config) is supported for recipes with one trained module and no weight EMA (checked
at start); its model and optimiser state go through accelerate's FSDP checkpoint helpers, and its run folder must
be on a filesystem every process sees. DDP needs no shared filesystem: only the main process writes and reads
checkpoints, and the others receive what they need from it.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import re
import shutil
import signal
import sys
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

    def build_frozen_modules(self) -> Dict[str, nn.Module]:
        """Modules the losses use but that never train (e.g. a discriminator kept frozen, as an original does), by
        name. They are moved to the device but not wrapped by DDP/FSDP (which refuse modules without trainable
        parameters) nor optimised; ``ctx.modules`` holds them beside the trained ones, and checkpoints save them so
        a resumed run uses the same weights."""
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
    """SIGTERM and a first Ctrl-C (SIGINT) set a flag; the loop reads it before each batch and stops with a
    checkpoint at the next point between two optimiser steps. A second Ctrl-C raises ``KeyboardInterrupt`` at once
    (no checkpoint is written then: the previous ones stay intact)."""

    def __init__(self):
        self.flag = False
        self._old: Dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread: signals stay with their current handlers
                pass
        return self

    def _handle(self, signum, _frame):
        if self.flag and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.flag = True
        try:
            sys.stderr.write(f"\n{signal.Signals(signum).name} received: stopping with a checkpoint after the "
                             "current step (Ctrl-C again stops at once, without one)\n")
        except Exception:  # noqa: BLE001 - reporting must never fail the handler
            pass

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


_STEP_DIR = re.compile(r"step-\d{8}")


def latest_checkpoint(out: Path) -> Optional[Path]:
    """The newest complete checkpoint of run folder ``out`` (``latest.json``'s, else the newest ``step-*`` folder
    holding a ``state.pt``), or None."""
    ckpt_dir = Path(out) / "checkpoints"
    pointer = ckpt_dir / "latest.json"
    if pointer.is_file():
        try:
            name = json.loads(pointer.read_text())["checkpoint"]
        except (ValueError, KeyError, TypeError):
            name = None
        if isinstance(name, str) and _STEP_DIR.fullmatch(name) and (ckpt_dir / name / "state.pt").is_file():
            return ckpt_dir / name
    if not ckpt_dir.is_dir():
        return None
    done = sorted(p for p in ckpt_dir.iterdir() if _STEP_DIR.fullmatch(p.name) and (p / "state.pt").is_file())
    return done[-1] if done else None


def _readable(path: Path) -> bool:
    """Whether this process can read ``path`` (False on a node whose disk does not hold the run folder)."""
    return path.is_file()


def _agree(accelerator, values: List[int]) -> List[int]:
    """Sum of ``values`` over the processes (one all-reduce; the values themselves with one process)."""
    if accelerator.num_processes == 1:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.long, device=accelerator.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [int(v) for v in t.tolist()]


def _all_gather(accelerator, obj: Any) -> List[Any]:
    if accelerator.num_processes == 1:
        return [obj]
    import torch.distributed as dist

    got: List[Any] = [None] * accelerator.num_processes
    dist.all_gather_object(got, obj)
    return got


def _broadcast(accelerator, obj: Any) -> Any:
    """The main process's ``obj`` on every process."""
    if accelerator.num_processes == 1:
        return obj
    import torch.distributed as dist

    box = [obj if accelerator.is_main_process else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


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
    from accelerate.utils import DataLoaderConfiguration, DistributedType
    from tqdm.auto import tqdm

    from ..quantizers.stats import CodebookStats, StatsAccumulator

    if not isinstance(recipe, Recipe):
        raise TypeError(f"fit needs a zoo.train.Recipe, got {type(recipe).__name__}")
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 0):
        raise ValueError(f"stop_after must be an int >= 0 or None, got {stop_after!r}")
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
    fsdp = accelerator.distributed_type == DistributedType.FSDP
    if fsdp and tc.ema_decay is not None:
        raise ValueError("train.ema_decay is not supported under FSDP: the weight average needs the full, unsharded "
                         "parameters on every process. Set ema_decay: null, or train with DDP (accelerate config "
                         "without FSDP)")
    torch.manual_seed(tc.seed)
    if use_cpu:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if use_cpu and tc.mixed_precision != "no":
        recipe.notes.append(f"train.mixed_precision {tc.mixed_precision} applies on GPU only: this CPU run trained "
                            "in float32")

    # data
    from ..tokenize import list_sources

    dcfg = recipe.data_config()
    sources = list_sources(data, dcfg.modality)
    if eval_data is not None:
        train_sources, eval_sources = sources, list_sources(eval_data, dcfg.modality)
    else:
        train_sources, eval_sources = split_holdout(sources, tc.holdout_files, tc.seed)
    train_ds = FolderDataset(None, dcfg, train_sources)
    collate = functools.partial(collate_skip, split_channels=dcfg.split_channels)
    sampler = _Sampler(len(train_ds), tc.seed)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=tc.batch_size, sampler=sampler,
                                         num_workers=tc.num_workers, collate_fn=collate, drop_last=True)
    if len(loader) == 0:
        raise ValueError(f"{len(train_ds)} training files are fewer than one batch of {tc.batch_size}")
    eval_batches: List[Dict[str, Any]] = []
    if eval_sources:
        eval_ds = FolderDataset(None, dcfg, eval_sources)
        eval_loader = torch.utils.data.DataLoader(eval_ds, batch_size=tc.batch_size, shuffle=False,
                                                  collate_fn=collate)
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
    frozen = recipe.build_frozen_modules()
    clash = sorted(set(frozen) & set(modules))
    if clash:
        raise ValueError(f"recipe {recipe.name}: modules {clash} are returned both as trained and as frozen")
    optimizers = recipe.build_optimizers({**modules, **frozen})
    schedulers = recipe.build_schedulers(optimizers)
    names_m, names_o, names_s = list(modules), list(optimizers), list(schedulers)
    if fsdp and (len(names_m) > 1 or names_o != ["model"]):
        raise ValueError(f"recipe {recipe.name} trains {len(names_m)} modules {names_m} with optimisers {names_o}: "
                         "under FSDP the loop supports one trained module with one optimiser (FSDP2 prepares a "
                         "single model, and the FSDP checkpoint helpers pair one optimiser with one model). Train "
                         "this recipe with DDP (accelerate config without FSDP)")
    ema = None
    if tc.ema_decay is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay), use_buffers=True)

    prepared = accelerator.prepare(*[modules[n] for n in names_m], *[optimizers[n] for n in names_o],
                                   *[schedulers[n] for n in names_s], loader)
    modules = dict(zip(names_m, prepared[: len(names_m)]))
    optimizers = dict(zip(names_o, prepared[len(names_m): len(names_m) + len(names_o)]))
    schedulers = dict(zip(names_s, prepared[len(names_m) + len(names_o): -1]))
    loader = prepared[-1]
    for m in frozen.values():
        m.requires_grad_(False).to(accelerator.device)
    ctx = StepContext(accelerator, {**modules, **frozen}, optimizers, schedulers, tc)
    saved_modules = names_m + list(frozen)

    def notes() -> List[str]:
        return list(dict.fromkeys(recipe.notes))  # in order, each once (a recipe object may be fitted twice)

    for note in notes():
        accelerator.print(f"note: {note}")

    step, epoch, batch_in_epoch = 0, 0, 0
    skipped_total = 0
    window: Optional[StatsAccumulator] = None  # codebook ids of the current log window
    pending_rng: Optional[Dict[str, Any]] = None
    last_saved: Optional[int] = None
    if resume:
        name, writers = None, 0
        if accelerator.is_main_process:
            found = latest_checkpoint(out)
            if found is not None:
                name, writers = found.name, len(list(found.glob("rng-*.pt")))
        name, writers = _broadcast(accelerator, (name, writers))
        if name is None:
            log.warning("--resume: no checkpoint in %s, starting from scratch", ckpt_dir)
        else:
            path = ckpt_dir / name
            if writers != accelerator.num_processes:
                # the data position counts each process's batches, and each process has its own RNG state
                raise ValueError(f"checkpoint {path} was written by {writers} processes; resume it with the same "
                                 f"number of processes (this run has {accelerator.num_processes})")
            me = accelerator.process_index
            local = _readable(path / "state.pt") and _readable(path / f"rng-{me}.pt")
            if _agree(accelerator, [int(local)])[0] == accelerator.num_processes:
                state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
                rng = torch.load(path / f"rng-{me}.pt", map_location="cpu", weights_only=True)
            else:  # a process that cannot see the run folder (node-local disks) gets it from the main process
                state, rngs = None, None
                if accelerator.is_main_process:
                    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
                    rngs = [torch.load(path / f"rng-{i}.pt", map_location="cpu", weights_only=True)
                            for i in range(accelerator.num_processes)]
                state, rngs = _broadcast(accelerator, (state, rngs))
                rng = rngs[me]
            if bool(state.get("fsdp", False)) != fsdp:
                raise ValueError(f"checkpoint {path} was written {'with' if state.get('fsdp') else 'without'} FSDP "
                                 f"and this run is {'with' if fsdp else 'without'} it: resume with the same "
                                 "accelerate configuration")
            missing = sorted(set(saved_modules) - set(state["modules"]))
            if missing or sorted(set(names_o) - set(state["optimizers"])):
                raise ValueError(f"checkpoint {path} holds modules {sorted(state['modules'])} and optimisers "
                                 f"{sorted(state['optimizers'])}, but recipe {recipe.name} builds {saved_modules} "
                                 f"and {names_o}: it was written by another recipe configuration")
            if fsdp:
                from accelerate.utils import load_fsdp_model, load_fsdp_optimizer

                plugin = accelerator.state.fsdp_plugin
                load_fsdp_model(plugin, accelerator, modules["model"], str(path / "fsdp"), 0)
                load_fsdp_optimizer(plugin, accelerator, optimizers["model"], modules["model"], str(path / "fsdp"), 0)
            else:
                for n in names_m:
                    accelerator.unwrap_model(modules[n]).load_state_dict(state["modules"][n])
                for n in names_o:
                    optimizers[n].load_state_dict(state["optimizers"][n])
            for n in frozen:
                frozen[n].load_state_dict(state["modules"][n])
            for n in names_s:
                schedulers[n].load_state_dict(state["schedulers"][n])
            if ema is not None and state.get("ema") is not None:
                ema.load_state_dict(state["ema"])
            step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
            skipped_total = int(state.get("skipped_files", 0))
            if state.get("codebook_window") is not None:
                counts = state["codebook_window"]["counts"]
                window = StatsAccumulator(int(counts.shape[1]), int(counts.shape[0]))
                window.load_state_dict(state["codebook_window"])
            # applied once the resumed epoch's data iterator exists (see the loop)
            pending_rng = rng
            last_saved = step
            accelerator.print(f"resumed from {name} at step {step}")

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

    t0 = time.perf_counter()

    def training_info(complete: bool, final_eval: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
        return {"recipe": recipe.name, "recipe_config": recipe.config.to_dict(), "train": tc.to_dict(),
                "notes": notes(), "steps": step, "complete": complete, "skipped_files": skipped_total,
                "train_files": len(train_sources), "heldout_files": [s.name for s in eval_sources],
                "final_eval": final_eval or {}, "seconds": time.perf_counter() - t0}

    def save_checkpoint() -> Path:
        nonlocal last_saved
        name = f"step-{step:08d}"
        final = ckpt_dir / name
        if last_saved == step:  # nothing trained since that checkpoint (it is a valid resume point)
            return final
        tmp = ckpt_dir / (name + ".tmp")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        accelerator.wait_for_everyone()
        # collectives first, on every process: full state dicts (FSDP gathers shards), the processes' RNG states
        if fsdp:
            from accelerate.utils import save_fsdp_model, save_fsdp_optimizer

            plugin = accelerator.state.fsdp_plugin
            save_fsdp_model(plugin, accelerator, modules["model"], str(tmp / "fsdp"), 0)
            save_fsdp_optimizer(plugin, accelerator, optimizers["model"], modules["model"], str(tmp / "fsdp"), 0)
            module_states: Dict[str, Any] = {"model": {}}
            optimizer_states: Dict[str, Any] = {"model": {}}
        else:
            module_states = {n: accelerator.get_state_dict(modules[n]) for n in names_m}
            optimizer_states = {n: optimizers[n].state_dict() for n in names_o}
        module_states.update({n: m.state_dict() for n, m in frozen.items()})
        rngs = _all_gather(accelerator, _rng_state())
        if accelerator.is_main_process:
            state = {
                "modules": module_states, "optimizers": optimizer_states,
                "schedulers": {n: schedulers[n].state_dict() for n in names_s},
                "ema": None if ema is None else ema.state_dict(),
                "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "skipped_files": skipped_total,
                "fsdp": fsdp,
                "codebook_window": None if window is None else window.state_dict(),
            }
            for i, r in enumerate(rngs):
                torch.save(r, tmp / f"rng-{i}.pt")
            torch.save(state, tmp / "state.pt")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            aside = ckpt_dir / (name + ".old")
            if final.exists():  # a leftover of an earlier run in this folder: move it aside, then replace it
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(final, aside)
            os.replace(tmp, final)
            shutil.rmtree(aside, ignore_errors=True)
            _atomic_json(ckpt_dir / "latest.json", {"checkpoint": name, "step": step})
            # the newest keep_checkpoints - 1 others stay beside this one (never this one: a folder may hold
            # checkpoints of a longer earlier run with higher step numbers)
            others = sorted(p for p in ckpt_dir.iterdir() if _STEP_DIR.fullmatch(p.name) and p.name != name)
            for old in others[: max(0, len(others) - (tc.keep_checkpoints - 1))]:
                shutil.rmtree(old, ignore_errors=True)
            _atomic_json(out / "training.json", training_info(complete=False))
        accelerator.wait_for_everyone()
        last_saved = step
        return final

    def codebook_row() -> Dict[str, float]:
        """Utilisation and perplexity of the ids of the log window (summed over processes); warns on collapse."""
        if window is None:
            return {}
        counts = window.compute().counts
        if accelerator.num_processes > 1:
            import torch.distributed as dist

            counts = counts.to(accelerator.device)
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
            counts = counts.cpu()
        s = CodebookStats(counts)
        window.reset()
        tokens = s.total.double()
        if float(tokens.sum()) == 0:
            return {}
        # the most codes a window can use is min(codebook size, ids seen): a window of 512 ids cannot use more than
        # 6 % of 8192 codes, so the warning compares the codes used with that, not with the codebook size
        achievable = tokens.clamp(max=s.codebook_size).clamp(min=1)
        spread = float((s.used_codes.double() / achievable).mean())
        if spread < tc.utilization_warning:
            warnings.warn(f"step {step}: codebook utilisation collapsed: the last {int(tokens.mean())} ids used "
                          f"{float(s.used_codes.double().mean()):.0f} of {s.codebook_size} codes ({spread:.3f} of "
                          f"the {int(achievable.mean())} they could have used; warning below "
                          f"{tc.utilization_warning}), perplexity {float(s.perplexity.mean()):.1f}")
        return {"utilization": float(s.utilization.mean()), "perplexity": float(s.perplexity.mean()),
                "codebook_ids": float(tokens.mean())}

    if step == 0 and eval_batches:
        row = {"step": 0, "split": "eval", **run_eval()}
        log_row(row)
    start_step = step
    ctx.step = step  # completed steps (recipes with step-dependent losses read it; set on resume too)
    bar = tqdm(total=tc.max_steps, initial=step, disable=not (progress and accelerator.is_main_process),
               desc=f"train {recipe.name}", unit="step")
    for m in modules.values():
        m.train()
    interrupted = False
    at_boundary = True  # between two optimiser steps (not inside a gradient accumulation): a valid stop point
    try:
        with _Interrupt() as intr:
            while step < tc.max_steps:
                loader.set_epoch(epoch)
                train_ds.set_epoch(epoch)
                whole_epoch = batch_in_epoch == 0
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
                used = skipped_in_epoch = 0
                for batch in it:
                    # one all-reduce: whether any process lacks a usable batch, wants to stop, and the skip count
                    no_x, stop, skipped = _agree(accelerator, [int("x" not in batch), int(intr.flag),
                                                               int(batch.get("skipped", 0))])
                    if at_boundary and (stop or (stop_after is not None and step - start_step >= stop_after)):
                        interrupted = True  # this batch is not consumed: the resumed run fetches it again
                        break
                    batch_in_epoch += 1
                    skipped_total += skipped
                    skipped_in_epoch += skipped
                    if no_x:  # every process skips it, so none waits for the others in a collective
                        continue
                    used += 1
                    with accelerator.accumulate(*modules.values()):
                        logs = dict(recipe.training_step(ctx, batch))
                    at_boundary = bool(accelerator.sync_gradients)
                    stats = logs.pop("codebook", None)
                    if stats is not None:
                        if not isinstance(stats, CodebookStats):
                            raise TypeError(f"recipe {recipe.name}: logs['codebook'] must be a CodebookStats, "
                                            f"got {type(stats).__name__}")
                        if window is None:
                            window = StatsAccumulator(stats.codebook_size, stats.num_codebooks)
                        window.update(CodebookStats(stats.counts.detach().cpu()))
                    if not at_boundary:
                        continue
                    step += 1
                    ctx.step = step
                    if ema is not None:
                        ema.update_parameters(accelerator.unwrap_model(modules["model"]))
                    bar.update(1)
                    if step % tc.log_every == 0 or step == tc.max_steps:
                        row = {"step": step, "split": "train", "epoch": epoch, "skipped_files": skipped_total,
                               **{k: float(v) for k, v in logs.items()}}
                        cb = codebook_row()
                        row.update(cb)
                        util = logs.get("utilization")
                        if not cb and util is not None and float(util) < tc.utilization_warning:
                            warnings.warn(f"step {step}: codebook utilisation {float(util):.3f} is below "
                                          f"{tc.utilization_warning}: the codebook is collapsing")
                        log_row(row)
                        bar.set_postfix({k: f"{float(v):.3g}" for k, v in list(logs.items())[:3]})
                    if step % tc.eval_every == 0 and eval_batches:
                        log_row({"step": step, "split": "eval", **run_eval()})
                    if step % tc.checkpoint_every == 0:
                        save_checkpoint()
                    if step >= tc.max_steps:
                        break
                if interrupted or step >= tc.max_steps:
                    break
                if used == 0 and whole_epoch:
                    raise ValueError(
                        f"epoch {epoch} gave no usable training batch: all {skipped_in_epoch} examples read were "
                        f"skipped as unreadable or unsuitable ({len(train_ds)} training files in {data}; the "
                        "warnings above give each file's reason)")
                epoch += 1
                batch_in_epoch = 0
    except KeyboardInterrupt:
        bar.close()
        accelerator.print(f"aborted at step {step} without a checkpoint; the last complete one is "
                          f"{latest_checkpoint(out) if accelerator.is_main_process else '(on the main process)'}")
        raise
    bar.close()
    if interrupted:
        path = save_checkpoint()
        accelerator.print(f"stopped at step {step}; checkpoint {path}; continue with --resume")
        if tb is not None:
            tb.close()
        return {"step": step, "interrupted": True, "checkpoint": str(path), "skipped_files": skipped_total}
    final_eval = run_eval() if eval_batches else {}
    if eval_batches and step % tc.eval_every != 0:  # an eval step already logged this row
        log_row({"step": step, "split": "eval", **final_eval})
    save_checkpoint()
    # the exported weights: a full state dict, gathered on every process (a collective under FSDP)
    full = accelerator.get_state_dict(modules["model"]) if fsdp else None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if fsdp:  # the prepared module holds shards: a fresh copy of the architecture takes the full weights
            export = recipe.build_model()
            export.load_state_dict(full)
        else:
            export = accelerator.unwrap_model(modules["model"])
        if ema is not None:
            export.load_state_dict(ema.module.state_dict())
        if hasattr(export, "save_pretrained"):
            export.save_pretrained(out)
        _atomic_json(out / "training.json", training_info(complete=True, final_eval=final_eval))
    accelerator.wait_for_everyone()
    if tb is not None:
        tb.close()
    return {"step": step, "interrupted": False, "final_eval": final_eval, "skipped_files": skipped_total,
            "seconds": time.perf_counter() - t0, "samples_per_s": (step - start_step) * tc.batch_size *
            accelerator.num_processes * tc.grad_accum / max(time.perf_counter() - t0, 1e-9)}
