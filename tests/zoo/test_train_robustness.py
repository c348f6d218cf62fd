"""The training engine under trouble: unusable data, signals, odd shapes, shards, EDF, accumulation with EMA, the
codebook-collapse warning, ``--init`` from the command line, and several processes that must stay in step."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.quantizers.stats import CodebookStats
from zoo.train import DataConfig, FolderDataset, TrainConfig, collate_skip, fit, latest_checkpoint

from .multiprocess import run_two_processes
from .toy_recipe import ToyCodecRecipe, ToyCodecRecipeConfig

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def speech(shared_data, tmp_path):
    data = tmp_path / "speech"
    shutil.copytree(shared_data("audio/speech"), data)
    return data


def _recipe(cls=ToyCodecRecipe, **train):
    base = dict(max_steps=12, batch_size=4, log_every=2, eval_every=100, checkpoint_every=100, holdout_files=0,
                seed=3, utilization_warning=0.0)
    base.update(train)
    return cls(ToyCodecRecipeConfig(), TrainConfig(**base))


def _weights(out):
    from safetensors.torch import load_file

    return load_file(str(Path(out) / "model.safetensors"))


def _assert_same(a_dir, b_dir):
    a, b = _weights(a_dir), _weights(b_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _rows(out, split="train"):
    return [r for r in (json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines())
            if r["split"] == split]


# ---------------------------------------------------------------------------------------------- unusable data
def test_a_folder_of_corrupt_files_ends_with_an_error_naming_it(tmp_path):
    data = tmp_path / "all_bad"
    data.mkdir()
    for i in range(5):
        (data / f"bad{i}.wav").write_bytes(b"RIFF not audio at all")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"no usable training batch: all 4 examples read were skipped .*5 training files in .*all_bad"):
        fit(_recipe(max_steps=1000), data, tmp_path / "run", progress=False)
    assert time.perf_counter() - t0 < 60  # one epoch, not an endless loop
    assert latest_checkpoint(tmp_path / "run") is None


def test_a_resumed_epoch_whose_rest_is_unusable_is_not_mistaken_for_an_unusable_folder(speech, tmp_path):
    """Only an epoch read from its start proves the folder unusable: a resumed one may have only its bad files
    left (here: corrupt copies replace the files after the checkpoint; the next epoch then fails)."""
    out = tmp_path / "run"
    fit(_recipe(batch_size=1, max_steps=40), speech, out, progress=False, stop_after=1)
    for f in speech.glob("*.wav"):
        f.write_bytes(b"RIFF gone")
    with pytest.raises(ValueError, match="epoch 1 gave no usable training batch"):
        fit(_recipe(batch_size=1, max_steps=40), speech, out, resume=True, progress=False)


def test_data_config_rejects_non_positive_sizes(speech):
    for kw in (dict(sample_rate=24000, segment_samples=-5), dict(sample_rate=0, segment_samples=100),
               dict(sample_rate=24000, segment_samples=1.5)):
        with pytest.raises(ValueError, match="must be a positive int"):
            FolderDataset(speech, DataConfig("audio", **kw))
    with pytest.raises(ValueError, match="split_channels is supported for EEG"):
        FolderDataset(speech, DataConfig("audio", sample_rate=24000, segment_samples=100, split_channels=True))
    with pytest.raises(ValueError, match="stop_after"):
        fit(_recipe(), speech, speech.parent / "x", stop_after=-1)


# ---------------------------------------------------------------------------------------------- odd shapes
def _eeg_item(channels, index, t=1000):
    return {"x": torch.arange(channels * t, dtype=torch.float32).reshape(channels, t) + 1000 * index,
            "index": index, "source": f"file{index}.npz", "label": index % 2}


def test_collate_skips_and_counts_examples_of_another_shape(caplog):
    batch = [_eeg_item(1, 0), _eeg_item(3, 1), None, _eeg_item(1, 2)]
    with caplog.at_level("WARNING", logger="tokenzoo.train"):
        out = collate_skip(batch)
    assert out["skipped"] == 2 and out["x"].shape == (2, 1, 1000) and out["index"].tolist() == [0, 2]
    assert out["label"].tolist() == [0, 0]
    assert "file1.npz" in caplog.text and "(3, 1000)" in caplog.text
    # a tie keeps the shape seen first
    tie = collate_skip([_eeg_item(3, 5), _eeg_item(1, 6)])
    assert tie["skipped"] == 1 and tie["index"].tolist() == [5]


def test_collate_split_channels_turns_every_channel_into_an_example():
    out = collate_skip([_eeg_item(1, 0), _eeg_item(3, 1), None], split_channels=True)
    assert out["skipped"] == 1 and out["x"].shape == (4, 1, 1000)
    assert out["index"].tolist() == [0, 1, 1, 1] and out["label"].tolist() == [0, 1, 1, 1]
    assert torch.equal(out["x"][2, 0], _eeg_item(3, 1)["x"][1])
    # same-channel windows give exactly the channel-major order of a stacked batch
    same = collate_skip([_eeg_item(2, 0), _eeg_item(2, 1)], split_channels=True)
    stacked = collate_skip([_eeg_item(2, 0), _eeg_item(2, 1)])
    assert torch.equal(same["x"][:, 0], stacked["x"].reshape(-1, 1000))
    with pytest.raises(ValueError, match="one length"):
        collate_skip([_eeg_item(1, 0), _eeg_item(1, 1, t=900)], split_channels=True)


def test_tfm_trains_on_windows_with_different_channel_counts(shared_data, tmp_path):
    from eeg.tfm import TFMConfig
    from eeg.tfm.recipe import TFMRecipe, TFMRecipeConfig
    from zoo.io import load_series, save_series

    data = tmp_path / "eeg"
    data.mkdir()
    signals = [load_series(shared_data("eeg") / f"tuev_tfm_sample_{i}.npz") for i in range(4)]
    for i, s in enumerate(signals):
        save_series(data / f"one{i}.npz", s.data, s.rate)
    save_series(data / "three.npz", torch.cat([s.data for s in signals[:3]]), signals[0].rate)
    model = TFMConfig(emb_size=16, codebook_size=32, freq_depth=1, temporal_depth=1, decoder_depth=1, num_heads=2)
    recipe = TFMRecipe(TFMRecipeConfig(model=model), TrainConfig(max_steps=5, batch_size=5, log_every=5,
                                                                 eval_every=100, checkpoint_every=100, seed=0,
                                                                 utilization_warning=0.0))
    summary = fit(recipe, data, tmp_path / "run", progress=False)
    assert summary["step"] == 5 and summary["skipped_files"] == 0
    (row,) = _rows(tmp_path / "run")
    frames = (recipe.config.window_samples - model.n_fft) // model.hop + 1
    assert row["codebook_ids"] == 5 * 2 * 7 * frames  # 5 steps x 2 views x 7 single-channel examples


# ---------------------------------------------------------------------------------------------- signals
class _SelfSignallingRecipe(ToyCodecRecipe):
    """Sends itself ``signal_number`` in the middle of step ``at_step`` (between backward and the optimiser)."""

    at_step, signal_number = 4, signal.SIGINT

    def training_step(self, ctx, batch):
        loss, out = self._loss(ctx, batch["x"])
        ctx.backward(loss)
        if ctx.step == self.at_step:
            os.kill(os.getpid(), self.signal_number)
        ctx.optimizer_step("model")
        return {"loss": loss.detach()}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_step_checkpoints_after_that_step_and_resume_is_exact(signum, speech, tmp_path):
    full = tmp_path / "full"
    fit(_recipe(), speech, full, progress=False)
    part = tmp_path / "part"
    _SelfSignallingRecipe.signal_number = signum
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    s1 = fit(_recipe(_SelfSignallingRecipe), speech, part, progress=False)
    # the step in which the signal arrived completed (ctx.step 4 -> 5 completed steps), then the loop stopped
    assert s1["interrupted"] and s1["step"] == 5 and latest_checkpoint(part).name == "step-00000005"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # handlers restored
    fit(_recipe(), speech, part, resume=True, progress=False)
    _assert_same(full, part)


def test_a_second_ctrl_c_aborts_without_writing_a_checkpoint(speech, tmp_path):
    class Twice(_SelfSignallingRecipe):
        def training_step(self, ctx, batch):
            if ctx.step == 3:
                for _ in range(2):  # the sleep lets the first handler run before the second signal
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.05)
            return super().training_step(ctx, batch)

    Twice.at_step = -1
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit(_recipe(Twice, checkpoint_every=2), speech, out, progress=False)
    assert latest_checkpoint(out).name == "step-00000002"  # the last periodic one, intact
    assert not list((out / "checkpoints").glob("*.tmp"))


_SLOW_WORKER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    import torch
    torch.set_num_threads(1)
    from tests.zoo.toy_recipe import ToyCodecRecipe, ToyCodecRecipeConfig
    from zoo.train import TrainConfig, fit

    class Slow(ToyCodecRecipe):  # the same numbers, slowly: the signal lands inside a step
        def training_step(self, ctx, batch):
            logs = super().training_step(ctx, batch)
            time.sleep(0.15)
            return logs

    r = Slow(ToyCodecRecipeConfig(), TrainConfig(max_steps=12, batch_size=4, log_every=1, eval_every=100,
             checkpoint_every=100, holdout_files=0, seed=3, utilization_warning=0.0))
    s = fit(r, {data!r}, {out!r}, progress=False)
    print("SUMMARY", s["interrupted"], s["step"])
""")


