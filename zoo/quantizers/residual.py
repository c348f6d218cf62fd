"""Residual quantizers: a stack of levels, each quantizing what the previous ones left over.

Ids are ``[..., num_codebooks]`` (one column per level, coarse to fine). ``decode`` sums the levels' codes; it
accepts the first ``n`` levels only (``ids[..., :n]``, a coarser reconstruction, as with EnCodec bandwidths)
and the id ``-1`` as "level skipped" -- that is what the training forward emits for levels removed by quantizer
dropout (vector-quantize-pytorch's convention). Every other id must lie in ``[0, codebook_size)``.

- :class:`ResidualVQ`: levels are :class:`~zoo.quantizers.VQ` (same config for every level, each with its own
  codebook, EMA, k-means and expiry). The output's straight-through gradient is the identity on the input.
- :class:`ResidualFSQ`: vector-quantize-pytorch's ``ResidualFSQ`` (level ``i`` quantizes the residual multiplied by
  ``L ** i`` per channel, with the symmetry-preserving FSQ, and its codes are scaled back by ``L ** -i``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from torch import nn
from vector_quantize_pytorch import ResidualFSQ as _LibResidualFSQ

from ..config import ConfigBase
from ..validation import check_positive_int, describe
from .base import Quantizer, _cast, _no_autocast
from .vq import VQ, VQConfig

__all__ = ["ResidualFSQ", "ResidualFSQConfig", "ResidualVQ", "ResidualVQConfig"]


def _shared_random_level(low: int, high: int, device) -> int:
    """A random int in [low, high], identical on every process (seed all-reduced like the library does)."""
    seed = torch.randint(0, 10_000, (), device=device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(seed)
    return random.Random(int(seed)).randint(low, high)


def _check_dropout(name: str, quantize_dropout: bool, min_levels: int, num_quantizers: int) -> None:
    check_positive_int(f"{name}.num_quantizers", num_quantizers)
    check_positive_int(f"{name}.quantize_dropout_min_levels", min_levels)
    if min_levels > num_quantizers:
        raise ValueError(f"{name}.quantize_dropout_min_levels={min_levels} exceeds num_quantizers={num_quantizers}")


class _ResidualBase(Quantizer):
    has_codebook_axis = True

    def check_ids(self, ids, name: str = "ids", num_codebooks: Optional[int] = None) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of integer ids, got {describe(ids)}")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"{name} must have an integer dtype (e.g. torch.int64), got {ids.dtype}")
        if ids.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(ids.shape)})")
        n = ids.shape[-1] if ids.ndim else 0
        if not 1 <= n <= self.num_codebooks:
            raise ValueError(f"{name} has {n if ids.ndim else 'no'} codebooks on its last axis (shape "
                             f"{tuple(ids.shape)}), expected between 1 and {self.num_codebooks} "
                             "([..., num_codebooks] layout, coarse levels first)")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < -1 or hi >= self.codebook_size:
            bad = ((ids < -1) | (ids >= self.codebook_size)).nonzero()[0].tolist()
            raise ValueError(f"{name} holds ids outside [0, {self.codebook_size}) (-1 = skipped level): min {lo}, "
                             f"max {hi} (first offending index {tuple(bad)})")
        return ids

    def decode(self, ids: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Sum of the levels' codes: ids ``[..., n]`` with ``1 <= n <= num_codebooks`` -> ``[..., dim]``."""
        self.check_ids(ids)
        lead = tuple(ids.shape[:-1])
        flat = ids.reshape(-1, ids.shape[-1]).long()
        with _no_autocast(flat.device):
            codes = self._decode(flat)
        return _cast(codes.reshape(*lead, codes.shape[-1]), dtype)

    @torch.no_grad()
    def encode(self, z: torch.Tensor, num_levels: Optional[int] = None) -> torch.Tensor:
        """Ids ``[..., num_levels]`` of ``z`` ``[..., dim]`` (all levels by default)."""
        ids = super().encode(z)
        if num_levels is not None:
            if isinstance(num_levels, bool) or not isinstance(num_levels, int) or not 1 <= num_levels <= \
                    self.num_codebooks:
                raise ValueError(f"num_levels must be an int in [1, {self.num_codebooks}], got {num_levels!r}")
            ids = ids[..., :num_levels]
        return ids


