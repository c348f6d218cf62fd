"""CDT / cdt-fsq training recipes on the shared loop: tiny models, real video clips (../shared/data/video)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from video.cdt import CDTConfig, CDTFSQConfig, CDTFSQTokenizer, CDTTokenizer
from video.cdt.recipe import (CDTFSQRecipe, CDTFSQRecipeConfig, CDTRecipe, CDTRecipeConfig, diffusion_inputs,
                              load_lpips)
from zoo.metrics.image import lpips_backbone_path
from zoo.train import DataConfig, FolderDataset, TrainConfig, fit, get_recipe
from zoo.train.registry import load_recipe_config

TINY = dict(context_dim=4, latent_dim=4, out_channels=4, unet_dim=4)

# small 3D convolutions: a second intra-op thread only adds contention on a shared 2-core machine (measured: the
# 16-step cdt run took 154 s with two threads on a loaded machine, ~10 s with one)
pytestmark = pytest.mark.usefixtures("one_thread")


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
    for bad, match in ((dict(lr=0), r"recipe.lr must be a finite number > 0"),
                       (dict(lr=float("nan")), r"recipe.lr must be a finite number > 0"),
                       (dict(lr=float("inf")), r"recipe.lr must be a finite number > 0"),
                       (dict(kl_weight=float("inf")), r"recipe.kl_weight must be a finite number >= 0"),
                       (dict(kl_weight=-1e-6), r"recipe.kl_weight must be a finite number >= 0"),
                       (dict(weight_decay=float("nan")), r"recipe.weight_decay must be a finite number >= 0"),
                       (dict(lpips_weight=float("nan")), r"recipe.lpips_weight must be a finite number in \[0, 1\]"),
                       (dict(lpips_weights="/no/such/vgg16.pth"), r"recipe.lpips_weights /no/such/vgg16.pth: no such")):
        with pytest.raises(ValueError, match=match):
            CDTRecipeConfig(model=CDTConfig.variant("base", **TINY), **bad)
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
    assert any("LPIPS term disabled" in n and "lpips_weights" in n for n in r.notes) is (not have)
    assert any("LPIPS term on" in n for n in r.notes) is have
    r0 = CDTRecipe(CDTRecipeConfig(model=CDTConfig.variant("base", **TINY), lpips_weight=0.0), TrainConfig(max_steps=1))
    assert not r0.lpips_active and [n for n in r0.notes if "LPIPS" in n] == [
        "LPIPS term off (lpips_weight 0): the loss is the diffusion MSE + KL"]


def _squeezenet_weights(folder, seed):
    """A torchvision squeezenet1_1 state dict with seeded random weights, written as the user's LPIPS backbone."""
    import torchvision

    torch.manual_seed(seed)
    state = torchvision.models.squeezenet1_1().state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "squeezenet1_1.pth")
    return folder / "squeezenet1_1.pth", state


def test_lpips_term_with_user_weights(folders, tmp_path):
    """lpips_weights: the LPIPS term runs a real (small: squeezenet) backbone with the weights the file holds, adds
    w * LPIPS to the loss, sends gradients into the U-Net, and is logged and recorded by the loop."""
    path, state = _squeezenet_weights(tmp_path / "a", 0)
    cfg = CDTRecipeConfig(model=CDTConfig.variant("base", **TINY), frames=5, image_size=32, lr=1e-3,
                          lpips_net="squeeze", lpips_weights=str(path), lpips_weight=0.5)
    recipe = CDTRecipe(cfg, TrainConfig(max_steps=2, batch_size=2, log_every=1, eval_every=2, checkpoint_every=2,
                                        seed=0, utilization_warning=0.0))
    assert recipe.lpips_active and any("LPIPS term on" in n and str(path) in n for n in recipe.notes)
    lp = recipe._lpips_model("cpu")
    assert torch.equal(lp.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(lp.net.slice7[0].expand3x3.weight, state["features.12.expand3x3.weight"])
    assert not any(p.requires_grad for p in lp.parameters())

    v = _clip(folders[1] / "bikes.npz", frames=5) * 2 - 1
    x0 = torch.cat([v, v.flip(-1)])  # [2, 3, 5, 32, 32] in [-1, 1]
    frames = x0[:, :, 0]
    assert float(lp(frames, frames).abs().max()) < 1e-6 and float(lp(frames, frames.flip(0)).min()) > 0
    core = recipe.build_model()
    out = recipe.losses(core, x0, generator=torch.Generator().manual_seed(0), sample=False)
    assert float(out["lpips"].detach()) > 0
    assert torch.allclose(out["loss"], 0.5 * out["mse"] + 0.5 * out["lpips"] + 1e-6 * out["kl"])
    unet = [p for p in core.net.unet.parameters()]
    grads = torch.autograd.grad(out["lpips"], unet, allow_unused=True, retain_graph=True)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    # other backbone weights give another LPIPS value: the file's weights are the ones used
    other, _ = _squeezenet_weights(tmp_path / "b", 1)
    lp_other = load_lpips("squeeze", other)
    assert not torch.allclose(lp(frames, frames.flip(0)), lp_other(frames, frames.flip(0)))
    # a whole lpips.LPIPS state dict (heads included) loads as well; a backbone of another net is refused
    torch.save(lp.state_dict(), tmp_path / "lpips_squeeze.pth")
    again = load_lpips("squeeze", tmp_path / "lpips_squeeze.pth")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), lp.state_dict().values()))
    with pytest.raises(ValueError, match="not a torchvision alex backbone state dict"):
        load_lpips("alex", path)

    train, held = folders
    run = tmp_path / "run"
    fit(recipe, train, run, eval_data=held, progress=False)
    assert all(r["lpips"] > 0 for r in _rows(run) if r.get("split") == "train")
    info = json.loads((run / "training.json").read_text())
    assert any("LPIPS term on" in n for n in info["notes"])


