"""The adversarial training step shared by the audio GAN recipes (WavTokenizer's codec, TaDiCodec's Vocos vocoder).

One implementation of: the discriminators' update (hinge on the multi-period and multi-resolution discriminators,
least squares on the DAC multi-scale STFT discriminator, ``mrd_coeff`` on the MRD terms) and the generator's
adversarial + feature-matching terms computed with the discriminators frozen (their weights get no gradient from
the generator loss). Facts: ../shared/research/wavtokenizer.md, "Training".
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from . import losses as L

__all__ = ["discriminator_loss", "generator_adversarial_terms"]


def _weight(name: str, mrd_coeff: float) -> float:
    return mrd_coeff if name == "mrd" else 1.0


def discriminator_loss(discs: Sequence[Tuple[str, nn.Module]], real: torch.Tensor, fake: torch.Tensor,
                       cond: Optional[torch.Tensor] = None, mrd_coeff: float = 1.0) -> torch.Tensor:
    """Sum over the discriminators of their loss on ``real`` vs ``fake`` (``fake`` is detached here).

    ``discs``: ``(name, module)`` pairs; ``"dac"`` uses least squares, every other one the hinge loss, ``"mrd"``
    weighted by ``mrd_coeff``. ``cond``: the bandwidth id given to conditioned discriminators (or None)."""
    total = 0.0
    fake = fake.detach()
    for name, d in discs:
        r, _ = d(real, cond)
        f, _ = d(fake, cond)
        if name == "dac":
            total = total + L.lsgan_discriminator_loss(r, f)
        else:
            total = total + _weight(name, mrd_coeff) * L.hinge_discriminator_loss(r, f)
    return total


def generator_adversarial_terms(discs: Sequence[Tuple[str, nn.Module]], real: torch.Tensor, fake: torch.Tensor,
                                cond: Optional[torch.Tensor] = None, mrd_coeff: float = 1.0,
                                restore_grad: Optional[List[str]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(adversarial, feature matching)`` terms of the generator loss for ``fake`` (with its graph).

    The discriminators are frozen while the terms are built (``requires_grad_(False)``) and re-enabled afterwards
    for the names in ``restore_grad`` (default: all), so a discriminator that is meant to stay frozen stays frozen.
    DAC: least-squares adversarial term, feature matching summed over its sub-discriminators without their logits;
    MPD/MRD: hinge term, feature matching averaged over sub-discriminators (WavTokenizer's conventions)."""
    names = [n for n, _ in discs] if restore_grad is None else list(restore_grad)
    for _, d in discs:
        d.requires_grad_(False)
    try:
        adv = fm = 0.0
        for name, d in discs:
            _, f_real = d(real, cond)
            f_logits, f_fake = d(fake, cond)
            if name == "dac":
                adv = adv + L.lsgan_generator_loss(f_logits)
                fm = fm + L.feature_matching_loss(f_real, f_fake, skip_last=True, average=False)
            else:
                w = _weight(name, mrd_coeff)
                adv = adv + w * L.hinge_generator_loss(f_logits)
                fm = fm + w * L.feature_matching_loss(f_real, f_fake)
    finally:
        for name, d in discs:
            if name in names:
                d.requires_grad_(True)
    return adv, fm
