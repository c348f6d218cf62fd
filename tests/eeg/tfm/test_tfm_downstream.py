"""TFM-Encoder stages after token learning: masked-token-prediction pretraining (tfm-mtp) and classification
fine-tuning (tfm-classifier) on real TUEV windows, with a small frozen tokenizer."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import zoo
from eeg.tfm import TFMClassifier, TFMClassifierConfig, TFMConfig, TFMTokenizer
from eeg.tfm.downstream import (TFMClassifierRecipe, TFMClassifierRecipeConfig, TFMMTPRecipe, TFMMTPRecipeConfig,
                                focal_loss, masked_token_loss, schedule_factor)
from zoo.train import TrainConfig, fit, get_recipe, latest_checkpoint

SMALL = dict(emb_size=16, codebook_size=32, freq_depth=1, temporal_depth=1, decoder_depth=1, num_heads=2)
ENCODER = dict(emb_size=16, codebook_size=32, num_heads=2, depth=1)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A small TFM tokenizer trained for a few steps on the TUEV samples (frozen in both stages)."""
    from tests.conftest import SHARED

    src = SHARED / "data" / "eeg"
    if not (src / "tuev_tfm_sample_0.npz").is_file():
        pytest.skip(f"TUEV samples not found under {src}")
    root = tmp_path_factory.mktemp("tfm_downstream")
    data = root / "tok_data"
    data.mkdir()
    for i in range(6):
        shutil.copyfile(src / f"tuev_tfm_sample_{i}.npz", data / f"s{i}.npz")
    from eeg.tfm.recipe import TFMRecipe, TFMRecipeConfig

    out = root / "tokenizer"
    fit(TFMRecipe(TFMRecipeConfig(model=TFMConfig(**SMALL), window_seconds=5.0),
                  TrainConfig(max_steps=20, batch_size=3, log_every=10, eval_every=20, checkpoint_every=20,
                              holdout_files=0, seed=0, utilization_warning=0.0)), data, out, progress=False)
    return out


@pytest.fixture(scope="module")
def windows(tokenizer_dir):
    """Labelled windows: train on 4 files (2 PLED, 2 GPED), hold out one of each class."""
    from tests.conftest import SHARED

    src = SHARED / "data" / "eeg"
    root = tokenizer_dir.parent
    train, held = root / "train", root / "held"
    train.mkdir(exist_ok=True)
    held.mkdir(exist_ok=True)
    for i in range(6):
        shutil.copyfile(src / f"tuev_tfm_sample_{i}.npz", (held if i in (2, 5) else train) / f"s{i}.npz")
    return train, held


def _train(**kw):
    base = dict(max_steps=40, batch_size=4, log_every=10, eval_every=40, checkpoint_every=40, seed=0,
                utilization_warning=0.0, eval_batches=1)
    base.update(kw)
    return TrainConfig(**base)


def _rows(out, split):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["split"] == split]


def test_configs_validate(tokenizer_dir):
    assert get_recipe("tfm-mtp") is TFMMTPRecipe and get_recipe("tfm-classifier") is TFMClassifierRecipe
    enc = TFMClassifierConfig(**ENCODER, n_classes=32)
    with pytest.raises(ValueError, match="tokenizer"):
        TFMMTPRecipeConfig(model=enc)
    with pytest.raises(ValueError, match="n_classes must equal"):
        TFMMTPRecipeConfig(tokenizer="x", model=TFMClassifierConfig(**ENCODER, n_classes=6))
    with pytest.raises(ValueError, match="mask_prob"):
        TFMMTPRecipeConfig(tokenizer="x", model=enc, mask_prob=1.0)
    with pytest.raises(ValueError, match="binary"):
        TFMClassifierRecipeConfig(tokenizer="x", model=TFMClassifierConfig(**ENCODER, n_classes=1))
    with pytest.raises(ValueError, match="one-output"):
        TFMClassifierRecipeConfig(tokenizer="x", model=TFMClassifierConfig(**ENCODER, n_classes=6), loss="focal")
    with pytest.raises(ValueError, match="loss must be one of"):
        TFMClassifierRecipeConfig(tokenizer="x", model=TFMClassifierConfig(**ENCODER, n_classes=6), loss="hinge")
    # the tokenizer's codebook must match the encoder's embedding
    r = TFMMTPRecipe(TFMMTPRecipeConfig(tokenizer=str(tokenizer_dir), model=TFMClassifierConfig(
        **{**ENCODER, "codebook_size": 64}, n_classes=64)), _train())
    with pytest.raises(ValueError, match="32 codes but model.codebook_size is 64"):
        r.build_model()
    # the schedule: linear warm-up from 0, then a cosine from lr to final_lr
    assert schedule_factor(0, 100, 0.1, 1e-3, 5e-3) == 0.0
    assert schedule_factor(5, 100, 0.1, 1e-3, 5e-3) == pytest.approx(0.5)
    assert schedule_factor(10, 100, 0.1, 1e-3, 5e-3) == pytest.approx(1.0)
    assert schedule_factor(100, 100, 0.1, 1e-3, 5e-3) == pytest.approx(5.0)