@pytest.mark.slow
def test_sigterm_to_a_real_training_process_checkpoints_and_resume_is_exact(speech, tmp_path):
    full = tmp_path / "full"
    fit(_recipe(log_every=1), speech, full, progress=False)
    part = tmp_path / "part"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WORKER.format(repo=str(REPO), data=str(speech),
                                                                       out=str(part))],
                            env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        metrics = part / "metrics.jsonl"
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0].decode()
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, output
    assert "SUMMARY True" in output and "SIGTERM received" in output, output
    stopped = latest_checkpoint(part)
    assert stopped is not None and 3 <= int(stopped.name.split("-")[1]) < 12, output
    fit(_recipe(log_every=1), speech, part, resume=True, progress=False)
    _assert_same(full, part)


# ---------------------------------------------------------------------------------------------- accumulation + EMA
class _SignalOnceRecipe(ToyCodecRecipe):
    """Sends itself SIGTERM once, in the first micro-batch of optimiser step ``at_step`` + 1."""

    at_step = 2

    def training_step(self, ctx, batch):
        if ctx.step == self.at_step and not getattr(self, "_sent", False):
            self._sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return super().training_step(ctx, batch)


def test_gradient_accumulation_with_ema_resumes_exactly(speech, tmp_path):
    # 9 files, batches of 2: 4 micro-batches an epoch = an accumulation of 3 and, at the epoch's end, one of 1
    def recipe(cls=ToyCodecRecipe):
        return _recipe(cls, batch_size=2, grad_accum=3, ema_decay=0.8, max_steps=7, checkpoint_every=100)

    full = tmp_path / "full"
    fit(recipe(), speech, full, progress=False)
    part = tmp_path / "part"
    s1 = fit(recipe(), speech, part, progress=False, stop_after=3)
    assert s1["interrupted"] and latest_checkpoint(part).name == "step-00000003"
    state = torch.load(latest_checkpoint(part) / "state.pt", weights_only=True)
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 3) and state["ema"] is not None  # mid-epoch
    fit(recipe(), speech, part, resume=True, progress=False)
    _assert_same(full, part)
    # a signal in the first micro-batch of an accumulation: the loop finishes the accumulation, then stops
    sig = tmp_path / "signalled"
    s2 = fit(recipe(_SignalOnceRecipe), speech, sig, progress=False)
    assert s2["interrupted"] and s2["step"] == 3
    assert torch.load(latest_checkpoint(sig) / "state.pt", weights_only=True)["batch_in_epoch"] == 3
    fit(recipe(), speech, sig, resume=True, progress=False)
    _assert_same(full, sig)
    # the export is the EMA, not the last weights
    last = torch.load(latest_checkpoint(full) / "state.pt", weights_only=True)["modules"]["model"]
    exported = _weights(full)
    assert any(not torch.equal(exported[k], last[k]) for k in exported if exported[k].is_floating_point())


