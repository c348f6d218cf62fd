"""No-reference speech quality: DNSMOS (Microsoft DNS challenge, ITU-T P.835 / P.808 predictors).

Convention
----------
``dnsmos(audio, sample_rate)`` takes mono waveforms ``[B, T]`` (or ``[T]`` / ``[B, 1, T]``) with samples in
``[-1, 1]``, resamples each to 16 kHz with soxr (VHQ) when needed, and scores each item with the ONNX models
shipped inside the ``speechmos`` wheel (``dnsmos_models/sig_bak_ovr.onnx`` + ``model_v8.onnx``; MIT, Microsoft).
It returns a dict of ``[B]`` float64 tensors on the CPU: ``ovrl``, ``sig``, ``bak`` (P.835 overall / signal /
background, polynomial-mapped as in the DNS challenge script) and ``p808``. All are mean opinion scores in about
``[1, 5]``, higher is better. The package scores 9.01 s windows hopped by 1 s and averages them; clips shorter
than 9.01 s are tiled (repeated) up to that length by the package. ``personalized=True`` uses the pDNSMOS
primary model instead. DNSMOS has no reference: for a codec compare the score of the reconstruction with the
score of the original.

Needs the optional extra ``metrics`` (``pip install tokenzoo[metrics]`` = speechmos + onnxruntime); otherwise
:class:`~zoo.metrics.base.MetricUnavailable` names the missing package.

``speaker_similarity(ref, est, sample_rate)`` is the cosine similarity (in ``[-1, 1]``, 1 = same voice, higher is
better) between GE2E d-vectors (Wan et al. 2018) of each reference/estimate pair, via the ``resemblyzer`` package,
whose 256-d LSTM speaker encoder (``resemblyzer/pretrained.pt``, Apache-2.0) ships in its wheel. Each waveform goes
through the package's own ``preprocess_wav`` (resample to 16 kHz with librosa, normalise to -30 dBFS, trim long
silences with WebRTC VAD) and ``embed_utterance`` (1.6 s partials at 1.3 per second, averaged and L2-normalised).
This is *not* the WavLM-large + ECAPA-TDNN similarity most codec papers report (its files cannot be had offline
here); values are not comparable with those. Install with ``pip install --no-deps resemblyzer`` and
``pip install webrtcvad-wheels`` (resemblyzer's declared ``webrtcvad`` dependency imports ``pkg_resources``,
which current setuptools no longer ships).
"""

from __future__ import annotations

import importlib
from typing import Dict

import numpy as np
import torch

from ..validation import check_tensor
from .base import MetricUnavailable, require_module

DNSMOS_SAMPLE_RATE = 16000  # the rate the DNSMOS ONNX models were trained at (speechmos refuses others)
_KEYS = (("ovrl", "ovrl_mos"), ("sig", "sig_mos"), ("bak", "bak_mos"), ("p808", "p808_mos"))


def _mono_batch(audio) -> torch.Tensor:
    if isinstance(audio, torch.Tensor) and audio.ndim == 1:
        audio = audio[None]
    if isinstance(audio, torch.Tensor) and audio.ndim == 3 and audio.shape[1] == 1:
        audio = audio[:, 0]
    return check_tensor("audio", audio, ndim=(2,), floating=True, shape_hint="[B, T] mono waveforms")


def dnsmos(audio, sample_rate: int, personalized: bool = False) -> Dict[str, torch.Tensor]:
    """DNSMOS P.835 (``ovrl``, ``sig``, ``bak``) and P.808 (``p808``) per item via ``speechmos``.

    See the module docstring for the exact convention. Raises ``ValueError`` for samples outside ``[-1, 1]``.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate!r}")
    if not isinstance(personalized, bool):
        raise TypeError(f"personalized must be a bool, got {type(personalized).__name__}")
    x = _mono_batch(audio).detach().to("cpu", torch.float64)
    peak = float(x.abs().max())
    if peak > 1.0:
        raise ValueError(f"audio samples must lie in [-1, 1] for DNSMOS, got a peak of {peak:.4g}; "
                         "normalise or clip first")
    require_module("dnsmos", "onnxruntime")
    lib = require_module("dnsmos", "speechmos.dnsmos", "speechmos")
    sr = int(sample_rate)
    out = {k: [] for k, _ in _KEYS}
    model_type = "dnsmos_personalized" if personalized else "dnsmos"
    for item in x.numpy():
        if sr != DNSMOS_SAMPLE_RATE:
            import soxr

            item = soxr.resample(item, sr, DNSMOS_SAMPLE_RATE, quality="VHQ")
            item = np.clip(item, -1.0, 1.0)  # resampling can overshoot a full-scale input slightly
        res = lib.run(np.ascontiguousarray(item, dtype=np.float32), DNSMOS_SAMPLE_RATE, model_type=model_type)
        for k, src in _KEYS:
            out[k].append(float(res[src]))
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}


_SPEAKER_ENCODER: dict = {}


def _speaker_encoder():
    how = "pip install --no-deps resemblyzer && pip install webrtcvad-wheels"
    for module, package in (("webrtcvad", "webrtcvad-wheels"), ("resemblyzer", "resemblyzer")):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MetricUnavailable("speaker_similarity", f"the PyPI package {package!r}", how) from exc
    lib = importlib.import_module("resemblyzer")
    if "enc" not in _SPEAKER_ENCODER:
        # resemblyzer calls torch.load on its bundled state dict; torch's default is weights_only=True
        _SPEAKER_ENCODER["enc"] = lib.VoiceEncoder("cpu", verbose=False)
    return lib, _SPEAKER_ENCODER["enc"]


def speaker_embedding(audio, sample_rate: int) -> torch.Tensor:
    """GE2E d-vectors ``[B, 256]`` (unit norm, float64) of mono waveforms ``[B, T]`` via ``resemblyzer``."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate!r}")
    x = _mono_batch(audio).detach().to("cpu", torch.float32)
    lib, enc = _speaker_encoder()
    out = []
    for i, item in enumerate(x.numpy()):
        wav = lib.preprocess_wav(np.ascontiguousarray(item), source_sr=int(sample_rate))
        if wav.size == 0:
            raise ValueError(f"item {i}: no speech left after voice-activity trimming; cannot embed a speaker")
        out.append(torch.from_numpy(np.asarray(enc.embed_utterance(wav), dtype=np.float64)))
    return torch.stack(out)


def speaker_similarity(ref, est, sample_rate: int) -> torch.Tensor:
    """Cosine similarity ``[B]`` of GE2E speaker embeddings of reference and estimate (see module docstring)."""
    ref = _mono_batch(ref)
    est = _mono_batch(est)
    if ref.shape[0] != est.shape[0]:
        raise ValueError(f"reference and estimate must hold the same number of items, got {ref.shape[0]} and "
                         f"{est.shape[0]}")
    a, b = speaker_embedding(ref, sample_rate), speaker_embedding(est, sample_rate)
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)
