"""Codebook statistics: usage histogram, utilisation, perplexity, entropy, dead codes.

Everything derives from one integer histogram ``counts`` of shape ``[num_codebooks, codebook_size]``. Counts
add, so statistics of a data set do not depend on how it was cut into batches or spread over processes:
merge the histograms (``merge`` / ``StatsAccumulator.update`` / ``all_reduce``) and derive the figures from the
sum. Positions excluded by a mask (padding) and ids equal to ``-1`` (a level dropped by quantizer dropout) are
not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.distributed as dist

from ..validation import check_positive_int

__all__ = ["CodebookStats", "StatsAccumulator", "histogram"]


def histogram(ids: torch.Tensor, codebook_size: int, num_codebooks: int = 1,
              mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Count ids per codebook -> int64 ``[num_codebooks, codebook_size]``.

    ``ids`` is ``[...]`` when ``num_codebooks == 1`` or ``[..., num_codebooks]``; ``mask`` (bool, ``True`` =
    counted) has the leading shape ``[...]``. Ids of ``-1`` are skipped (dropped levels); any other id outside
    ``[0, codebook_size)`` is an error.
    """
    check_positive_int("codebook_size", codebook_size)
    check_positive_int("num_codebooks", num_codebooks)
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"ids must be a torch.Tensor of integer ids, got {type(ids).__name__}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"ids must have an integer dtype, got {ids.dtype}")
    trailing_axis = num_codebooks > 1 or (mask is not None and ids.ndim == mask.ndim + 1 and ids.shape[-1] == 1)
    if trailing_axis:
        if ids.ndim == 0 or ids.shape[-1] != num_codebooks:
            raise ValueError(f"ids of shape {tuple(ids.shape)} should end with the codebook axis of size "
                             f"{num_codebooks}")
        lead = ids.shape[:-1]
        flat = ids.reshape(-1, num_codebooks).long()
    else:
        lead = ids.shape
        flat = ids.reshape(-1, 1).long()
    valid = flat >= 0
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got {type(mask).__name__}"
                            f"{'' if not isinstance(mask, torch.Tensor) else ' of dtype ' + str(mask.dtype)}")
        if tuple(mask.shape) != tuple(lead):
            raise ValueError(f"mask has shape {tuple(mask.shape)}, expected the ids' leading shape {tuple(lead)}")
        valid = valid & mask.reshape(-1, 1).to(flat.device)
    bad = (flat >= codebook_size) | (flat < -1)
    if bool(bad.any()):
        raise ValueError(f"ids outside [0, {codebook_size}) (or -1 for a dropped level): min {int(flat.min())}, "
                         f"max {int(flat.max())}")
    counts = torch.zeros(num_codebooks, codebook_size, dtype=torch.long, device=flat.device)
    offsets = torch.arange(num_codebooks, device=flat.device) * codebook_size
    keyed = (flat + offsets)[valid]
    counts.view(-1).index_add_(0, keyed, torch.ones_like(keyed))
    return counts