# ---------------------------------------------------------------------------------------------- shards, EDF, --init
def test_training_from_webdataset_tar_shards_equals_training_from_the_folder(speech, tmp_path):
    files = sorted(speech.glob("*.wav"))
    shards = tmp_path / "shards"
    shards.mkdir()
    half = len(files) // 2
    for i, part in enumerate((files[:half], files[half:])):
        with tarfile.open(shards / f"shard-{i:04d}.tar", "w") as tf:
            for f in part:
                tf.add(f, arcname=f.name)
    fit(_recipe(max_steps=6), speech, tmp_path / "folder", progress=False)
    summary = fit(_recipe(max_steps=6), shards, tmp_path / "tar", progress=False)
    assert summary["skipped_files"] == 0
    info = json.loads((tmp_path / "tar" / "training.json").read_text())
    assert info["train_files"] == len(files)
    _assert_same(tmp_path / "folder", tmp_path / "tar")


def test_tfm_trains_on_edf_files(shared_data, tmp_path):
    pyedflib = pytest.importorskip("pyedflib")
    from eeg.tfm import TFMConfig
    from eeg.tfm.recipe import TFMRecipe, TFMRecipeConfig
    from zoo.io import load_series

    data = tmp_path / "edf"
    data.mkdir()
    for i in range(4):
        s = load_series(shared_data("eeg") / f"tuev_tfm_sample_{i}.npz")
        sig = np.concatenate([s.data.numpy()] * 2, axis=1).astype(np.float64)  # 10 s
        with pyedflib.EdfWriter(str(data / f"rec{i}.edf"), 1, file_type=pyedflib.FILETYPE_EDFPLUS) as w:
            lim = round(float(np.abs(sig).max()) * 1.01 + 0.01, 3)  # EDF headers hold 8 characters
            w.setSignalHeaders([{"label": "EEG", "dimension": "uV", "sample_frequency": int(s.rate),
                                 "physical_min": -lim, "physical_max": lim, "digital_min": -32768,
                                 "digital_max": 32767}])
            w.writeSamples([sig[0]])
    model = TFMConfig(emb_size=16, codebook_size=32, freq_depth=1, temporal_depth=1, decoder_depth=1, num_heads=2)
    recipe = TFMRecipe(TFMRecipeConfig(model=model), TrainConfig(max_steps=3, batch_size=2, log_every=1,
                                                                 eval_every=100, checkpoint_every=100, seed=0,
                                                                 utilization_warning=0.0))
    init = recipe.build_model().state_dict()
    summary = fit(recipe, data, tmp_path / "run", progress=False)
    assert summary["step"] == 3 and summary["skipped_files"] == 0
    w = _weights(tmp_path / "run")
    assert not torch.equal(w["decoder_head.0.weight"], init["decoder_head.0.weight"])


