"""FlexTok (Bachmann et al., ICML 2025): 256x256 images <-> 1..256 ordered FSQ tokens with a rectified-flow decoder.

Importing this package registers the family ``"flextok"`` (the tokenizer releases, and the stand-alone VAE
releases, which load as the continuous :class:`FlexTokVAE`).
"""

from .config import FlexTokConfig, FlexTokVAEConfig, official_config
from .convert import convert_state_dict, load_official_flextok, load_official_vae, read_release
from .model import FlexTok, FlexTokVAE

__all__ = ["FlexTok", "FlexTokConfig", "FlexTokVAE", "FlexTokVAEConfig", "convert_state_dict",
           "load_official_flextok", "load_official_vae", "official_config", "read_release"]
