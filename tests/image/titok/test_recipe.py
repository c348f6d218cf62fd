"""TiTok training recipes on the shared loop: tiny models, real images from ../shared/data/image/256."""

import json
import os

import numpy as np
import pytest
import torch

import zoo
from image.titok import MaskGITVQGAN, MaskGITVQGANConfig, TiTokConfig, ViTSize
from image.titok.convert import export_state_dict
from image.titok.recipe import NLayerDiscriminator, TiTokRecipe, TiTokRecipeConfig
from zoo.train import TrainConfig, fit, load_recipe_config


def tiny_single(**kw) -> TiTokConfig:
    return TiTokConfig(image_size=32, enc_patch_size=8, dec_patch_size=8, encoder=ViTSize(32, 1, 2, "custom"),
                       decoder=ViTSize(32, 1, 2, "custom"), num_latent_tokens=8, token_size=8, codebook_size=64,
                       use_l2_norm=False, is_legacy=False, finetune_decoder=False, **kw)


def tiny_two_stage() -> TiTokConfig:
    vq = MaskGITVQGANConfig(num_embeddings=32, z_channels=8, hidden_channels=32, channel_mult=(1, 1, 1, 1),
                            num_res_blocks=1, resolution=32)  # f = 8 -> a 4x4 code grid
    return TiTokConfig(image_size=32, enc_patch_size=8, dec_patch_size=8, encoder=ViTSize(32, 1, 2, "custom"),
                       decoder=ViTSize(32, 1, 2, "custom"), num_latent_tokens=8, token_size=8, codebook_size=64,
                       use_l2_norm=True, is_legacy=True, finetune_decoder=True, pixel_vqgan=vq,
                       proxy_codebook_size=32)


def _split(src, tmp_path, n_eval=3):
    files = sorted(p for p in src.iterdir() if p.suffix == ".png")
    train, held = tmp_path / "train", tmp_path / "held"
    train.mkdir()
    held.mkdir()
    for i, f in enumerate(files):
        os.symlink(f, (held if i < n_eval else train) / f.name)
    return train, held


def _heldout_mse(model, held):
    from PIL import Image

    imgs = []
    for f in sorted(held.iterdir()):
        im = Image.open(f).convert("RGB").resize((32, 32), Image.BICUBIC)
        imgs.append(torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1) / 255)
    x = torch.stack(imgs)
    with torch.no_grad():
        y = model.decode(model.encode(x), clamp=False)
    return float(torch.nn.functional.mse_loss(y, x))


def test_single_stage_lowers_heldout_loss_and_exports(shared_data, tmp_path):
    train_dir, held = _split(shared_data("image", "256"), tmp_path)
    cfg = TiTokRecipeConfig(model=tiny_single(), lr=2e-3, discriminator_lr=2e-4, warmup_steps=2, end_lr=2e-4,
                            discriminator_start=20, discriminator_channels=32, discriminator_stages=1)
    train = TrainConfig(max_steps=30, batch_size=3, log_every=5, eval_every=15, checkpoint_every=30, seed=0,
                        utilization_warning=0.0, eval_batches=1)
    recipe = TiTokRecipe(cfg, train)
    before = _heldout_mse(recipe.build_model(), held)  # same seed -> the run's initial weights
    out = tmp_path / "run"
    fit(recipe, train_dir, out, eval_data=held, progress=False)

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r.get("split") == "eval"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 30
    assert evals[-1]["recon_loss"] < 0.6 * evals[0]["recon_loss"], evals
    train_rows = [r for r in rows if r.get("split") == "train"]
    assert any("d_loss" in r and "g_loss" in r and "lecam_loss" in r for r in train_rows)  # GAN ran after step 20

    tok = zoo.from_pretrained(out)
    after = _heldout_mse(tok, held)
    assert after < 0.6 * before, (before, after)
    info = json.loads((out / "training.json").read_text())
    assert info["recipe"] == "titok" and any("perceptual" in n for n in info["notes"])


