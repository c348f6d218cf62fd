"""Mel front-ends shared by the audio families (model inputs and training losses).

:class:`MelSpectrogram` turns waveforms ``[B, T]`` (or ``[B, 1, T]``, or ``[T]``) into mel spectrograms
``[B, n_mels, frames]`` (or channel-last ``[B, frames, n_mels]``). It covers the variants the families use:

- framing: ``padding="same"`` (reflect-pad ``(n_fft - hop) / 2`` samples on both sides, no centring: exactly
  ``T // hop`` frames; TaDiCodec / Amphion / BigVGAN style), ``"center"`` (``torch.stft(center=True)``,
  ``T // hop + 1`` frames; torchaudio / Vocos / WavTokenizer style) or ``"none"`` (no padding);
- magnitude: ``power=1`` gives ``sqrt(re^2 + im^2 + magnitude_eps)``, ``power=2`` the power spectrum;
- filterbank: slaney or HTK mel scale, slaney area normalisation or none (:func:`mel_filterbank`, computed with
  librosa's definition);
- compression: natural log or log10 of ``clamp(mel, min=log_clamp)``, or none;
- normalisation: ``(x - mean) / std`` with a dataset mean and standard deviation (TaDiCodec: mean -4.92,
  variance 8.14).

Everything is differentiable (usable inside a mel reconstruction loss) and the filterbank and window are
non-persistent buffers (recomputed, never stored in a checkpoint).

:func:`load_audio_librosa` reads a file the way ``librosa.load(path, sr=...)`` does (float32, channel mean,
soxr "HQ" resampling), which the original TaDiCodec pipeline uses.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["mel_filterbank", "MelSpectrogram", "load_audio_librosa", "num_frames"]

_PADDINGS = ("same", "center", "none")
_LOGS = ("ln", "log10", None)


def _pos_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: Optional[float] = None,
                   scale: str = "slaney", norm: Optional[str] = "slaney") -> torch.Tensor:
    """Mel filterbank ``[n_mels, n_fft // 2 + 1]`` float32 (librosa's ``filters.mel`` definition).

    ``scale``: ``"slaney"`` (linear below 1 kHz, log above; librosa's default) or ``"htk"``.
    ``norm``: ``"slaney"`` (each triangle divided by its width in Hz, "area normalisation") or ``None``.
    ``fmax`` defaults to ``sample_rate / 2``.
    """
    sample_rate = _pos_int("sample_rate", sample_rate)
    n_fft = _pos_int("n_fft", n_fft)
    n_mels = _pos_int("n_mels", n_mels)
    if scale not in ("slaney", "htk"):
        raise ValueError(f"scale must be 'slaney' or 'htk', got {scale!r}")
    if norm not in ("slaney", None):
        raise ValueError(f"norm must be 'slaney' or None, got {norm!r}")
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not 0 <= float(fmin) < fmax <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2 = {sample_rate / 2}, got fmin {fmin}, "
                         f"fmax {fmax}")
    import librosa

    fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=float(fmin), fmax=fmax,
                             htk=scale == "htk", norm=norm, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(fb))


def num_frames(length: int, n_fft: int, hop_length: int, padding: str = "same") -> int:
    """Number of frames :class:`MelSpectrogram` gives for ``length`` samples (0 when too short)."""
    if padding == "same":
        total = length + 2 * ((n_fft - hop_length) // 2)
    elif padding == "center":
        total = length + 2 * (n_fft // 2)
    elif padding == "none":
        total = length
    else:
        raise ValueError(f"padding must be one of {list(_PADDINGS)}, got {padding!r}")
    return 0 if total < n_fft else 1 + (total - n_fft) // hop_length


class MelSpectrogram(nn.Module):
    """Waveform -> (log) mel spectrogram; see the module docstring for the options.

    Args:
        sample_rate, n_fft, hop_length: STFT setup; ``win_length`` defaults to ``n_fft`` (periodic Hann window,
            centred in the frame when shorter).
        n_mels, fmin, fmax, mel_scale, mel_norm: the filterbank (:func:`mel_filterbank`).
        padding: ``"same"`` | ``"center"`` | ``"none"``; ``pad_mode`` is the padding mode (``"reflect"``).
        power: 1 (magnitude) or 2 (power).
        magnitude_eps: added to ``re^2 + im^2`` before the square root (``power=1`` only).
        log: ``"ln"``, ``"log10"`` or ``None``; ``log_clamp``: lower clamp before the log.
        mean, std: optional normalisation ``(x - mean) / std`` after the log.
        channels_last: return ``[B, frames, n_mels]`` instead of ``[B, n_mels, frames]``.
    """

    def __init__(self, sample_rate: int = 24000, n_fft: int = 1920, hop_length: int = 480,
                 win_length: Optional[int] = None, n_mels: int = 128, fmin: float = 0.0,
                 fmax: Optional[float] = None, mel_scale: str = "slaney", mel_norm: Optional[str] = "slaney",
                 padding: str = "same", pad_mode: str = "reflect", power: float = 1.0,
                 magnitude_eps: float = 1e-9, log: Optional[str] = "ln", log_clamp: float = 1e-5,
                 mean: Optional[float] = None, std: Optional[float] = None, channels_last: bool = False):
        super().__init__()
        self.sample_rate = _pos_int("sample_rate", sample_rate)
        self.n_fft = _pos_int("n_fft", n_fft)
        self.hop_length = _pos_int("hop_length", hop_length)
        self.win_length = self.n_fft if win_length is None else _pos_int("win_length", win_length)
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if padding not in _PADDINGS:
            raise ValueError(f"padding must be one of {list(_PADDINGS)}, got {padding!r}")
        if pad_mode not in ("reflect", "constant", "replicate", "circular"):
            raise ValueError(f"pad_mode must be reflect, constant, replicate or circular, got {pad_mode!r}")
        if power not in (1, 2, 1.0, 2.0):
            raise ValueError(f"power must be 1 (magnitude) or 2 (power), got {power!r}")
        if log not in _LOGS:
            raise ValueError(f"log must be 'ln', 'log10' or None, got {log!r}")
        if not (isinstance(log_clamp, numbers.Real) and log_clamp > 0):
            raise ValueError(f"log_clamp must be a positive number, got {log_clamp!r}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std for normalisation, or neither")
        if std is not None and not std > 0:
            raise ValueError(f"std must be > 0, got {std!r}")
        self.n_mels = _pos_int("n_mels", n_mels)
        self.fmin, self.fmax = float(fmin), (self.sample_rate / 2.0 if fmax is None else float(fmax))
        self.mel_scale, self.mel_norm = mel_scale, mel_norm
        self.padding, self.pad_mode = padding, pad_mode
        self.power = float(power)
        self.magnitude_eps = float(magnitude_eps)
        self.log, self.log_clamp = log, float(log_clamp)
        self.mean = None if mean is None else float(mean)
        self.std = None if std is None else float(std)
        self.channels_last = bool(channels_last)
        self.register_buffer("mel_basis", mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.fmin,
                                                         self.fmax, mel_scale, mel_norm), persistent=False)
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)

    # ------------------------------------------------------------------ helpers
    def num_frames(self, length: int) -> int:
        """Frames produced for ``length`` samples."""
        return num_frames(length, self.n_fft, self.hop_length, self.padding)

    @property
    def min_length(self) -> int:
        """Fewest samples that give one frame (and that reflect padding accepts)."""
        n = 1
        if self.padding == "same" and self.pad_mode == "reflect":
            n = (self.n_fft - self.hop_length) // 2 + 1
        elif self.padding == "center" and self.pad_mode == "reflect":
            n = self.n_fft // 2 + 1
        while self.num_frames(n) < 1:
            n += 1
        return n

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop={self.hop_length}, "
                f"win={self.win_length}, n_mels={self.n_mels}, fmin={self.fmin:g}, fmax={self.fmax:g}, "
                f"scale={self.mel_scale}, norm={self.mel_norm}, padding={self.padding}, power={self.power:g}, "
                f"log={self.log}, mean={self.mean}, std={self.std}")

    # ------------------------------------------------------------------ forward
    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        """Linear-frequency magnitude (or power) ``[B, n_fft // 2 + 1, frames]`` of ``wav [B, T]``."""
        y = wav
        if self.padding == "same":
            pad = (self.n_fft - self.hop_length) // 2
            y = F.pad(y.unsqueeze(1), (pad, pad), mode=self.pad_mode).squeeze(1)
        spec = torch.stft(y, self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                          window=self.window.to(y.dtype), center=self.padding == "center", pad_mode=self.pad_mode,
                          normalized=False, onesided=True, return_complex=True)
        spec = torch.view_as_real(spec)
        power = spec.pow(2).sum(-1)
        if self.power == 2.0:
            return power
        return torch.sqrt(power + self.magnitude_eps)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav`` ``[B, T]``, ``[B, 1, T]`` or ``[T]`` float -> ``[B, n_mels, frames]`` (or channel-last)."""
        if not isinstance(wav, torch.Tensor):
            raise TypeError(f"wav must be a torch.Tensor, got {type(wav).__name__}")
        if not wav.is_floating_point():
            raise TypeError(f"wav must be a floating point tensor, got dtype {wav.dtype}")
        if wav.ndim == 1:
            wav = wav[None]
        elif wav.ndim == 3:
            if wav.shape[1] != 1:
                raise ValueError(f"wav must be mono [B, 1, T], got {wav.shape[1]} channels")
            wav = wav[:, 0]
        elif wav.ndim != 2:
            raise ValueError(f"wav must be [T], [B, T] or [B, 1, T], got shape {tuple(wav.shape)}")
        if wav.shape[-1] < self.min_length:
            raise ValueError(f"wav has {wav.shape[-1]} samples; this mel front-end needs at least "
                             f"{self.min_length} (n_fft {self.n_fft}, hop {self.hop_length}, padding {self.padding})")
        mel = torch.matmul(self.mel_basis.to(wav.dtype), self.magnitude(wav))
        if self.log == "ln":
            mel = torch.log(torch.clamp(mel, min=self.log_clamp))
        elif self.log == "log10":
            mel = torch.log10(torch.clamp(mel, min=self.log_clamp))
        if self.channels_last:
            mel = mel.transpose(1, 2)
        if self.mean is not None:
            mel = (mel - self.mean) / self.std
        return mel


def load_audio_librosa(path: Union[str, Path], sample_rate: int) -> torch.Tensor:
    """Read an audio file as ``librosa.load(path, sr=sample_rate)`` does -> float32 ``[1, T]`` mono.

    Channels are averaged; a different file rate is converted with soxr at "HQ" quality (librosa 0.10+'s
    default ``res_type="soxr_hq"``). Raises ``FileNotFoundError`` / ``ValueError`` for missing or unreadable
    files.
    """
    import soundfile as sf

    sample_rate = _pos_int("sample_rate", sample_rate)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such audio file {path}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises its own error types
        raise ValueError(f"cannot read audio file {path}: {exc}") from exc
    if data.size == 0:
        raise ValueError(f"audio file {path} is empty")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if int(sr) != sample_rate:
        import soxr

        mono = soxr.resample(mono, int(sr), sample_rate, quality="HQ")
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))[None]
