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
    initial = recipe.build_model().state_dict()  # seeded: the run's initial weights
    out = tmp_path / "run"
    fit(recipe, data, out, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r.get("split") == "train"]
    assert len(train_rows) == 2 and all(r["recon_loss"] > 0 and r["loss"] == r["recon_loss"] for r in train_rows)
    assert all(abs(r["vq_loss"]) < 10 for r in train_rows)
    # the ids of both views, 2 windows x 9 frames, over 32 codes: utilisation and perplexity of the window
    for r in train_rows:
        assert r["codebook_ids"] == 2 * 2 * 9
        assert 1 / 32 <= r["utilization"] <= 1 and 1 <= r["perplexity"] <= 32 * r["utilization"] + 1e-6
    evals = [r for r in rows if r.get("split") == "eval"]
    assert [e["step"] for e in evals] == [0, 2] and all(e["recon_loss"] > 0 for e in evals)
    # the network trained by gradient, the codebook by EMA alone
    final = torch.load(out / "checkpoints" / "step-00000002" / "state.pt", weights_only=True)["modules"]["model"]
    assert not torch.equal(final["decoder_head.0.weight"], initial["decoder_head.0.weight"])
    assert not torch.equal(final["quantizer.codebook.embed"], initial["quantizer.codebook.embed"])
    assert not torch.equal(final["quantizer.codebook.cluster_size"], initial["quantizer.codebook.cluster_size"])


def test_original_init_starts_the_codebook_as_the_original():
    from eeg.tfm.recipe import original_codebook_init

    with pytest.raises(ValueError, match="original_init"):
        TFMRecipeConfig(model=TFMConfig(**SMALL), original_init="yes")
    k = SMALL["codebook_size"]
    default = TFMRecipe(TFMRecipeConfig(model=TFMConfig(**SMALL)), TrainConfig(max_steps=1)).build_model()
    recipe = TFMRecipe(TFMRecipeConfig(model=TFMConfig(**SMALL), original_init=True), TrainConfig(max_steps=1))
    model = recipe.build_model()
    cb = model.quantizer.codebook
    embed = cb.embed[0].clone()
    assert embed.abs().max() <= 1 / k and embed.abs().max() > 0.5 / k  # uniform in [-1/K, 1/K]
    assert torch.equal(cb.cluster_size, torch.zeros(1, k)) and torch.equal(cb.embed_avg[0], embed)
    assert bool(cb.initted) and any("original's" in n for n in recipe.notes)
    # the shared VQ's own start differs (Kaiming-uniform rows, cluster sizes of one)
    assert default.quantizer.codebook.embed.abs().max() > 2 / k
    assert torch.equal(default.quantizer.codebook.cluster_size, torch.ones(1, k))
    # the quirk: one EMA update divides an unused code by a cluster size of ~eps, so its row jumps far out
    model.train()
    z = torch.nn.functional.normalize(torch.randn(1, 4, model.config.emb_size), dim=-1)
    ids = model.quantizer(z).ids.reshape(-1)
    unused = [i for i in range(k) if i not in set(ids.tolist())]
    assert unused and cb.embed[0, unused].norm(dim=-1).min() > 1e3 * embed[unused].norm(dim=-1).max()
    with pytest.raises(TypeError, match="TFMTokenizer"):
        original_codebook_init(torch.nn.Linear(2, 2))
