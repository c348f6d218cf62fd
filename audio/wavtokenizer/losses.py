"""WavTokenizer's mel reconstruction loss (the training objective's L1 term; also a handy quality number).

``L1(log(max(mel(y_hat), 1e-7)), log(max(mel(y), 1e-7)))`` with the magnitude (power 1) mel spectrogram of the
original recipe: 24 kHz, n_fft 1024, hop 256, 100 HTK mel bands, centred reflect-padded frames, periodic Hann
window, no filterbank normalisation (torchaudio's ``MelSpectrogram`` defaults otherwise).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.validation import check_tensor

__all__ = ["MelReconstructionLoss"]


class MelReconstructionLoss(nn.Module):
    """``forward(y_hat [B, T], y [B, T]) -> scalar`` (inputs of the same shape; ``[B, 1, T]`` also accepted)."""

    def __init__(self, sample_rate: int = 24000, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 100,
                 clip_val: float = 1e-7):
        super().__init__()
        import torchaudio

        self.clip_val = float(clip_val)
        self.mel_spec = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft,
                                                             hop_length=hop_length, n_mels=n_mels, center=True,
                                                             power=1)

    def _log_mel(self, y: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.clamp(self.mel_spec(y), min=self.clip_val))

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_tensor("y_hat", y_hat, ndim=(2, 3), floating=True, shape_hint="[B, T] or [B, 1, T] waveform")
        check_tensor("y", y, ndim=(2, 3), floating=True, shape_hint="[B, T] or [B, 1, T] waveform")
        if y_hat.shape != y.shape:
            raise ValueError(f"y_hat and y must have the same shape, got {tuple(y_hat.shape)} and {tuple(y.shape)}")
        return F.l1_loss(self._log_mel(y), self._log_mel(y_hat))
