"""Learning-rate schedule pieces the recipes share (each recipe keeps its original's warm-up convention)."""

from __future__ import annotations

import math

__all__ = ["cosine_decay"]


def cosine_decay(t: float, end: float = 0.0) -> float:
    """A half cosine from 1 at ``t = 0`` to ``end`` at ``t = 1`` (``t`` clipped to [0, 1]): the factor a
    ``LambdaLR`` multiplies the base learning rate by, ``end`` being the final rate over the base rate. ``end``
    above 1 makes the rate rise (the TFM-Tokenizer original goes from 1e-4 to 5e-3)."""
    if not end >= 0.0:
        raise ValueError(f"cosine_decay: end (final lr / base lr) must be >= 0, got {end}")
    t = min(1.0, max(0.0, float(t)))
    return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * t))
