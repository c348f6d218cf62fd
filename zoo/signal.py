"""Resampling shared by audio and series inputs."""

from __future__ import annotations

from fractions import Fraction

import torch


def resample(x: torch.Tensor, orig_rate: float, target_rate: float) -> torch.Tensor:
    """Band-limited resampling along the last axis (torchaudio's windowed-sinc polyphase filter).

    Rates may be non-integer; the ratio is approximated by a fraction with denominator at most 1000.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    for name, r in (("orig_rate", orig_rate), ("target_rate", target_rate)):
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0:
            raise ValueError(f"{name} must be a positive number of Hz, got {r!r}")
    if float(orig_rate) == float(target_rate):
        return x
    import torchaudio.functional as AF

    ratio = Fraction(float(target_rate) / float(orig_rate)).limit_denominator(1000)
    dtype = x.dtype
    return AF.resample(x.float(), ratio.denominator, ratio.numerator).to(dtype)
