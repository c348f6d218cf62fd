"""The quantizer interface shared by every kind.

Layout (channel-last): a quantizer takes ``z`` of shape ``[..., dim]`` -- any number of leading axes (``[B, T,
D]`` for sequences, ``[B, H, W, D]`` for images, ``[B, F, H, W, D]`` for video, or just ``[N, D]``) with the
channel on the LAST axis. The interface flattens the leading axes, quantizes every vector independently, and
restores them, so callers never reshape. Ids come back as ``[...]`` (kinds with one codebook: VQ, FSQ, BSQ) or
``[..., num_codebooks]`` (residual kinds), int64.

``mask`` (optional, bool, shape ``[...]``, ``True`` = real data) marks padding: masked-out vectors are still
quantized (each vector is independent, so padding never changes another vector's id) but they are excluded from
losses, codebook statistics, k-means initialisation and EMA updates.

Numerics: distances and rounding are computed in float32 whatever the input dtype (fp16/bf16 inputs are upcast),
so ids do not depend on the input precision beyond the upcast itself; the quantized output is returned in the
input's dtype. A quantizer keeps its own parameters and buffers (codebooks, EMA statistics, projections) in
float32 even when the enclosing model is cast with ``.half()`` / ``.to(torch.bfloat16)``: a codebook rounded to
16 bits would change the ids of a released checkpoint. ``decode(ids, dtype=...)`` returns the codes in the dtype
the caller's decoder runs in.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..validation import check_tensor, describe
from .stats import CodebookStats

__all__ = ["Quantizer", "QuantizerOutput"]


@dataclass
class QuantizerOutput:
    """What ``Quantizer.forward`` returns.

    quantized: ``[..., dim]`` in the input dtype; the straight-through value ``z + (q - z).detach()`` when a
        gradient is needed (the gradient reaches ``z`` unchanged), the exact codes otherwise.
    ids: int64 ``[...]`` or ``[..., num_codebooks]``.
    losses: auxiliary loss terms by name (scalars, already weighted; sum them for the total).
    stats: codebook usage of this batch (mask-aware), see :class:`CodebookStats`.
    """

    quantized: torch.Tensor
    ids: torch.Tensor
    losses: Dict[str, torch.Tensor] = field(default_factory=dict)
    stats: Optional[CodebookStats] = None

    @property
    def loss(self) -> torch.Tensor:
        """Sum of all loss terms (a zero scalar when there are none)."""
        if not self.losses:
            return self.quantized.new_zeros((), dtype=torch.float32)
        return sum(self.losses.values())


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean squared error over the rows of ``[N, D]`` tensors selected by ``mask`` ([N] bool)."""
    if mask is None:
        return torch.mean((a - b) ** 2)
    if not bool(mask.any()):
        return (a - b).sum() * 0.0
    return torch.mean((a[mask] - b[mask]) ** 2)


