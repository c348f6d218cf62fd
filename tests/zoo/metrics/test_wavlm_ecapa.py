"""WavLM-Large + ECAPA-TDNN speaker similarity: loading, key names, numerics on a tiny config, input checks."""

import math
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from zoo.metrics import MetricUnavailable, speaker_similarity_wavlm, wavlm_ecapa_embedding
from zoo.metrics import wavlm_ecapa as W
from zoo.signal import resample

TINY = W.WavLMECAPAConfig(conv_layers=((16, 10, 5), (16, 3, 2), (16, 2, 2)), embed_dim=32, ffn_dim=64,
                          num_heads=4, num_layers=2, conv_pos=8, conv_pos_groups=4, num_buckets=16,
                          max_distance=32, channels=16, emb_dim=8, agg_channels=24, res2_scale=4,
                          se_bottleneck=4, attention_channels=4)


def tiny_model(seed: int = 0) -> W.WavLMECAPA:
    """A tiny model with random weights and batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = W.WavLMECAPA(TINY)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g) * 0.1)
    return model.eval()


def speech_like(n: int, seed: int, sr: int = 16000) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / sr
    f0 = 100 + 80 * seed
    x = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 6)) * (1 + 0.5 * torch.sin(2 * math.pi * 3 * t))
    return (0.2 * x + 0.01 * torch.randn(n, generator=g)).float()


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    monkeypatch.delenv(W.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path / ".cache" / "tokenzoo" / "metrics" / "wavlm_large_finetune.pth"


# ------------------------------------------------------------------------------------------- weights files

def test_missing_weights_is_unavailable_and_names_the_file(no_weights):
    assert W.default_weights_path() == no_weights
    x = speech_like(4000, 0)
    with pytest.raises(MetricUnavailable) as exc:
        speaker_similarity_wavlm(x, x, 16000)
    msg = str(exc.value)
    assert "wavlm_large_finetune.pth" in msg and str(no_weights) in msg
    assert "microsoft/UniSpeech" in msg and W.WEIGHTS_ENV in msg
    with pytest.raises(MetricUnavailable, match="wavlm_large_finetune.pth"):
        wavlm_ecapa_embedding(x, 16000, weights=no_weights.parent / "elsewhere.pth")


def test_env_var_names_the_weights(tmp_path, monkeypatch):
    target = tmp_path / "sv.pth"
    monkeypatch.setenv(W.WEIGHTS_ENV, str(target))
    assert W.default_weights_path() == target
    with pytest.raises(MetricUnavailable, match="sv.pth"):
        wavlm_ecapa_embedding(speech_like(4000, 0), 16000)


def test_saved_state_round_trips_strictly(tmp_path):
    model = tiny_model()
    state = dict(model.state_dict())
    state["loss_calculator.projection.weight"] = torch.randn(5, TINY.emb_dim)  # training-only, dropped
    # the release wraps the state in {"model": ...}; a numpy scalar beside it must not need full unpickling
    torch.save({"model": state, "best_eer": np.float64(0.43)}, tmp_path / "sv.pth")
    loaded = W.load_wavlm_ecapa(tmp_path / "sv.pth", TINY)
    assert not loaded.training
    assert set(loaded.state_dict()) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = speech_like(6000, 1)[None]
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # a flat state dict (no "model" wrapper) loads too
    torch.save(model.state_dict(), tmp_path / "flat.pth")
    assert torch.equal(W.load_wavlm_ecapa(tmp_path / "flat.pth", TINY).linear.weight, model.linear.weight)


def test_wrong_or_missing_key_fails_naming_it(tmp_path):
    state = dict(tiny_model().state_dict())
    state["feature_extract.model.encoder.layers.1.self_attn.grep_b"] = state.pop(
        "feature_extract.model.encoder.layers.1.self_attn.grep_a")
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as exc:
        W.load_wavlm_ecapa(tmp_path / "bad.pth", TINY)
    assert "layers.1.self_attn.grep_a" in str(exc.value) and "layers.1.self_attn.grep_b" in str(exc.value)
    state = dict(tiny_model().state_dict())
    state["linear.weight"] = torch.zeros(3, 3)
    torch.save({"model": state}, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match="linear.weight"):
        W.load_wavlm_ecapa(tmp_path / "shape.pth", TINY)
    # a tiny file is not the Large model: the default config names the mismatch instead of loading half
    torch.save({"model": tiny_model().state_dict()}, tmp_path / "tiny.pth")
    with pytest.raises(ValueError, match="shape mismatches"):
        W.load_wavlm_ecapa(tmp_path / "tiny.pth")


_RAN = []


def _side_effect():
    _RAN.append(True)
    return {}


class _Evil:
    def __reduce__(self):
        return (_side_effect, ())


def test_pickled_code_is_refused(tmp_path):
    torch.save({"model": tiny_model().state_dict(), "hook": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="never unpickles code"):
        W.load_wavlm_ecapa(tmp_path / "evil.pth", TINY)
    assert _RAN == []


def test_model_is_cached_per_path(tmp_path, monkeypatch):
    path = tmp_path / "sv.pth"
    path.write_bytes(b"x")
    calls = []
    monkeypatch.setattr(W, "load_wavlm_ecapa", lambda p: calls.append(p) or tiny_model())
    monkeypatch.setattr(W, "_CACHE", {})
    a = W._resolve_model(str(path), torch.device("cpu"))
    b = W._resolve_model(path, torch.device("cpu"))
    assert a is b and len(calls) == 1


# ------------------------------------------------------------------------------------------- full-size layout

def test_large_key_names_and_shapes_match_the_release():
    with torch.device("meta"):
        model = W.WavLMECAPA()
    sd = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(sd) == 710  # 488 upstream (feature_extract.model.*) + feature_weight + 221 head tensors
    assert sum(k.startswith("feature_extract.model.") for k in sd) == 488
    up = "feature_extract.model."
    expected = {
        "feature_weight": (25,),
        up + "mask_emb": (1024,),
        up + "feature_extractor.conv_layers.0.0.weight": (512, 1, 10),
        up + "feature_extractor.conv_layers.0.2.1.weight": (512,),
        up + "feature_extractor.conv_layers.6.0.weight": (512, 512, 2),
        up + "layer_norm.weight": (512,),
        up + "post_extract_proj.weight": (1024, 512),
        up + "encoder.pos_conv.0.weight_g": (1, 1, 128),
        up + "encoder.pos_conv.0.weight_v": (1024, 64, 128),
        up + "encoder.pos_conv.0.bias": (1024,),
        up + "encoder.layers.0.self_attn.relative_attention_bias.weight": (320, 16),
        up + "encoder.layers.23.self_attn.grep_linear.weight": (8, 64),
        up + "encoder.layers.23.self_attn.grep_a": (1, 16, 1, 1),
        up + "encoder.layers.23.self_attn.k_proj.bias": (1024,),
        up + "encoder.layers.23.fc1.weight": (4096, 1024),
        up + "encoder.layers.23.final_layer_norm.bias": (1024,),
        up + "encoder.layer_norm.weight": (1024,),
        "layer1.conv.weight": (512, 1024, 5),
        "layer1.bn.num_batches_tracked": (),
        "layer2.Res2Conv1dReluBn.convs.6.weight": (64, 64, 3),
        "layer4.Res2Conv1dReluBn.bns.6.running_var": (64,),
        "layer3.SE_Connect.linear1.weight": (128, 512),
        "layer4.Conv1dReluBn2.conv.weight": (512, 512, 1),
        "conv.weight": (1536, 1536, 1),
        "pooling.linear1.weight": (128, 1536, 1),
        "pooling.linear2.weight": (1536, 128, 1),
        "bn.running_mean": (3072,),
        "linear.weight": (256, 3072),
    }
    for k, shape in expected.items():
        assert sd.get(k) == shape, (k, sd.get(k), shape)
    assert [k for k in sd if "relative_attention_bias" in k] == [
        up + "encoder.layers.0.self_attn.relative_attention_bias.weight"]
    assert not any("shortcut" in k or "instance_norm" in k or "Res2Conv1dReluBn.convs.7" in k for k in sd)


def test_relative_position_buckets_hand_values():
    b = W.relative_position_buckets(1000, 320, 800)
    # key minus query: 0 -> 0, -1 -> 1, +1 -> 160 + 1; |d| < 80 is exact; |d| = 80 -> 80; far offsets saturate
    assert b[5, 5] == 0 and b[5, 4] == 1 and b[5, 6] == 161
    assert b[0, 79] == 160 + 79 and b[0, 80] == 160 + 80 and b[80, 0] == 80
    assert b[0, 999] == 319 and b[999, 0] == 159
    # 80 + floor(log(d / 80) / log(10) * 80) for d = 253
    assert b[0, 253] == 160 + 80 + int(math.log(253 / 80) / math.log(10) * 80)


# ------------------------------------------------------------------------------------------- numerics (tiny)

def test_shapes_dtypes_and_identity():
    model = tiny_model()
    x = torch.stack([speech_like(5000, 1), speech_like(5000, 2)])
    emb = wavlm_ecapa_embedding(x, 16000, weights=model)
    assert emb.shape == (2, TINY.emb_dim) and emb.dtype == torch.float64 and emb.device.type == "cpu"
    one = wavlm_ecapa_embedding(x[0], 16000, weights=model)
    assert one.shape == (1, TINY.emb_dim)
    assert torch.allclose(wavlm_ecapa_embedding(x[:, None], 16000, weights=model), emb, atol=0, rtol=0)
    sim = speaker_similarity_wavlm(x, x.clone(), 16000, weights=model)
    assert sim.shape == (2,) and sim.dtype == torch.float64
    assert torch.allclose(sim, torch.ones(2, dtype=torch.float64), atol=1e-12)
    other = speaker_similarity_wavlm(x, x.flip(0), 16000, weights=model)
    assert (other < 0.999).all()
    assert torch.allclose(other, torch.nn.functional.cosine_similarity(emb, emb.flip(0)), atol=1e-12)


def test_batch_equals_items_one_by_one():
    model = tiny_model()
    ref = torch.stack([speech_like(6000, 1), speech_like(6000, 3)])
    est = torch.stack([speech_like(6000, 2), speech_like(6000, 1) + 0.05 * speech_like(6000, 4)])
    batch = speaker_similarity_wavlm(ref, est, 16000, weights=model)
    single = torch.cat([speaker_similarity_wavlm(ref[i], est[i], 16000, weights=model) for i in range(2)])
    assert torch.allclose(batch, single, atol=1e-6)
    e_batch = wavlm_ecapa_embedding(ref, 16000, weights=model)
    e_single = torch.cat([wavlm_ecapa_embedding(ref[i], 16000, weights=model) for i in range(2)])
    assert torch.allclose(e_batch, e_single, atol=1e-5)
    assert not torch.allclose(e_batch[0], e_batch[1], atol=1e-3)


def test_resampling_and_gain_invariance():
    model = tiny_model()
    x24 = speech_like(9000, 5, sr=24000)
    got = wavlm_ecapa_embedding(x24, 24000, weights=model)
    with torch.no_grad():
        want = model(resample(x24[None], 24000, 16000)).double()
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, wavlm_ecapa_embedding(x24, 16000, weights=model), atol=1e-3)
    # the waveform is normalised to zero mean / unit variance first (WavLM-Large's normalize=True)
    assert torch.allclose(wavlm_ecapa_embedding(3.0 * x24, 24000, weights=model), got, atol=1e-5)
    # and different lengths of reference and estimate are embedded separately
    s = speaker_similarity_wavlm(x24, x24[:8000], 24000, weights=model)
    assert s.shape == (1,) and s < 1


def test_input_validation():
    model = tiny_model()
    x = speech_like(4000, 0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        wavlm_ecapa_embedding(x.numpy(), 16000, weights=model)
    with pytest.raises(TypeError, match="floating"):
        wavlm_ecapa_embedding((x * 1000).long(), 16000, weights=model)
    bad = x.clone()
    bad[10] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        wavlm_ecapa_embedding(bad, 16000, weights=model)
    with pytest.raises(ValueError, match="mono"):
        wavlm_ecapa_embedding(torch.stack([x, x])[None], 16000, weights=model)
    with pytest.raises(ValueError, match="dimensions"):
        wavlm_ecapa_embedding(x.reshape(2, 2, 1000, 1), 16000, weights=model)
    with pytest.raises(ValueError, match="empty"):
        wavlm_ecapa_embedding(torch.zeros(1, 0), 16000, weights=model)
    for sr in (0, -16000, True, "16k", float("nan")):
        with pytest.raises(ValueError, match="sample_rate"):
            wavlm_ecapa_embedding(x, sr, weights=model)
    with pytest.raises(ValueError, match="too short"):
        wavlm_ecapa_embedding(x[:399], 16000, weights=model)
    with pytest.raises(ValueError, match="same number of items"):
        speaker_similarity_wavlm(torch.stack([x, x]), x, 16000, weights=model)
    with pytest.raises(TypeError, match="weights"):
        wavlm_ecapa_embedding(x, 16000, weights=123)
    with pytest.raises(TypeError, match="WavLMECAPAConfig"):
        W.WavLMECAPA({"num_layers": 2})
    with pytest.raises(ValueError, match="num_heads"):
        W.WavLMECAPAConfig(embed_dim=30, num_heads=4)


# ------------------------------------------------------------------------------------------- benchmark hook

def test_bench_speaker_sim_wavlm(no_weights):
    from zoo import bench

    assert bench.HIGHER_IS_BETTER["speaker_sim_wavlm"] is True
    assert "speaker_sim_wavlm" not in bench.DEFAULT_METRICS["audio"]  # opt-in
    assert bench._check_extractors({"speaker_sim_wavlm": "x.pth"}) == {"speaker_sim_wavlm": "x.pth"}
    with pytest.raises(ValueError, match="unknown metrics"):
        bench._check_extractors({"speaker_sim_wavelm": "x.pth"})
    tok = SimpleNamespace(sample_rate=16000)
    x = speech_like(6000, 1)[None]
    y = speech_like(6000, 2)[None]
    values, unav = bench._metric_values(tok, "audio", x, y, ["speaker_sim_wavlm"], {})
    assert values == {} and "wavlm_large_finetune.pth" in unav["speaker_sim_wavlm"]
    model = tiny_model()
    values, unav = bench._metric_values(tok, "audio", x, y, ["speaker_sim_wavlm"], {},
                                        speaker_sim_wavlm_weights=model)
    assert unav == {}
    ref, est = bench.M.align(x, y, int(bench.MAX_AUDIO_SHIFT_S * 16000))
    want = float(speaker_similarity_wavlm(ref, est, 16000, weights=model).mean())
    assert values["speaker_sim_wavlm"] == pytest.approx(want, abs=1e-9) and values["speaker_sim_wavlm"] < 0.999


# ------------------------------------------------------------------------------------------- original-code anchor

def _fill(name: str, t: torch.Tensor) -> torch.Tensor:
    """Deterministic weights per key (crc32-seeded), the same rule used to run the original code."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    if name.endswith("num_batches_tracked"):
        return t
    if name.endswith("running_var"):
        return torch.rand(t.shape, generator=g) + 0.5
    if name.endswith("running_mean"):
        return 0.1 * torch.randn(t.shape, generator=g)
    if name.endswith("relative_attention_bias.weight"):
        return torch.randn(t.shape, generator=g)
    if t.ndim >= 2 and not name.endswith("weight_g"):
        return torch.randn(t.shape, generator=g) / math.sqrt(math.prod(t.shape[1:]))
    if name.endswith(("weight", "weight_g", "grep_a")):
        return 1 + 0.1 * torch.randn(t.shape, generator=g)
    return 0.1 * torch.randn(t.shape, generator=g)


