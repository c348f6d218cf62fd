"""GAN and reconstruction losses for waveform codecs (shared by the audio recipes).

``logits`` / ``features`` are the outputs of the discriminators in :mod:`audio.discriminators`: a list with one
logit tensor per sub-discriminator, and per sub-discriminator a list of feature maps.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def hinge_discriminator_loss(real: Sequence[torch.Tensor], fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """mean over sub-discriminators of mean(relu(1 - D(y))) + mean(relu(1 + D(y_hat)))."""
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake)]
    return torch.stack(terms).mean()


def hinge_generator_loss(fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """mean over sub-discriminators of mean(relu(1 - D(y_hat)))."""
    return torch.stack([F.relu(1 - f).mean() for f in fake]).mean()


def lsgan_discriminator_loss(real: Sequence[torch.Tensor], fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum over sub-discriminators of mean(D(y_hat)^2) + mean((1 - D(y))^2) (DAC's convention)."""
    return sum(f.pow(2).mean() + (1 - r).pow(2).mean() for r, f in zip(real, fake))


def lsgan_generator_loss(fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum over sub-discriminators of mean((1 - D(y_hat))^2)."""
    return sum((1 - f).pow(2).mean() for f in fake)


def feature_matching_loss(real: Sequence[Sequence[torch.Tensor]], fake: Sequence[Sequence[torch.Tensor]],
                          skip_last: bool = False, average: bool = True) -> torch.Tensor:
    """L1 between real (detached) and fake feature maps, summed over layers.

    ``skip_last`` drops each sub-discriminator's last map (its logits, as DAC does); ``average`` divides by the
    number of sub-discriminators (WavTokenizer's MPD/MRD convention) instead of summing (DAC's).
    """
    total = 0.0
    for fr, ff in zip(real, fake):
        maps = list(zip(fr, ff))
        if skip_last:
            maps = maps[:-1]
        total = total + sum(F.l1_loss(b, a.detach()) for a, b in maps)
    return total / len(real) if average else total


class MelLoss(nn.Module):
    """L1 between log mel magnitudes (clamped at ``clamp``) of target and prediction.

    Defaults are WavTokenizer's: 24 kHz, n_fft 1024, hop 256, 100 HTK mels without area normalisation,
    magnitude (power 1), centred frames, clamp 1e-7.
    """

    def __init__(self, sample_rate: int = 24000, n_fft: int = 1024, hop: int = 256, n_mels: int = 100,
                 clamp: float = 1e-7):
        super().__init__()
        import torchaudio

        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop,
                                                        n_mels=n_mels, center=True, power=1, mel_scale="htk",
                                                        norm=None)
        self.clamp = clamp

    def forward(self, target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        if target.shape != prediction.shape:
            raise ValueError(f"MelLoss: target {tuple(target.shape)} and prediction {tuple(prediction.shape)} differ")
        a = torch.log(self.mel(target).clamp_min(self.clamp))
        b = torch.log(self.mel(prediction).clamp_min(self.clamp))
        return F.l1_loss(b, a)
