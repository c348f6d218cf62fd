"""FlexTok (Bachmann et al., ICML 2025): 256x256 images <-> 1..256 ordered FSQ tokens with a rectified-flow decoder.

Importing this package registers the family ``"flextok"``.
"""

from .config import FlexTokConfig, official_config
from .convert import convert_state_dict, load_official_flextok, read_release
from .model import FlexTok

__all__ = ["FlexTok", "FlexTokConfig", "convert_state_dict", "load_official_flextok", "official_config",
           "read_release"]