def _no_autocast(device: torch.device):
    """Disable autocast around distances and rounding (they must run in float32)."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # a device type without autocast support
        return contextlib.nullcontext()


def _cast(t: torch.Tensor, dtype: Optional[torch.dtype]) -> torch.Tensor:
    if dtype is None:
        return t
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return t.to(dtype)


class Quantizer(nn.Module):
    """Base class: ``forward(z, mask=None) -> QuantizerOutput``, ``encode(z) -> ids``, ``decode(ids) -> codes``.

    Subclasses implement ``_quantize(x, mask, update) -> (codes, st, ids, losses)`` on flat float32 ``x`` of
    shape ``[N, dim]`` (``mask`` ``[N]`` bool or None; ``update`` = training step: may change EMA / k-means
    state), returning the exact quantized values ``codes`` ``[N, dim]``, the straight-through value ``st`` (used
    when it requires a gradient), ``ids`` ``[N]`` or ``[N, num_codebooks]`` and a dict of losses; and
    ``_decode(ids_flat) -> [N, dim]``. They define ``codebook_size``, ``num_codebooks`` and ``dim``.
    """

    #: ids carry a trailing codebook axis ([..., num_codebooks]) -- True for residual kinds
    has_codebook_axis: bool = False

    @property
    def codebook_size(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def num_codebooks(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def dim(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _apply(self, fn, *args, **kwargs):
        # Device moves apply as usual, but a dtype cast skips float32 tensors (see the module doc): the target is
        # read off an empty probe tensor, so the values are never rounded through the lower precision.
        def keep_float32(t):
            if t.is_floating_point() and t.dtype == torch.float32:
                probe = fn(torch.empty(0, dtype=t.dtype, device=t.device))
                if isinstance(probe, torch.Tensor) and probe.dtype != t.dtype:
                    return t.to(device=probe.device)
            return fn(t)

        return super()._apply(keep_float32, *args, **kwargs)

    @property
    def bits_per_token(self) -> float:
        """``num_codebooks * log2(codebook_size)``: bits of one position's ids."""
        return self.num_codebooks * math.log2(self.codebook_size)

    def all_codes(self) -> torch.Tensor:
        """Every code, ``[codebook_size, dim]`` float32, row ``i`` = ``decode(i)`` (single-codebook kinds)."""
        if self.has_codebook_axis:
            raise ValueError(f"{type(self).__name__} has {self.num_codebooks} codebooks; decode per level instead")
        device = next(itertools.chain(self.parameters(), self.buffers()), torch.empty(0)).device
        return self.decode(torch.arange(self.codebook_size, device=device))

    # ------------------------------------------------------------------ checks
    def _check_z(self, z, name: str = "z") -> torch.Tensor:
        check_tensor(name, z, floating=True, shape_hint=f"[..., {self.dim}] channel-last")
        if z.ndim < 1:
            raise ValueError(f"{name} must have at least one axis (channel-last [..., {self.dim}]), got a scalar")
        if z.shape[-1] != self.dim:
            raise ValueError(f"{name} has {z.shape[-1]} channels on its last axis, expected dim={self.dim} "
                             f"(layout is channel-last [..., dim]; got shape {tuple(z.shape)})")
        return z

    def _check_mask(self, mask, lead: Tuple[int, ...]) -> Optional[torch.Tensor]:
        if mask is None:
            return None
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a bool torch.Tensor of shape {tuple(lead)}, got {describe(mask)}")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must have dtype torch.bool (True = real data), got {mask.dtype}")
        if tuple(mask.shape) != tuple(lead):
            raise ValueError(f"mask has shape {tuple(mask.shape)}, expected the leading shape of z {tuple(lead)} "
                             f"(one flag per vector)")
        return mask

    def check_ids(self, ids, name: str = "ids", num_codebooks: Optional[int] = None) -> torch.Tensor:
        """Validate ids: integer dtype, values in ``[0, codebook_size)``, the right number of codebooks."""
        if not isinstance(ids, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of integer ids, got {describe(ids)}")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"{name} must have an integer dtype (e.g. torch.int64), got {ids.dtype}")
        if ids.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(ids.shape)})")
        if self.has_codebook_axis:
            expected = self.num_codebooks if num_codebooks is None else num_codebooks
            if ids.ndim < 1 or ids.shape[-1] != expected:
                got = ids.shape[-1] if ids.ndim else "no"
                raise ValueError(f"{name} has {got} codebooks on its last axis (shape {tuple(ids.shape)}), "
                                 f"expected {expected} ([..., num_codebooks] layout)")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.codebook_size:
            bad = ((ids < 0) | (ids >= self.codebook_size)).nonzero()[0].tolist()
            raise ValueError(f"{name} holds ids outside [0, {self.codebook_size}): min {lo}, max {hi} "
                             f"(first offending index {tuple(bad)})")
        return ids

    # ------------------------------------------------------------------ API
    def forward(self, z: torch.Tensor, mask: Optional[torch.Tensor] = None) -> QuantizerOutput:
        """Quantize ``z`` ``[..., dim]``; in training mode this also updates EMA / k-means state."""
        self._check_z(z)
        lead = tuple(z.shape[:-1])
        mask = self._check_mask(mask, lead)
        x = z.reshape(-1, self.dim).float()
        m = None if mask is None else mask.reshape(-1).to(x.device)
        with _no_autocast(x.device):
            codes, st, ids, losses = self._quantize(x, m, update=self.training)
        out = st if (torch.is_grad_enabled() and st.requires_grad) else codes
        out = out.reshape(*lead, out.shape[-1]).to(z.dtype)
        ids = ids.reshape(*lead, *ids.shape[1:])
        stats = CodebookStats.from_ids(ids.detach(), self.codebook_size, self.num_codebooks if
                                       self.has_codebook_axis else 1, mask)
        return QuantizerOutput(quantized=out, ids=ids, losses=losses, stats=stats)

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Ids of ``z`` ``[..., dim]`` -> int64 ``[...]`` (or ``[..., num_codebooks]``). Never updates state."""
        self._check_z(z)
        lead = tuple(z.shape[:-1])
        x = z.reshape(-1, self.dim).float()
        with _no_autocast(x.device):
            _, _, ids, _ = self._quantize(x, None, update=False)
        return ids.reshape(*lead, *ids.shape[1:])

    def decode(self, ids: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Codes of ``ids`` (``[...]`` or ``[..., num_codebooks]``) -> ``[..., dim]`` (float32 unless ``dtype``)."""
        self.check_ids(ids)
        lead = tuple(ids.shape[:-1]) if self.has_codebook_axis else tuple(ids.shape)
        flat = ids.reshape(-1, self.num_codebooks) if self.has_codebook_axis else ids.reshape(-1)
        with _no_autocast(flat.device):
            codes = self._decode(flat.long())
        return _cast(codes.reshape(*lead, codes.shape[-1]), dtype)

    # ------------------------------------------------------------------ subclass hooks
    def _quantize(self, x: torch.Tensor, mask: Optional[torch.Tensor], update: bool):  # pragma: no cover
        raise NotImplementedError

    def _decode(self, ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"dim={self.dim}, codebook_size={self.codebook_size}, num_codebooks={self.num_codebooks}"
