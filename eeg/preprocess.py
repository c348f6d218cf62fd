"""EEG input handling shared by the EEG families (TFM-Tokenizer, LiPCoT).

- :func:`check_series` validates a ``[B, C, T]`` batch and reports non-finite samples by item, channel and time.
- :func:`check_ch_names` validates optional channel names.
- :func:`resample_fft` is FFT resampling to a target rate (what TFM-Tokenizer's data loaders do with
  ``scipy.signal.resample``), computed in float64.
- :func:`quantile_scale` divides every channel by the 0.95 quantile of its absolute value (+1e-8), the
  per-channel scaling TFM-Tokenizer's loaders apply to every window.
- :func:`stft_magnitude` is the TFM-Tokenizer STFT front-end (periodic Hann, no centring, linear magnitude,
  Nyquist bin dropped).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np
import torch

from zoo.validation import check_tensor, describe

__all__ = ["check_series", "check_ch_names", "resample_fft", "resampled_length", "quantile_scale",
           "stft_magnitude", "num_frames"]


def check_series(name: str, x, *, sfreq: Optional[float] = None, ch_names: Optional[Sequence[str]] = None,
                 min_samples: int = 1) -> torch.Tensor:
    """Check a float ``[B, C, T]`` series; NaN/Inf are reported with item, channel (name) and time."""
    x = check_tensor(name, x, ndim=(3,), floating=True, finite=False, shape_hint="[B, C, T] float series")
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); expected [B, C, T] with B, C, T > 0")
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        b, c, t = (int(i) for i in bad.nonzero()[0].tolist())
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(bad.sum()) - n_nan
        chan = f"channel {c}" + (f" ({ch_names[c]})" if ch_names is not None else "")
        when = f"sample {t}" + (f" (t = {t / float(sfreq):.3f} s)" if sfreq else "")
        raise ValueError(f"{name} contains {n_nan} NaN and {n_inf} Inf values; the first is in item {b}, {chan}, "
                         f"at {when}; remove or interpolate bad segments before tokenizing")
    if x.shape[-1] < min_samples:
        raise ValueError(f"{name} has {x.shape[-1]} samples per channel, at least {min_samples} are needed")
    return x


def check_ch_names(ch_names, n_channels: int) -> Optional[List[str]]:
    if ch_names is None:
        return None
    if isinstance(ch_names, str) or not isinstance(ch_names, (list, tuple)):
        raise TypeError(f"ch_names must be a list of strings (one per channel), got {describe(ch_names)}")
    if not all(isinstance(c, str) for c in ch_names):
        raise TypeError("ch_names must hold only strings")
    if len(ch_names) != n_channels:
        raise ValueError(f"ch_names has {len(ch_names)} names but x has {n_channels} channels")
    return list(ch_names)


def resampled_length(n: int, orig: float, target: float) -> int:
    """Number of samples after resampling ``n`` samples from ``orig`` to ``target`` Hz (rounded)."""
    return int(round(n * float(target) / float(orig)))


def resample_fft(x: torch.Tensor, orig: float, target: float, num: Optional[int] = None) -> torch.Tensor:
    """FFT resampling along the last axis (``scipy.signal.resample``), float64 inside, input dtype out.

    ``num`` defaults to ``round(T * target / orig)``. The signal is treated as periodic, as in the reference
    loaders (``resample(X, 200 * seconds, axis=-1)``).
    """
    from scipy.signal import resample

    for label, r in (("orig", orig), ("target", target)):
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0 or not math.isfinite(r):
            raise ValueError(f"{label} sampling rate must be a positive number of Hz, got {r!r}")
    if num is None:
        num = resampled_length(x.shape[-1], orig, target)
    if num < 1:
        raise ValueError(f"resampling {x.shape[-1]} samples from {orig} Hz to {target} Hz leaves no samples")
    if num == x.shape[-1]:
        return x
    y = resample(x.detach().cpu().double().numpy(), num, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(y)).to(device=x.device, dtype=x.dtype)


def quantile_scale(x: torch.Tensor, q: float = 0.95, eps: float = 1e-8) -> torch.Tensor:
    """``x / (quantile(|x|, q, per channel over time) + eps)`` (numpy 'linear' quantile, float64 inside)."""
    a = x.detach().cpu().double().numpy()
    scale = np.quantile(np.abs(a), q, axis=-1, method="linear", keepdims=True) + eps
    return torch.from_numpy(a / scale).to(device=x.device, dtype=x.dtype)


def num_frames(n_samples: int, n_fft: int = 200, hop: int = 100) -> int:
    """Frames of an un-centred STFT: ``1 + (T - n_fft) // hop`` (0 when T < n_fft)."""
    return 0 if n_samples < n_fft else 1 + (n_samples - n_fft) // hop


def stft_magnitude(x: torch.Tensor, n_fft: int = 200, hop: int = 100, n_bins: Optional[int] = None) -> torch.Tensor:
    """``|STFT|`` of ``x`` ``[..., T]`` -> ``[..., n_bins, frames]`` (float32 in, float32 out).

    Periodic Hann window of length ``n_fft``, ``center=False`` (no padding), one-sided, not normalised; keeps
    bins ``0 .. n_bins-1`` (default ``n_fft // 2``, i.e. the Nyquist bin is dropped) as in TFM-Tokenizer's
    ``get_stft_torch``.
    """
    if x.shape[-1] < n_fft:
        raise ValueError(f"the STFT needs at least {n_fft} samples, got {x.shape[-1]}")
    n_bins = n_fft // 2 if n_bins is None else n_bins
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    window = torch.hann_window(n_fft, periodic=True, dtype=flat.dtype, device=flat.device)
    spec = torch.stft(flat, n_fft=n_fft, hop_length=hop, win_length=n_fft, window=window, center=False,
                      onesided=True, normalized=False, return_complex=True)
    mag = spec[:, :n_bins, :].abs()
    return mag.reshape(*lead, n_bins, mag.shape[-1])