def test_masked_token_loss_and_focal_loss():
    torch.manual_seed(0)
    model = TFMClassifier(TFMClassifierConfig(**ENCODER, n_classes=32)).eval()
    ids = torch.randint(0, 32, (2, 2, 5))
    masked = torch.rand(2, 2, 5) < 0.5
    out = masked_token_loss(model, ids, masked)
    # by hand: CE on the masked positions of each view, summed
    flat = ids.reshape(2, -1)
    want = 0.0
    for m in (masked, ~masked):
        logits = model(ids.masked_fill(m, model.config.mask_id), per_token=True)
        want += float(torch.nn.functional.cross_entropy(logits[m.reshape(2, -1)], flat[m.reshape(2, -1)]))
    assert float(out["loss"]) == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="bool tensor"):
        masked_token_loss(model, ids, masked.long())
    z, y = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([1, 0, 0])
    p = torch.sigmoid(z)
    ref = (-0.8 * (1 - p) ** 0.7 * y * p.log() - 0.2 * p ** 0.7 * (1 - y) * (1 - p).log()).mean()
    assert float(focal_loss(z, y)) == pytest.approx(float(ref), rel=1e-6)
    assert torch.isfinite(focal_loss(torch.tensor([200.0, -200.0]), torch.tensor([0, 1])))


@pytest.fixture(scope="module")
def mtp_run(tokenizer_dir, windows):
    train, held = windows
    cfg = TFMMTPRecipeConfig(tokenizer=str(tokenizer_dir), model=TFMClassifierConfig(**ENCODER, n_classes=32),
                             window_seconds=2.0, lr=3e-3, final_lr=3e-3, warmup_fraction=0.05)
    out = tokenizer_dir.parent / "mtp"
    fit(TFMMTPRecipe(cfg, _train(max_steps=60, eval_every=60, checkpoint_every=60)), train, out, eval_data=held,
        progress=False)
    return out


def test_mtp_lowers_heldout_loss_and_starts_from_the_codebook(mtp_run, tokenizer_dir):
    evals = _rows(mtp_run, "eval")
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 60
    assert evals[-1]["mtp_loss"] < 0.8 * evals[0]["mtp_loss"], evals
    enc = zoo.from_pretrained(mtp_run)
    assert isinstance(enc, TFMClassifier) and enc.config.n_classes == 32
    # embedding rows started as the tokenizer's codebook: after training they are still close to it
    init = TFMMTPRecipe(TFMMTPRecipeConfig(tokenizer=str(tokenizer_dir), model=enc.config), _train()).build_model()
    codes = zoo.from_pretrained(tokenizer_dir).quantizer.embed
    assert torch.equal(init.token_embedding.weight[:32], codes) and not init.token_embedding.weight[32].any()