@pytest.mark.slow
def test_stage1_proxy_codes_from_teacher(shared_data, tmp_path):
    train_dir, held = _split(shared_data("image", "256"), tmp_path)
    torch.manual_seed(3)
    teacher = MaskGITVQGAN(tiny_two_stage().pixel_vqgan)
    with torch.no_grad():
        teacher.quantize.embed.copy_(torch.randn_like(teacher.quantize.embed))
    bin_path = tmp_path / "teacher.bin"  # the released format: a torch.save'd state dict in the reference's keys
    torch.save(export_state_dict(teacher), bin_path)
    cfg = TiTokRecipeConfig(model=tiny_two_stage(), stage="stage1", teacher=str(bin_path), lr=3e-3,
                            warmup_steps=1, end_lr=3e-4)
    train = TrainConfig(max_steps=12, batch_size=3, log_every=4, eval_every=12, checkpoint_every=12, seed=0,
                        utilization_warning=0.0)
    recipe = TiTokRecipe(cfg, train)
    out = tmp_path / "s1"
    fit(recipe, train_dir, out, eval_data=held, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r.get("split") == "eval"]
    assert evals[-1]["recon_loss"] < evals[0]["recon_loss"]  # proxy-code cross-entropy falls
    # stage 1 quantizes too: its codebook is logged over each window of 4 steps x 3 images x 8 tokens
    assert all(r["codebook_ids"] == 96 and 1 <= r["perplexity"] <= 64 for r in rows if r.get("split") == "train")
    tok = zoo.from_pretrained(out)
    # the teacher's decoder and codebook went into the exported model untouched (frozen in stage 1)
    assert torch.equal(tok.pixel_quantize.embed, teacher.quantize.embed)
    for (k, a), b in zip(tok.pixel_decoder.state_dict().items(), teacher.decoder.state_dict().values()):
        assert torch.equal(a, b), k
    assert tok.decode(tok.encode(torch.rand(1, 3, 32, 32))).shape == (1, 3, 32, 32)

    # stage 2 from the stage-1 run: the encoder side stays fixed, the decoders move
    cfg2 = TiTokRecipeConfig(model=tiny_two_stage(), stage="stage2", lr=1e-3, warmup_steps=1, end_lr=1e-4,
                             perceptual_weight=0.1, discriminator_weight=0.01, discriminator_start=1,
                             quantizer_weight=0.0, discriminator_channels=32, discriminator_stages=1)
    train2 = TrainConfig(max_steps=3, batch_size=3, log_every=1, eval_every=3, checkpoint_every=3, seed=0,
                         utilization_warning=0.0)
    out2 = tmp_path / "s2"
    fit(TiTokRecipe(cfg2, train2), train_dir, out2, eval_data=held, init=out, progress=False)
    tok2 = zoo.from_pretrained(out2)
    assert torch.equal(tok2.encoder.patch_embed.weight, tok.encoder.patch_embed.weight)
    assert torch.equal(tok2.latent_tokens, tok.latent_tokens) and torch.equal(tok2.quantize.embed, tok.quantize.embed)
    assert not torch.equal(tok2.pixel_decoder.conv_out.weight, tok.pixel_decoder.conv_out.weight)
    rows = [json.loads(line) for line in (out2 / "metrics.jsonl").read_text().splitlines()]
    assert any("g_loss" in r for r in rows if r.get("split") == "train")


def test_single_stage_vae_runs(shared_data, tmp_path):
    train_dir, held = _split(shared_data("image", "256"), tmp_path)
    cfg = TiTokRecipeConfig(model=tiny_single(quantize_mode="vae"), lr=1e-3, warmup_steps=1,
                            discriminator_weight=0.0)
    train = TrainConfig(max_steps=3, batch_size=3, log_every=1, eval_every=3, checkpoint_every=3, seed=0)
    out = tmp_path / "vae"
    fit(TiTokRecipe(cfg, train), train_dir, out, eval_data=held, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r.get("split") == "train"]
    assert train_rows and all("kl_loss" in r and torch.isfinite(torch.tensor(r["loss"])) for r in train_rows)
    vae = zoo.from_pretrained(out)
    assert not vae.spec.discrete and vae.encode_latents(torch.rand(1, 3, 32, 32)).shape == (1, 8, 8)


def test_stage2_freezes_encoder_side():
    cfg = TiTokRecipeConfig(model=tiny_two_stage(), stage="stage2", perceptual_weight=0.1,
                            discriminator_weight=0.01, quantizer_weight=0.0)
    recipe = TiTokRecipe(cfg, TrainConfig(max_steps=2, batch_size=1))
    model = recipe.build_model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("decoder.", "pixel_decoder.", "pixel_quantize.")) for n in trainable)
    assert not model.latent_tokens.requires_grad


def test_yaml_config_and_errors(tmp_path):
    y = tmp_path / "cfg.yaml"
    y.write_text("train:\n  max_steps: 5\n  batch_size: 2\nrecipe:\n  lr: 0.0003\n  model:\n    image_size: 32\n"
                 "    enc_patch_size: 8\n    dec_patch_size: 8\n    is_legacy: false\n    finetune_decoder: false\n"
                 "    encoder: {width: 32, num_layers: 1, num_heads: 2, name: custom}\n"
                 "    decoder: {width: 32, num_layers: 1, num_heads: 2, name: custom}\n")
    r = load_recipe_config("titok", y)
    assert isinstance(r, TiTokRecipe) and r.config.lr == 3e-4 and r.config.model.image_size == 32
    assert r.data_config().image_size == 32
    with pytest.raises(ValueError, match="stage"):
        TiTokRecipeConfig(model=tiny_single(), stage="three")
    with pytest.raises(ValueError, match="is_legacy"):
        TiTokRecipeConfig(model=tiny_two_stage())
    with pytest.raises(ValueError, match="teacher"):
        TiTokRecipeConfig(model=tiny_two_stage(), stage="stage1")
    with pytest.raises(ValueError, match="reconstruction_loss"):
        TiTokRecipeConfig(model=tiny_single(), reconstruction_loss="l3")
    with pytest.raises(ValueError, match="hidden"):
        NLayerDiscriminator(hidden=20)
    d = NLayerDiscriminator(hidden=32, num_stages=2)
    assert d(torch.rand(2, 3, 40, 40)).shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="images"):
        d(torch.rand(3, 40, 40))


