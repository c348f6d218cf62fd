"""MaskGIT-VQGAN (Chang et al., CVPR 2022; the convolutional VQGAN without non-local layers).

Two uses in TiTok:

- :class:`VQGANDecoder` is the pixel decoder every two-stage TiTok release ships (``pixel_decoder.*``, fine-tuned
  in stage 2), fed the softmax-weighted mixture of the VQGAN codebook rows.
- :class:`MaskGITVQGAN` is the whole tokenizer (``maskgit-vqgan-imagenet-f16-256.bin``: encoder, 1024 x 256
  codebook, decoder), 256x256 images <-> 16x16 codes; it provides the proxy codes stage-1 training predicts.

Quirks that the trained weights depend on (kept on purpose):

- a residual block whose channel count changes adds ``nin_shortcut(h)`` of its OWN output ``h`` (a 1x1 conv
  ``out -> out``) instead of a projection of its input; the input is dropped (inherited from the JAX MaskGIT,
  google-research/maskgit issue 3; bytedance/1d-tokenizer PR 119 proposing a "fix" was closed);
- resblock convolutions have no bias; GroupNorm has 32 groups and eps 1e-6;
- the encoder downsamples by 2x2 average pooling, the decoder upsamples by nearest x2 then a 3x3 conv;
- the reference's "same"-padded convolutions equal ordinary convolutions with padding ``k // 2`` for the odd
  kernels and stride 1 used throughout, so plain ``nn.Conv2d`` is used.

State-dict keys follow the release files (``conv_in``, ``down.{i}.block.{j}``, ``mid.{j}``, ``up.{i}``,
``norm_out``, ``conv_out``) so converting is renaming only the codebook. ``up.{i}`` is stored from the finest
level (0) to the coarsest and run coarsest first.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from zoo.quantizers import VQ, VQConfig
from zoo.registry import register_family
from zoo.tokenizer import ImageTokenizer, TokenizerSpec
from zoo.tokens import Tokens

from .config import MaskGITVQGANConfig

__all__ = ["ResBlock", "VQGANEncoder", "VQGANDecoder", "MaskGITVQGAN"]


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    """GN -> SiLU -> conv3x3 -> GN -> SiLU -> conv3x3 (no biases); residual = input, or
    ``nin_shortcut(output)`` when the channel count changes (see the module docstring)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.norm1 = _group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = _group_norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.changes_width = in_ch != out_ch
        self.nin_shortcut = nn.Conv2d(out_ch, out_ch, 1, bias=False) if self.changes_width else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.nin_shortcut(h) if self.nin_shortcut is not None else x
        return h + skip


class _Level(nn.Module):
    """``num_res_blocks`` residual blocks (attribute ``block``), then optionally an up-sampling conv."""

    def __init__(self, in_ch: int, out_ch: int, n: int, upsample: bool):
        super().__init__()
        self.block = nn.ModuleList([ResBlock(in_ch if j == 0 else out_ch, out_ch) for j in range(n)])
        self.upsample_conv = nn.Conv2d(out_ch, out_ch, 3, padding=1) if upsample else None