def _signal(n: int, f0: float) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64) / 16000
    x = sum(torch.sin(2 * math.pi * f0 * k * t + k) / k for k in range(1, 6))
    return (0.3 * x * (1 + 0.5 * torch.sin(2 * math.pi * 3 * t))).float()


def test_matches_numbers_of_the_original_code():
    """A tiny WavLM upstream under the full-size ECAPA head. The expected numbers were produced by the original
    UniSpeech ``ECAPA_TDNN_SMALL(feat_dim=32, feat_type='wavlm_large')`` around s3prl's WavLM (the commit the
    UniSpeech README pins) with the same WavLM config and the same per-key weights; 280 keys on both sides."""
    cfg = W.WavLMECAPAConfig(conv_layers=((16, 10, 5), (16, 3, 2), (16, 2, 2)), embed_dim=32, ffn_dim=64,
                             num_heads=4, num_layers=2, conv_pos=8, conv_pos_groups=4, num_buckets=16,
                             max_distance=32)
    model = W.WavLMECAPA(cfg)
    state = {k: _fill(k, v) for k, v in model.state_dict().items()}
    assert len(state) == 280
    model.load_state_dict(state)
    emb = wavlm_ecapa_embedding(torch.stack([_signal(8000, 120.0), _signal(8000, 210.0)]), 16000, weights=model)
    assert emb[0, :6].tolist() == pytest.approx([-1.218345, -0.545983, 0.508805, 0.481574, -0.057315, -0.515849],
                                                abs=2e-5)
    assert emb.norm(dim=1).tolist() == pytest.approx([9.500713, 9.599907], abs=2e-5)
    sim = speaker_similarity_wavlm(_signal(8000, 120.0), _signal(8000, 210.0), 16000, weights=model)
    assert float(sim) == pytest.approx(0.9772845, abs=1e-6)
