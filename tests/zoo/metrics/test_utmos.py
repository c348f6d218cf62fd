"""UTMOS22 strong (zoo.metrics.utmos): weights resolution, strict loading, input checks, batching, resampling.

The released weights are not available offline; faithfulness to tarepan/SpeechMOS was checked outside the repo
(random weights saved in the release's format, same outputs). Here the full-size architecture's state-dict keys
and shapes are pinned to those of the original module, and the rest runs on a shrunken random model.
"""

import hashlib
import importlib

import pytest
import soundfile as sf
import torch

from zoo.metrics import MetricUnavailable
from zoo.metrics import utmos as utmos_fn

U = importlib.import_module("zoo.metrics.utmos")  # the module (its name is shadowed by the function in zoo.metrics)

# sha256 of the sorted "name:shape" lines of SpeechMOS v1.2.0 `UTMOS22Strong().state_dict()` (225 tensors), the
# layout of utmos22_strong_step7459_v1.pt (its hubconf loads that file strictly into this module).
RELEASE_KEYS = 225
RELEASE_KEYS_SHA256 = "1c935d4f64c7e366618285d29d50e7314a5fc7b326c8bcc580afb234b1c208ec"
SMALL = U.UTMOSConfig(conv_channels=16, dim=32, num_layers=2, num_heads=4, ffn_dim=48, pos_kernel=8, pos_groups=4,
                      domain_dim=8, judge_dim=8, rnn_hidden=12, proj_hidden=24)


def _small_model(seed: int = 0) -> "U.UTMOS22Strong":
    torch.manual_seed(seed)
    m = U.UTMOS22Strong(SMALL)
    with torch.no_grad():  # non-trivial conditions and a visible score spread
        m.domain_emb.normal_()
        m.judge_emb.normal_()
        m.projection[2].weight.mul_(20)
    return m


def _key_lines(state) -> str:
    return "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state.items()))


@pytest.fixture(scope="module")
def full_state():
    torch.manual_seed(0)
    return U.UTMOS22Strong().state_dict()


@pytest.fixture
def no_weights(monkeypatch, tmp_path):
    """No env var and an empty home: nothing to find."""
    monkeypatch.delenv(U.UTMOS_ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    U._MODEL_CACHE.clear()
    yield tmp_path
    U._MODEL_CACHE.clear()


@pytest.fixture
def speech(shared_data):
    wav, sr = sf.read(shared_data("audio/speech") / "en_real_arctic_a0009.wav", dtype="float32")
    return torch.from_numpy(wav), sr


def test_full_size_keys_match_release(full_state):
    assert len(full_state) == RELEASE_KEYS
    assert hashlib.sha256(_key_lines(full_state).encode()).hexdigest() == RELEASE_KEYS_SHA256
    shapes = {k: tuple(v.shape) for k, v in full_state.items()}
    assert shapes["wav2vec2.encoder.pos_conv.0.weight_g"] == (1, 1, 128)
    assert shapes["wav2vec2.encoder.pos_conv.0.weight_v"] == (768, 48, 128)
    assert shapes["wav2vec2.feature_extractor.conv_layers.0.2.weight"] == (512,)
    assert shapes["blstm.weight_ih_l0_reverse"] == (2048, 1024)
    assert shapes["projection.2.weight"] == (1, 2048)
    assert shapes["domain_emb"] == shapes["judge_emb"] == (1, 128)
    assert U.UTMOSConfig().min_samples == 400


def test_missing_weights_names_file_url_and_place(no_weights):
    with pytest.raises(MetricUnavailable) as err:
        utmos_fn(torch.zeros(16000), 16000)
    msg = str(err.value)
    assert "utmos22_strong_step7459_v1.pt" in msg and U.UTMOS_URL in msg
    assert str(no_weights / "home" / ".cache" / "tokenzoo" / "metrics") in msg and "TOKENZOO_UTMOS_WEIGHTS" in msg
    with pytest.raises(MetricUnavailable, match="utmos22_strong_step7459_v1.pt.*no such file"):
        utmos_fn(torch.zeros(16000), 16000, weights=no_weights / "nope.pt")


def test_env_var_to_missing_file(no_weights, monkeypatch):
    monkeypatch.setenv(U.UTMOS_ENV_VAR, str(no_weights / "gone.pt"))
    with pytest.raises(MetricUnavailable, match="TOKENZOO_UTMOS_WEIGHTS=.*gone.pt is not a file"):
        U.utmos_weights_path()


def test_full_size_round_trip_via_default_cache_path(no_weights, full_state):
    cache = no_weights / "home" / ".cache" / "tokenzoo" / "metrics"
    cache.mkdir(parents=True)
    torch.save(full_state, cache / U.UTMOS_FILENAME)
    model = U.load_utmos()  # found at the default path, loaded strictly
    got = model.state_dict()
    assert set(got) == set(full_state)
    assert all(torch.equal(got[k], full_state[k]) for k in full_state)
    assert U.load_utmos(cache / U.UTMOS_FILENAME) is model  # cached per path


def test_env_var_and_nested_dict(no_weights, monkeypatch):
    model = _small_model()
    path = no_weights / "wrapped.pt"
    torch.save({"state_dict": model.state_dict(), "step": 7459}, path)
    assert U.utmos_weights_ident() == "missing"  # bench result caches key on this
    monkeypatch.setenv(U.UTMOS_ENV_VAR, str(path))
    assert U.utmos_weights_ident().startswith(str(path.resolve()) + ":")
    loaded = U.load_utmos(config=SMALL)
    x = torch.randn(1, 4000) * 0.1
    assert torch.equal(utmos_fn(x, 16000, weights=loaded), utmos_fn(x, 16000, weights=model))


def test_renamed_or_missing_key_is_named(tmp_path):
    state = _small_model().state_dict()
    state["blstm.weight_hh_l0_renamed"] = state.pop("blstm.weight_hh_l0")
    del state["wav2vec2.mask_emb"]
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        U.load_utmos(path, config=SMALL)
    msg = str(err.value)
    assert "missing keys" in msg and "'blstm.weight_hh_l0'" in msg and "'wav2vec2.mask_emb'" in msg
    assert "unexpected keys" in msg and "blstm.weight_hh_l0_renamed" in msg
    state = _small_model().state_dict()
    state["projection.0.weight"] = state["projection.0.weight"][:, :3]
    torch.save(state, path)
    with pytest.raises(ValueError, match="shape mismatches.*projection.0.weight"):
        U.load_utmos(path, config=SMALL)


RAN = []


def _side_effect():
    RAN.append("code ran")
    return {}


class _Payload:
    def __reduce__(self):
        return (_side_effect, ())


def test_loader_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"wav2vec2.mask_emb": torch.zeros(3), "payload": _Payload()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        U.read_utmos_state(path)
    assert RAN == []
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match="expected a state dict"):
        U.read_utmos_state(path)
    torch.save({"a": torch.zeros(2), "b": 3}, path)
    with pytest.raises(ValueError, match=r"not tensors: \['b'\]"):
        U.read_utmos_state(path)