class VQGANEncoder(nn.Module):
    """Images ``[B, 3, H, W]`` in [0, 1] -> latents ``[B, z_channels, H/f, W/f]`` (f = 2^(levels-1))."""

    def __init__(self, cfg: MaskGITVQGANConfig):
        super().__init__()
        hid, mult = cfg.hidden_channels, cfg.channel_mult
        self.conv_in = nn.Conv2d(cfg.num_channels, hid, 3, padding=1, bias=False)
        ins = (1,) + tuple(mult)
        self.down = nn.ModuleList([_Level(hid * ins[i], hid * mult[i], cfg.num_res_blocks, False)
                                   for i in range(len(mult))])
        top = hid * mult[-1]
        self.mid = nn.ModuleList([ResBlock(top, top) for _ in range(cfg.num_res_blocks)])
        self.norm_out = _group_norm(top)
        self.conv_out = nn.Conv2d(top, cfg.z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        last = len(self.down) - 1
        for i, level in enumerate(self.down):
            for blk in level.block:
                h = blk(h)
            if i != last:
                h = F.avg_pool2d(h, kernel_size=2, stride=2)
        for blk in self.mid:
            h = blk(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VQGANDecoder(nn.Module):
    """Latents ``[B, z_channels, h, w]`` -> images ``[B, 3, h*f, w*f]`` (unclamped)."""

    def __init__(self, cfg: MaskGITVQGANConfig):
        super().__init__()
        hid, mult, n = cfg.hidden_channels, cfg.channel_mult, cfg.num_res_blocks
        top = hid * mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, top, 3, padding=1)
        self.mid = nn.ModuleList([ResBlock(top, top) for _ in range(n)])
        levels = []
        for i in range(len(mult)):
            in_ch = hid * (mult[i + 1] if i + 1 < len(mult) else mult[-1])
            levels.append(_Level(in_ch, hid * mult[i], n, upsample=i != 0))
        self.up = nn.ModuleList(levels)
        self.norm_out = _group_norm(hid * mult[0])
        self.conv_out = nn.Conv2d(hid * mult[0], cfg.num_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for blk in self.mid:
            h = blk(h)
        for level in reversed(self.up):
            for blk in level.block:
                h = blk(h)
            if level.upsample_conv is not None:
                h = level.upsample_conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def vqgan_quantizer(cfg: MaskGITVQGANConfig) -> VQ:
    """The VQGAN's plain euclidean codebook (``num_embeddings x z_channels``, commitment 0.25)."""
    return VQ(VQConfig(dim=cfg.z_channels, codebook_size=cfg.num_embeddings, distance="euclidean",
                       l2_normalize=False, ema=False, kmeans_init=False, commitment_weight=0.25,
                       codebook_weight=1.0))


@register_family("titok-maskgit-vqgan")
class MaskGITVQGAN(ImageTokenizer):
    """The MaskGIT-VQGAN tokenizer: images ``[B, 3, R, R]`` in [0, 1] <-> ids ``[B, h*w]`` (row-major grid).

    ``decode`` clamps to [0, 1] as the reference's ``PretrainedTokenizer.decode`` does. Load the released
    ``.bin`` with :func:`image.titok.convert.load_maskgit_vqgan` (or ``zoo.load_official("titok", path)``).
    """

    config_class = MaskGITVQGANConfig

    def __init__(self, config: Optional[MaskGITVQGANConfig] = None):
        super().__init__(config if config is not None else MaskGITVQGANConfig())
        cfg = self.config
        self.encoder = VQGANEncoder(cfg)
        self.decoder = VQGANDecoder(cfg)
        self.quantize = vqgan_quantizer(cfg)
        self.eval()

    def expected_size(self):
        return (self.config.resolution, self.config.resolution)

    @property
    def grid(self) -> int:
        return self.config.resolution // self.config.downsample

    @property
    def spec(self) -> TokenizerSpec:
        return TokenizerSpec.discrete_spec("image", self.config.num_embeddings, 1, self.grid ** 2, "tokens/image")

    def prepare_input(self, images, **kwargs):
        if kwargs:
            raise TypeError(f"MaskGITVQGAN.encode got unexpected keyword arguments {sorted(kwargs)}")
        return super().prepare_input(images)

    def check_tokens(self, tokens: Tokens) -> Tokens:
        ids = tokens.ids
        n = self.grid ** 2
        if ids.ndim == 3:
            if tuple(ids.shape[1:]) != (self.grid, self.grid):
                raise ValueError(f"tokens.ids must be [B, {n}] or [B, {self.grid}, {self.grid}], got shape "
                                 f"{tuple(ids.shape)}")
        elif ids.ndim != 2 or ids.shape[1] != n:
            raise ValueError(f"tokens.ids must be [B, {n}] (a {self.grid}x{self.grid} grid, row-major) or "
                             f"[B, {self.grid}, {self.grid}], got shape {tuple(ids.shape)}")
        if tokens.lengths is not None and bool((tokens.lengths != ids.shape[-1]).any()):
            raise ValueError("MaskGIT-VQGAN codes have a fixed number per image; partial lengths are not supported")
        return super().check_tokens(tokens)

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder output ``[B, z_channels, h, w]`` (before quantisation) of validated images."""
        return self.encoder(images)

    def _encode(self, images: torch.Tensor) -> Tokens:
        out = []
        for i in range(images.shape[0]):  # one image at a time: ids never depend on the batch
            z = self.encoder(images[i:i + 1]).permute(0, 2, 3, 1)
            out.append(self.quantize.encode(z).reshape(1, -1))
        return Tokens(torch.cat(out, 0))

    def codes_to_latents(self, ids: torch.Tensor) -> torch.Tensor:
        """Codebook rows of ``ids`` ``[B, h*w]`` or ``[B, h, w]`` as ``[B, z_channels, h, w]``."""
        b = ids.shape[0]
        z = self.quantize.decode(ids.reshape(b, self.grid, self.grid))
        return z.permute(0, 3, 1, 2).contiguous()

    def _decode(self, tokens: Tokens) -> torch.Tensor:
        return self.decoder(self.codes_to_latents(tokens.ids)).clamp(0.0, 1.0)

    @classmethod
    def from_official(cls, *paths, **kwargs):
        from .convert import load_maskgit_vqgan

        return load_maskgit_vqgan(*paths, **kwargs)
