"""Binary spherical quantization (BSQ) / lookup-free quantization (LFQ), wrapping vector-quantize-pytorch's ``LFQ``.

Each of the ``bits`` channels becomes one bit: ``bit_k = z_k > 0`` (an exact 0 is a 0 bit / negative code).
The id is MSB-first: ``id = sum_k bit_k * 2**(bits - 1 - k)`` (channel 0 is the most significant bit), as in
bsq-vit / TaDiCodec (``basis = 2**[bits-1 .. 0]``). Codes are ``(2 * bit - 1) * scale``; with
``spherical=True`` (BSQ) inputs are l2-normalised first and codes are ``+-1/sqrt(bits)`` (unit norm), without
it (LFQ) codes are ``+-1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from vector_quantize_pytorch import LFQ as _LibLFQ

from ..config import ConfigBase
from ..validation import check_positive_int
from .base import Quantizer

__all__ = ["BSQ", "BSQConfig"]

# the library materialises the whole implicit codebook ([2**bits, bits] floats) at construction
_MAX_BITS = 20


@dataclass
class BSQConfig(ConfigBase):
    """Configuration of :class:`BSQ`.

    bits: number of binary channels (codebook size ``2**bits``); TaDiCodec: 14.
    dim: input channels; when it differs from ``bits`` Linear projections are added. ``None`` = ``bits``.
    spherical: l2-normalise inputs and codes (BSQ); False gives plain LFQ codes +-1.
    entropy_loss_weight, diversity_gamma, inv_temperature: the library's entropy regulariser
        ``w * (H_per_sample - gamma * H_codebook)`` with soft assignments at ``inv_temperature`` (training only).
    commitment_weight: weight of ``mse(z, sg[q])`` (training only).
    """

    bits: int = 14
    dim: Optional[int] = None
    spherical: bool = True
    entropy_loss_weight: float = 0.1
    diversity_gamma: float = 1.0
    inv_temperature: float = 100.0
    commitment_weight: float = 0.0

    def __post_init__(self):
        check_positive_int("BSQConfig.bits", self.bits)
        if self.bits > _MAX_BITS:
            raise ValueError(f"BSQConfig.bits must be <= {_MAX_BITS} (the implicit codebook of 2**bits codes is "
                             f"materialised), got {self.bits}")
        if self.dim is not None:
            check_positive_int("BSQConfig.dim", self.dim)
        for name in ("entropy_loss_weight", "diversity_gamma", "inv_temperature", "commitment_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"BSQConfig.{name} must be a number >= 0, got {value!r}")


class BSQ(Quantizer):
    """Binary spherical / lookup-free quantizer: ``z [..., dim] -> ids [...]`` in ``[0, 2**bits)``, MSB first.

    Losses (training mode only): ``entropy`` and ``commitment`` when their weights are > 0.
    """

    def __init__(self, config: Optional[BSQConfig] = None, **kwargs):
        super().__init__()
        if config is None:
            config = BSQConfig(**kwargs)
        elif kwargs:
            raise ValueError(f"pass either a BSQConfig or keyword arguments, not both (got {sorted(kwargs)})")
        if not isinstance(config, BSQConfig):
            raise TypeError(f"config must be a BSQConfig, got {type(config).__name__}")
        self.config = config
        self.lfq = _LibLFQ(dim=config.dim if config.dim is not None else config.bits, codebook_size=2 ** config.bits,
                           spherical=config.spherical, entropy_loss_weight=config.entropy_loss_weight,
                           diversity_gamma=config.diversity_gamma, commitment_loss_weight=config.commitment_weight)

    @property
    def bits(self) -> int:
        return self.config.bits

    @property
    def codebook_size(self) -> int:
        return 2 ** self.config.bits

    @property
    def num_codebooks(self) -> int:
        return 1

    @property
    def dim(self) -> int:
        return int(self.lfq.dim)

    @property
    def code_scale(self) -> float:
        """Magnitude of every code channel: ``1/sqrt(bits)`` when spherical, else 1."""
        return self.config.bits ** -0.5 if self.config.spherical else 1.0

    def _prepare(self, x):
        h = self.lfq.project_in(x)
        if self.config.spherical:
            h = F.normalize(h, dim=-1)
        return h

    def _quantize(self, x, mask, update):
        cfg = self.config
        was_training = self.lfq.training
        try:
            self.lfq.eval()                          # ids only: no [N, 2**bits] entropy computation
            _, idx, _ = self.lfq(x[None])
            ids = idx[0].long()
            losses: Dict[str, torch.Tensor] = {}
            if update and (cfg.entropy_loss_weight > 0 or cfg.commitment_weight > 0):
                # The library's masked entropy flattens away its codebook axis (vector-quantize-pytorch 1.32:
                # ``original_input[mask]`` then ``'b n ... -> (b n) ...'``), which zeroes the diversity term; every
                # vector is independent, so the losses are computed on the real vectors alone instead.
                real = x if mask is None else x[mask]
                if real.shape[0] > 0:
                    self.lfq.train()
                    _, (per_sample, codebook_entropy, commit) = self.lfq(
                        real[None], inv_temperature=cfg.inv_temperature, return_loss_breakdown=True)
                    if cfg.entropy_loss_weight > 0:
                        losses["entropy"] = (per_sample - cfg.diversity_gamma * codebook_entropy) * \
                            cfg.entropy_loss_weight
                    if cfg.commitment_weight > 0:
                        losses["commitment"] = commit * cfg.commitment_weight
        finally:
            self.lfq.train(was_training)
        q = self.lfq.indices_to_codes(ids, project_out=False).float()
        h = self._prepare(x)
        st = self.lfq.project_out(h + (q - h).detach() if h.requires_grad else q)
        codes = self.lfq.project_out(q)
        return codes, st, ids, losses

    def _decode(self, ids):
        return self.lfq.indices_to_codes(ids.to(self.lfq.mask.device)).float()

    def ids_to_bits(self, ids: torch.Tensor) -> torch.Tensor:
        """Bits ``[..., bits]`` (uint8, MSB first) of ids ``[...]``."""
        self.check_ids(ids)
        return ((ids.long()[..., None] & self.lfq.mask) != 0).to(torch.uint8)

    def bits_to_ids(self, bits: torch.Tensor) -> torch.Tensor:
        """Ids ``[...]`` of 0/1 bits ``[..., bits]`` (MSB first), int64."""
        if not isinstance(bits, torch.Tensor):
            raise TypeError(f"bits must be a tensor of 0/1 values, got {type(bits).__name__}")
        if bits.ndim < 1 or bits.shape[-1] != self.bits:
            raise ValueError(f"bits must have {self.bits} entries on the last axis, got shape {tuple(bits.shape)}")
        if bool(((bits != 0) & (bits != 1)).any()):
            raise ValueError("bits must contain only 0 and 1")
        return (bits.long() * self.lfq.mask).sum(dim=-1)

    @staticmethod
    def convert_bsq_state(state: Mapping[str, torch.Tensor], prefix: str = "", bits: Optional[int] = None
                          ) -> Dict[str, torch.Tensor]:
        """bsq-vit / TaDiCodec ``BinarySphericalQuantizer`` buffers -> this module's state dict.

        The original's only buffers are ``basis`` (``2**[bits-1..0]``) and ``group_basis``; both are
        recomputable and optional (``bits`` must then be given). A stored basis that is not MSB-first powers of
        two is rejected (it would change the id order).
        """
        key = prefix + "basis"
        if key in state:
            basis = state[key]
            n = basis.numel()
            expected = 2 ** torch.arange(n - 1, -1, -1)
            if not torch.equal(basis.reshape(-1).long().cpu(), expected):
                raise ValueError(f"{key} = {basis.tolist()} is not the MSB-first basis {expected.tolist()}")
            if bits is not None and bits != n:
                raise ValueError(f"{key} has {n} bits but bits={bits} was given")
            bits = n
        if bits is None:
            raise ValueError(f"{key} not in the state and bits not given: cannot tell the number of bits")
        return {"lfq.mask": 2 ** torch.arange(bits - 1, -1, -1)}

    def extra_repr(self) -> str:
        return f"bits={self.bits}, dim={self.dim}, spherical={self.config.spherical}"