@dataclass
class ResidualVQConfig(ConfigBase):
    """Configuration of :class:`ResidualVQ`.

    vq: the configuration of every level (``dim``, ``codebook_size``, EMA, k-means, ...).
    num_quantizers: number of levels.
    quantize_dropout: in training, keep only the first ``n`` levels of each batch, ``n`` uniform in
        ``[quantize_dropout_min_levels, num_quantizers]`` (the same on every process); dropped ids are -1.
    """

    vq: VQConfig = field(default_factory=VQConfig)
    num_quantizers: int = 8
    quantize_dropout: bool = False
    quantize_dropout_min_levels: int = 1

    def __post_init__(self):
        if isinstance(self.vq, dict):
            self.vq = VQConfig.from_dict(self.vq)
        if not isinstance(self.vq, VQConfig):
            raise TypeError(f"ResidualVQConfig.vq must be a VQConfig, got {type(self.vq).__name__}")
        _check_dropout("ResidualVQConfig", self.quantize_dropout, self.quantize_dropout_min_levels,
                       self.num_quantizers)


class ResidualVQ(_ResidualBase):
    """Residual vector quantization over :class:`VQ` levels.

    Losses: the levels' losses summed over levels, by name (``commitment``, ``codebook``).
    State-dict keys: ``layers.{i}.`` + the :class:`VQ` keys; load an original level by level with
    ``rvq.layers[i].load_codebook(...)`` (or ``VQ.convert_*_state`` with the ``layers.{i}.`` prefix).
    """

    def __init__(self, config: Optional[ResidualVQConfig] = None, **kwargs):
        super().__init__()
        if config is None:
            config = ResidualVQConfig(**kwargs)
        elif kwargs:
            raise ValueError(f"pass either a ResidualVQConfig or keyword arguments, not both (got {sorted(kwargs)})")
        if not isinstance(config, ResidualVQConfig):
            raise TypeError(f"config must be a ResidualVQConfig, got {type(config).__name__}")
        self.config = config
        self.layers = nn.ModuleList([VQ(config.vq) for _ in range(config.num_quantizers)])

    @property
    def codebook_size(self) -> int:
        return self.config.vq.codebook_size

    @property
    def num_codebooks(self) -> int:
        return self.config.num_quantizers

    @property
    def dim(self) -> int:
        return self.config.vq.dim

    def _quantize(self, x, mask, update):
        cfg = self.config
        n = cfg.num_quantizers
        if update and cfg.quantize_dropout and torch.is_grad_enabled():
            n = _shared_random_level(cfg.quantize_dropout_min_levels, cfg.num_quantizers, x.device)
        residual = x                                # keeps x's graph so each level's commitment loss reaches z
        total = torch.zeros_like(x.detach())
        ids: List[torch.Tensor] = []
        losses: Dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            if i >= n:
                ids.append(torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device))
                continue
            codes, _, level_ids, level_losses = layer._quantize(residual, mask, update)
            for k, v in level_losses.items():
                losses[k] = losses[k] + v if k in losses else v
            ids.append(level_ids)
            total = total + codes
            residual = residual - codes.detach()
        st = x + (total - x).detach() if x.requires_grad else total
        return total, st, torch.stack(ids, dim=-1), losses

    def _decode(self, ids):
        total = None
        for i in range(ids.shape[-1]):
            col = ids[:, i]
            keep = col >= 0
            codes = self.layers[i]._decode(col.clamp(min=0))
            codes = torch.where(keep[:, None].to(codes.device), codes, torch.zeros_like(codes))
            total = codes if total is None else total + codes
        return total

    def extra_repr(self) -> str:
        return (f"num_quantizers={self.config.num_quantizers}, dim={self.dim}, codebook_size={self.codebook_size}, "
                f"quantize_dropout={self.config.quantize_dropout}")


