"""tools/bundled_data.py: the pocketsphinx speech and spkit EEG extraction used for the bundled tokenizers' data."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bundled_data.py"


def _tool():
    spec = importlib.util.spec_from_file_location("bundled_data_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_sdist(root: Path, names) -> dict:
    """A pocketsphinx-like tree: every listed file as a 0.5 s tone (wav at 16 kHz or 11025 Hz stereo, raw int16)."""
    seconds = {}
    for i, rel in enumerate(names):
        f = root / "test" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        sr = 11025 if "chan3" in rel else 16000
        t = np.arange(int(0.5 * sr)) / sr
        y = (0.3 * np.sin(2 * np.pi * (200 + 10 * i) * t)).astype(np.float32)
        if rel.endswith(".raw"):
            (np.round(y * 32767).astype("<i2")).tofile(f)
        elif "chan3" in rel:
            sf.write(str(f), np.stack([y, y], axis=1), sr, subtype="PCM_16")
        else:
            sf.write(str(f), y, sr, subtype="PCM_16")
        seconds[rel] = len(y) / sr
    return seconds


def test_pocketsphinx_speech_writes_24k_mono_files(tmp_path):
    tool = _tool()
    seconds = _fake_sdist(tmp_path / "ps", tool.POCKETSPHINX_SPEECH)
    total = tool.pocketsphinx_speech(tmp_path / "ps", tmp_path / "out")
    files = sorted((tmp_path / "out").glob("*.wav"))
    assert len(files) == len(tool.POCKETSPHINX_SPEECH)
    assert total == pytest.approx(sum(seconds.values()), abs=0.01 * len(files))
    for f in files:
        info = sf.info(str(f))
        assert f.name.startswith("pocketsphinx_") and info.samplerate == 24000 and info.channels == 1
    # a raw file is read as 16 kHz int16: its tone keeps its pitch and level after resampling to 24 kHz
    raw = tmp_path / "out" / "pocketsphinx_goforward.wav"
    y, sr = sf.read(str(raw))
    i = tool.POCKETSPHINX_SPEECH.index("data/goforward.raw")
    peak = np.argmax(np.abs(np.fft.rfft(y))) * sr / len(y)
    assert peak == pytest.approx(200 + 10 * i, abs=3) and np.abs(y).max() == pytest.approx(0.3, abs=0.02)


def test_pocketsphinx_speech_names_what_is_missing(tmp_path):
    tool = _tool()
    with pytest.raises(ValueError, match="no test/ folder"):
        tool.pocketsphinx_speech(tmp_path, tmp_path / "out")
    _fake_sdist(tmp_path / "ps", tool.POCKETSPHINX_SPEECH[:-1])
    with pytest.raises(ValueError, match="dhd.2934z.raw is missing"):
        tool.pocketsphinx_speech(tmp_path / "ps", tmp_path / "out")


def _fake_spkit(root: Path, **override) -> Path:
    """A spkit-like wheel folder: the artifact pickle as spkit stores it (a dict of [2048, 14] arrays at 128 Hz)."""
    import pickle

    rng = np.random.default_rng(0)
    t = np.arange(2048) / 128.0
    x = np.stack([np.sin(2 * np.pi * (4 + k) * t) * (10 + k) + rng.standard_normal(2048) for k in range(14)], 1)
    names = ["AF3", "F7", "F3", "FC5", "T7", "P7", "O1", "O2", "P8", "T8", "FC6", "F4", "F8", "AF4"]
    d = {"X_raw": x + 4000.0, "X_fil": x, "fs": 128, "ch_names": names, "info": "fake"}
    d.update(override)
    f = root / "spkit" / "data" / "files" / "EEG16sec_artifact.pkl"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(pickle.dumps(d, protocol=3))
    return root


def test_spkit_eeg_split_by_time_resampled_and_normalised(tmp_path):
    tool = _tool()
    wheel = _fake_spkit(tmp_path / "spk")
    assert tool.spkit_train(wheel, tmp_path / "train") == 14
    files = sorted((tmp_path / "train").glob("spkit_phyaat_*.npz"))
    assert len(files) == 14
    with np.load(tmp_path / "train" / "spkit_phyaat_F7.npz") as d:
        sig = d["signal"]
        assert sig.shape == (1, int(11.5 * 200)) and float(d["sfreq"]) == 200.0 and list(d["ch_names"]) == ["F7"]
        assert np.quantile(np.abs(sig), 0.95) == pytest.approx(1.0, rel=1e-4)
        # channel F7 is a 5 Hz tone: resampling to 200 Hz keeps its frequency
        peak = np.argmax(np.abs(np.fft.rfft(sig[0]))) * 200.0 / sig.shape[1]
        assert peak == pytest.approx(5.0, abs=0.1)
    tool.spkit_heldout(wheel, tmp_path / "ex" / tool.SPKIT_HELDOUT_NAME)
    with np.load(tmp_path / "ex" / tool.SPKIT_HELDOUT_NAME) as d:
        assert d["signal"].shape == (14, 800) and len(d["ch_names"]) == 14
    # the spans are disjoint: no 0.5 s window of the held-out part was in training
    assert tool.SPKIT_TRAIN_SPAN[1] + 0.5 <= tool.SPKIT_HELDOUT_SPAN[0]


def test_spkit_reader_refuses_pickled_code_and_wrong_files(tmp_path):
    import pickle

    tool = _tool()
    with pytest.raises(ValueError, match="EEG16sec_artifact.pkl is missing"):
        tool.spkit_eeg(tmp_path)
    with pytest.raises(ValueError, match="not the 16 s, 14-channel, 128 Hz recording"):
        tool.spkit_eeg(_fake_spkit(tmp_path / "wrong", fs=256))

    class Evil:
        def __reduce__(self):
            import os
            return (os.getcwd, ())

    f = _fake_spkit(tmp_path / "evil") / "spkit" / "data" / "files" / "EEG16sec_artifact.pkl"
    f.write_bytes(pickle.dumps({"X_fil": Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load posix.getcwd"):
        tool.spkit_eeg(tmp_path / "evil")
    f.write_bytes(pickle.dumps({"X_fil": np.array([object()], dtype=object)}))
    with pytest.raises(pickle.UnpicklingError, match="object arrays are refused"):
        tool.spkit_eeg(tmp_path / "evil")
