"""TiTok (Yu et al., NeurIPS 2024): 256x256 images <-> 32-256 1D tokens; two-stage VQ, single-stage VQ and VAE.

Importing this package registers the families ``"titok"`` (every release; ``zoo.load_official("titok", ...)``
also reads the MaskGIT-VQGAN ``.bin``) and ``"titok-maskgit-vqgan"`` (the MaskGIT-VQGAN tokenizer).
"""

from .config import MaskGITVQGANConfig, TiTokConfig, ViTSize, official_config
from .convert import convert_state_dict, load_maskgit_vqgan, load_official_titok
from .maskgit_vqgan import MaskGITVQGAN
from .model import TiTok

__all__ = ["MaskGITVQGAN", "MaskGITVQGANConfig", "TiTok", "TiTokConfig", "ViTSize", "convert_state_dict",
           "load_maskgit_vqgan", "load_official_titok", "official_config"]