@dataclass
class CodebookStats:
    """Usage statistics of one or more codebooks, derived from an id histogram.

    ``counts``: int64 ``[num_codebooks, codebook_size]``. Every derived figure is a float tensor
    ``[num_codebooks]`` (one value per codebook); entropies are in bits.
    """

    counts: torch.Tensor

    def __post_init__(self):
        if not isinstance(self.counts, torch.Tensor) or self.counts.ndim != 2:
            raise ValueError("CodebookStats.counts must be a [num_codebooks, codebook_size] tensor, got "
                             f"{getattr(self.counts, 'shape', type(self.counts).__name__)}")
        if self.counts.is_floating_point():
            raise TypeError(f"CodebookStats.counts must be integer, got {self.counts.dtype}")

    @classmethod
    def from_ids(cls, ids: torch.Tensor, codebook_size: int, num_codebooks: int = 1,
                 mask: Optional[torch.Tensor] = None) -> "CodebookStats":
        return cls(histogram(ids, codebook_size, num_codebooks, mask))

    @classmethod
    def empty(cls, codebook_size: int, num_codebooks: int = 1, device=None) -> "CodebookStats":
        check_positive_int("codebook_size", codebook_size)
        check_positive_int("num_codebooks", num_codebooks)
        return cls(torch.zeros(num_codebooks, codebook_size, dtype=torch.long, device=device))

    @property
    def codebook_size(self) -> int:
        return int(self.counts.shape[1])

    @property
    def num_codebooks(self) -> int:
        return int(self.counts.shape[0])

    @property
    def total(self) -> torch.Tensor:
        """Number of counted ids per codebook, int64 ``[num_codebooks]``."""
        return self.counts.sum(dim=1)

    @property
    def usage(self) -> torch.Tensor:
        """Relative frequency of each code, float64 ``[num_codebooks, codebook_size]`` (zeros when empty)."""
        c = self.counts.double()
        return c / c.sum(dim=1, keepdim=True).clamp(min=1.0)

    @property
    def used_codes(self) -> torch.Tensor:
        return (self.counts > 0).sum(dim=1)

    @property
    def dead_codes(self) -> torch.Tensor:
        """Number of codes never used, int64 ``[num_codebooks]``."""
        return (self.counts == 0).sum(dim=1)

    @property
    def utilization(self) -> torch.Tensor:
        """Fraction of codes used at least once, ``[num_codebooks]``."""
        return self.used_codes.double() / self.codebook_size

    @property
    def entropy(self) -> torch.Tensor:
        """Entropy of the usage distribution in bits, ``[num_codebooks]`` (0 for an empty histogram)."""
        p = self.usage
        return -(torch.where(p > 0, p * torch.log2(p.clamp(min=1e-300)), torch.zeros_like(p))).sum(dim=1)

    @property
    def perplexity(self) -> torch.Tensor:
        """``2 ** entropy``: the effective number of codes in use, ``[num_codebooks]``."""
        return torch.exp2(self.entropy)

    def merge(self, other: "CodebookStats") -> "CodebookStats":
        """Statistics of the union of both samples (histograms add)."""
        if not isinstance(other, CodebookStats):
            raise TypeError(f"can only merge CodebookStats, got {type(other).__name__}")
        if other.counts.shape != self.counts.shape:
            raise ValueError(f"cannot merge statistics of shape {tuple(other.counts.shape)} into "
                             f"{tuple(self.counts.shape)} ([num_codebooks, codebook_size] must agree)")
        return CodebookStats(self.counts + other.counts.to(self.counts.device))

    __add__ = merge

    def all_reduce(self, group=None) -> "CodebookStats":
        """Sum the histograms of all processes of ``group`` (no-op when torch.distributed is not initialised)."""
        counts = self.counts.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
        return CodebookStats(counts)

    def summary(self) -> Dict[str, float]:
        """Plain floats averaged over codebooks, for logs and report tables."""
        return {
            "tokens": float(self.total.double().mean()),
            "utilization": float(self.utilization.mean()),
            "perplexity": float(self.perplexity.mean()),
            "entropy_bits": float(self.entropy.mean()),
            "max_entropy_bits": math.log2(self.codebook_size),
            "dead_codes": float(self.dead_codes.double().mean()),
        }


class StatsAccumulator:
    """Running codebook statistics over batches and processes.

    >>> acc = StatsAccumulator(codebook_size=1024)
    >>> for batch in loader:
    ...     acc.update(quantizer(z, mask=m).stats)     # or acc.update(ids, mask=m)
    >>> acc.all_reduce().compute().summary()
    """

    def __init__(self, codebook_size: int, num_codebooks: int = 1, device=None):
        self._stats = CodebookStats.empty(codebook_size, num_codebooks, device=device)

    @property
    def codebook_size(self) -> int:
        return self._stats.codebook_size

    @property
    def num_codebooks(self) -> int:
        return self._stats.num_codebooks

    def update(self, ids_or_stats, mask: Optional[torch.Tensor] = None) -> "StatsAccumulator":
        """Add a batch: a :class:`CodebookStats` or a tensor of ids (with an optional mask)."""
        if isinstance(ids_or_stats, CodebookStats):
            if mask is not None:
                raise ValueError("mask applies to ids, not to CodebookStats (they are already masked)")
            other = ids_or_stats
        else:
            other = CodebookStats.from_ids(ids_or_stats, self.codebook_size, self.num_codebooks, mask)
        self._stats = self._stats.merge(other)
        return self

    def merge(self, other: "StatsAccumulator") -> "StatsAccumulator":
        if not isinstance(other, StatsAccumulator):
            raise TypeError(f"can only merge a StatsAccumulator, got {type(other).__name__}")
        self._stats = self._stats.merge(other._stats)
        return self

    def all_reduce(self, group=None) -> "StatsAccumulator":
        """Replace the local histogram by the sum over all processes (call on every rank)."""
        self._stats = self._stats.all_reduce(group)
        return self

    def compute(self) -> CodebookStats:
        return CodebookStats(self._stats.counts.clone())

    def reset(self) -> None:
        self._stats = CodebookStats(torch.zeros_like(self._stats.counts))

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {"counts": self._stats.counts.clone()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        counts = state.get("counts") if isinstance(state, dict) else None
        if not isinstance(counts, torch.Tensor) or counts.shape != self._stats.counts.shape:
            raise ValueError(f"StatsAccumulator state needs 'counts' of shape {tuple(self._stats.counts.shape)}")
        self._stats = CodebookStats(counts.long().clone())