def test_warm_start_refuses_a_checkpoint_of_another_configuration():
    """--init with a CDT whose non-weight fields (sampling, chunking, padding) differ from recipe.model is refused
    with the fields named; the same configuration warm-starts (cdt-fsq: projections initialised as from_cdt)."""
    torch.manual_seed(0)
    cdt = CDTTokenizer(CDTConfig.variant("base", **TINY))
    train = TrainConfig(max_steps=1)
    for field, value in (("sample_steps", 4), ("pad_mode", "replicate"), ("sample_gamma", 1.0)):
        model_cfg = CDTFSQConfig.from_cdt_config(CDTConfig.variant("base", **TINY, **{field: value}), [5, 5, 5])
        recipe = CDTFSQRecipe(CDTFSQRecipeConfig(model=model_cfg), train)
        with pytest.raises(ValueError, match=f"differs from recipe.model in {field} \\(checkpoint "):
            recipe.warm_start(recipe.build_model(), cdt)
        plain = CDTRecipe(CDTRecipeConfig(model=CDTConfig.variant("base", **TINY, **{field: value})), train)
        with pytest.raises(ValueError, match=f"in {field} "):
            plain.warm_start(plain.build_model(), cdt)
    recipe = CDTFSQRecipe(CDTFSQRecipeConfig(model=CDTFSQConfig.from_cdt_config(cdt.config, [5, 5, 5])), train)
    model = recipe.build_model()
    recipe.warm_start(model, cdt)
    assert all(torch.equal(a, b) for a, b in zip(model.net.state_dict().values(), cdt.net.state_dict().values()))
    other = CDTFSQTokenizer(CDTFSQConfig.from_cdt_config(cdt.config, [8, 5, 5]))
    with pytest.raises(ValueError, match="levels"):
        recipe.warm_start(recipe.build_model(), other)


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


def test_cdt_fsq_fine_tune_from_the_converted_release_format_and_token_round_trip(folders, parity, tmp_path):
    """Warm-start cdt-fsq (--init) from a CDT checkpoint in the release's format (the parity fixture tiny_base,
    converted by zoo.load_official), fine-tune without KL, then encode -> decode -> encode."""
    import zoo

    fx = parity("cdt")
    cdt = zoo.load_official("cdt", fx / "cdt_tiny_base.ckpt", fx / "cdt_tiny_base.config.json")
    train, held = folders
    cfg = CDTFSQRecipeConfig(model=CDTFSQConfig.from_cdt_config(cdt.config, levels=[5, 5, 5]), frames=5,
                             image_size=32, lr=3e-3, lpips_weight=0.0)
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
    kept, distinct = [], []
    for path in (held / "bikes.npz", train / "bbb0.npz"):
        v = _clip(path)  # 9 frames of 32x32 -> a 3x4x4 latent grid: 48 ids per clip
        ids = tok.encode(v).ids
        assert ids.shape == (1, 3, 4, 4)
        y = tok.decode(ids, generator=torch.Generator().manual_seed(0), clamp=True)
        kept.append(float((tok.encode(y).ids == ids).float().mean()))
        distinct.append(int(ids.unique().numel()))
        print("cdt-fsq round trip:", path.name, "distinct ids", distinct[-1], "kept", kept[-1])
    # a collapsed quantizer (one id everywhere) would "keep" every id: require several distinct ids per clip
    assert min(distinct) > 1, distinct
    # measured (docs/models/cdt.md): bikes 40/48 ids kept (0.833, 8 distinct ids), Big Buck Bunny 38/48 (0.792,
    # 10 distinct ids); 40 steps instead of 20 keep 0.917 on both but with 3 and 5 distinct ids
    assert min(kept) >= 0.7, kept
