"""Finite scalar quantization (FSQ), wrapping vector-quantize-pytorch's ``FSQ``.

Convention (the library's, which is also FlexTok's ``quantize_fsq.FSQ``, checked on the FlexTok fixture):
per channel with ``L`` levels, ``half_l = (L - 1) * (1 + 1e-3) / 2``, ``offset = 0.5`` for even ``L`` else 0,
``shift = atanh(offset / half_l)``, ``q = round(tanh(z + shift) * half_l - offset) / (L // 2)``, so codes lie
in ``[-1, 1]`` (even ``L`` is asymmetric: ``-1 .. (L/2 - 1)/(L/2)``). The id is
``sum_i (q_i * (L_i // 2) + L_i // 2) * basis_i`` with ``basis = cumprod([1] + L[:-1])``: the FIRST channel is
the least significant digit. Rounding is ``torch.round`` (half to even), in float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import math
import torch
from vector_quantize_pytorch import FSQ as _LibFSQ

from ..config import ConfigBase
from ..validation import check_positive_int
from .base import Quantizer

__all__ = ["FSQ", "FSQConfig"]


@dataclass
class FSQConfig(ConfigBase):
    """Configuration of :class:`FSQ`.

    levels: quantization levels per channel, e.g. ``[8, 8, 8, 5, 5, 5]`` (FlexTok, 64000 codes).
    dim: channels of the input; when it differs from ``len(levels)`` Linear projections are added.
        ``None`` = ``len(levels)``.
    preserve_symmetry: the symmetric variant of arXiv 2411.19842 (needed for levels of 2); not FlexTok's.
    """

    levels: List[int] = field(default_factory=lambda: [8, 8, 8, 5, 5, 5])
    dim: Optional[int] = None
    preserve_symmetry: bool = False

    def __post_init__(self):
        if not isinstance(self.levels, (list, tuple)) or not self.levels:
            raise ValueError(f"FSQConfig.levels must be a non-empty list of ints, got {self.levels!r}")
        self.levels = [int(check_positive_int("FSQConfig.levels[i]", v)) for v in self.levels]
        if any(v < 2 for v in self.levels):
            raise ValueError(f"FSQConfig.levels must all be >= 2, got {self.levels}")
        if any(v == 2 for v in self.levels) and not self.preserve_symmetry:
            raise ValueError(f"FSQConfig.levels {self.levels} contain 2, which collapses to one value with the "
                             "standard bound; use levels >= 3 or preserve_symmetry=True")
        if math.prod(self.levels) >= 2 ** 31:
            raise ValueError(f"FSQConfig.levels {self.levels} give {math.prod(self.levels)} codes; ids must fit "
                             "in int32 (< 2**31)")
        if self.dim is not None:
            check_positive_int("FSQConfig.dim", self.dim)


class FSQ(Quantizer):
    """Finite scalar quantizer. ``z [..., dim] -> ids [...]`` in ``[0, prod(levels))``; no parameters (unless
    projected), no losses. Gradients pass by the straight-through round."""

    def __init__(self, config: Optional[FSQConfig] = None, **kwargs):
        super().__init__()
        if config is None:
            config = FSQConfig(**kwargs)
        elif kwargs:
            raise ValueError(f"pass either an FSQConfig or keyword arguments, not both (got {sorted(kwargs)})")
        if not isinstance(config, FSQConfig):
            raise TypeError(f"config must be an FSQConfig, got {type(config).__name__}")
        self.config = config
        self.fsq = _LibFSQ(levels=list(config.levels), dim=config.dim,
                           preserve_symmetry=config.preserve_symmetry)

    @property
    def levels(self) -> List[int]:
        return list(self.config.levels)

    @property
    def codebook_size(self) -> int:
        return int(math.prod(self.config.levels))

    @property
    def num_codebooks(self) -> int:
        return 1

    @property
    def dim(self) -> int:
        return int(self.fsq.dim)

    def _quantize(self, x, mask, update):
        out, idx = self.fsq(x[None])
        ids = idx[0].long()
        codes = self._decode(ids)
        # the library's straight-through round (z + (round(z) - z).detach()) is not bit-exactly round(z): use it
        # only when a gradient is needed (by the input or by the projections)
        st = out[0].float() if out.requires_grad else codes
        return codes, st, ids, {}

    def _decode(self, ids):
        return self.fsq.indices_to_codes(ids.to(self.fsq._levels.device)).float()

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Ids of grid codes ``[..., len(levels)]`` (values ``k / (L // 2)``), int64."""
        if not isinstance(codes, torch.Tensor) or not codes.is_floating_point():
            raise TypeError("codes must be a floating point tensor [..., len(levels)]")
        if codes.ndim < 1 or codes.shape[-1] != len(self.config.levels):
            raise ValueError(f"codes must have {len(self.config.levels)} channels on the last axis, got shape "
                             f"{tuple(codes.shape)}")
        return self.fsq.codes_to_indices(codes.float()).long()

    def extra_repr(self) -> str:
        return f"levels={self.config.levels}, dim={self.dim}, codebook_size={self.codebook_size}"
