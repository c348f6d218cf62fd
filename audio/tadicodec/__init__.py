"""TaDiCodec (text-aware diffusion speech tokenizer): registers the family ``"tadicodec"``."""

from .config import TaDiCodecConfig, VocosConfig
from .model import TaDiCodec

__all__ = ["TaDiCodec", "TaDiCodecConfig", "VocosConfig"]
