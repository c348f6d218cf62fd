"""TFM-Tokenizer's masked time-frequency recipe runs on the shared training loop (tiny model, real TUEV samples)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from eeg.tfm import TFMConfig
from eeg.tfm.recipe import TFMRecipe, TFMRecipeConfig, time_frequency_mask
from zoo.train import TrainConfig, fit, get_recipe

SMALL = dict(emb_size=16, codebook_size=32, freq_depth=1, temporal_depth=1, decoder_depth=1, num_heads=2)


def test_mask_matches_the_original_rule():
    g = torch.Generator().manual_seed(0)
    keep = time_frequency_mask(100, 9, 5, 0.5, 1, 0.5, g)
    assert keep.shape == (100, 9)
    groups = keep.reshape(20, 5, 9)
    assert (groups == groups[:, :1]).all()  # whole groups of 5 bins
    freq_kept = groups[:, 0].any(1)
    time_kept = keep.any(0)
    assert int((~freq_kept).sum()) == 10 and int((~time_kept).sum()) == 4  # int(20 * .5), int(9 * .5)
    assert torch.equal(keep, freq_kept.repeat_interleave(5)[:, None] & time_kept[None])


def test_recipe_config_checks_and_schedule():
    assert get_recipe("tfm") is TFMRecipe
    with pytest.raises(ValueError, match="window_seconds"):
        TFMRecipeConfig(model=TFMConfig(**SMALL), window_seconds=0.5)
    with pytest.raises(ValueError, match="freq_bin_size"):
        TFMRecipeConfig(model=TFMConfig(**SMALL), freq_bin_size=3)
    r = TFMRecipe(TFMRecipeConfig(model=TFMConfig(**SMALL)), TrainConfig(max_steps=100))
    model = r.build_model()
    opt = r.build_optimizers({"model": model})
    sched = r.build_schedulers(opt)["model"]
    lrs = []
    for _ in range(100):
        lrs.append(opt["model"].param_groups[0]["lr"])
        opt["model"].step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[10] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(5e-3, rel=1e-2)


def test_recipe_trains_on_real_eeg(shared_data, tmp_path):
    src = shared_data("eeg")
    data = tmp_path / "data"
    data.mkdir()
    for i in range(6):
        shutil.copyfile(src / f"tuev_tfm_sample_{i}.npz", data / f"s{i}.npz")
    recipe = TFMRecipe(TFMRecipeConfig(model=TFMConfig(**SMALL), window_seconds=5.0),
                       TrainConfig(max_steps=2, batch_size=2, log_every=1, eval_every=2, checkpoint_every=2,
                                   holdout_files=1, seed=1, utilization_warning=0.0))
    out = tmp_path / "run"
    fit(recipe, data, out, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r.get("split") == "train"]
    assert train_rows and all(torch.isfinite(torch.tensor(r["loss"])) for r in train_rows)
    assert {"recon_loss", "vq_loss", "utilization"} <= set(train_rows[-1])
    assert any(r.get("split") != "train" and "recon_loss" in r for r in rows)