def test_docs_training_yaml_builds():
    import re
    from pathlib import Path

    import yaml

    doc = (Path(__file__).resolve().parents[3] / "docs" / "models" / "titok.md").read_text()
    section = doc.split("## Training", 1)[1]
    assert "tokenzoo train titok --config cfg.yaml --data DIR --out RUN" in section
    (block,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    r = load_recipe_config("titok", yaml.safe_load(block))
    assert r.config.stage == "single" and r.config.model.num_latent_tokens == 64 and r.train.ema_decay == 0.999


def test_stage2_takes_the_originals_stage2_settings_unless_overridden():
    from image.titok.recipe import STAGE_DEFAULTS

    single = TiTokRecipeConfig(model=tiny_single())
    assert (single.perceptual_weight, single.discriminator_weight, single.discriminator_start,
            single.quantizer_weight, single.betas, single.warmup_steps) == (1.1, 0.1, 200_000, 1.0, (0.9, 0.99), 10_000)
    s2 = TiTokRecipeConfig(model=tiny_two_stage(), stage="stage2")
    assert (s2.perceptual_weight, s2.discriminator_weight, s2.discriminator_start, s2.quantizer_weight, s2.betas,
            s2.warmup_steps) == (0.1, 0.01, 20_000, 0.0, (0.9, 0.999), 5_000)
    assert STAGE_DEFAULTS["stage2"]["betas"] == s2.betas
    # a value set in the config wins, the others stay the stage's
    mine = TiTokRecipeConfig(model=tiny_two_stage(), stage="stage2", discriminator_weight=0.2, betas=[0.5, 0.9])
    assert mine.discriminator_weight == 0.2 and mine.betas == (0.5, 0.9) and mine.perceptual_weight == 0.1
    # the round trip through training.json / YAML keeps the resolved values
    assert TiTokRecipeConfig.from_dict(s2.to_dict()) == s2
    with pytest.raises(ValueError, match="betas"):
        TiTokRecipeConfig(model=tiny_single(), betas="0.9")
    # and they take effect: optimiser betas, warm-up length, the GAN from step 20k, no quantizer term
    recipe = TiTokRecipe(s2, TrainConfig(max_steps=100_000, batch_size=1))
    model = recipe.build_model()
    modules = {"model": model, **recipe.build_aux_modules()}
    opts = recipe.build_optimizers(modules)
    assert "disc" in modules and opts["model"].param_groups[0]["betas"] == (0.9, 0.999)
    sched = recipe.build_schedulers(opts)["model"]
    factor = sched.lr_lambdas[0]
    assert factor(4_999) == pytest.approx(1.0) and factor(2_499) == pytest.approx(0.5)


def test_notes_are_decided_at_build_printed_at_start_and_written_at_every_checkpoint(shared_data, tmp_path,
                                                                                      capsys):
    train_dir, held = _split(shared_data("image", "256"), tmp_path)
    cfg = TiTokRecipeConfig(model=tiny_single(), lr=1e-3, warmup_steps=1, discriminator_weight=0.0,
                            perceptual_weight=1.1)
    recipe = TiTokRecipe(cfg, TrainConfig(max_steps=6, batch_size=3, log_every=1, eval_every=100,
                                          checkpoint_every=2, seed=0, utilization_warning=0.0))
    recipe.build_model()
    (note,) = [n for n in recipe.notes if "perceptual" in n]  # known before any step, recorded once
    recipe.build_model()
    assert recipe.notes.count(note) == 1
    out = tmp_path / "run"
    s = fit(recipe, train_dir, out, progress=False, stop_after=3)
    assert s["interrupted"]
    assert f"note: {note}" in capsys.readouterr().out
    info = json.loads((out / "training.json").read_text())  # written with the checkpoint, before the end
    assert info["complete"] is False and info["steps"] == 3 and info["notes"].count(note) == 1
    assert info["recipe_config"]["perceptual_weight"] == 1.1
    # codebook utilisation and perplexity over each log window
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r.get("split") == "train"]
    assert len(train_rows) == 3
    for r in train_rows:
        assert r["codebook_ids"] == 3 * 8 and 0 < r["utilization"] <= 24 / 64 and 1 <= r["perplexity"] <= 24
    fit(recipe, train_dir, out, resume=True, progress=False)
    info = json.loads((out / "training.json").read_text())
    assert info["complete"] is True and info["steps"] == 6 and info["notes"].count(note) == 1
