"""``tokenzoo demo``: every modality end to end, offline, with the tokenizers bundled in the package.

For each modality the bundled tokenizer (``hub_configs/tokenzoo-*.yaml``; weights under
``hub_configs/bundled/``) encodes and decodes the example files shipped beside it
(``hub_configs/bundled/examples/<modality>/``), through the same runner as ``tokenzoo bench``: token rate,
bitrate, the main reconstruction metrics, throughput, and an HTML report with figures. ``--official`` runs the
released checkpoints of each family instead (they need the Hugging Face Hub or a filled local cache); a model
that cannot be loaded is reported and skipped, the others still run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

EXAMPLES = Path(__file__).resolve().parent.parent / "hub_configs" / "bundled" / "examples"
MODALITIES = ("audio", "image", "video", "eeg")
# quick metrics that need no downloaded weights (the full set is `tokenzoo bench`'s default)
DEMO_METRICS = {
    "audio": ("mel_distance", "stoi", "pesq_wb"),  # waveform SI-SDR says little about a generative decoder
    "image": ("psnr", "ssim"),
    "video": ("psnr", "ssim"),
    "eeg": ("feature_l1", "feature_corr"),  # TFM decodes to its magnitude STFT, LiPCoT to AR coefficients
}
# one released checkpoint per modality for --official (registry names in hub_configs/)
OFFICIAL = {
    "audio": ("wavtokenizer-small-75",),
    "image": ("titok-l32",),
    "video": ("cdt-small",),
    "eeg": ("tfm-tokenizer-tuev", "lipcot-pd-eeg"),
}


def bundled_models(modality: Optional[str] = None) -> List[str]:
    """Registry names of the bundled tokenizers (optionally of one modality), in modality order."""
    import zoo

    entries = [e for e in zoo.list_models() if e.bundled and (modality is None or e.modality == modality)]
    order = {m: i for i, m in enumerate(MODALITIES)}
    return [e.name for e in sorted(entries, key=lambda e: (order.get(e.modality, 9), e.name))]


def _modality_of(name: str) -> str:
    import zoo

    for e in zoo.list_models():
        if e.name == name:
            return e.modality
    raise ValueError(f"{name!r} is not a registered model")


def run_demo(out, *, official: bool = False, examples=None, models: Optional[Sequence[str]] = None,
             progress: bool = False, log=print) -> Dict[str, Any]:
    """Run the demo into ``out``; returns the combined ``results.json`` content (one entry per model)."""
    from . import bench

    out = Path(out)
    examples = Path(examples) if examples is not None else EXAMPLES
    if not examples.is_dir():
        raise ValueError(f"examples folder {examples} does not exist")
    if models is None:
        models = [n for m in MODALITIES for n in OFFICIAL[m]] if official else bundled_models()
    if not models:
        raise ValueError("no bundled tokenizers are registered (hub_configs/tokenzoo-*.yaml)")
    out.mkdir(parents=True, exist_ok=True)
    combined: Dict[str, Any] = {"data": str(examples), "device": "cpu", "batch_size": 1, "models": {},
                                "skipped": {}}
    for name in models:
        modality = _modality_of(name)
        data = examples / modality
        if not data.is_dir():
            combined["skipped"][name] = f"no example files for {modality} in {data}"
            log(f"{name}: skipped ({combined['skipped'][name]})")
            continue
        t0 = time.perf_counter()
        try:
            res = bench.run([name], data, out=out, metrics=list(DEMO_METRICS[modality]), figures=2,
                            progress=progress)
        except Exception as exc:  # a model that cannot be loaded (no Hub, no cache) must not end the demo
            combined["skipped"][name] = f"{type(exc).__name__}: {exc}"
            log(f"{name}: skipped ({combined['skipped'][name]})")
            continue
        combined["versions"] = res.get("versions", {})
        for key, summary in res["models"].items():
            summary["data"] = str(data)
            combined["models"][key] = summary
        log(f"{name}: {modality}, {len(bench.zio.list_files(data, modality))} example files, "
            f"{time.perf_counter() - t0:.1f} s")
    if not combined["models"]:
        raise RuntimeError("no model could be run: " + "; ".join(f"{k}: {v}" for k, v in combined["skipped"].items()))
    (out / "results.json").write_text(bench.dumps_results(combined))
    (out / "results.md").write_text(bench.markdown_table(combined))
    (out / "report.html").write_text(bench.html_report(combined))
    return combined


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="tokenzoo-demo", help="folder for results.md, results.json and report.html "
                   "(default: ./tokenzoo-demo)")
    p.add_argument("--official", action="store_true",
                   help="run the released checkpoints (needs the Hugging Face Hub or a filled cache) instead of "
                        "the bundled tokenizers")
    p.add_argument("--examples", default=None, help="a folder with audio/, image/, video/, eeg/ example files "
                   "(default: the examples shipped with tokenzoo)")
    p.add_argument("--models", nargs="+", default=None, help="run only these registry names")


def run_from_args(args) -> int:
    import zoo
    from . import bench

    t0 = time.perf_counter()
    print(f"tokenzoo {zoo.__version__}: families " + ", ".join(zoo.list_families()))
    names = args.models
    if names is None and not args.official:
        names = bundled_models()
        print("bundled tokenizers: " + ", ".join(names))
    results = run_demo(args.out, official=args.official, examples=args.examples, models=names)
    print()
    print(bench.markdown_table(results))
    for name, why in results["skipped"].items():
        print(f"- {name}: skipped: {why}")
    print(f"report: {Path(args.out) / 'report.html'}  ({time.perf_counter() - t0:.0f} s)")
    return 0
