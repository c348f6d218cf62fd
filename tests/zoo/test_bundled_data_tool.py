"""tools/bundled_data.py: the pocketsphinx speech extraction used for the bundled audio tokenizer's training set."""

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
