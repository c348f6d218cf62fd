"""Quantizers: one interface over vector-quantize-pytorch.

Layout is channel-last everywhere: ``z`` is ``[..., dim]`` (any leading axes), ids are ``[...]`` (one codebook)
or ``[..., num_codebooks]`` (residual kinds), int64. ``q(z, mask=None) -> QuantizerOutput(quantized, ids,
losses, stats)``, ``q.encode(z) -> ids``, ``q.decode(ids) -> codes``; ``q.codebook_size``, ``q.num_codebooks``,
``q.dim``. See docs/quantizers.md.

Kinds: :class:`VQ` (euclidean/cosine, l2-normalised codes, EMA, k-means init, dead-code expiry, projections),
:class:`FSQ`, :class:`BSQ` (binary spherical / LFQ, MSB-first ids), :class:`ResidualVQ`, :class:`ResidualFSQ`.
Statistics: :class:`CodebookStats`, :class:`StatsAccumulator`. Originals' buffers: :func:`load_state_from`,
:func:`convert_state` (layouts ``encodec``, ``ema_embedding``, ``embedding``, ``bsq``).
"""

from .base import Quantizer, QuantizerOutput
from .bsq import BSQ, BSQConfig
from .convert import LAYOUTS, convert_state, load_state_from
from .factory import KINDS, build_quantizer, quantizer_spec
from .fsq import FSQ, FSQConfig
from .residual import ResidualFSQ, ResidualFSQConfig, ResidualVQ, ResidualVQConfig
from .stats import CodebookStats, StatsAccumulator, histogram
from .vq import VQ, VQConfig, nearest_code

__all__ = [
    "BSQ", "BSQConfig", "CodebookStats", "FSQ", "FSQConfig", "Quantizer", "QuantizerOutput",
    "ResidualFSQ", "ResidualFSQConfig", "ResidualVQ", "ResidualVQConfig", "StatsAccumulator",
    "VQ", "VQConfig", "LAYOUTS", "convert_state", "histogram", "load_state_from", "nearest_code",
    "KINDS", "build_quantizer", "quantizer_spec",
]
