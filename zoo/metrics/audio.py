"""Audio reconstruction metrics.

Every function takes a reference and an estimate of shape ``[B, T]`` (or ``[T]``, treated as a batch of one) at
``sample_rate`` and returns a float64 tensor ``[B]`` with one value per item. Waveform metrics assume the two
signals are time-aligned: codecs with a delay should go through :func:`align` first (the benchmark does).

Conventions (stated because papers differ):

- ``si_sdr``: scale-invariant SDR in dB (Le Roux et al., 2019), both signals made zero-mean first.
- ``multi_resolution_stft_distance``: mean over three resolutions (FFT 512/1024/2048, hop 50/120/240, Hann
  window 240/600/1200, the Parallel WaveGAN setting) of spectral convergence + L1 of log magnitudes.
- ``mel_distance``: L1 between log10 mel spectrograms (clamped at 1e-5; n_fft 1024, hop 256, 100 Slaney mels,
  0 to sr/2, magnitude), averaged over bins and frames.
- ``pesq``: ITU-T P.862 via the ``pesq`` package, wide band at 16 kHz or narrow band at 8 kHz (signals resampled
  with soxr, VHQ).
- ``stoi`` / ``estoi``: via ``pystoi`` (which resamples to 10 kHz internally).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from .base import check_pair, require_module

_EPS = 1e-8


def _batch(ref, est) -> Tuple[torch.Tensor, torch.Tensor]:
    if isinstance(ref, torch.Tensor) and ref.ndim == 1:
        ref = ref[None]
    if isinstance(est, torch.Tensor) and est.ndim == 1:
        est = est[None]
    if isinstance(ref, torch.Tensor) and ref.ndim == 3 and ref.shape[1] == 1:
        ref = ref[:, 0]
    if isinstance(est, torch.Tensor) and est.ndim == 3 and est.shape[1] == 1:
        est = est[:, 0]
    return check_pair(ref, est, ndim=(2,), shape_hint="[B, T] mono waveforms")


def _check_rate(sample_rate) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate!r}")
    return int(sample_rate)


# ------------------------------------------------------------------------------------------ alignment

def estimate_delay(ref: torch.Tensor, est: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Lag (in samples) that best aligns ``est`` to ``ref`` per item, in ``[-max_shift, max_shift]``.

    A positive lag means ``est`` lags behind ``ref`` (its content arrives later). Computed from the full
    cross-correlation by FFT.
    """
    ref, est = _batch(ref, est)
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be a non-negative int, got {max_shift!r}")
    n = ref.shape[-1]
    size = 1 << int(np.ceil(np.log2(2 * n)))
    xr = torch.fft.rfft(ref.double(), size)
    xe = torch.fft.rfft(est.double(), size)
    corr = torch.fft.irfft(xe * xr.conj(), size)  # corr[k] = sum_t est[t + k] ref[t]
    lags = torch.arange(-max_shift, max_shift + 1)
    idx = lags % size
    best = corr[:, idx].argmax(dim=-1)
    return lags[best]


