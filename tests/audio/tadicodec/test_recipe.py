"""TaDiCodec's training recipe on the shared loop (tiny model, real speech crops)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from audio.tadicodec.recipe import TaDiCodecRecipe, TaDiCodecRecipeConfig, flow_matching_losses, inverse_sqrt_factor
from zoo.train import TrainConfig, fit, get_recipe

from .conftest import tiny_config


def test_config_checks_and_schedule():
    assert get_recipe("tadicodec") is TaDiCodecRecipe
    with pytest.raises(ValueError, match="use_text_cond"):
        TaDiCodecRecipeConfig(model=tiny_config())
    with pytest.raises(ValueError, match="segment_seconds"):
        TaDiCodecRecipeConfig(model=tiny_config(use_text_cond=False), segment_seconds=0.1)
    cfg = TaDiCodecRecipeConfig.from_dict({"model": tiny_config(use_text_cond=False).to_dict(), "warmup_steps": 10})
    assert cfg.model.hidden_size == 32 and cfg.segment_samples == 96000
    assert inverse_sqrt_factor(0, 10) == 0.0 and inverse_sqrt_factor(5, 10) == 0.5
    assert inverse_sqrt_factor(10, 10) == 1.0 and inverse_sqrt_factor(40, 10) == pytest.approx(0.5)


def test_losses_are_finite_and_reach_every_module():
    from audio.tadicodec import TaDiCodec

    model = TaDiCodec(tiny_config(use_text_cond=False)).train()
    mel = model.mel(0.1 * torch.randn(2, 19200, generator=torch.Generator().manual_seed(0)))
    out = flow_matching_losses(model, mel, torch.Generator().manual_seed(1))
    assert out["ids"].shape == (2, 5) and torch.isfinite(out["diff_loss"]) and torch.isfinite(out["vq_loss"])
    (out["diff_loss"] + out["vq_loss"]).backward()
    # (diff_step_mlp gets no gradient at initialisation: every to_weight starts at weight 0, bias 1, as in the original)
    for name in ("encoder.in_linear.weight", "vq_in_linear.weight", "vq_out_linear.weight", "decoder.out_linear.weight",
                 "decoder.layers.0.input_layernorm.to_weight.weight", "decoder.cond_mlp.0.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_recipe_trains_on_real_speech(shared_data, tmp_path):
    src = shared_data("audio", "speech")
    data = tmp_path / "data"
    data.mkdir()
    for f in sorted(src.glob("*.wav"))[:4]:
        shutil.copyfile(f, data / f.name)
    recipe = TaDiCodecRecipe(TaDiCodecRecipeConfig(model=tiny_config(use_text_cond=False), segment_seconds=0.64,
                                                   warmup_steps=1),
                             TrainConfig(max_steps=2, batch_size=2, log_every=1, eval_every=2, checkpoint_every=2,
                                         holdout_files=1, seed=1, utilization_warning=0.0, clip_grad_norm=0.5))
    out = tmp_path / "run"
    fit(recipe, data, out, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("split") == "train"]
    assert len(train) == 2 and all(r["diff_loss"] > 0 for r in train)
    assert any("recon_loss" in r for r in rows if r.get("split") != "train")


def test_vocoder_recipe_exports_the_release_layout_and_loads_into_a_codec(shared_data, tmp_path):
    from audio.tadicodec import TaDiCodec
    from audio.tadicodec.recipe import TaDiCodecVocoderRecipe, TaDiCodecVocoderRecipeConfig
    from zoo.train import get_recipe

    assert get_recipe("tadicodec-vocoder") is TaDiCodecVocoderRecipe
    model = tiny_config(use_text_cond=False)
    with pytest.raises(ValueError, match="multiple of the hop 480"):
        TaDiCodecVocoderRecipeConfig(model=model, segment_samples=2000)
    src = shared_data("audio", "speech")
    data = tmp_path / "data"
    data.mkdir()
    for f in sorted(src.glob("*.wav"))[:3]:
        shutil.copyfile(f, data / f.name)
    codec = TaDiCodec(model)
    recipe = TaDiCodecVocoderRecipe(
        TaDiCodecVocoderRecipeConfig(model=model, segment_samples=2400, mpd_periods=[2], period_channels=[4, 8, 8, 8, 8]),
        TrainConfig(max_steps=2, batch_size=2, log_every=1, eval_every=2, checkpoint_every=2, holdout_files=1, seed=0,
                    utilization_warning=0.0))
    out = tmp_path / "voc"
    fit(recipe, data, out, init=codec, progress=False)  # fine-tunes the codec's vocoder
    cfg = json.loads((out / "vocoder" / "config.json").read_text())
    assert cfg["model"]["vocos"]["dim"] == 32 and cfg["model"]["vocos"]["hop_size"] == 480
    before = {k: v.clone() for k, v in codec.vocoder.state_dict().items()}
    codec.load_vocoder(out)
    after = codec.vocoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # trained weights, not the init
    wav = codec.vocode(torch.zeros(1, 5, 128))
    assert wav.shape == (1, 5 * 480)
    with pytest.raises(FileNotFoundError, match="vocoder/model.safetensors"):
        codec.load_vocoder(tmp_path)
    other = TaDiCodec(tiny_config(use_text_cond=False, vocoder=tiny_config().vocoder.__class__(dim=16,
                                                                                             intermediate_dim=48,
                                                                                             num_layers=1)))
    with pytest.raises(ValueError):
        other.load_vocoder(out)  # shapes of another vocoder configuration: strict load refuses


def test_text_conditioned_training_on_transcribed_utterances(shared_data, tmp_path):
    """Whole utterances with <file>.txt transcripts, batches of one, the decoder always given the text."""
    from audio.tadicodec import TaDiCodec

    from .conftest import word_tokenizer_json

    tok_file = tmp_path / "tokenizer.json"
    tok_file.write_text(word_tokenizer_json())
    src = shared_data("audio", "speech")
    data = tmp_path / "data"
    data.mkdir()
    files = sorted(src.glob("*.wav"))[:3]
    for i, f in enumerate(files):
        shutil.copyfile(f, data / f.name)
        if i < 2:
            (data / f.with_suffix(".txt").name).write_text("hello world this is a test")
    # the third file has no transcript: skipped and counted, never fatal
    model = tiny_config(use_text_cond=True)
    with pytest.raises(ValueError, match="needs text_tokenizer"):
        TaDiCodecRecipeConfig(model=model, segment_seconds=8.0)
    cfg = TaDiCodecRecipeConfig(model=model, segment_seconds=8.0, warmup_steps=1, lr=1e-3,
                                text_tokenizer=str(tok_file))
    with pytest.raises(ValueError, match="batch_size must be 1"):
        TaDiCodecRecipe(cfg, TrainConfig(max_steps=2, batch_size=2))
    recipe = TaDiCodecRecipe(cfg, TrainConfig(max_steps=4, batch_size=1, log_every=1, eval_every=4,
                                              checkpoint_every=4, holdout_files=0, seed=0,
                                              utilization_warning=0.0))
    out = tmp_path / "run"
    before = recipe.build_model().text_emb.weight.detach().clone()
    s = fit(recipe, data, out, progress=False)
    assert s["skipped_files"] >= 1
    import zoo

    trained = zoo.from_pretrained(out)
    assert isinstance(trained, TaDiCodec)
    assert trained.config.use_text_cond and trained.text_tokenizer is not None  # the tokenizer travels with it
    assert not torch.equal(before, trained.text_emb.weight)  # the text path received gradients
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["split"] == "train" for r in rows) == 4 and all(
        r["diff_loss"] > 0 for r in rows if r["split"] == "train")