def test_tokenzoo_train_init_warm_starts_from_a_saved_run(speech, tmp_path):
    from zoo.cli import main

    cfg = tmp_path / "toy.yaml"
    cfg.write_text("train:\n  max_steps: 3\n  batch_size: 4\n  log_every: 1\n  eval_every: 100\n"
                   "  checkpoint_every: 100\n  utilization_warning: 0.0\n  seed: 1\n"
                   "recipe:\n  lr: 0.003\n  segment_samples: 2000\n")
    base = tmp_path / "base"
    assert main(["train", "toy-codec", "--config", str(cfg), "--data", str(speech), "--out", str(base),
                 "--no-progress"]) == 0
    frozen = tmp_path / "lr0.yaml"  # a fine-tune at learning rate 0 must export the warm-start weights as they are
    frozen.write_text(cfg.read_text().replace("lr: 0.003", "lr: 0.0").replace("seed: 1", "seed: 2"))
    ft = tmp_path / "ft"
    assert main(["train", "toy-codec", "--config", str(frozen), "--data", str(speech), "--out", str(ft),
                 "--init", str(base), "--no-progress"]) == 0
    _assert_same(base, ft)
    fresh = tmp_path / "fresh"  # control: without --init the same config exports other (seed 2) weights
    assert main(["train", "toy-codec", "--config", str(frozen), "--data", str(speech), "--out", str(fresh),
                 "--no-progress"]) == 0
    assert not torch.equal(_weights(fresh)["enc.0.weight"], _weights(base)["enc.0.weight"])
    notes = json.loads((ft / "training.json").read_text())["notes"]
    assert any("warm-started from" in n and str(base) in n for n in notes)
    assert main(["train", "toy-codec", "--config", str(cfg), "--data", str(speech), "--out", str(tmp_path / "x"),
                 "--init", str(tmp_path / "no-such-run"), "--no-progress"]) == 2