def test_input_validation():
    m = _small_model()
    with pytest.raises(ValueError, match="sample_rate"):
        utmos_fn(torch.zeros(1, 4000), 0, weights=m)
    with pytest.raises(ValueError, match="sample_rate"):
        utmos_fn(torch.zeros(1, 4000), True, weights=m)
    with pytest.raises(TypeError, match="floating"):
        utmos_fn(torch.zeros(1, 4000, dtype=torch.int16), 16000, weights=m)
    with pytest.raises(ValueError, match="dimensions"):
        utmos_fn(torch.zeros(2, 2, 4000), 16000, weights=m)  # stereo is not accepted
    with pytest.raises(ValueError, match="NaN"):
        utmos_fn(torch.full((1, 4000), float("nan")), 16000, weights=m)
    with pytest.raises(ValueError, match="empty"):
        utmos_fn(torch.zeros(1, 0), 16000, weights=m)
    with pytest.raises(TypeError, match="torch.Tensor"):
        utmos_fn([0.0] * 4000, 16000, weights=m)
    with pytest.raises(ValueError, match="too short.*need at least 400"):
        utmos_fn(torch.zeros(1, 399), 16000, weights=m)
    with pytest.raises(TypeError, match="weights must be"):
        utmos_fn(torch.zeros(1, 4000), 16000, weights=3)


def test_shape_dtype_and_batch_equals_items(speech):
    wav, sr = speech
    m = _small_model()
    a, b = wav[:16000], wav[8000:24000]
    batch = utmos_fn(torch.stack([a, b]), 16000, weights=m)
    assert batch.shape == (2,) and batch.dtype == torch.float64 and batch.device.type == "cpu"
    one = torch.cat([utmos_fn(a, 16000, weights=m), utmos_fn(b[None, None], 16000, weights=m)])
    assert one.shape == (2,)
    torch.testing.assert_close(batch, one, atol=1e-5, rtol=0)
    assert abs(float(batch[0] - batch[1])) > 1e-3  # the score depends on the input


def test_resampling_path(speech):
    wav, sr = speech
    assert sr == 24000
    from zoo.signal import resample

    m = _small_model()
    x = wav[None, :24000]
    at_24k = utmos_fn(x, sr, weights=m)
    assert at_24k.shape == (1,) and torch.isfinite(at_24k).all()
    torch.testing.assert_close(at_24k, utmos_fn(resample(x, sr, 16000), 16000, weights=m), atol=0, rtol=0)
    assert abs(float(at_24k - utmos_fn(x, 16000, weights=m))) > 1e-4  # the rate is not ignored


def test_bench_reports_unavailable_then_scores(no_weights):
    from types import SimpleNamespace

    from zoo import bench

    assert bench.HIGHER_IS_BETTER["utmos"] is True and "utmos" not in bench.DEFAULT_METRICS["audio"]
    assert bench._check_extractors({"utmos": "w.pt"}) == {"utmos": "w.pt"}
    tok = SimpleNamespace(sample_rate=16000)
    x = torch.randn(1, 1, 8000) * 0.1
    y = x + 0.01 * torch.randn_like(x)
    values, unav = bench._metric_values(tok, "audio", x, y, ["si_sdr", "utmos"], {})
    assert "si_sdr" in values and "utmos" not in values and U.UTMOS_FILENAME in unav["utmos"]
    m = _small_model()
    values, unav = bench._metric_values(tok, "audio", x, y, ["utmos"], {}, utmos_weights=m)
    assert unav == {} and values["utmos"] == pytest.approx(float(utmos_fn(y.reshape(1, -1), 16000, weights=m)))
