import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from zoo.metrics import MetricUnavailable, dnsmos, speaker_similarity


@pytest.fixture
def speech(shared_data):
    path = shared_data("audio/speech") / "en_real_arctic_a0007.wav"
    wav, sr = sf.read(path, dtype="float32")
    return path, torch.from_numpy(wav), sr


def test_dnsmos_unavailable_names_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "speechmos", None)
    monkeypatch.setitem(sys.modules, "speechmos.dnsmos", None)
    with pytest.raises(MetricUnavailable, match="speechmos"):
        dnsmos(torch.zeros(16000), 16000)


def test_dnsmos_validates_input():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        dnsmos(torch.full((1, 1600), 1.5), 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        dnsmos(torch.zeros(1, 1600), 0)
    with pytest.raises(TypeError, match="floating"):
        dnsmos(torch.zeros(1, 1600, dtype=torch.int16), 16000)
    with pytest.raises(ValueError, match="dimensions"):
        dnsmos(torch.zeros(2, 2, 2, 2), 16000)


@pytest.mark.slow
def test_dnsmos_matches_speechmos_and_ranks(speech):
    pytest.importorskip("speechmos", reason="optional extra 'metrics' (speechmos) not installed")
    pytest.importorskip("onnxruntime", reason="optional extra 'metrics' (onnxruntime) not installed")
    import librosa
    from speechmos import dnsmos as ref_dnsmos

    path, _, _ = speech
    # the package's own file path API (librosa load at 16 kHz) vs our tensor API on the same 16 kHz samples
    expected = ref_dnsmos.run(str(path), 16000)
    wav16, _ = librosa.load(str(path), sr=16000)
    g = torch.Generator().manual_seed(0)
    clean = torch.from_numpy(wav16)
    noisy = (clean + 0.05 * torch.randn(clean.shape, generator=g)).clamp(-1, 1)
    got = dnsmos(torch.stack([clean, noisy]), 16000)
    for key, src in (("ovrl", "ovrl_mos"), ("sig", "sig_mos"), ("bak", "bak_mos"), ("p808", "p808_mos")):
        assert got[key].shape == (2,)
        assert float(got[key][0]) == pytest.approx(float(expected[src]), abs=1e-6)
    # a known degradation (white noise at about 5 dB SNR) lowers the overall and background scores
    assert float(got["ovrl"][1]) < float(got["ovrl"][0]) - 0.5
    assert float(got["bak"][1]) < float(got["bak"][0])
    # (the 24 kHz -> 16 kHz resampling path is exercised by test_bench_reports_dnsmos: the toy codec runs at 24 kHz)


def _bench_dnsmos(shared_data, tmp_path, monkeypatch, columns=None):
    from tests.zoo.toy_tokenizers import ToyAudio, ToyAudioConfig
    from zoo import bench

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    res = bench.run([ToyAudio(ToyAudioConfig())], shared_data("audio/speech"), out=tmp_path / "o", limit=1,
                    metrics=columns or DNSMOS_COLUMNS, figures=0, progress=False)
    m = res["models"]["toy-audio"]
    assert not m["errors"]
    return m


DNSMOS_COLUMNS = ["dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"]


def test_bench_reports_dnsmos_unavailable(shared_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "speechmos", None)
    monkeypatch.setitem(sys.modules, "speechmos.dnsmos", None)
    monkeypatch.setitem(sys.modules, "resemblyzer", None)
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    m = _bench_dnsmos(shared_data, tmp_path, monkeypatch, DNSMOS_COLUMNS + ["speaker_sim", "asr_wer"])
    # reported as unavailable, naming the package, never as an error or NaN
    assert sorted(m["unavailable"]) == sorted(DNSMOS_COLUMNS + ["speaker_sim", "asr_wer"])
    assert "faster-whisper" in m["unavailable"]["asr_wer"]
    assert all("speechmos" in m["unavailable"][k] for k in DNSMOS_COLUMNS)
    assert "resemblyzer" in m["unavailable"]["speaker_sim"]
    assert not any(k in m["metrics"] for k in DNSMOS_COLUMNS + ["speaker_sim"])


@pytest.mark.slow
def test_bench_reports_dnsmos(shared_data, tmp_path, monkeypatch):
    pytest.importorskip("speechmos", reason="optional extra 'metrics' (speechmos) not installed")
    pytest.importorskip("onnxruntime", reason="optional extra 'metrics' (onnxruntime) not installed")
    m = _bench_dnsmos(shared_data, tmp_path, monkeypatch)
    for k in DNSMOS_COLUMNS:
        assert m["metrics"][k]["n"] == 1 and 1.0 <= m["metrics"][k]["mean"] <= 5.0


def _read(folder, name):
    wav, sr = sf.read(folder / name, dtype="float32")
    return torch.from_numpy(wav), sr


def test_speaker_similarity_unavailable_names_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "resemblyzer", None)
    with pytest.raises(MetricUnavailable, match="'resemblyzer'.*--no-deps resemblyzer"):
        speaker_similarity(torch.zeros(1, 16000), torch.zeros(1, 16000), 16000)
    monkeypatch.setitem(sys.modules, "webrtcvad", None)
    with pytest.raises(MetricUnavailable, match="webrtcvad-wheels"):
        speaker_similarity(torch.zeros(1, 16000), torch.zeros(1, 16000), 16000)


def test_speaker_similarity_validates():
    with pytest.raises(ValueError, match="same number"):
        speaker_similarity(torch.zeros(2, 100), torch.zeros(1, 100), 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        speaker_similarity(torch.zeros(1, 100), torch.zeros(1, 100), -1)


@pytest.mark.slow
def test_speaker_similarity_matches_resemblyzer_and_ranks(shared_data):
    pytest.importorskip("resemblyzer", reason="resemblyzer not installed (pip install --no-deps resemblyzer)")
    pytest.importorskip("webrtcvad", reason="webrtcvad-wheels not installed")
    from resemblyzer import VoiceEncoder, preprocess_wav

    pairs, speech = shared_data("audio/pairs"), shared_data("audio/speech")
    orig, sr = _read(pairs, "en_trump1_original.wav")
    rec, _ = _read(pairs, "en_trump1_tadicodec_rec.wav")
    other, sr2 = _read(speech, "en_real_arctic_a0007.wav")
    assert sr == sr2
    n = min(orig.shape[0], rec.shape[0])
    orig, rec = orig[:n], rec[:n]
    other = torch.nn.functional.pad(other, (0, max(0, n - other.shape[0])))[:n]
    sims = speaker_similarity(torch.stack([orig, orig, orig]), torch.stack([orig, rec, other]), sr)
    assert sims.shape == (3,)
    assert float(sims[0]) == pytest.approx(1.0, abs=1e-6)  # identical input: the ideal value
    # the package's own pipeline on the same pair
    enc = VoiceEncoder("cpu", verbose=False)
    e1 = enc.embed_utterance(preprocess_wav(orig.numpy(), source_sr=sr))
    e2 = enc.embed_utterance(preprocess_wav(rec.numpy(), source_sr=sr))
    expected = float(np.dot(e1, e2) / (np.linalg.norm(e1) * np.linalg.norm(e2)))
    assert float(sims[1]) == pytest.approx(expected, abs=1e-6)
    # same speaker through a codec ranks well above a different speaker
    assert float(sims[2]) < float(sims[1]) - 0.2