# ---------------------------------------------------------------------------------------------- codebook logging
class _SyntheticCodesRecipe(ToyCodecRecipe):
    """The toy step, logging ids of a K-code codebook: ``per_batch`` ids spread over ``spread`` codes."""

    K, per_batch, spread = 8192, 512, 8192

    def training_step(self, ctx, batch):
        logs = super().training_step(ctx, batch)
        g = torch.Generator().manual_seed(ctx.step)
        ids = torch.randint(0, self.spread, (self.per_batch,), generator=g)
        return {**logs, "codebook": CodebookStats.from_ids(ids, self.K)}


def test_collapse_warning_fires_on_a_collapsed_codebook(speech, tmp_path):
    _SyntheticCodesRecipe.spread = 3
    with pytest.warns(UserWarning, match="codebook utilisation collapsed"):
        fit(_recipe(_SyntheticCodesRecipe, max_steps=4, log_every=2, utilization_warning=0.05), speech,
            tmp_path / "run", progress=False)
    rows = _rows(tmp_path / "run")
    assert all(r["utilization"] == 3 / 8192 and r["perplexity"] < 3.01 for r in rows)


def test_no_collapse_warning_for_a_healthy_big_codebook_and_the_window_accumulates(speech, tmp_path):
    # 512 ids a batch can use at most 6 % of 8192 codes: judged per batch against the codebook size, a healthy
    # codebook would be reported as collapsing below a 0.2 threshold
    _SyntheticCodesRecipe.spread = 8192
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(_recipe(_SyntheticCodesRecipe, max_steps=8, log_every=1, utilization_warning=0.2), speech,
            tmp_path / "one", progress=False)
        fit(_recipe(_SyntheticCodesRecipe, max_steps=8, log_every=4, utilization_warning=0.2), speech,
            tmp_path / "four", progress=False)
    assert not [w for w in caught if "codebook" in str(w.message)], [str(w.message) for w in caught]
    one, four = _rows(tmp_path / "one"), _rows(tmp_path / "four")
    assert all(r["codebook_ids"] == 512 for r in one) and all(r["codebook_ids"] == 4 * 512 for r in four)
    assert max(r["utilization"] for r in one) < 0.07 < 0.2 < min(r["utilization"] for r in four)
    assert min(r["perplexity"] for r in four) > 1500


# ---------------------------------------------------------------------------------------------- several processes
_TWO_WORKER = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {repo!r})
    import torch
    torch.set_num_threads(1)
    from tests.zoo.toy_recipe import ToyCodecRecipe, ToyCodecRecipeConfig
    from zoo.train import TrainConfig, fit
    import zoo.train.engine as engine
    rank = int(os.environ["RANK"])

    def recipe(**kw):
        base = dict(max_steps=6, batch_size=2, log_every=1, eval_every=100, checkpoint_every=100, holdout_files=0,
                    seed=5, utilization_warning=0.0)
        base.update(kw)
        return ToyCodecRecipe(ToyCodecRecipeConfig(), TrainConfig(**base))

    out = {out!r}
    fit(recipe(), {data!r}, out + "/full", progress=False)
    s = fit(recipe(), {data!r}, out + "/part", progress=False, stop_after=3)  # mid-epoch (2 steps an epoch)
    assert s["interrupted"] and s["step"] == 3, s
    if rank == 1:  # as on a node whose disk does not hold the run folder: the main process must send it
        engine._readable = lambda path: False
    fit(recipe(), {data!r}, out + "/part", resume=True, progress=False)
    # a folder where some batches are corrupt on one process only: both must skip them together
    s = fit(recipe(batch_size=1, max_steps=8), {bad!r}, out + "/bad", progress=False)
    print("RESULT", json.dumps({{"rank": rank, "step": s["step"], "skipped": s["skipped_files"]}}))
    # WavTokenizer with the DAC discriminator frozen (the released code's behaviour): DDP refuses a module without
    # trainable parameters, so the loop must keep it out of the wrapped modules
    from tests.zoo.test_recipes_equivalence import make_recipe
    r = make_recipe("wavtokenizer", 1, 2, split_invariant=True)
    r.config.train_dac_discriminator = False
    fit(r, {four!r}, out + "/wav_frozen", progress=False)
