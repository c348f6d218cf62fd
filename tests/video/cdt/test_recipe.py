"""CDT / cdt-fsq training recipes on the shared loop: tiny models, real video clips (../shared/data/video)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from video.cdt import CDTConfig, CDTFSQConfig, CDTFSQTokenizer, CDTTokenizer
from video.cdt.recipe import CDTFSQRecipe, CDTFSQRecipeConfig, CDTRecipe, CDTRecipeConfig, diffusion_inputs
from zoo.metrics.image import lpips_backbone_path
from zoo.train import DataConfig, FolderDataset, TrainConfig, fit, get_recipe
from zoo.train.registry import load_recipe_config

TINY = dict(context_dim=4, latent_dim=4, out_channels=4, unet_dim=4)


@pytest.fixture
def folders(shared_data, tmp_path):
    """Training: four copies of the Big Buck Bunny clip (random crops differ); held out: the bikes clip."""
    src = shared_data("video")
    train, held = tmp_path / "train", tmp_path / "held"
    train.mkdir()
    held.mkdir()
    for i in range(4):
        shutil.copyfile(src / "bigbuckbunny_33f_256.npz", train / f"bbb{i}.npz")
    shutil.copyfile(src / "bikes_17f_128.npz", held / "bikes.npz")
    return train, held


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_registered_and_config_checks():
    assert get_recipe("cdt") is CDTRecipe and get_recipe("cdt-fsq") is CDTFSQRecipe
    with pytest.raises(ValueError, match="frames must be 1 \\+ 4k"):
        CDTRecipeConfig(model=CDTConfig.variant("base", **TINY), frames=8)
    with pytest.raises(ValueError, match="image_size"):
        CDTRecipeConfig(model=CDTConfig.variant("base", **TINY), image_size=30)
    with pytest.raises(ValueError, match="lpips_weight"):
        CDTRecipeConfig(model=CDTConfig.variant("base", **TINY), lpips_weight=1.5)
    with pytest.raises(ValueError, match="kl_weight must be 0"):
        CDTFSQRecipeConfig(model=CDTFSQConfig.variant("base", **TINY), kl_weight=1e-6)
    cfg = CDTRecipeConfig.from_dict(CDTRecipeConfig(model=CDTConfig.variant("small", **TINY)).to_dict())
    assert cfg.model.pad_mode == "replicate"
    # the training YAML's sections, as `tokenzoo train cdt-fsq --config x.yaml` reads them
    r = load_recipe_config("cdt-fsq", {"train": {"max_steps": 3},
                                       "recipe": {"frames": 5, "image_size": 32, "model": {**TINY, "levels": [5, 5, 5]}}})
    assert isinstance(r, CDTFSQRecipe) and isinstance(r.config.model, CDTFSQConfig)
    assert r.config.model.levels == [5, 5, 5] and r.config.kl_weight == 0 and r.train.max_steps == 3


def test_lpips_only_with_weights_else_noted():
    r = CDTRecipe(CDTRecipeConfig(model=CDTConfig.variant("base", **TINY)), TrainConfig(max_steps=1))
    have = lpips_backbone_path("vgg").is_file()
    assert r.lpips_active is have
    assert any("LPIPS term disabled" in n for n in r.notes) is (not have)
    r0 = CDTRecipe(CDTRecipeConfig(model=CDTConfig.variant("base", **TINY), lpips_weight=0.0), TrainConfig(max_steps=1))
    assert not r0.lpips_active and not any("LPIPS" in n for n in r0.notes)


def test_diffusion_inputs_follow_the_cosine_schedule():
    from video.cdt.model import cosine_alphas_cumprod

    ac = torch.tensor(cosine_alphas_cumprod(8192), dtype=torch.float32)
    x0 = torch.rand(3, 3, 5, 8, 8) * 2 - 1
    g = torch.Generator().manual_seed(0)
    x_t, t_in, t = diffusion_inputs(x0, ac, g)
    g = torch.Generator().manual_seed(0)
    t2 = torch.randint(0, 8192, (3,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    a = ac[t2].reshape(3, 1, 1, 1, 1)
    assert torch.equal(t, t2) and torch.equal(t_in, t2.float().reshape(3, 1) / 8192)
    assert torch.allclose(x_t, a.sqrt() * x0 + (1 - a).sqrt() * eps)


def test_video_clips_from_npz(folders):
    train, _ = folders
    ds = FolderDataset(train, DataConfig("video", image_size=32, frames=5, seed=0))
    x = ds[0]["x"]
    assert x.shape == (3, 5, 32, 32) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert torch.equal(ds[0]["x"], x)  # seeded by (seed, epoch, index)
    with pytest.raises(ValueError, match="frames and image_size"):
        FolderDataset(train, DataConfig("video", image_size=32))
    too_long = FolderDataset(train, DataConfig("video", image_size=32, frames=41))
    assert too_long[0] is None  # a clip shorter than `frames` is skipped, not fatal


def test_cdt_training_lowers_held_out_loss(folders, tmp_path):
    train, held = folders
    recipe = CDTRecipe(CDTRecipeConfig(model=CDTConfig.variant("base", **TINY), frames=5, image_size=32, lr=1e-3),
                       TrainConfig(max_steps=16, batch_size=2, log_every=4, eval_every=16, checkpoint_every=16,
                                   seed=0, utilization_warning=0.0))
    out = tmp_path / "run"
    fit(recipe, train, out, eval_data=held, progress=False)
    rows = _rows(out)
    evals = [r for r in rows if r.get("split") == "eval"]
    first, last = evals[0], evals[-1]
    assert first["step"] == 0 and last["step"] == 16
    assert last["recon_loss"] < 0.6 * first["recon_loss"], (first, last)
    train_rows = [r for r in rows if r.get("split") == "train"]
    assert all(k in train_rows[-1] for k in ("loss", "recon_loss", "kl"))
    assert isinstance(CDTTokenizer.from_pretrained(out), CDTTokenizer)


def _clip(path, frames=9, size=32):
    v = torch.from_numpy(np.load(path)["frames"][:frames]).permute(3, 0, 1, 2).float()[None] / 255
    return torch.nn.functional.interpolate(v, size=(frames, size, size), mode="area")


@pytest.mark.slow  # ~35 s on an idle 2-core machine, over a minute when it is shared
def test_cdt_fsq_fine_tune_from_cdt_and_token_round_trip(folders, tmp_path):
    """Warm-start cdt-fsq from a continuous CDT (--init), fine-tune without KL, then encode -> decode -> encode."""
    train, held = folders
    torch.manual_seed(0)
    cdt = CDTTokenizer(CDTConfig.variant("base", **TINY)).eval()
    cfg = CDTFSQRecipeConfig(model=CDTFSQConfig.from_cdt_config(cdt.config, levels=[5, 5, 5]), frames=5,
                             image_size=32, lr=3e-3)
    recipe = CDTFSQRecipe(cfg, TrainConfig(max_steps=20, batch_size=2, log_every=5, eval_every=20,
                                           checkpoint_every=20, seed=0, utilization_warning=0.0))
    out = tmp_path / "run"
    fit(recipe, train, out, init=cdt, eval_data=held, progress=False)
    rows = _rows(out)
    evals = [r for r in rows if r.get("split") == "eval"]
    assert evals[-1]["recon_loss"] < 0.6 * evals[0]["recon_loss"], (evals[0], evals[-1])
    assert "utilization" in [r for r in rows if r.get("split") == "train"][-1]
    assert any("no KL" in n for n in recipe.notes) and any("warm-started" in n for n in recipe.notes)

    tok = CDTFSQTokenizer.from_pretrained(out)
    kept = []
    for path in (held / "bikes.npz", train / "bbb0.npz"):
        v = _clip(path)
        ids = tok.encode(v).ids
        y = tok.decode(ids, generator=torch.Generator().manual_seed(0), clamp=True)
        kept.append(float((tok.encode(y).ids == ids).float().mean()))
        print("cdt-fsq round trip:", path.name, "distinct ids", int(ids.unique().numel()), "kept", kept[-1])
    # measured 1.0 on both clips (tiny model, 20 steps, levels [5, 5, 5], 16 ids per clip); see docs/models/cdt.md
    assert min(kept) >= 0.7, kept
