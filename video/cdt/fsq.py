"""CDT-FSQ: a discrete variant of CDT (family ``cdt-fsq``).

CDT itself is continuous (a diagonal-Gaussian latent). Following the research note's recommendation (section 10,
"Discrete variant"), an FSQ bottleneck is placed on the posterior MEAN, channel-last: a Linear projection from
``latent_dim`` channels to ``len(levels)`` channels, FSQ rounding, and a Linear projection back to ``latent_dim``
channels that the unchanged CDT context decoder and diffusion U-Net consume. Every CDT weight keeps its shape, so a
released / converted CDT warm-starts the model (:meth:`CDTFSQTokenizer.from_cdt`); only the two projections are new.

Tokens: ``ids [B, T', H', W']`` with ``T' = 1 + (F - 1) / 4``, ``H' = H / 8``, ``W' = W / 8``; one id per latent
position in ``[0, prod(levels))`` (64 000 codes, ~15.97 bits, for the default ``[8, 8, 8, 5, 5, 5]``).
Decoding runs the CDT diffusion decoder (DDIM, ``sample_steps`` steps); with the same ``noise`` (or a seeded
``generator``) it is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import List, Optional

import torch

from zoo.quantizers import FSQ, FSQConfig
from zoo.tokens import Tokens
from zoo.tokenizer import Tokenizer, TokenizerSpec
from zoo.validation import check_tensor

from .config import CDTConfig
from .model import CDTTokenizer


@dataclass
class CDTFSQConfig(CDTConfig):
    """A :class:`CDTConfig` plus the FSQ ``levels`` (default ``[8, 8, 8, 5, 5, 5]``, 64 000 codes)."""

    levels: List[int] = field(default_factory=lambda: [8, 8, 8, 5, 5, 5])

    def __post_init__(self):
        super().__post_init__()
        # FSQConfig validates the levels (>= 3 each, ids fit in int32)
        self.levels = list(FSQConfig(levels=list(self.levels)).levels)

    @classmethod
    def from_cdt_config(cls, config: CDTConfig, levels=None) -> "CDTFSQConfig":
        if not isinstance(config, CDTConfig):
            raise TypeError(f"config must be a CDTConfig, got {type(config).__name__}")
        kw = {f.name: getattr(config, f.name) for f in fields(CDTConfig)}
        if levels is not None:
            kw["levels"] = list(levels)
        elif isinstance(config, CDTFSQConfig):
            kw["levels"] = list(config.levels)
        return cls(**kw)


class CDTFSQTokenizer(CDTTokenizer):
    """CDT with an FSQ bottleneck on the posterior mean: ``encode(video) -> Tokens``, ``decode(tokens) -> video``.

    Video ``[B, 3, 1 + 4k, H, W]`` in ``[0, 1]`` (uint8 accepted), H and W multiples of 8. ``decode`` accepts
    ``num_steps``, ``noise``, ``generator``, ``clamp`` and ``chunk_latents`` as :meth:`decode_latents`.
    ``encode_latents`` / ``decode_latents`` remain available (continuous path, without quantization).
    """

    config_class = CDTFSQConfig

    def __init__(self, config: CDTFSQConfig):
        super().__init__(config)
        self.quantizer = FSQ(FSQConfig(levels=list(config.levels), dim=config.latent_dim))

    # ------------------------------------------------------------------ contract
    @property
    def spec(self) -> TokenizerSpec:
        cfg = self.config
        # ids per frame of a 256x256 video (asymptotically one latent frame per time_factor frames)
        per_frame = (256 // cfg.space_factor) ** 2 / cfg.time_factor
        return TokenizerSpec.discrete_spec("video", self.quantizer.codebook_size, 1, per_frame, "tokens/frame")

    def encode(self, video, **kwargs) -> Tokens:
        """Video ``[B, 3, 1 + 4k, H, W]`` -> ``Tokens(ids [B, 1 + k, H/8, W/8])``."""
        return Tokenizer.encode(self, video, **kwargs)

    def decode(self, tokens, **kwargs) -> torch.Tensor:
        """``Tokens`` (or an id tensor ``[B, T', H', W']``) -> video ``[B, 3, 1 + 4(T'-1), 8H', 8W']`` in [0, 1]."""
        return Tokenizer.decode(self, tokens, **kwargs)

    def check_tokens(self, tokens: Tokens) -> Tokens:
        tokens = super(CDTTokenizer, self).check_tokens(tokens)
        if tokens.ids.ndim != 4:
            raise ValueError(f"tokens.ids must have shape [B, T', H', W'], got {tuple(tokens.ids.shape)}")
        if tokens.lengths is not None:
            raise ValueError("cdt-fsq tokens carry no lengths (every item has the same latent grid)")
        return tokens

    def quantize(self, mean: torch.Tensor):
        """Posterior mean ``[B, L, T', H', W']`` -> (quantized latent ``[B, L, T', H', W']``, ids ``[B, T', H', W']``).

        Differentiable (straight-through) when ``mean`` or the projections require grad; used by training.
        """
        mean = check_tensor("mean", mean, ndim=(5,), floating=True, shape_hint="[B, L, T', H', W'] posterior mean")
        if mean.shape[1] != self.config.latent_dim:
            raise ValueError(f"mean must have {self.config.latent_dim} channels on axis 1, got {tuple(mean.shape)}")
        out = self.quantizer(mean.movedim(1, -1))
        return out.quantized.movedim(-1, 1), out.ids

    def ids_to_latents(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids ``[B, T', H', W']`` -> the decoder's latent ``[B, L, T', H', W']`` (codes projected back)."""
        return self.quantizer.decode(ids).movedim(-1, 1).contiguous()

    def _encode(self, x, chunk_frames: Optional[int] = None, **kwargs) -> Tokens:
        if kwargs:
            raise TypeError(f"unexpected keyword arguments for cdt-fsq encode: {sorted(kwargs)}")
        mean = self.encode_latents(x, value_range=(0.0, 1.0), chunk_frames=chunk_frames)
        ids = self.quantizer.encode(mean.movedim(1, -1).contiguous())
        return Tokens(ids)

    def _decode(self, tokens: Tokens, num_steps: Optional[int] = None, noise=None, generator=None,
                clamp: bool = False, chunk_latents: Optional[int] = None, **kwargs) -> torch.Tensor:
        if kwargs:
            raise TypeError(f"unexpected keyword arguments for cdt-fsq decode: {sorted(kwargs)}")
        z = self.ids_to_latents(tokens.ids)
        return self.decode_latents(z, num_steps, noise=noise, generator=generator, clamp=clamp,
                                   chunk_latents=chunk_latents, value_range=(0.0, 1.0))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_cdt(cls, cdt: CDTTokenizer, levels=None, seed: int = 0) -> "CDTFSQTokenizer":
        """Warm-start from a (released / converted) continuous CDT: every CDT weight is copied strictly.

        The new projections are initialised so that the bottleneck starts close to the identity on the
        ``len(levels)``-dimensional subspace: ``project_in`` has orthonormal rows (seeded by ``seed``) and
        ``project_out`` is its transpose; both biases are zero. Fine-tune with the ``cdt-fsq`` recipe.
        """
        if not isinstance(cdt, CDTTokenizer):
            raise TypeError(f"cdt must be a CDTTokenizer, got {type(cdt).__name__}")
        from zoo.registry import load_state_strict

        model = cls(CDTFSQConfig.from_cdt_config(cdt.config, levels))
        load_state_strict(model.net, cdt.net.state_dict(), source="from_cdt")
        model.init_projections(seed)
        return model.to(cdt.device).eval()

    @torch.no_grad()
    def init_projections(self, seed: int = 0) -> None:
        """Orthonormal ``project_in`` (seeded), ``project_out`` = its transpose, zero biases."""
        fsq = self.quantizer.fsq
        pin, pout = getattr(fsq, "project_in", None), getattr(fsq, "project_out", None)
        if not isinstance(pin, torch.nn.Linear) or not isinstance(pout, torch.nn.Linear):
            return  # latent_dim == len(levels): no projections
        g = torch.Generator().manual_seed(int(seed))
        n, l = pin.out_features, pin.in_features
        if n <= l:  # orthonormal rows
            w = torch.linalg.qr(torch.randn(l, n, generator=g))[0].T
        else:  # more FSQ channels than latent channels: orthonormal columns
            w = torch.linalg.qr(torch.randn(n, l, generator=g))[0]
        pin.weight.copy_(w.to(pin.weight))
        pout.weight.copy_(w.T.to(pout.weight))
        pin.bias.zero_()
        pout.bias.zero_()

    @property
    def bits_per_token(self) -> float:
        return math.log2(self.quantizer.codebook_size)
