"""Map an original implementation's stored quantizer buffers into this core.

Family converters call these instead of knowing the core's key names:

- ``convert_state(layout, state, prefix)`` -> the core's state dict (keys relative to the quantizer module), for
  building a whole model state dict that is then loaded strictly;
- ``load_state_from(quantizer, state, layout, prefix)`` -> loads in place (checks kind and shapes).

Layouts (what each original stores, under ``prefix``):

=================  ==========================================================  ===================================
layout             keys                                                        originals
=================  ==========================================================  ===================================
``encodec``        ``inited`` [1], ``cluster_size`` [K], ``embed`` [K, D],      EnCodec ``EuclideanCodebook``,
                   ``embed_avg`` [K, D]                                        WavTokenizer
``ema_embedding``  ``embedding.weight`` [K, D], ``cluster_size`` [K],           TFM-Tokenizer ``EMAVectorQuantizer``
                   ``ema_w`` [K, D]
``embedding``      ``embedding.weight`` [K, D]                                  TiTok ``VectorQuantizer``
``bsq``            ``basis`` [bits] (optional, MSB first)                       bsq-vit / TaDiCodec BSQ
=================  ==========================================================  ===================================

For a :class:`ResidualVQ`, ``prefix`` may contain ``{i}`` (the level index), e.g.
``"quantizer.vq.layers.{i}._codebook."`` for EnCodec's residual quantizer.
"""

from __future__ import annotations

from typing import Dict, Mapping

import torch

from .base import Quantizer
from .bsq import BSQ
from .residual import ResidualVQ
from .vq import VQ

__all__ = ["LAYOUTS", "convert_state", "load_state_from"]

_VQ_LAYOUTS = {
    "encodec": VQ.convert_encodec_state,
    "ema_embedding": VQ.convert_ema_embedding_state,
    "embedding": VQ.convert_embedding_state,
}
LAYOUTS = tuple(_VQ_LAYOUTS) + ("bsq",)


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown quantizer state layout {layout!r}; known layouts: {list(LAYOUTS)}")


def _check_state(state) -> None:
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of names to tensors, got {type(state).__name__}")


def convert_state(layout: str, state: Mapping[str, torch.Tensor], prefix: str = "",
                  num_quantizers: int = 0, **kwargs) -> Dict[str, torch.Tensor]:
    """The core's state dict for one quantizer from an original's buffers.

    ``num_quantizers > 0`` converts a residual stack (keys ``layers.{i}.``; ``prefix`` must contain ``{i}``).
    ``kwargs`` go to the layout's converter (``bits=`` for ``bsq`` without a stored basis).
    """
    _check_layout(layout)
    _check_state(state)
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    if layout == "bsq":
        return BSQ.convert_bsq_state(state, prefix, **kwargs)
    fn = _VQ_LAYOUTS[layout]
    if num_quantizers:
        if "{i}" not in prefix:
            raise ValueError(f"a residual stack needs a prefix with '{{i}}' for the level index, got {prefix!r}")
        out: Dict[str, torch.Tensor] = {}
        for i in range(num_quantizers):
            for k, v in fn(state, prefix.replace("{i}", str(i))).items():
                out[f"layers.{i}.{k}"] = v
        return out
    return fn(state, prefix)


def load_state_from(quantizer: Quantizer, state: Mapping[str, torch.Tensor], layout: str,
                    prefix: str = "") -> Quantizer:
    """Load an original's buffers into ``quantizer`` (a :class:`VQ`, :class:`ResidualVQ` or :class:`BSQ`)."""
    _check_layout(layout)
    _check_state(state)
    if layout == "bsq":
        if not isinstance(quantizer, BSQ):
            raise TypeError(f"layout 'bsq' loads into a BSQ, got {type(quantizer).__name__}")
        quantizer.load_state_dict(BSQ.convert_bsq_state(state, prefix, bits=quantizer.bits))
        return quantizer
    if isinstance(quantizer, ResidualVQ):
        converted = convert_state(layout, state, prefix, num_quantizers=quantizer.num_codebooks)
        for i, level in enumerate(quantizer.layers):
            _load_vq(level, {k[len(f"layers.{i}."):]: v for k, v in converted.items()
                             if k.startswith(f"layers.{i}.")}, f"{prefix.replace('{i}', str(i))}")
        return quantizer
    if not isinstance(quantizer, VQ):
        raise TypeError(f"layout {layout!r} loads into a VQ or ResidualVQ, got {type(quantizer).__name__}")
    _load_vq(quantizer, convert_state(layout, state, prefix), prefix)
    return quantizer


def _load_vq(vq: VQ, converted: Dict[str, torch.Tensor], where: str) -> None:
    embed = converted["codebook.embed"][0]
    expected = (vq.codebook_size, vq.config.code_dim)
    if tuple(embed.shape) != expected:
        raise ValueError(f"codebook under {where!r} has shape {tuple(embed.shape)}, this quantizer expects "
                         f"{expected} ([codebook_size, codebook_dim])")
    vq.load_codebook(embed, cluster_size=converted["codebook.cluster_size"][0],
                     embed_avg=converted["codebook.embed_avg"][0], initted=bool(converted["codebook.initted"]))
