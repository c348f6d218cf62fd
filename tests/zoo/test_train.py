"""The training engine with a tiny recipe: loss decreases, resume is exact, 2 processes == 1, bad files skipped."""

import json
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

import zoo
from zoo.train import TrainConfig, fit, latest_checkpoint

from .multiprocess import run_two_processes
from .toy_recipe import ToyCodecRecipe, ToyCodecRecipeConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def speech(shared_data, tmp_path):
    data = tmp_path / "speech"
    shutil.copytree(shared_data("audio/speech"), data)
    return data


def _recipe(**train):
    base = dict(max_steps=24, batch_size=4, log_every=4, eval_every=12, checkpoint_every=8, holdout_files=1,
                seed=3, utilization_warning=0.0)
    base.update(train)
    return ToyCodecRecipe(ToyCodecRecipeConfig(), TrainConfig(**base))


def test_training_lowers_heldout_loss_and_exports_a_loadable_tokenizer(speech, tmp_path):
    out = tmp_path / "run"
    summary = fit(_recipe(), speech, out, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["split"] == "eval"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 24
    assert evals[-1]["recon_loss"] < 0.7 * evals[0]["recon_loss"], evals
    assert any("utilization" in r for r in rows if r["split"] == "train")
    info = json.loads((out / "training.json").read_text())
    assert info["steps"] == 24 and len(info["heldout_files"]) == 1
    tok = zoo.from_pretrained(out)
    wav = torch.randn(1, 24000) * 0.1
    assert tok.encode(wav).ids.shape[0] == 1
    assert summary["samples_per_s"] > 0


def test_fit_restores_the_process_wide_deterministic_setting(speech, tmp_path):
    """Training turns deterministic algorithms on for CPU runs; inference afterwards in the same process must not
    inherit it (it changes results of some kernels, e.g. the bundled models' card numbers drifted)."""
    assert not torch.are_deterministic_algorithms_enabled()
    fit(_recipe(max_steps=2, eval_every=2, checkpoint_every=2), speech, tmp_path / "run", progress=False)
    assert not torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        fit(_recipe(max_steps=2, eval_every=2, checkpoint_every=2), speech, tmp_path / "run2", progress=False)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def _weights(out):
    from safetensors.torch import load_file

    return load_file(str(out / "model.safetensors"))


def test_kill_and_resume_equals_uninterrupted(speech, tmp_path):
    full = tmp_path / "full"
    fit(_recipe(), speech, full, progress=False)
    part = tmp_path / "part"
    s1 = fit(_recipe(), speech, part, progress=False, stop_after=10)  # killed at step 10 (mid-epoch)
    assert s1["interrupted"] and latest_checkpoint(part).name == "step-00000010"
    fit(_recipe(), speech, part, resume=True, progress=False)
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class _StepRecordingRecipe(ToyCodecRecipe):
    """Records ``ctx.step`` as each training step sees it (step-dependent losses read it)."""

    seen: list = []

    def training_step(self, ctx, batch):
        type(self).seen.append(ctx.step)
        return super().training_step(ctx, batch)


def test_ctx_step_counts_completed_steps_also_after_resume(speech, tmp_path):
    def recipe():
        return _StepRecordingRecipe(ToyCodecRecipeConfig(), TrainConfig(max_steps=6, batch_size=4, log_every=2,
                                                                         eval_every=100, checkpoint_every=3,
                                                                         holdout_files=1, seed=3,
                                                                         utilization_warning=0.0))

    _StepRecordingRecipe.seen = []
    out = tmp_path / "run"
    fit(recipe(), speech, out, progress=False, stop_after=3)
    fit(recipe(), speech, out, resume=True, progress=False)
    assert _StepRecordingRecipe.seen == [0, 1, 2, 3, 4, 5]


def test_corrupt_training_file_is_skipped_and_counted(speech, tmp_path):
    (speech / "aa_corrupt.wav").write_bytes(b"RIFF definitely not audio")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="codebook utilisation"):
        summary = fit(_recipe(max_steps=6, holdout_files=0, eval_every=100, log_every=2, utilization_warning=0.9),
                      speech, out, progress=False)
    assert summary["skipped_files"] >= 1
    assert json.loads((out / "training.json").read_text())["skipped_files"] >= 1


def test_config_errors(tmp_path):
    from zoo.train import load_recipe_config

    with pytest.raises(ValueError, match="train.batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown recipe"):
        load_recipe_config("no-such-recipe", {})
    with pytest.raises(ValueError, match="fewer than one batch"):
        fit(_recipe(batch_size=64, holdout_files=0), REPO.parent / "shared" / "data" / "audio" / "speech",
            tmp_path / "x", progress=False)


_WORKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from tests.zoo.toy_recipe import ToyCodecRecipe, ToyCodecRecipeConfig
    from zoo.train import TrainConfig, fit
    r = ToyCodecRecipe(ToyCodecRecipeConfig(), TrainConfig(max_steps=6, batch_size=2, log_every=2, eval_every=100,
                       checkpoint_every=100, holdout_files=0, seed=5, utilization_warning=0.0))
    fit(r, {data!r}, {out!r}, progress=False)
""")


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(speech, tmp_path):
    one = tmp_path / "one"
    r = ToyCodecRecipe(ToyCodecRecipeConfig(), TrainConfig(max_steps=6, batch_size=4, log_every=2, eval_every=100,
                                                           checkpoint_every=100, holdout_files=0, seed=5,
                                                           utilization_warning=0.0))
    fit(r, speech, one, progress=False)
    two = tmp_path / "two"
    run_two_processes(_WORKER.format(repo=str(REPO), data=str(speech), out=str(two)))
    a, b = _weights(one), _weights(two)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), (k, (a[k] - b[k]).abs().max())


def test_tokenzoo_train_command_and_resume(speech, tmp_path):
    from zoo.cli import main

    cfg = tmp_path / "toy.yaml"
    cfg.write_text("train:\n  max_steps: 6\n  batch_size: 4\n  log_every: 2\n  eval_every: 100\n"
                   "  checkpoint_every: 3\n  holdout_files: 1\n  utilization_warning: 0.0\n"
                   "recipe:\n  lr: 0.003\n  segment_samples: 2000\n")
    out = tmp_path / "run"
    args = ["train", "toy-codec", "--config", str(cfg), "--data", str(speech), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert latest_checkpoint(out).name == "step-00000006"
    assert zoo.from_pretrained(out).config.hop == 40
    assert main(args + ["--resume"]) == 0  # already at max_steps: nothing more to do, still exits 0
    assert main(["train", "toy-codec", "--config", str(cfg), "--data", str(tmp_path / "nope"), "--out",
                 str(out)]) == 2


def test_cosine_decay_runs_from_one_to_the_end_ratio():
    from zoo.train.schedules import cosine_decay

    assert cosine_decay(0.0) == 1.0 and cosine_decay(1.0) == 0.0 and cosine_decay(0.5) == pytest.approx(0.5)
    assert cosine_decay(1.0, 0.01) == pytest.approx(0.01) and cosine_decay(2.0, 0.01) == pytest.approx(0.01)
    assert cosine_decay(-1.0, 0.01) == 1.0  # clipped to the start
    assert cosine_decay(1.0, 50.0) == pytest.approx(50.0)  # a rising schedule (TFM's original)
    ts = [i / 10 for i in range(11)]
    assert all(a > b for a, b in zip(map(cosine_decay, ts), map(cosine_decay, ts[1:])))
    with pytest.raises(ValueError, match="end"):
        cosine_decay(0.5, -0.1)
