"""Training speed of every recipe: samples/s through the shared loop, tiny and paper configurations.

    python benchmarks/train.py [--recipes a,b] [--configs tiny,paper] [--steps N] [--device cpu|cuda]
                               [--data-root ../shared/data] [--json out.json]

Each run goes through ``zoo.train.fit`` on real files of the corpus (``--data-root``): one step to warm up
(k-means initialisation, first allocations), then ``--steps`` more steps resumed from that checkpoint, whose
``samples_per_s`` (timed inside the loop, loading excluded) is reported with seconds/step, the parameter count
of the trained model and the peak resident memory of the process.

Configurations:
- ``tiny``: the small configurations of the bundled tokenizers (``hub_configs/bundled/*/train.yaml``) where a
  recipe has one, else the small model its unit tests use (stated per recipe below). Warm-up phases that a
  bundled YAML puts first are switched off (:data:`FULL_STEP`), so the timed steps are the recipe's full step:
  WavTokenizer's starts its quantizer and discriminators at steps 2000 and 100000, which would otherwise time a
  plain autoencoder step.
- ``paper``: the recipe's defaults, which follow the original's published training configuration (model size,
  crop/segment size; see each recipe's config class and docs/models/<family>.md), with the per-process batch
  reduced to ``--paper-batch`` (default 1) so that it fits on a CPU; the batch used is printed.
Every recipe of ``zoo.train.list_recipes()`` is attempted; one that cannot run says why in the notes column.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "hub_configs" / "bundled"
# data folder (under --data-root) and how many copies each file gets (batches need at least `batch` files)
DATA = {"wavtokenizer": "audio/speech", "tadicodec": "audio/speech", "tadicodec-vocoder": "audio/speech", "titok": "image/256", "flextok": "image/256",
        "cdt": "video", "cdt-fsq": "video", "tfm": "eeg", "tfm-mtp": "eeg", "tfm-classifier": "eeg"}
# the TFM-Encoder stages need a frozen TFM tokenizer: tiny = the bundled one; paper = the released architecture
# (8192 codes) with random weights, written to the run's temporary folder (speed does not depend on the weights)
TFM_ENCODER = ("tfm-mtp", "tfm-classifier")
PAPER_TOKENIZER = "<paper-size random TFM tokenizer>"
TINY_YAML = {"wavtokenizer": "wavtokenizer-speech-75", "titok": "titok-tiny-64", "cdt-fsq": "cdt-fsq-tiny-32",
             "tfm": "tfm-tuev-tiny"}
# recipe settings that make every timed step the full one (quantizer and all discriminators from step 0)
FULL_STEP = {"wavtokenizer": {"quantizer_start": 0, "discriminator_start": 0}}


def _flextok_tiny_model() -> Dict[str, Any]:
    """The 16 px FlexTok model of tests/image/flextok (8 registers, FSQ 8,8,8,5,5,5, f2 VAE)."""
    path = ROOT / "tests" / "image" / "flextok" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_flextok_test_configs", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from image.flextok import FlexTokConfig

    cfg = FlexTokConfig.from_official(mod.tiny_official(posemb_max=(4, 4), n_registers=8, scaling_factor=4.0),
                                      dict(mod.TINY_VAE))
    return cfg.to_dict()


def tiny_config(recipe: str) -> Dict[str, Any]:
    """``{"train": ..., "recipe": ...}`` of the tiny configuration."""
    import yaml

    if recipe in TINY_YAML:
        cfg = yaml.safe_load((BUNDLED / TINY_YAML[recipe] / "train.yaml").read_text())
        return {"train": {"batch_size": cfg["train"]["batch_size"]},
                "recipe": {**cfg["recipe"], **FULL_STEP.get(recipe, {})}}
    if recipe == "cdt":  # the bundled cdt-fsq model without its quantizer
        cfg = yaml.safe_load((BUNDLED / TINY_YAML["cdt-fsq"] / "train.yaml").read_text())
        model = {k: v for k, v in cfg["recipe"]["model"].items() if k != "levels"}
        return {"train": {"batch_size": cfg["train"]["batch_size"]}, "recipe": {**cfg["recipe"], "model": model}}
    if recipe == "tadicodec":  # tests/audio/tadicodec/conftest.py tiny_config, text-free
        model = dict(hidden_size=32, num_heads=2, encoder_num_layers=1, decoder_num_layers=1, text_vocab_size=64,
                     vocoder=dict(dim=32, intermediate_dim=48, num_layers=1), num_steps=2, use_text_cond=False)
        return {"train": {"batch_size": 2}, "recipe": {"model": model, "segment_seconds": 0.64, "warmup_steps": 1}}
    if recipe == "tadicodec-vocoder":  # the vocoder of the tadicodec tiny model, Vocos' discriminators
        model = dict(hidden_size=32, num_heads=2, encoder_num_layers=1, decoder_num_layers=1, text_vocab_size=64,
                     vocoder=dict(dim=32, intermediate_dim=48, num_layers=1), num_steps=2, use_text_cond=False)
        return {"train": {"batch_size": 2}, "recipe": {"model": model, "segment_samples": 16320}}
    if recipe == "flextok":
        return {"train": {"batch_size": 2}, "recipe": {"model": _flextok_tiny_model()}}
    if recipe in TFM_ENCODER:  # the TFM-Encoder of tests/eeg/tfm on the bundled tfm-tuev-tiny tokenizer
        tok = yaml.safe_load((BUNDLED / TINY_YAML["tfm"] / "train.yaml").read_text())["recipe"]["model"]
        k = int(tok["codebook_size"])
        model = dict(emb_size=int(tok["emb_size"]), codebook_size=k, num_heads=2, depth=1,
                     n_classes=k if recipe == "tfm-mtp" else 6)
        return {"train": {"batch_size": 5}, "recipe": {"tokenizer": "tokenzoo/tfm-tuev-tiny", "model": model,
                                                       "window_seconds": 2.0}}
    raise ValueError(f"no tiny configuration for recipe {recipe!r}")


def paper_config(recipe: str, batch: int) -> Dict[str, Any]:
    if recipe in TFM_ENCODER:  # the released 64x4 encoder (defaults) on a release-size tokenizer
        n = {} if recipe == "tfm-classifier" else {"n_classes": 8192}
        return {"train": {"batch_size": batch}, "recipe": {"tokenizer": PAPER_TOKENIZER, "model": n}}
    return {"train": {"batch_size": batch}, "recipe": {}}


def _paper_tokenizer(tmp: Path) -> str:
    from eeg.tfm import TFMConfig, TFMTokenizer

    import torch

    torch.manual_seed(0)
    folder = tmp / "paper-tfm-tokenizer"
    TFMTokenizer(TFMConfig()).save_pretrained(folder)
    return str(folder)


def _data_folder(root: Path, recipe: str, batch: int, tmp: Path) -> Path:
    src = root / DATA[recipe]
    if not src.is_dir():
        raise ValueError(f"no {src}: pass --data-root (the corpus with audio/, image/, video/, eeg/)")
    ext = {"audio": ".wav", "image": ".png", "video": ".npz", "eeg": ".npz"}[DATA[recipe].split("/")[0]]
    files = sorted(p for p in src.iterdir() if p.suffix == ext and "synthetic" not in p.name)
    dst = tmp / f"data-{recipe}"
    dst.mkdir(parents=True, exist_ok=True)
    copies = max(1, -(-batch // len(files)))
    for c in range(copies):
        for f in files:
            link = dst / f"{c}_{f.name}"
            if not link.exists():
                link.symlink_to(f.resolve())
    return dst


def _params(folder: Path) -> Optional[int]:
    from safetensors import safe_open

    w = folder / "model.safetensors"
    if not w.is_file():  # the vocoder recipe writes the release layout
        w = folder / "vocoder" / "model.safetensors"
    if not w.is_file():
        return None
    with safe_open(str(w), "pt") as f:
        return sum(f.get_slice(k).get_shape().numel() if hasattr(f.get_slice(k).get_shape(), "numel") else
                   _prod(f.get_slice(k).get_shape()) for k in f.keys())


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def bench_one(recipe: str, which: str, steps: int, data_root: Path, paper_batch: int) -> Dict[str, Any]:
    from zoo.train import fit
    from zoo.train.registry import load_recipe_config

    cfg = tiny_config(recipe) if which == "tiny" else paper_config(recipe, paper_batch)
    batch = int(cfg["train"]["batch_size"])
    row: Dict[str, Any] = {"recipe": recipe, "config": which, "batch": batch, "steps": steps}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = _data_folder(data_root, recipe, batch, tmp)
        if cfg["recipe"].get("tokenizer") == PAPER_TOKENIZER:
            cfg["recipe"]["tokenizer"] = _paper_tokenizer(tmp)
        train = {**cfg["train"], "max_steps": 1, "log_every": 1, "eval_every": 10 ** 9, "checkpoint_every": 10 ** 9,
                 "holdout_files": 0, "utilization_warning": 0.0, "num_workers": 0, "seed": 0}
        out = tmp / "run"
        r = load_recipe_config(recipe, {"train": train, "recipe": cfg["recipe"]})
        fit(r, data, out, progress=False)
        train["max_steps"] = 1 + steps
        r = load_recipe_config(recipe, {"train": train, "recipe": cfg["recipe"]})
        summary = fit(r, data, out, resume=True, progress=False)
        row["samples_per_s"] = float(summary["samples_per_s"])
        row["s_per_step"] = batch / row["samples_per_s"] if row["samples_per_s"] > 0 else float("inf")
        row["params_M"] = (_params(out) or 0) / 1e6
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def markdown(rows: List[Dict[str, Any]]) -> str:
    head = "| recipe | config | batch | steps | samples/s | s/step | params (M) | peak RSS so far (MB) | note |"
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['recipe']} | {r['config']} | {r.get('batch', '')} | | | | | | {r['error']} |")
        else:
            lines.append(f"| {r['recipe']} | {r['config']} | {r['batch']} | {r['steps']} | {r['samples_per_s']:.3g} | "
                         f"{r['s_per_step']:.3g} | {r['params_M']:.3g} | {r['peak_rss_mb']:.0f} | |")
    return "\n".join(lines)


def main(argv=None) -> List[Dict[str, Any]]:
    from zoo.train import list_recipes

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default=None, help="comma-separated (default: every registered recipe)")
    p.add_argument("--configs", default="tiny,paper")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--paper-batch", type=int, default=1)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cpu hides CUDA devices; cuda lets accelerate use the GPU (it picks the device)")
    p.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    if a.steps < 1:
        p.error("--steps must be >= 1")
    if a.device == "cpu":
        import os

        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    recipes = a.recipes.split(",") if a.recipes else list_recipes()
    unknown = sorted(set(recipes) - set(list_recipes()))
    if unknown:
        p.error(f"unknown recipes {unknown}; registered: {list_recipes()}")
    configs = a.configs.split(",")
    if set(configs) - {"tiny", "paper"}:
        p.error("--configs takes tiny and/or paper")
    rows = []
    for recipe in recipes:
        for which in configs:
            t0 = time.perf_counter()
            try:
                row = bench_one(recipe, which, a.steps, a.data_root, a.paper_batch)
            except Exception as exc:  # a recipe that cannot run here is reported, never skipped silently
                row = {"recipe": recipe, "config": which, "error": f"{type(exc).__name__}: {str(exc)[:160]}"}
            row["wall_s"] = time.perf_counter() - t0
            rows.append(row)
            print(f"{recipe} {which}: {row.get('samples_per_s', row.get('error'))}", file=sys.stderr)
            if a.json:  # written after every run, so a long paper-config run leaves the finished rows behind
                a.json.write_text(json.dumps(rows, indent=2))
    print(markdown(rows))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
