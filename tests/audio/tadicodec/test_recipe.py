"""TaDiCodec's training recipe on the shared loop (tiny model, real speech crops)."""

from __future__ import annotations

import json
import math
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


@pytest.mark.parametrize("bad, match", [
    (dict(cond_drop_p=1.5), r"cond_drop_p must be a number in \[0, 1\]"),
    (dict(context_drop_p=-1), r"context_drop_p must be a number in \[0, 1\]"),
    (dict(cond_drop_p=float("nan")), r"cond_drop_p must be a number in \[0, 1\]"),
    (dict(sigma=2), r"sigma must be a number in \[0, 1\)"),
    (dict(sigma=1.0), r"sigma must be a number in \[0, 1\)"),
    (dict(rope_theta=0), r"rope_theta must be a finite number > 0"),
])
def test_model_config_rejects_out_of_range_training_values(bad, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(use_text_cond=False, **bad)


@pytest.mark.parametrize("bad, match", [
    (dict(vq_loss_weight=float("nan")), r"recipe.vq_loss_weight must be a finite number >= 0"),
    (dict(vq_loss_weight=-0.5), r"recipe.vq_loss_weight must be a finite number >= 0"),
    (dict(lr=float("inf")), r"recipe.lr must be a finite number > 0"),
    (dict(lr=0.0), r"recipe.lr must be a finite number > 0"),
    (dict(weight_decay=-1), r"recipe.weight_decay must be a finite number >= 0"),
    (dict(betas=(2, 3)), r"recipe.betas must be two numbers in \[0, 1\)"),
    (dict(betas=(0.9,)), r"recipe.betas must be two numbers in \[0, 1\)"),
    (dict(segment_seconds=float("inf")), r"recipe.segment_seconds must be a finite number"),
])
def test_recipe_config_rejects_out_of_range_values(bad, match):
    with pytest.raises(ValueError, match=match):
        TaDiCodecRecipeConfig(model=tiny_config(use_text_cond=False), **bad)
    assert TaDiCodecRecipeConfig(model=tiny_config(use_text_cond=False), betas=[0.8, 0.99]).betas == (0.8, 0.99)


class _Ctx:
    def __init__(self, model):
        self.model = model

    def unwrap(self, name="model"):
        return self.model


def test_evaluate_keeps_the_condition_and_a_fixed_prompt_for_every_batch_size():
    """The held-out loss is the conditional flow loss: whatever cond_drop_p / context_drop_p say (even 1.0, which
    drops the condition / prompt at every training step) and whatever the batch size, the decoder gets the token
    condition and every item the same clean prompt of eval_prompt_frames(T) frames."""
    from audio.tadicodec import TaDiCodec
    from audio.tadicodec.recipe import eval_prompt_frames

    from .conftest import randomize

    assert [eval_prompt_frames(t) for t in (1, 8, 32, 200)] == [0, 2, 8, 42]
    with pytest.raises(ValueError, match="frames must be a positive int"):
        eval_prompt_frames(0)
    torch.manual_seed(0)
    weights = randomize(TaDiCodec(tiny_config(use_text_cond=False))).state_dict()
    g = torch.Generator().manual_seed(3)
    wav = 0.1 * torch.randn(8, 1, 15360, generator=g)  # 0.64 s: 32 mel frames, 4 tokens
    losses = {}
    for drop in (0.0, 0.2, 1.0):
        model = TaDiCodec(tiny_config(use_text_cond=False, cond_drop_p=drop, context_drop_p=drop))
        model.load_state_dict(weights)
        model.eval()
        recipe = TaDiCodecRecipe(TaDiCodecRecipeConfig(model=model.config, segment_seconds=0.64),
                                 TrainConfig(max_steps=1, batch_size=2, seed=0))
        seen = []
        hook = model.decoder.register_forward_pre_hook(lambda m, a, kw: seen.append((a[0], kw["cond"])),
                                                       with_kwargs=True)
        try:
            for b in (2, 4, 8):
                with torch.no_grad():
                    losses[drop, b] = recipe.evaluate(_Ctx(model), {"x": wav[:b]})["recon_loss"]
                    mel = model.mel(wav[:b, 0])
                    xt, cond = seen[-1]
                    # the condition the decoder saw is the tokens' up-sampled embedding, not zeros
                    expected = model.token_condition(model.encode_mel(mel))["cond"]
                assert cond.abs().sum() > 0 and torch.allclose(cond, expected, atol=1e-5), (drop, b)
                p = eval_prompt_frames(mel.shape[1])
                assert mel.shape[1] == 32 and p == 8
                assert torch.equal(xt[:, :p], mel[:, :p])  # clean prompt on every item
                assert not torch.isclose(xt[:, p:], mel[:, p:]).all(dim=-1).any()  # noised target frames
        finally:
            hook.remove()
    for b in (2, 4, 8):
        assert losses[0.0, b] == losses[0.2, b] == losses[1.0, b], losses
        assert math.isfinite(losses[0.0, b]) and losses[0.0, b] > 0
    with pytest.raises(ValueError, match="mode must be one of"):
        flow_matching_losses(model, mel, mode="test")


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
