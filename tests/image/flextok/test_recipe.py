"""FlexTok's training recipe on the shared loop: tiny model, real 32 px images from the shared corpus."""

from __future__ import annotations

import json
import math

import pytest
import torch

from image.flextok import FlexTok, FlexTokConfig
from image.flextok.recipe import (FlexTokRecipe, FlexTokRecipeConfig, flow_matching_loss, sample_keep_k)
from zoo.train import TrainConfig, fit, get_recipe, load_recipe_config

from .conftest import TINY_VAE, tiny_official

N_REG = 8
SEED = 0
STEPS = 300
LR = 1e-3


def tiny_recipe_model() -> FlexTokConfig:
    # 16 px -> f2 VAE -> 8x8x4 latents -> 2x2 patches -> 4x4 grid; 8 registers, FSQ [8,8,8,5,5,5]. The scaling
    # factor 4 brings the random tiny VAE's latents (std ~0.2 on the corpus at 0.8) to about unit std, the rule
    # latent-diffusion VAEs' scaling factors follow; at std 0.2 the flow loss is all noise and tokens barely matter
    return FlexTokConfig.from_official(tiny_official(posemb_max=(4, 4), n_registers=N_REG, scaling_factor=4.0),
                                       dict(TINY_VAE))


def test_config_and_keep_k():
    assert get_recipe("flextok") is FlexTokRecipe
    cfg = FlexTokRecipeConfig(model=tiny_recipe_model())
    assert cfg.model.image_size == 16 and cfg.null_prob == pytest.approx(0.2)
    again = FlexTokRecipeConfig.from_dict(cfg.to_dict())
    assert again.model.to_dict() == cfg.model.to_dict()
    with pytest.raises(ValueError, match="keep_k_mode"):
        FlexTokRecipeConfig(model=tiny_recipe_model(), keep_k_mode="linear")
    with pytest.raises(ValueError, match="cfg_dropout_prob"):
        FlexTokRecipeConfig(model=tiny_recipe_model(), cfg_dropout_prob=1.5)
    with pytest.raises(ValueError, match="lr"):
        FlexTokRecipeConfig(model=tiny_recipe_model(), lr=0)
    for bad in (2e-3, -1e-5, "1e-5"):  # above lr, negative, not a number
        with pytest.raises(ValueError, match="final_lr"):
            FlexTokRecipeConfig(model=tiny_recipe_model(), lr=1e-3, final_lr=bad)
    g = torch.Generator().manual_seed(0)
    k = sample_keep_k(256, 4000, "uniform", g)
    assert int(k.min()) == 1 and int(k.max()) == 256 and len(torch.unique(k)) > 200
    k = sample_keep_k(256, 400, "pow2", g)
    assert set(k.tolist()) == {1, 2, 4, 8, 16, 32, 64, 128, 256}
    assert set(sample_keep_k(6, 400, "pow2", g).tolist()) == {1, 2, 4, 6}
    with pytest.raises(ValueError, match="mode"):
        sample_keep_k(8, 2, "nope")