""")


@pytest.mark.slow
def test_two_processes_resume_exactly_without_a_shared_disk_and_skip_in_step(speech, tmp_path):
    from tests.zoo.test_recipes_equivalence import make_recipe

    four = tmp_path / "four"
    four.mkdir()
    for f in sorted(speech.glob("*.wav"))[:4]:
        shutil.copyfile(f, four / f.name)
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in sorted(speech.glob("*.wav"))[:6]:
        shutil.copyfile(f, bad / f.name)
    for i in range(2):  # 4 batch pairs an epoch, at most 2 of them with a corrupt file: every epoch trains
        (bad / f"zz_corrupt{i}.wav").write_bytes(b"RIFF not audio")
    out = tmp_path / "runs"
    outputs = run_two_processes(_TWO_WORKER.format(repo=str(REPO), data=str(speech), out=str(out), bad=str(bad),
                                                   four=str(four)))
    _assert_same(out / "full", out / "part")
    results = [json.loads(o.split("RESULT ", 1)[1].splitlines()[0]) for o in outputs]
    assert results[0]["step"] == results[1]["step"] == 8
    assert results[0]["skipped"] == results[1]["skipped"] > 0  # agreed totals (summed over the processes)
    rows = _rows(out / "bad")
    assert len(rows) == 8 and rows[-1]["skipped_files"] == results[0]["skipped"]
    # WavTokenizer, DAC frozen: two processes train what one process with the whole batch trains (the measure of
    # tests/zoo/test_recipes_equivalence.py), and the DAC discriminator keeps its initial weights in both
    def frozen_recipe():
        r = make_recipe("wavtokenizer", 2, 2, split_invariant=True)
        r.config.train_dac_discriminator = False
        return r

    one = tmp_path / "wav_one"
    fit(frozen_recipe(), four, one, progress=False)
    a, b = _weights(one), _weights(out / "wav_frozen")
    init = frozen_recipe().build_model().state_dict()
    floats = [k for k in a if a[k].is_floating_point()]
    diff = sum(float((a[k] - b[k]).abs().sum()) for k in floats)
    moved = sum(float((a[k] - init[k]).abs().sum()) for k in floats)
    assert moved > 0 and diff / moved < 1e-2, diff / moved
    r = frozen_recipe()
    r.build_model()
    r.build_aux_modules()
    dac0 = r.build_frozen_modules()["dac"].state_dict()  # the same seeded draws as inside fit
    for run in (one, out / "wav_frozen"):
        dac = torch.load(latest_checkpoint(run) / "state.pt", weights_only=True)["modules"]["dac"]
        assert all(torch.equal(dac[k], dac0[k]) for k in dac0), run


def test_benchmark_times_the_full_wavtokenizer_step():
    """The bundled YAML warms up without quantizer (2000 steps) and discriminators (100000): the benchmark's tiny row
    must switch both on from step 0, or it times a plain autoencoder step."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_train_cfg", REPO / "benchmarks" / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.tiny_config("wavtokenizer")["recipe"]
    assert cfg["quantizer_start"] == 0 and cfg["discriminator_start"] == 0
    from zoo.train import load_recipe_config

    r = load_recipe_config("wavtokenizer", {"train": {"batch_size": 1}, "recipe": cfg})
    assert r.config.model.backbone_dim == 128  # still the bundled model otherwise


def test_resume_refuses_a_checkpoint_it_cannot_continue_exactly(speech, tmp_path):
    out = tmp_path / "run"
    fit(_recipe(), speech, out, progress=False, stop_after=2)
    ckpt = latest_checkpoint(out)
    shutil.copyfile(ckpt / "rng-0.pt", ckpt / "rng-1.pt")  # as written by two processes
    with pytest.raises(ValueError, match="written by 2 processes; resume it with the same number"):
        fit(_recipe(), speech, out, resume=True, progress=False)
    (ckpt / "rng-1.pt").unlink()
    state = torch.load(ckpt / "state.pt", weights_only=True)
    torch.save({**state, "fsdp": True}, ckpt / "state.pt")
    with pytest.raises(ValueError, match="written with FSDP"):
        fit(_recipe(), speech, out, resume=True, progress=False)
    torch.save({**state, "modules": {"generator": state["modules"]["model"]}}, ckpt / "state.pt")
    with pytest.raises(ValueError, match=r"holds modules \['generator'\].*builds \['model'\]"):
        fit(_recipe(), speech, out, resume=True, progress=False)
    # a broken pointer falls back to the newest complete checkpoint folder
    torch.save(state, ckpt / "state.pt")
    (out / "checkpoints" / "latest.json").write_text("{not json")
    assert latest_checkpoint(out) == ckpt
    assert fit(_recipe(), speech, out, resume=True, progress=False)["step"] == 12
