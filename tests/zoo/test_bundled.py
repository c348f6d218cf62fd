"""The bundled tokenizers: they load offline, their model cards' held-out numbers are reproduced by the
benchmark, they beat the trivial baseline of the same bitrate, and the demo runs end to end."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

import zoo
from zoo import bench
from zoo.demo import DEMO_METRICS, EXAMPLES, MODALITIES, bundled_models, run_demo

NAMES = bundled_models()
ROOT = Path(__file__).resolve().parents[2]


def _entry(name):
    return next(e for e in zoo.list_models() if e.name == name)


def _folder(name):
    return ROOT / "hub_configs" / "bundled" / name.split("/", 1)[1]


def _held(name):
    return json.loads((_folder(name) / "heldout_metrics.json").read_text())


def test_one_bundled_tokenizer_per_modality_with_examples():
    assert all(n.startswith("tokenzoo/") for n in NAMES)
    have = {_entry(n).modality for n in NAMES}
    for modality in ("audio", "image", "video"):
        assert modality in have, f"no bundled {modality} tokenizer"
        assert bench.zio.list_files(EXAMPLES / modality, modality), f"no {modality} example files"
    assert set(have) <= set(MODALITIES)


@pytest.mark.parametrize("name", NAMES)
def test_loads_offline_small_and_as_registered(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    e = _entry(name)
    tok = zoo.from_pretrained(name)  # local files; sha256 in the YAML verified before loading
    assert tok.family == e.family and tok.modality == e.modality
    assert tok.spec.codebook_size == e.codebook_size and tok.spec.num_codebooks == e.num_codebooks
    assert math.isclose(tok.spec.token_rate, e.token_rate)
    size = (_folder(name) / "model.safetensors").stat().st_size
    assert size < 20 * 2 ** 20, f"{name}: {size / 2 ** 20:.1f} MB is not a small bundled model"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_model_card_metrics_reproduced_by_bench(name, tmp_path):
    held = _held(name)
    modality = _entry(name).modality
    assert held["metrics"] == list(DEMO_METRICS[modality])
    # the card's numbers were measured at this intra-op thread count: float reductions (and so a token id whose
    # two nearest codes are almost equidistant) depend on it
    before = torch.get_num_threads()
    torch.set_num_threads(held["torch_threads"])
    try:
        res = bench.run([name], EXAMPLES / modality, out=tmp_path, metrics=held["metrics"], figures=0, progress=False)
    finally:
        torch.set_num_threads(before)
    got = res["models"][name]
    assert got["items"] == len(held["files"]) and not got["errors"]
    card = (_folder(name) / "README.md").read_text()
    for k, want in held["model"]["metrics"].items():
        have = got["metrics"][k]["mean"]
        assert math.isclose(have, want, rel_tol=1e-3, abs_tol=1e-4), f"{name} {k}: bench {have} vs card {want}"
        # the card states the number that the benchmark gives
        assert re.search(rf"\| {re.escape(k)} . \| {want:.4f} \|", card), f"{name}: card does not state {k}"


def _baseline(held):
    import zoo.baselines as B

    cls = {"baseline-audio": (B.AudioBaseline, B.AudioBaselineConfig),
           "baseline-image": (B.ImageBaseline, B.ImageBaselineConfig),
           "baseline-video": (B.VideoBaseline, B.VideoBaselineConfig),
           "baseline-series": (B.SeriesBaseline, B.SeriesBaselineConfig)}[held["baseline"]["family"]]
    params = {k: v for k, v in held["baseline"]["params"].items() if k not in ("bits_per_clip", "model_bits_per_clip")}
    return cls[0](cls[1](**params)).eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_baseline_numbers_and_card_verdicts(name, tmp_path):
    """The baseline of the card is at most the tokenizer's bitrate, its numbers are reproduced, and the card's
    better / NOT better verdict for every metric is the true one."""
    held = _held(name)
    modality = _entry(name).modality
    base = _baseline(held)
    params = held["baseline"]["params"]
    if "bits_per_clip" in params:
        assert params["bits_per_clip"] <= params["model_bits_per_clip"]
    else:
        assert base.spec.bitrate <= held["model"]["spec"]["bitrate"] * (1 + 1e-9)
    files = [EXAMPLES / f for f in held["files"]]
    if modality == "eeg":
        from zoo.baselines import feature_domain_scores

        got = feature_domain_scores(zoo.from_pretrained(name), base, files)["metrics"]
    else:
        res = bench.run([base], EXAMPLES / modality, out=tmp_path, metrics=held["metrics"], figures=0,
                        progress=False)
        got = {k: v["mean"] for k, v in next(iter(res["models"].values()))["metrics"].items()}
    card = (_folder(name) / "README.md").read_text()
    for k, want in held["baseline"]["metrics"].items():
        assert math.isclose(got[k], want, rel_tol=1e-3, abs_tol=1e-4), f"{name} baseline {k}: {got[k]} vs {want}"
        ours = held["model"]["metrics"][k]
        better = ours > want if bench.HIGHER_IS_BETTER[k] else ours < want
        row = re.search(rf"\| {re.escape(k)} . \| [^|]+ \| {want:.4f} \| ([^|]+) \|", card)
        assert row, f"{name}: card has no baseline value for {k}"
        assert row.group(1).strip() == ("better" if better else "NOT better"), f"{name}: wrong verdict for {k}"


@pytest.mark.slow
def test_demo_runs_offline_and_writes_a_report(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = run_demo(tmp_path, log=lambda *_: None)
    assert set(res["models"]) == set(NAMES) and not res["skipped"]
    html = (tmp_path / "report.html").read_text()
    figures = re.findall(r"src='figures/([^']+)'", html)
    assert figures and all((tmp_path / "figures" / f).is_file() for f in figures)
    md = (tmp_path / "results.md").read_text()
    assert all(n in md for n in NAMES)


def test_demo_reports_a_model_it_cannot_load(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="no model could be run"):
        run_demo(tmp_path, models=["titok-l32"], log=lambda *_: None)  # official weights: not in the cache
