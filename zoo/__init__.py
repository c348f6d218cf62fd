"""tokenzoo: a multimodal discrete tokenizer model zoo.

``zoo`` is the package users import: tokens, the tokenizer contract, the registry and the Hub loader.
"""

from .config import ConfigBase
from .hub import ChecksumError
from .hub_configs_schema import HubConfigError, ModelEntry
from .registry import (from_pretrained, get_family, list_families, list_models, load_official, register_family)
from .signal import resample
from .tokenizer import (AudioTokenizer, ImageTokenizer, SeriesTokenizer, Tokenizer, TokenizerSpec,
                        VideoTokenizer)
from .tokens import Tokens

__version__ = "0.1.0"

__all__ = [
    "AudioTokenizer", "ChecksumError", "ConfigBase", "HubConfigError", "ImageTokenizer", "ModelEntry", "SeriesTokenizer", "Tokenizer", "TokenizerSpec", "Tokens",
    "VideoTokenizer", "from_pretrained", "get_family", "list_families", "list_models", "load_official",
    "register_family", "resample", "__version__",
]
