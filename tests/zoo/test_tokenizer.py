"""The Tokenizer contract on toy families: input validation, device/inference behaviour, spec, persistence."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

import zoo
from zoo.registry import get_family, load_local_dir, load_state_strict, register_family, unregister_family
from zoo.tokenizer import Tokenizer, TokenizerSpec

from .toy_plugin import ToyLinear, ToyLinearConfig, ToyVideo, ToyVideoConfig
from .toy_tokenizers import ToyAudio, ToyAudioConfig, ToyImage, ToyImageConfig, ToySeries, ToySeriesConfig


def _raises(exc, fn, *words):
    with pytest.raises(exc) as info:
        fn()
    for w in words:
        assert w in str(info.value), f"{w!r} not in {str(info.value)!r}"


# ---------------------------------------------------------------------------------------------- spec

def test_discrete_spec_bitrate():
    s = TokenizerSpec.discrete_spec("audio", 4096, 1, 75, "tokens/s")
    assert s.bitrate == pytest.approx(75 * 12) and s.bitrate_unit == "bit/s" and s.discrete
    s = TokenizerSpec.discrete_spec("image", 4096, 2, 32, "tokens/image")
    assert s.bitrate == pytest.approx(32 * 2 * 12) and s.bitrate_unit == "bits/image"
    assert s.to_dict()["codebook_size"] == 4096


def test_spec_arguments_are_checked():
    _raises(ValueError, lambda: TokenizerSpec.discrete_spec("smell", 16, 1, 1, "tokens/s"), "modality must be one of")
    _raises(ValueError, lambda: TokenizerSpec.discrete_spec("audio", 1, 1, 1, "tokens/s"), "codebook_size must be")
    _raises(ValueError, lambda: TokenizerSpec.discrete_spec("audio", 16, 0, 1, "tokens/s"), "num_codebooks must be")
    _raises(ValueError, lambda: TokenizerSpec.discrete_spec("audio", 16, 1, 0, "tokens/s"), "token_rate must be")
    _raises(ValueError, lambda: TokenizerSpec.discrete_spec("audio", 16, 1, 5, "Hz"), "token_rate_unit must look")
    c = TokenizerSpec.continuous_spec("video", 16, 256, "latents/frame")
    assert not c.discrete and c.codebook_size == 0 and c.latent_channels == 16 and c.bitrate == 256 * 16 * 32
    assert c.bitrate_unit == "bits/frame (float32 latents)"
    _raises(ValueError, lambda: TokenizerSpec.continuous_spec("video", 0, 256, "latents/frame"), "latent_channels")


def test_config_type_is_checked():
    _raises(TypeError, lambda: ToyAudio(ToyImageConfig()), "ToyAudio needs a ToyAudioConfig", "ToyImageConfig")


# ---------------------------------------------------------------------------------------------- audio

def test_audio_validation():
    tok = ToyAudio(ToyAudioConfig())
    _raises(TypeError, lambda: tok.encode([0.0] * 8), "wav must be a torch.Tensor", "[B, T] or [B, 1, T]", "list")
    _raises(ValueError, lambda: tok.encode(torch.zeros(8)), "wav must have 2 or 3 dimensions", "(8,)")
    _raises(TypeError, lambda: tok.encode(torch.zeros(1, 8, dtype=torch.int16)), "floating point", "int16")
    _raises(ValueError, lambda: tok.encode(torch.zeros(1, 0)), "wav is empty", "(1, 0)")
    _raises(ValueError, lambda: tok.encode(torch.full((1, 8), float("nan"))), "wav contains 8 NaN")
    _raises(ValueError, lambda: tok.encode(torch.zeros(1, 2, 8)), "wav must be mono", "2 channels", "(1, 2, 8)")
    _raises(ValueError, lambda: tok.encode(torch.zeros(1, 8), sample_rate=16000),
            "sample_rate 16000 Hz does not match the model's 24000 Hz", "zoo.resample")
    _raises(ValueError, lambda: tok.encode(torch.zeros(1, 8), sample_rate=-3), "sample_rate must be a positive")
    _raises(ValueError, lambda: tok.encode(torch.zeros(1, 8), sample_rate="24k"), "sample_rate must be a positive")
    _raises(TypeError, lambda: tok.encode(torch.zeros(2, 8), lengths=torch.tensor([1.0, 2.0])),
            "lengths must hold integers", "float32")
    _raises(ValueError, lambda: tok.encode(torch.zeros(2, 8), lengths=[8]), "lengths must have shape [2]", "(1,)")
    _raises(ValueError, lambda: tok.encode(torch.zeros(2, 8), lengths=[8, 9]), "lengths must lie in [1, 8]", "max 9")
    _raises(ValueError, lambda: tok.encode(torch.zeros(2, 8), lengths=[0, 8]), "lengths must lie in [1, 8]", "min 0")


def test_audio_encode_decode_and_lengths():
    tok = ToyAudio(ToyAudioConfig())
    wav = torch.randn(2, 1, 64).clamp(-1, 1) * 0.5
    t = tok.encode(wav, sample_rate=24000, lengths=[64, 40])
    assert t.ids.shape == (2, 1, 16) and t.lengths.tolist() == [16, 10]
    assert not t.ids.requires_grad
    y = tok.decode(t)
    assert y.shape == (2, 1, 64) and y.device == wav.device
    # padding never changes another item's tokens
    alone = tok.encode(wav[1:, :, :40])
    assert torch.equal(alone.ids[0], t.ids[1, :, :10])
    assert tok.spec.token_rate == 6000 and tok.sample_rate == 24000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_results_follow_the_input_device(toy_families):
    tok = toy_families.ToyLinear(ToyLinearConfig()).to("cuda")
    wav = torch.randn(2, 64) * 0.3
    t_cpu = tok.encode(wav)
    t_gpu = tok.encode(wav.cuda())
    assert t_cpu.device.type == "cpu" and t_gpu.device.type == "cuda" and t_cpu == t_gpu.cpu()
    assert tok.decode(t_cpu).device.type == "cpu" and tok.decode(t_gpu).device.type == "cuda"
    assert tok.encode(wav, lengths=torch.tensor([64, 32])).lengths.tolist() == [8, 4]


def test_decode_validation():
    tok = ToyAudio(ToyAudioConfig(levels=16))
    _raises(TypeError, lambda: tok.decode(torch.zeros(1, 1, 4)), "tokens must be zoo.Tokens or an integer tensor",
            "float32")
    _raises(TypeError, lambda: tok.decode([1, 2]), "zoo.Tokens or an integer torch.Tensor", "list")
    _raises(ValueError, lambda: tok.decode(torch.full((1, 1, 4), 16)), "tokens.ids holds ids outside [0, 16)",
            "max 16")
    _raises(ValueError, lambda: tok.decode(zoo.Tokens(torch.full((1, 1, 4), -2))), "outside [0, 16)", "min -2")
    assert tok.decode(torch.zeros(1, 1, 4, dtype=torch.int32)).shape == (1, 1, 16)


def test_family_contract_violations():
    class Broken(ToyAudio):
        def _encode(self, wav, lengths=None):
            return wav.long()

        def _decode(self, tokens):
            return tokens.ids.tolist()

    tok = Broken(ToyAudioConfig())
    _raises(TypeError, lambda: tok.encode(torch.zeros(1, 8)), "Broken._encode must return zoo.Tokens")
    _raises(TypeError, lambda: tok.decode(torch.zeros(1, 1, 2, dtype=torch.long)), "Broken._decode must return")


# ---------------------------------------------------------------------------------------------- images, video

def test_image_validation_and_uint8():
    tok = ToyImage(ToyImageConfig(image_size=8, pool=2, levels=32))
    _raises(ValueError, lambda: tok.encode(torch.zeros(3, 8, 8)), "images must have 4 dimensions", "[B, 3, H, W]")
    _raises(ValueError, lambda: tok.encode(torch.zeros(1, 1, 8, 8)), "images must have 3 channels", "(1, 1, 8, 8)")
    _raises(ValueError, lambda: tok.encode(torch.full((1, 3, 8, 8), 2.0)), "images values must lie in [0.0, 1.0]",
            "max 2")
    _raises(ValueError, lambda: tok.encode(torch.zeros(1, 3, 16, 8)), "images must be 8x8", "got 16x8")
    _raises(TypeError, lambda: tok.encode(torch.zeros(1, 3, 8, 8, dtype=torch.int64)), "float in [0.0, 1.0] or uint8")
    _raises(ValueError, lambda: tok.encode(torch.full((1, 3, 8, 8), float("inf"))), "Inf")
    u8 = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert tok.encode(u8) == tok.encode(u8.float() / 255)


def test_value_range_minus_one_one():
    class Signed(ToyImage):
        value_range = (-1.0, 1.0)

        def _encode(self, images):
            return super()._encode((images + 1) / 2)

    tok = Signed(ToyImageConfig(image_size=8, pool=2))
    u8 = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    assert tok.encode(u8) == tok.encode(u8.float() / 255 * 2 - 1)
    _raises(ValueError, lambda: tok.encode(torch.full((1, 3, 8, 8), -2.0)), "[-1.0, 1.0]", "min -2")


def test_video_validation():
    tok = ToyVideo(ToyVideoConfig())
    _raises(ValueError, lambda: tok.encode(torch.zeros(1, 3, 8, 8)), "video must have 5 dimensions", "[B, 3, F, H, W]")
    _raises(ValueError, lambda: tok.encode(torch.zeros(1, 4, 2, 8, 8)), "video must have 3 channels")
    _raises(ValueError, lambda: tok.encode(torch.full((1, 3, 2, 4, 4), 1.5)), "video values must lie in [0.0, 1.0]")
    assert tok.encode(torch.rand(1, 3, 2, 4, 4)).ids.shape == (1, 3, 2, 4, 4)


# ---------------------------------------------------------------------------------------------- series

def test_series_validation_and_resampling():
    tok = ToySeries(ToySeriesConfig(sfreq=100.0))
    _raises(ValueError, lambda: tok.encode(torch.zeros(2, 50)), "x must have 3 dimensions", "[B, C, T]")
    _raises(TypeError, lambda: tok.encode(torch.zeros(1, 2, 50, dtype=torch.int32)), "floating point", "int32")
    _raises(TypeError, lambda: tok.encode(torch.zeros(1, 2, 50), sfreq=200, lengths=[10.5]), "lengths must hold integers")
    for bad in (0, -1.0, "100", True):
        _raises(ValueError, lambda: tok.encode(torch.zeros(1, 2, 50), sfreq=bad), "sfreq must be a positive number")
    x = torch.randn(1, 2, 400)
    t = tok.encode(x, sfreq=200.0, lengths=[300])
    assert t.ids.shape == (1, 2, 200) and t.lengths.tolist() == [150]
    assert tok.encode(x, sfreq=100).ids.shape == (1, 2, 400)


# ---------------------------------------------------------------------------------------------- persistence

@pytest.fixture
def linear(toy_families):
    torch.manual_seed(0)
    return ToyLinear(ToyLinearConfig(extra=(3, 4, 5))).eval()


def test_save_pretrained_round_trip_is_bit_exact(linear, tmp_path):
    linear.count += torch.arange(32)
    out = linear.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    meta = json.loads((out / "config.json").read_text())
    assert meta["family"] == "toy-linear" and meta["format"] == "tokenzoo" and meta["config"]["extra"] == [3, 4, 5]
    card = (out / "README.md").read_text()
    assert "library_name: tokenzoo" in card and "toy-linear" in card
    for loader in (zoo.from_pretrained, Tokenizer.from_pretrained, ToyLinear.from_pretrained):
        back = loader(str(out))
        assert type(back) is ToyLinear and back.config == linear.config and not back.training
        a, b = linear.state_dict(), back.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
        wav = torch.randn(2, 64) * 0.3
        assert back.encode(wav) == linear.encode(wav)
        assert torch.equal(back.decode(linear.encode(wav)), linear.decode(linear.encode(wav)))
    _raises(TypeError, lambda: ToyAudio.from_pretrained(str(out)), "holds a ToyLinear", "not a ToyAudio")
    _raises(TypeError, lambda: zoo.from_pretrained(str(out), scale=2.0), "unexpected keyword arguments ['scale']")
    assert zoo.from_pretrained(out, device="cpu").device.type == "cpu"


def test_save_pretrained_is_atomic(linear, tmp_path, monkeypatch):
    out = tmp_path / "ckpt"
    linear.save_pretrained(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = ToyLinear(ToyLinearConfig(extra=(3, 4, 5)))

    def boom(self):
        Tokenizer.state_dict_for_saving(self)  # serialising starts ...
        raise RuntimeError("disk full while serialising")

    monkeypatch.setattr(ToyLinear, "state_dict_for_saving", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        other.save_pretrained(out)
    monkeypatch.undo()
    # a failure after the weights were written (the model card) also leaves the old checkpoint intact
    monkeypatch.setattr(ToyLinear, "default_model_card", lambda self: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        other.save_pretrained(out)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before, "a failing save must leave the existing checkpoint untouched (and no temp files)"
    with pytest.raises(ZeroDivisionError):
        other.save_pretrained(tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists(), "a failed save into a new folder leaves nothing behind"


def test_save_pretrained_argument_errors(linear, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    _raises(ValueError, lambda: linear.save_pretrained(f), "exists and is not a directory")
    _raises(TypeError, lambda: linear.save_pretrained(3), "save_directory must be a path", "int")
    _raises(TypeError, lambda: linear.save_pretrained(tmp_path / "a", model_card=5), "model_card must be a str")
    _raises(TypeError, lambda: linear.save_pretrained(tmp_path / "a", safe=False),
            "unexpected keyword arguments ['safe']")
    # what ModelHubMixin.push_to_hub passes is accepted
    assert linear.save_pretrained(tmp_path / "b", config={"x": 1}, model_card_kwargs={}).is_dir()


def test_load_local_dir_errors(linear, tmp_path):
    out = linear.save_pretrained(tmp_path / "ckpt")
    _raises(FileNotFoundError, lambda: load_local_dir(tmp_path), "has no config.json")
    (tmp_path / "config.json").write_text("{not json")
    _raises(ValueError, lambda: load_local_dir(tmp_path), "config.json is not valid JSON")
    (tmp_path / "config.json").write_text(json.dumps({"config": {}}))
    _raises(ValueError, lambda: load_local_dir(tmp_path), "not a tokenzoo config", "'family'")
    (tmp_path / "config.json").write_text(json.dumps({"family": "no-such-family", "config": {}}))
    _raises(ValueError, lambda: load_local_dir(tmp_path), "unknown tokenizer family 'no-such-family'")
    (tmp_path / "config.json").write_text(json.dumps({"family": "toy-linear", "config": {"hopp": 3}}))
    _raises(ValueError, lambda: load_local_dir(tmp_path), "cannot build a 'toy-linear' model", "['hopp']")
    (tmp_path / "config.json").write_text(json.dumps({"family": "toy-linear", "config": {}, "format": "other"}))
    _raises(ValueError, lambda: load_local_dir(tmp_path), "has format 'other'")
    (tmp_path / "config.json").write_text((out / "config.json").read_text())
    _raises(FileNotFoundError, lambda: load_local_dir(tmp_path), "has no model.safetensors")
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    _raises(ValueError, lambda: load_local_dir(tmp_path), "cannot read", "model.safetensors")
    state = load_file(str(out / "model.safetensors"))
    state["proj.weight"] = state["proj.weight"][:2]
    state["surplus"] = torch.zeros(1)
    del state["codebook"]
    save_file(state, str(tmp_path / "model.safetensors"))
    _raises(ValueError, lambda: load_local_dir(tmp_path), "does not match ToyLinear", "missing keys (1): ['codebook']",
            "unexpected keys (1): ['surplus']", "proj.weight: checkpoint (2, 8) vs model (4, 8)")


def test_load_state_strict_accepts_exact_state(linear):
    load_state_strict(linear, {k: v.clone() for k, v in linear.state_dict().items()})


# ---------------------------------------------------------------------------------------------- registry

def test_register_family_errors():
    _raises(ValueError, lambda: register_family(""), "non-empty family name")
    _raises(TypeError, lambda: register_family("x")(object()), "decorates a tokenizer class")
    register_family("toy-a")(ToyAudio)
    try:
        class Other(ToyAudio):
            pass

        _raises(ValueError, lambda: register_family("toy-a")(Other), "family 'toy-a' is already registered")
        assert get_family("toy-a") is ToyAudio
    finally:
        unregister_family("toy-a")
    _raises(ValueError, lambda: get_family("toy-a"), "unknown tokenizer family 'toy-a'", "wavtokenizer")
    _raises(TypeError, lambda: get_family(3), "family name must be a string")


def test_load_official_dispatch(toy_families, tmp_path):
    torch.manual_seed(1)
    ref = ToyLinear(ToyLinearConfig(hop=4))
    ckpt = tmp_path / "release.ckpt"
    torch.save({"state_dict": ref.state_dict(), "epoch": 3}, ckpt)
    model = zoo.load_official("toy-linear", ckpt, {"hop": 4})
    assert torch.equal(model.codebook, ref.codebook) and model.loaded_from == [str(ckpt)]
    _raises(ValueError, lambda: zoo.load_official("toy-audio", ckpt), "'toy-audio' has no official-release loader")
    _raises(TypeError, lambda: zoo.load_official(ToyLinear, ckpt), "family must be a family name")
    _raises(ValueError, lambda: zoo.load_official("toy-linear", ckpt), "does not match ToyLinear", "shape mismatches")


class _Payload:
    """Unpickling this calls a function: exactly what a restricted unpickler must refuse."""

    def __reduce__(self):
        import os

        return (os.getcwd, ())


def test_official_loader_never_unpickles_code(toy_families, tmp_path):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": _Payload()}, evil)
    _raises(ValueError, lambda: zoo.load_official("toy-linear", evil), "weights_only=True", "evil.ckpt")


def test_family_plugin_module_from_env(tmp_path, monkeypatch):
    (tmp_path / "my_plugin_family.py").write_text(
        "from zoo.registry import register_family\n"
        "from tests.zoo.toy_tokenizers import ToyAudio\n"
        "@register_family('plugin-audio')\n"
        "class PluginAudio(ToyAudio):\n"
        "    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _raises(ValueError, lambda: get_family("plugin-audio"), "unknown tokenizer family 'plugin-audio'")
    monkeypatch.setenv("TOKENZOO_FAMILY_MODULES", "my_plugin_family")
    try:
        assert get_family("plugin-audio").__name__ == "PluginAudio"
    finally:
        unregister_family("plugin-audio")
    monkeypatch.setenv("TOKENZOO_FAMILY_MODULES", "no_such_module_xyz")
    _raises(ValueError, lambda: get_family("plugin-audio"), "cannot import tokenizer family module 'no_such_module_xyz'")


def test_list_models_arguments():
    _raises(ValueError, lambda: zoo.list_models(modality="smell"), "modality must be one of")
    _raises(TypeError, lambda: zoo.list_models(family=3), "family must be a family name")
    assert math.isfinite(len(zoo.list_models()))


def test_encode_and_decode_run_in_eval_mode_and_restore_training_mode():
    from zoo.quantizers import VQ, VQConfig
    from zoo.tokenizer import _eval_mode

    q = VQ(VQConfig(dim=4, codebook_size=8, ema=True, decay=0.5))
    before = q.decode(torch.arange(8)).clone()
    holder = torch.nn.Sequential(q, torch.nn.Dropout(0.5))
    holder.train()
    with _eval_mode(holder):
        assert not q.training and not holder[1].training
        q(torch.randn(16, 4))  # would move the EMA codebook in training mode
    assert q.training and holder[1].training
    assert torch.equal(q.decode(torch.arange(8)), before)