def align(ref: torch.Tensor, est: torch.Tensor, max_shift: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Remove the delay found by :func:`estimate_delay` (per item) and crop both to the common part.

    Items are cropped to the same length (the shortest common part over the batch) so the result stays a
    batch of equal shape.
    """
    ref, est = _batch(ref, est)
    lags = estimate_delay(ref, est, max_shift)
    n = ref.shape[-1]
    keep = n - int(lags.abs().max())
    if keep <= 0:
        raise ValueError(f"max_shift {max_shift} leaves nothing to compare for signals of {n} samples")
    out_r, out_e = [], []
    for i, lag in enumerate(lags.tolist()):
        if lag >= 0:
            r, e = ref[i, : n - lag], est[i, lag:]
        else:
            r, e = ref[i, -lag:], est[i, : n + lag]
        out_r.append(r[:keep])
        out_e.append(e[:keep])
    return torch.stack(out_r), torch.stack(out_e)


# ------------------------------------------------------------------------------------------ signal metrics

def si_sdr(ref, est) -> torch.Tensor:
    """Scale-invariant SDR in dB per item (higher is better; identical signals give a very large value)."""
    ref, est = _batch(ref, est)
    ref = ref.double() - ref.double().mean(-1, keepdim=True)
    est = est.double() - est.double().mean(-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + _EPS)
    target = alpha * ref
    noise = est - target
    return 10 * torch.log10((target.pow(2).sum(-1) + _EPS) / (noise.pow(2).sum(-1) + _EPS))


_MRSTFT = ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200))


def _stft_mag(x: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    window = torch.hann_window(win, dtype=x.dtype, device=x.device)
    spec = torch.stft(x, n_fft, hop, win, window=window, center=True, return_complex=True)
    return spec.abs().clamp_min(1e-7)


def multi_resolution_stft_distance(ref, est) -> torch.Tensor:
    """Spectral convergence + log-magnitude L1, averaged over three STFT resolutions (lower is better)."""
    ref, est = _batch(ref, est)
    ref, est = ref.float(), est.float()
    total = torch.zeros(ref.shape[0], dtype=torch.float64)
    for n_fft, hop, win in _MRSTFT:
        mr, me = _stft_mag(ref, n_fft, hop, win), _stft_mag(est, n_fft, hop, win)
        sc = torch.linalg.vector_norm(mr - me, dim=(-2, -1)) / torch.linalg.vector_norm(mr, dim=(-2, -1)).clamp_min(1e-7)
        mag = (mr.log() - me.log()).abs().mean(dim=(-2, -1))
        total += (sc + mag).double()
    return total / len(_MRSTFT)


def _mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0,
                                                fmax=sample_rate / 2, htk=False, norm="slaney")).float()


def mel_distance(ref, est, sample_rate: int, n_fft: int = 1024, hop: int = 256, n_mels: int = 100) -> torch.Tensor:
    """L1 distance of log10 mel spectrograms (lower is better); parameters in the module docstring."""
    ref, est = _batch(ref, est)
    sample_rate = _check_rate(sample_rate)
    fb = _mel_filters(sample_rate, n_fft, n_mels)
    window = torch.hann_window(n_fft)

    def logmel(x):
        spec = torch.stft(x.float(), n_fft, hop, n_fft, window=window, center=True, return_complex=True).abs()
        return torch.log10(torch.clamp(fb @ spec, min=1e-5))

    return (logmel(ref) - logmel(est)).abs().mean(dim=(-2, -1)).double()


# ------------------------------------------------------------------------------------------ wrapped packages

def _resample_np(x: np.ndarray, orig: int, target: int) -> np.ndarray:
    if orig == target:
        return x
    import soxr

    return soxr.resample(x, orig, target, quality="VHQ")


def pesq(ref, est, sample_rate: int, mode: str = "wb") -> torch.Tensor:
    """PESQ (P.862.2 wide band at 16 kHz with ``mode='wb'``; P.862 narrow band at 8 kHz with ``'nb'``)."""
    ref, est = _batch(ref, est)
    sample_rate = _check_rate(sample_rate)
    if mode not in ("wb", "nb"):
        raise ValueError(f"mode must be 'wb' or 'nb', got {mode!r}")
    lib = require_module("pesq", "pesq")
    fs = 16000 if mode == "wb" else 8000
    out = []
    for r, e in zip(ref.double().cpu().numpy(), est.double().cpu().numpy()):
        r16, e16 = _resample_np(r, sample_rate, fs), _resample_np(e, sample_rate, fs)
        try:
            out.append(lib.pesq(fs, r16, e16, mode))
        except Exception as exc:  # the C library raises on silent or too-short signals
            raise ValueError(f"PESQ could not score an item ({type(exc).__name__}: {exc}); PESQ needs at least "
                             "0.25 s of active speech") from exc
    return torch.tensor(out, dtype=torch.float64)


def stoi(ref, est, sample_rate: int, extended: bool = False) -> torch.Tensor:
    """STOI (or ESTOI with ``extended=True``) via pystoi; 0..1, higher is better."""
    ref, est = _batch(ref, est)
    sample_rate = _check_rate(sample_rate)
    lib = require_module("stoi", "pystoi")
    vals = [lib.stoi(r, e, sample_rate, extended=extended)
            for r, e in zip(ref.double().cpu().numpy(), est.double().cpu().numpy())]
    return torch.tensor(vals, dtype=torch.float64)


def estoi(ref, est, sample_rate: int) -> torch.Tensor:
    return stoi(ref, est, sample_rate, extended=True)