def test_classifier_finetunes_from_mtp(mtp_run, tokenizer_dir, windows, tmp_path):
    train, held = windows
    cfg = TFMClassifierRecipeConfig(tokenizer=str(tokenizer_dir), model=TFMClassifierConfig(**ENCODER, n_classes=6),
                                    window_seconds=2.0, lr=3e-3, final_lr=3e-3, warmup_fraction=0.05)
    out = tmp_path / "cls"
    fit(TFMClassifierRecipe(cfg, _train(max_steps=40)), train, out, eval_data=train, init=str(mtp_run),
        progress=False)
    evals = _rows(out, "eval")
    # fits its labelled training windows (2 classes of 6 outputs: chance CE ~ log 6)
    assert evals[0]["ce_loss"] > 1.2 and evals[-1]["ce_loss"] < 0.6 * evals[0]["ce_loss"], evals
    assert {"balanced_accuracy", "cohen_kappa", "accuracy", "windows"} <= set(evals[-1])
    info = json.loads((out / "training.json").read_text())
    assert any("every other weight from --init" in n for n in info["notes"])
    model = zoo.from_pretrained(out)
    mtp = zoo.from_pretrained(mtp_run)
    # init copied everything but the head (the head has 6 outputs here, 32 in the MTP model)
    fresh = TFMClassifierRecipe(cfg, _train()).build_model()
    TFMClassifierRecipe(cfg, _train()).warm_start(fresh, mtp)
    assert torch.equal(fresh.cls_token, mtp.cls_token) and fresh.head.weight.shape == (6, 16)
    # the fine-tuned model classifies through the public API
    tok = zoo.from_pretrained(tokenizer_dir)
    x = torch.from_numpy(np.load(held / "s2.npz")["signal"])[None]
    assert model.classify(tok.encode(x)).shape == (1, 6)


def test_classifier_rejects_bad_init_and_counts_unlabelled_files(tokenizer_dir, windows, tmp_path):
    train, _ = windows
    cfg = TFMClassifierRecipeConfig(tokenizer=str(tokenizer_dir), model=TFMClassifierConfig(**ENCODER, n_classes=6),
                                    window_seconds=2.0)
    with pytest.raises(TypeError, match="TFM-Encoder"):
        TFMClassifierRecipe(cfg, _train()).warm_start(TFMClassifier(cfg.model), zoo.from_pretrained(tokenizer_dir))
    bad = TFMClassifier(TFMClassifierConfig(**{**ENCODER, "emb_size": 32}, n_classes=6))
    with pytest.raises(ValueError, match="does not fit"):
        TFMClassifierRecipe(cfg, _train()).warm_start(TFMClassifier(cfg.model), bad)
    data = tmp_path / "data"
    shutil.copytree(train, data)
    d = dict(np.load(data / "s0.npz"))
    del d["label"]
    np.savez(data / "s0.npz", **d)  # a window without its label: skipped and counted, never fatal
    out = tmp_path / "run"
    s = fit(TFMClassifierRecipe(cfg, _train(max_steps=2, batch_size=2, holdout_files=0, eval_every=2,
                                            checkpoint_every=2)), data, out, progress=False)
    assert s["skipped_files"] >= 1
    cfg2 = TFMClassifierRecipeConfig(tokenizer=str(tokenizer_dir), model=TFMClassifierConfig(**ENCODER, n_classes=2),
                                     window_seconds=2.0)
    with pytest.raises(ValueError, match="labels must lie in 0..1"):  # GPED/PLED are labels 1 and 2
        fit(TFMClassifierRecipe(cfg2, _train(max_steps=2, batch_size=3, holdout_files=0, eval_every=2,
                                             checkpoint_every=2)), train, tmp_path / "run2", progress=False)


@pytest.mark.parametrize("recipe", ["tfm-mtp", "tfm-classifier"])
def test_kill_and_resume_equals_uninterrupted(recipe, tokenizer_dir, windows, tmp_path):
    from safetensors.torch import load_file

    train, _ = windows
    n = 32 if recipe == "tfm-mtp" else 6
    cls, ccls = ((TFMMTPRecipe, TFMMTPRecipeConfig) if recipe == "tfm-mtp"
                 else (TFMClassifierRecipe, TFMClassifierRecipeConfig))

    def make():
        return cls(ccls(tokenizer=str(tokenizer_dir), model=TFMClassifierConfig(**ENCODER, n_classes=n),
                        window_seconds=2.0), _train(max_steps=4, batch_size=2, holdout_files=0, eval_every=4,
                                                    checkpoint_every=2))

    fit(make(), train, tmp_path / "full", progress=False)
    s = fit(make(), train, tmp_path / "part", progress=False, stop_after=3)
    assert s["interrupted"] and latest_checkpoint(tmp_path / "part").name == "step-00000003"
    fit(make(), train, tmp_path / "part", resume=True, progress=False)
    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(tmp_path / "part" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
