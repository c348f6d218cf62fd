"""Build a quantizer from a kind name and a config (a dataclass or its ``to_dict()``), for family configs that
store their quantizer as plain JSON: ``{"kind": "fsq", "config": {"levels": [8, 8, 8, 5, 5, 5]}}``."""

from __future__ import annotations

from typing import Any, Dict, Tuple, Type, Union

from ..config import ConfigBase
from .base import Quantizer
from .bsq import BSQ, BSQConfig
from .fsq import FSQ, FSQConfig
from .residual import ResidualFSQ, ResidualFSQConfig, ResidualVQ, ResidualVQConfig
from .vq import VQ, VQConfig

__all__ = ["KINDS", "build_quantizer", "quantizer_spec"]

KINDS: Dict[str, Tuple[Type[Quantizer], Type[ConfigBase]]] = {
    "vq": (VQ, VQConfig),
    "fsq": (FSQ, FSQConfig),
    "bsq": (BSQ, BSQConfig),
    "residual_vq": (ResidualVQ, ResidualVQConfig),
    "residual_fsq": (ResidualFSQ, ResidualFSQConfig),
}


def build_quantizer(kind: str, config: Union[ConfigBase, Dict[str, Any], None] = None) -> Quantizer:
    """``build_quantizer("vq", {"dim": 64, "codebook_size": 8192})`` -> a :class:`VQ`."""
    if kind not in KINDS:
        raise ValueError(f"unknown quantizer kind {kind!r}; known kinds: {sorted(KINDS)}")
    cls, cfg_cls = KINDS[kind]
    if config is None:
        config = cfg_cls()
    elif isinstance(config, dict):
        config = cfg_cls.from_dict(config)
    if not isinstance(config, cfg_cls):
        raise TypeError(f"quantizer kind {kind!r} needs a {cfg_cls.__name__} or a dict, got {type(config).__name__}")
    return cls(config)


def quantizer_spec(quantizer: Quantizer) -> Dict[str, Any]:
    """``{"kind": ..., "config": {...}}`` of a quantizer; ``build_quantizer(**spec)`` rebuilds it."""
    for kind, (cls, _) in KINDS.items():
        if type(quantizer) is cls:
            return {"kind": kind, "config": quantizer.config.to_dict()}
    raise TypeError(f"not a zoo quantizer: {type(quantizer).__name__}")
