"""Configuration of TiTok (Yu et al., NeurIPS 2024) and of the MaskGIT-VQGAN it decodes through.

:class:`TiTokConfig` is this package's typed view of a release's ``config.json`` (the OmegaConf tree the
reference writes: ``model.vq_model.*`` and ``dataset.preprocessing.crop_size``). :func:`official_config`
parses that tree, filling every missing key with the reference's default:

- ``quantize_mode`` absent -> ``"vq"``; ``finetune_decoder`` absent -> True (two-stage, the release carries a
  fine-tuned MaskGIT-VQGAN pixel decoder); ``is_legacy`` absent -> True (the encoder's reshape quirk and the
  1024-way proxy-code head).
- ViT sizes come from the size names small/base/large (width 512/768/1024, 8/12/24 blocks, 8/12/16 heads, as
  hardcoded in the reference's ``TiTokEncoder``/``TiTokDecoder``); ``"custom"`` (or explicit ``vit_*_width`` /
  ``vit_*_num_layers`` / ``vit_*_num_heads`` keys) gives any other size.
- The MaskGIT-VQGAN pixel decoder is hardcoded in the reference (1024 codes x 256, hidden 128, channel_mult
  [1,1,2,2,4], 2 res blocks); an optional ``pixel_vqgan`` block overrides it.

Defaults of :class:`TiTokConfig` are the paper's headline tokenizer, TiTok-L-32 (two-stage, 32 tokens, codebook
4096 x 12 with l2-normalised codes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from zoo.config import ConfigBase
from zoo.validation import check_choice, check_positive_int

__all__ = ["ViTSize", "VIT_SIZES", "MaskGITVQGANConfig", "TiTokConfig", "official_config", "vqgan_config_from"]

# size name -> (width, layers, heads); the reference hardcodes these three (head dim is always 64)
VIT_SIZES: Dict[str, Tuple[int, int, int]] = {
    "small": (512, 8, 8),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}


@dataclass
class ViTSize(ConfigBase):
    """One ViT stack: ``width`` channels, ``num_layers`` pre-LN blocks, ``num_heads`` attention heads."""

    width: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    name: str = "large"

    def __post_init__(self):
        check_positive_int("ViTSize.width", self.width)
        check_positive_int("ViTSize.num_layers", self.num_layers)
        check_positive_int("ViTSize.num_heads", self.num_heads)
        if self.width % self.num_heads:
            raise ValueError(f"ViTSize: width {self.width} is not divisible by num_heads {self.num_heads}")

    @classmethod
    def named(cls, name: str) -> "ViTSize":
        if name not in VIT_SIZES:
            raise ValueError(f"unknown ViT size {name!r}; known sizes are {sorted(VIT_SIZES)} (or 'custom' with "
                             "explicit width/num_layers/num_heads)")
        w, n, h = VIT_SIZES[name]
        return cls(w, n, h, name)


@dataclass
class MaskGITVQGANConfig(ConfigBase):
    """The MaskGIT-VQGAN (no attention layers) whose codebook and decoder two-stage TiTok decodes through.

    Defaults are the reference's hardcoded ``maskgit-vqgan-imagenet-f16-256`` settings.
    """

    num_embeddings: int = 1024
    z_channels: int = 256
    hidden_channels: int = 128
    channel_mult: Tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    resolution: int = 256
    num_channels: int = 3

    def __post_init__(self):
        for name in ("num_embeddings", "z_channels", "hidden_channels", "num_res_blocks", "resolution",
                     "num_channels"):
            check_positive_int(f"MaskGITVQGANConfig.{name}", getattr(self, name))
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if not self.channel_mult or any(m <= 0 for m in self.channel_mult):
            raise ValueError(f"MaskGITVQGANConfig.channel_mult must be positive ints, got {self.channel_mult}")
        for m in self.channel_mult:
            if (self.hidden_channels * m) % 32:
                raise ValueError("MaskGITVQGANConfig: every level width hidden_channels*mult must be a multiple of "
                                 f"32 (GroupNorm with 32 groups), got {self.hidden_channels}*{m}")

    @property
    def num_resolutions(self) -> int:
        return len(self.channel_mult)

    @property
    def downsample(self) -> int:
        return 2 ** (self.num_resolutions - 1)


@dataclass
class TiTokConfig(ConfigBase):
    """TiTok hyper-parameters (see the module docstring for how a release's config.json maps onto them).

    image_size: the square input size (reference ``crop_size``; 256 for every release).
    enc_patch_size / dec_patch_size: ViT patch sizes (16 in every release).
    encoder / decoder: ViT stacks.
    num_latent_tokens: K, tokens per image.
    token_size: channels of a token (VQ code dim, or VAE latent channels; the VAE encoder emits twice that).
    codebook_size, use_l2_norm, commitment_cost: the VQ (ignored for ``quantize_mode="vae"``).
    quantize_mode: ``"vq"`` (discrete ids) or ``"vae"`` (continuous diagonal-Gaussian latents).
    is_legacy: encoder reshape without transpose before its 1x1 conv, and the proxy-code decoder head.
    finetune_decoder: two-stage decoding (proxy logits -> softmax-mixed VQGAN codes -> MaskGIT-VQGAN decoder).
    pixel_vqgan: that VQGAN (only with ``finetune_decoder``).
    proxy_codebook_size: outputs of the legacy decoder head (1024 hardcoded in the reference).
    """

    image_size: int = 256
    enc_patch_size: int = 16
    dec_patch_size: int = 16
    encoder: ViTSize = field(default_factory=lambda: ViTSize.named("large"))
    decoder: ViTSize = field(default_factory=lambda: ViTSize.named("large"))
    num_latent_tokens: int = 32
    token_size: int = 12
    codebook_size: int = 4096
    use_l2_norm: bool = True
    commitment_cost: float = 0.25
    quantize_mode: str = "vq"
    is_legacy: bool = True
    finetune_decoder: bool = True
    pixel_vqgan: Optional[MaskGITVQGANConfig] = field(default_factory=MaskGITVQGANConfig)
    proxy_codebook_size: int = 1024

    def __post_init__(self):
        for name in ("image_size", "enc_patch_size", "dec_patch_size", "num_latent_tokens", "token_size",
                     "codebook_size", "proxy_codebook_size"):
            check_positive_int(f"TiTokConfig.{name}", getattr(self, name))
        if isinstance(self.encoder, dict):
            self.encoder = ViTSize.from_dict(self.encoder)
        if isinstance(self.decoder, dict):
            self.decoder = ViTSize.from_dict(self.decoder)
        if isinstance(self.pixel_vqgan, dict):
            self.pixel_vqgan = MaskGITVQGANConfig.from_dict(self.pixel_vqgan)
        check_choice("TiTokConfig.quantize_mode", self.quantize_mode, ("vq", "vae"))
        for name in ("use_l2_norm", "is_legacy", "finetune_decoder"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"TiTokConfig.{name} must be a bool, got {getattr(self, name)!r}")
        for name, p in (("enc_patch_size", self.enc_patch_size), ("dec_patch_size", self.dec_patch_size)):
            if self.image_size % p:
                raise ValueError(f"TiTokConfig: image_size {self.image_size} is not divisible by {name} {p}")
        if self.finetune_decoder:
            if self.quantize_mode != "vq":
                raise ValueError("TiTokConfig: finetune_decoder (two-stage decoding) needs quantize_mode 'vq' "
                                 "(the reference refuses it too)")
            if not self.is_legacy:
                raise ValueError("TiTokConfig: finetune_decoder needs the legacy proxy-code decoder head "
                                 "(is_legacy=True)")
            if self.pixel_vqgan is None:
                self.pixel_vqgan = MaskGITVQGANConfig()
            if self.pixel_vqgan.num_embeddings != self.proxy_codebook_size:
                raise ValueError(f"TiTokConfig: pixel_vqgan.num_embeddings ({self.pixel_vqgan.num_embeddings}) must "
                                 f"equal the decoder's proxy-code outputs ({self.proxy_codebook_size})")
            grid = self.image_size // self.dec_patch_size
            vq_grid = self.pixel_vqgan.resolution // self.pixel_vqgan.downsample
            if grid != vq_grid:
                raise ValueError(f"TiTokConfig: the decoder grid ({grid}x{grid}) must equal the MaskGIT-VQGAN latent "
                                 f"grid ({vq_grid}x{vq_grid})")
        else:
            self.pixel_vqgan = None

    # ------------------------------------------------------------------ derived facts
    @property
    def discrete(self) -> bool:
        return self.quantize_mode == "vq"

    @property
    def two_stage(self) -> bool:
        return self.finetune_decoder

    @property
    def enc_grid(self) -> int:
        return self.image_size // self.enc_patch_size

    @property
    def dec_grid(self) -> int:
        return self.image_size // self.dec_patch_size

    @property
    def encoder_out_channels(self) -> int:
        return 2 * self.token_size if self.quantize_mode == "vae" else self.token_size

    @property
    def bits_per_image(self) -> float:
        return self.num_latent_tokens * math.log2(self.codebook_size) if self.discrete else 0.0


def _size(vq: Dict[str, Any], side: str) -> ViTSize:
    name = vq.get(f"vit_{side}_model_size", "large")
    keys = {k: vq.get(f"vit_{side}_{k}") for k in ("width", "num_layers", "num_heads")}
    if all(v is None for v in keys.values()):
        if name not in VIT_SIZES:
            raise ValueError(f"config.json: model.vq_model.vit_{side}_model_size is {name!r}; expected one of "
                             f"{sorted(VIT_SIZES)} or explicit vit_{side}_width/num_layers/num_heads keys")
        return ViTSize.named(name)
    base = VIT_SIZES.get(name)
    vals = {}
    for i, k in enumerate(("width", "num_layers", "num_heads")):
        v = keys[k]
        if v is None:
            if base is None:
                raise ValueError(f"config.json: vit_{side}_model_size {name!r} needs vit_{side}_{k}")
            v = base[i]
        vals[k] = int(v)
    return ViTSize(vals["width"], vals["num_layers"], vals["num_heads"], str(name))


def vqgan_config_from(data: Optional[Dict[str, Any]]) -> MaskGITVQGANConfig:
    """A MaskGIT-VQGAN config from a ``pixel_vqgan``-style dict (absent keys: the reference's constants)."""
    if data is None:
        return MaskGITVQGANConfig()
    if not isinstance(data, dict):
        raise TypeError(f"pixel_vqgan must be a dict, got {type(data).__name__}")
    data = dict(data)
    data.pop("dropout", None)  # inference: dropout is identity
    nres = data.pop("num_resolutions", None)
    cfg = MaskGITVQGANConfig.from_dict(data)
    if nres is not None and int(nres) != cfg.num_resolutions:
        raise ValueError(f"pixel_vqgan: num_resolutions {nres} != len(channel_mult) {cfg.num_resolutions}")
    return cfg


def official_config(tree: Dict[str, Any]) -> TiTokConfig:
    """Parse a release's ``config.json`` (the reference's OmegaConf tree) into a :class:`TiTokConfig`."""
    if not isinstance(tree, dict):
        raise TypeError(f"TiTok config.json must hold a JSON object, got {type(tree).__name__}")
    try:
        vq = tree["model"]["vq_model"]
    except (KeyError, TypeError):
        raise ValueError("not a TiTok config.json: it has no model.vq_model section (found top-level keys "
                         f"{sorted(tree)})") from None
    if not isinstance(vq, dict):
        raise ValueError("TiTok config.json: model.vq_model must be an object")
    crop = (tree.get("dataset") or {}).get("preprocessing", {}).get("crop_size", 256)
    required = ("num_latent_tokens", "token_size", "vit_enc_patch_size", "vit_dec_patch_size")
    missing = [k for k in required if k not in vq]
    if missing:
        raise ValueError(f"TiTok config.json: model.vq_model lacks {missing}")
    mode = vq.get("quantize_mode", "vq")
    finetune = bool(vq.get("finetune_decoder", True))
    if mode == "vq":
        for k in ("codebook_size",):
            if k not in vq:
                raise ValueError(f"TiTok config.json: model.vq_model lacks {k!r} (needed for quantize_mode 'vq')")
    return TiTokConfig(
        image_size=int(crop),
        enc_patch_size=int(vq["vit_enc_patch_size"]),
        dec_patch_size=int(vq["vit_dec_patch_size"]),
        encoder=_size(vq, "enc"),
        decoder=_size(vq, "dec"),
        num_latent_tokens=int(vq["num_latent_tokens"]),
        token_size=int(vq["token_size"]),
        codebook_size=int(vq.get("codebook_size", 4096)),
        use_l2_norm=bool(vq.get("use_l2_norm", False)),
        commitment_cost=float(vq.get("commitment_cost", 0.25)),
        quantize_mode=str(mode),
        is_legacy=bool(vq.get("is_legacy", True)),
        finetune_decoder=finetune,
        pixel_vqgan=vqgan_config_from(vq.get("pixel_vqgan")) if finetune else None,
        proxy_codebook_size=int((vq.get("pixel_vqgan") or {}).get("num_embeddings", 1024)),
    )
