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


def _fake_sdist_archive(path: Path, members: dict) -> str:
    """A .tar.gz holding the given {member name: (seconds, sample rate)} as tones; returns its sha256."""
    import hashlib
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for i, (name, (seconds, sr)) in enumerate(members.items()):
            t = np.arange(int(seconds * sr)) / sr
            buf = io.BytesIO()
            sf.write(buf, (0.2 * np.sin(2 * np.pi * (300 + 50 * i) * t)).astype(np.float32), sr,
                     format="FLAC" if name.endswith(".flac") else "WAV", subtype="PCM_16")
            data = buf.getvalue()  # (after a FLAC write the position is not the end)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sdist_speech_reads_pinned_archives_without_unpacking(tmp_path):
    tool = _tool()
    members = {"pkg-1.0/tests/a.wav": (0.5, 16000), "pkg-1.0/tests/b.flac": (0.25, 22050),
               "pkg-1.0/tests/skip.txt.wav": (0.1, 16000)}
    digest = _fake_sdist_archive(tmp_path / "pkg-1.0.tar.gz", members)
    spec = {"pkg-1.0.tar.gz": (digest, ["pkg-1.0/tests/a.wav", "pkg-1.0/tests/*.flac"])}
    seconds = tool.sdist_speech(tmp_path, tmp_path / "out", spec)
    assert seconds == {"pkg-1.0.tar.gz": pytest.approx(0.75, abs=0.051)}  # rounded to 0.1 s
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["pkg_a.wav", "pkg_b.wav"]
    y, sr = sf.read(str(tmp_path / "out" / "pkg_b.wav"))
    assert sr == 24000 and len(y) == pytest.approx(0.25 * 24000, abs=2)
    peak = np.argmax(np.abs(np.fft.rfft(y))) * sr / len(y)
    assert peak == pytest.approx(350, abs=5)  # the 22.05 kHz tone keeps its pitch at 24 kHz
    assert not (tmp_path / "pkg-1.0").exists()  # read from the archive, nothing unpacked
    with pytest.raises(ValueError, match="sha256 .* is not the pinned"):
        tool.sdist_speech(tmp_path, tmp_path / "out", {"pkg-1.0.tar.gz": ("0" * 64, ["*"])})
    with pytest.raises(ValueError, match="no member matches 'pkg-1.0/none.wav'"):
        tool.sdist_speech(tmp_path, tmp_path / "out", {"pkg-1.0.tar.gz": (digest, ["pkg-1.0/none.wav"])})
    with pytest.raises(ValueError, match="other-2.0.tar.gz is missing"):
        tool.sdist_speech(tmp_path, tmp_path / "out", {"other-2.0.tar.gz": (digest, ["*"])})


def test_sdist_speech_list_is_pinned():
    tool = _tool()
    for name, (digest, patterns) in tool.SDIST_SPEECH.items():
        assert name.endswith(".tar.gz") and len(digest) == 64 and int(digest, 16) >= 0 and patterns
        assert all(p.startswith(name[: -len(".tar.gz")] + "/") for p in patterns), name