def test_loss_reaches_encoder_and_decoder_not_vae():
    torch.manual_seed(0)
    model = FlexTok(tiny_recipe_model()).train()
    model.vae.requires_grad_(False)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    g = torch.Generator().manual_seed(2)
    out = flow_matching_loss(model, images, torch.tensor([1, N_REG]), torch.tensor([False, True]), g)
    assert out["ids"].shape == (2, N_REG) and torch.isfinite(out["loss"])
    assert out["repa_feats"].shape == (2, 4, 4, 32)
    out["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None for n, g in grads.items() if n.startswith("vae."))
    # the encoder's output head is zero-initialised: its gradient must still flow through the FSQ's straight-through
    enc = [n for n in grads if n.startswith("encoder.") and grads[n] is not None and grads[n].abs().sum() > 0]
    dec = [n for n in grads if n.startswith("decoder.") and grads[n] is not None and grads[n].abs().sum() > 0]
    assert any("to_latents" in n for n in enc), enc
    assert any("nested_dropout" in n for n in dec) and any("latent_dropout" in n for n in dec)
    with pytest.raises(ValueError, match="images"):
        flow_matching_loss(model, images[:, :1], torch.tensor([1, 1]), torch.tensor([False, False]))


def _data(shared_data, tmp_path):
    """Real images of the shared corpus, downscaled once to 32 px (so the loader does not decode 256 px PNGs at
    every step); the last two (sorted) are held out."""
    from PIL import Image

    src = shared_data("image", "256")
    files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    train, held = tmp_path / "train", tmp_path / "held"
    train.mkdir()
    held.mkdir()
    for i, f in enumerate(files):
        with Image.open(f) as im:
            small = im.convert("RGB").resize((32, 32), Image.BICUBIC)
        small.save((held if i >= len(files) - 2 else train) / (f.stem + ".png"))
    return train, held


def _heldout(model, images, k, reps=8):
    """The flow loss on held-out latents, each image at `reps` noise levels spread over (0, 1) with fixed noise:
    how well the decoder reconstructs them from the first k tokens."""
    x = images.repeat_interleave(reps, dim=0)
    b = x.shape[0]
    g = torch.Generator().manual_seed(5)
    sig = (torch.arange(reps, dtype=torch.float32) + 0.5).repeat(images.shape[0]) / reps
    with torch.no_grad():
        return float(flow_matching_loss(model.eval(), x, torch.full((b,), k), torch.zeros(b, dtype=torch.bool), g,
                                        sig)["loss"])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One tiny training run through the YAML config and the shared loop (train 10 images, hold out 2)."""
    from tests.conftest import _shared_subdir

    root = _shared_subdir("data", "image", "256")  # skips with a message where ../shared is absent
    tmp = tmp_path_factory.mktemp("flextok_recipe")
    train, held = _data(lambda *parts: root, tmp)
    cfg = {"train": {"max_steps": STEPS, "batch_size": 4, "log_every": 10, "eval_every": STEPS // 2,
                     "checkpoint_every": STEPS, "seed": SEED, "utilization_warning": 0.0, "clip_grad_norm": 1.0,
                     "eval_batches": 1},
           "recipe": {"model": tiny_recipe_model().to_dict(), "lr": LR, "weight_decay": 0.0,
                      "keep_k_mode": "pow2", "cfg_dropout_prob": 0.1}}
    import yaml

    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    recipe = load_recipe_config("flextok", path)
    out = tmp / "run"
    torch.manual_seed(SEED)
    before = FlexTok(recipe.config.model)  # same seed as build_model -> the initial weights
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds contention on the shared 2-core machine
    try:
        fit(recipe, train, out, eval_data=held, progress=False)
    finally:
        torch.set_num_threads(threads)

    import zoo
    from zoo.train import DataConfig, FolderDataset

    ds = FolderDataset(held, DataConfig("image", image_size=16, random_flip=False))
    images = torch.stack([ds[i]["x"] for i in range(len(ds))]) * 2 - 1
    return {"out": out, "before": before, "trained": zoo.from_pretrained(str(out)), "images": images}


def test_training_lowers_heldout_loss_and_prefixes_decode(trained_run):
    out, before, trained, images = (trained_run[k] for k in ("out", "before", "trained", "images"))
    assert isinstance(trained, FlexTok)
    info = json.loads((out / "training.json").read_text())
    assert any("REPA off" in n for n in info["notes"]) and any("vae_weights" in n for n in info["notes"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if r.get("split") == "train"]) == STEPS // 10
    evals = [r["recon_loss"] for r in rows if "recon_loss" in r]
    assert len(evals) >= 2 and evals[-1] < 0.8 * evals[0], evals
    assert _heldout(trained, images, N_REG) < 0.8 * _heldout(before, images, N_REG)

    tokens = trained.encode(images)
    assert tokens.ids.shape == (images.shape[0], N_REG)
    b = images.shape[0]
    noise = torch.randn(b, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    full = trained.decode(tokens.ids, num_steps=8, guidance_scale=1.0, noise=noise)
    short = trained.decode(tokens.ids[:, :1], num_steps=8, guidance_scale=1.0, noise=noise)
    assert full.shape == short.shape == images.shape and torch.isfinite(full).all() and torch.isfinite(short).all()
    # a 1-token prefix masks every later register: the later ids do not change its decode, while with all
    # registers kept they do (whether the full sequence also reconstructs BETTER needs a trained VAE:
    # test_recipe_prefix.py)
    other = tokens.ids.clone()
    other[:, 1:] = (other[:, 1:] + 1 + torch.arange(N_REG - 1)) % trained.config.codebook_size
    with torch.no_grad():
        lat_full = trained.sample_latents(trained.token_codes(tokens.ids), torch.full((b,), N_REG), noise, 8, 1.0)
        lat_short = trained.sample_latents(trained.token_codes(other), torch.ones(b, dtype=torch.long), noise, 8, 1.0)
    assert torch.allclose(trained.decode_latents(lat_full[:1]), full[:1], atol=1e-4)
    assert torch.allclose(torch.cat([trained.decode_latents(lat_short[i:i + 1]) for i in range(b)]), short, atol=1e-4)
    full_other = trained.decode(other, num_steps=8, guidance_scale=1.0, noise=noise)
    assert (full_other - full).abs().max() > 1e-3


def test_repa_term_with_user_weights(tmp_path):
    from safetensors.torch import save_file
    from torchvision.models.vision_transformer import VisionTransformer

    arch = {"image_size": 16, "patch_size": 4, "num_layers": 1, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32}
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in VisionTransformer(**arch).state_dict().items()},
              str(tmp_path / "vit.safetensors"))
    cfg = FlexTokRecipeConfig(model=tiny_recipe_model(), repa_weights=str(tmp_path / "vit.safetensors"),
                              repa_arch=arch, repa_proj_dim=8)
    recipe = FlexTokRecipe(cfg, TrainConfig(max_steps=1))
    model = recipe.build_model()
    aux = recipe.build_aux_modules()
    assert any("REPA on" in n for n in recipe.notes) and set(aux) == {"repa_proj"}
    images01 = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out = flow_matching_loss(model, images01 * 2 - 1, torch.tensor([2, 8]), torch.tensor([False, False]),
                             torch.Generator().manual_seed(2))

    class Ctx:
        modules = {"model": model, **aux}

    repa = recipe._repa_loss(Ctx(), out["repa_feats"], images01)
    assert repa.ndim == 0 and -1 <= float(repa.detach()) <= 1
    repa.backward()
    assert aux["repa_proj"][0].weight.grad.abs().sum() > 0
    assert dict(model.named_parameters())["decoder.module_dict.dec_transformer.blocks.0.attn.wq.weight"].grad is not None
    with pytest.raises(ValueError, match="repa_weights"):
        FlexTokRecipe(FlexTokRecipeConfig(model=tiny_recipe_model(), repa_weights=str(tmp_path / "nope.safetensors"),
                                          repa_arch=arch), TrainConfig(max_steps=1)).build_aux_modules()
    # weights given but weight 0: off, and the note says why (not "no repa_weights given")
    off = FlexTokRecipe(FlexTokRecipeConfig(model=tiny_recipe_model(), repa_weights=str(tmp_path / "vit.safetensors"),
                                            repa_arch=arch, repa_weight=0.0), TrainConfig(max_steps=1))
    assert off.build_aux_modules() == {}
    assert [n for n in off.notes if "REPA" in n] == [
        f"REPA off: repa_weight is 0 (repa_weights {tmp_path / 'vit.safetensors'} not used)"]
    none = FlexTokRecipe(FlexTokRecipeConfig(model=tiny_recipe_model()), TrainConfig(max_steps=1))
    none.build_aux_modules()
    assert any(n.startswith("REPA off: no repa_weights given") for n in none.notes)


def test_vae_weights_must_be_a_diffusers_vae_release(tmp_path):
    arch = dict(enc_dim=32, enc_depth=1, dec_dim=32, dec_depth=1, head_dim=16, n_registers=8)
    with pytest.raises(ValueError, match="no such file or folder"):
        FlexTokRecipeConfig(architecture=arch, vae_weights=str(tmp_path / "missing"))
    (tmp_path / "vae").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        FlexTokRecipeConfig(architecture=arch, vae_weights=str(tmp_path / "vae"))
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="not a diffusers AutoencoderKL config"):
        FlexTokRecipeConfig(architecture=arch, vae_weights=str(tmp_path / "vae"))
    # the release's latent channels and scaling factor are taken before data_config() needs the image size
    (tmp_path / "vae" / "config.json").write_text(json.dumps({**TINY_VAE, "latent_channels": 4, "scaling_factor": 2.5}))
    cfg = FlexTokRecipeConfig(architecture={**arch, "posemb_max": [4, 4], "patch_size": [2, 2]},
                              vae_weights=str(tmp_path / "vae"))
    assert cfg.model.scaling_factor == 2.5 and cfg.model.image_size == 16
    assert FlexTokRecipe(cfg, TrainConfig(max_steps=1)).data_config().image_size == 16


def test_learning_rate_schedule_warm_up_then_optional_cosine_to_final_lr():
    def lrs(**kw):
        r = FlexTokRecipe(FlexTokRecipeConfig(model=tiny_recipe_model(), lr=1e-3, **kw), TrainConfig(max_steps=10))
        opt = r.build_optimizers({"model": torch.nn.Linear(2, 2)})
        sched = r.build_schedulers(opt).get("model")
        out = []
        for _ in range(10):
            out.append(opt["model"].param_groups[0]["lr"])
            opt["model"].step()
            if sched is not None:
                sched.step()
        return out

    assert lrs() == [1e-3] * 10  # no warm-up, no final_lr: constant
    assert lrs(warmup_steps=2)[:3] == pytest.approx([5e-4, 1e-3, 1e-3])
    cos = lrs(warmup_steps=2, final_lr=1e-5)
    assert cos[:3] == pytest.approx([5e-4, 1e-3, 1e-3])
    assert all(a > b for a, b in zip(cos[2:], cos[3:]))  # decays every step after the warm-up
    assert cos[-1] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