@dataclass
class ResidualFSQConfig(ConfigBase):
    """Configuration of :class:`ResidualFSQ` (vector-quantize-pytorch's ``ResidualFSQ``).

    levels: FSQ levels of every stage; dim: input channels (projections when != len(levels));
    num_quantizers: number of stages; quantize_dropout / quantize_dropout_min_levels as in
    :class:`ResidualVQConfig`.
    """

    levels: List[int] = field(default_factory=lambda: [8, 5, 5, 5])
    num_quantizers: int = 4
    dim: Optional[int] = None
    quantize_dropout: bool = False
    quantize_dropout_min_levels: int = 1

    def __post_init__(self):
        if not isinstance(self.levels, (list, tuple)) or not self.levels:
            raise ValueError(f"ResidualFSQConfig.levels must be a non-empty list of ints, got {self.levels!r}")
        self.levels = [int(check_positive_int("ResidualFSQConfig.levels[i]", v)) for v in self.levels]
        if any(v < 2 for v in self.levels):
            raise ValueError(f"ResidualFSQConfig.levels must all be >= 2, got {self.levels}")
        if self.dim is not None:
            check_positive_int("ResidualFSQConfig.dim", self.dim)
        _check_dropout("ResidualFSQConfig", self.quantize_dropout, self.quantize_dropout_min_levels,
                       self.num_quantizers)


class ResidualFSQ(_ResidualBase):
    """Residual FSQ: ``z [..., dim] -> ids [..., num_quantizers]`` in ``[0, prod(levels))``. No losses."""

    def __init__(self, config: Optional[ResidualFSQConfig] = None, **kwargs):
        super().__init__()
        if config is None:
            config = ResidualFSQConfig(**kwargs)
        elif kwargs:
            raise ValueError(f"pass either a ResidualFSQConfig or keyword arguments, not both (got {sorted(kwargs)})")
        if not isinstance(config, ResidualFSQConfig):
            raise TypeError(f"config must be a ResidualFSQConfig, got {type(config).__name__}")
        self.config = config
        self.rfsq = _LibResidualFSQ(levels=list(config.levels), num_quantizers=config.num_quantizers,
                                    dim=config.dim if config.dim is not None else len(config.levels),
                                    quantize_dropout=config.quantize_dropout,
                                    quantize_dropout_cutoff_index=config.quantize_dropout_min_levels - 1)

    @property
    def codebook_size(self) -> int:
        return int(self.rfsq.codebook_size)

    @property
    def num_codebooks(self) -> int:
        return self.config.num_quantizers

    @property
    def dim(self) -> int:
        return self.config.dim if self.config.dim is not None else len(self.config.levels)

    def _quantize(self, x, mask, update):
        was_training = self.rfsq.training
        self.rfsq.train(update)                     # the library drops levels only in training mode
        try:
            out, idx = self.rfsq(x[None])
        finally:
            self.rfsq.train(was_training)
        ids = idx[0].long()
        codes = self._decode(ids)
        st = out[0].float() if out.requires_grad else codes
        return codes, st, ids, {}

    def _decode(self, ids):
        n = ids.shape[-1]
        if n < self.num_codebooks:                  # missing fine levels are skipped levels
            ids = torch.cat([ids, ids.new_full((ids.shape[0], self.num_codebooks - n), -1)], dim=-1)
        ids = ids.to(self.rfsq.scales.device)
        codes = self.rfsq.get_codes_from_indices(ids[None])       # [q, 1, N, d], zeros for -1
        return self.rfsq.project_out(codes.sum(dim=0)[0]).float()

    def extra_repr(self) -> str:
        return f"levels={self.config.levels}, num_quantizers={self.num_codebooks}, dim={self.dim}"
