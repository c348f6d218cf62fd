"""TiTok: a 256x256 image <-> a 1D sequence of K tokens (Yu et al., "An Image is Worth 32 Tokens for
Reconstruction and Generation", NeurIPS 2024), plus the single-stage VQ and VAE variants of the same codebase.

Shapes (``B`` batch, ``K`` latent tokens, ``D`` token channels, ``g`` = image_size / patch):

- encoder: image ``[B, 3, H, W]`` in [0, 1] -> 16x16 patches + CLS + K learned latent tokens through a pre-LN ViT
  -> the K latent outputs -> LayerNorm -> 1x1 projection -> ``z`` ``[B, K, D]`` (VAE: ``[B, K, 2D]`` = mean|logvar).
- quantizer (``zoo.quantizers.VQ``): ``z`` -> ids ``[B, K]`` (nearest code, l2-normalised for two-stage models).
- decoder: ``z_q`` ``[B, K, D]`` -> Linear -> appended after [CLS, g*g mask tokens] -> ViT -> the g*g mask outputs
  -> LayerNorm -> a head chosen by the config flags (not by a release name):
  * two-stage (``finetune_decoder``): 1x1 conv, tanh, 1x1 conv to 1024 proxy-code logits; softmax over the 1024
    codes mixes the MaskGIT-VQGAN codebook rows (soft, not argmax) and the release's own fine-tuned VQGAN
    decoder renders pixels;
  * single-stage: 1x1 conv to ``p*p*3`` values per patch, depth-to-space ``(p1 p2 c)``, then a 3x3 conv.

Quirks of the reference the released weights depend on, reproduced on purpose:

- legacy encoders (``is_legacy``; all two-stage releases) reinterpret the ``[B, K, W]`` LayerNorm output as
  ``[B, W, K]`` by a plain reshape (no transpose) before the 1x1 projection, so the projection mixes a scrambled
  channel axis;
- sequence orders: encoder [CLS, patches, latents], decoder [CLS, mask tokens, latents]; the positional tables
  cover CLS + patches only and the latents have their own table;
- attention uses one packed q|k|v projection (``in_proj_weight`` ``[3W, W]``) split into contiguous head chunks,
  scale ``1/sqrt(head_dim)``, no mask; LayerNorm eps 1e-5; exact-erf GELU.

Numerics: every linear map is computed in the channel-last token layout (a 1x1 convolution is a matrix product),
which equals the reference up to float rounding (parity tolerances in tests/image/titok).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from zoo.quantizers import VQ, VQConfig
from zoo.registry import register_family
from zoo.tokenizer import ImageTokenizer, TokenizerSpec
from zoo.tokens import Tokens
from zoo.validation import check_tensor, describe

from .config import TiTokConfig, ViTSize
from .maskgit_vqgan import VQGANDecoder, vqgan_quantizer

__all__ = ["TiTok", "TiTokEncoder", "TiTokDecoder", "Block", "PackedAttention"]


def _conv1x1(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 ``conv`` applied to channel-last ``x`` ``[..., C_in]`` -> ``[..., C_out]``."""
    return F.linear(x, conv.weight.reshape(conv.weight.shape[0], -1), conv.bias)


class PackedAttention(nn.Module):
    """Multi-head self-attention with one packed q|k|v projection (``in_proj_weight`` / ``in_proj_bias``) and
    ``out_proj``; the parameter layout of ``torch.nn.MultiheadAttention``. Batch-first ``[B, L, W]``."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.out_proj(out.transpose(1, 2).reshape(b, n, w))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))`` (MLP 4x, exact GELU)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = PackedAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.ModuleDict({"c_fc": nn.Linear(width, 4 * width), "c_proj": nn.Linear(4 * width, width)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp["c_proj"](F.gelu(self.mlp["c_fc"](self.ln_2(x))))


def _table(n: int, width: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(n, width) * width ** -0.5)


class _ViT(nn.Module):
    """The parts both ViT stacks share: CLS and positional tables, ``ln_pre``, blocks, ``ln_post``."""

    def __init__(self, size: ViTSize, grid: int, num_latent: int):
        super().__init__()
        w = size.width
        self.width = w
        self.grid = grid
        self.num_latent = num_latent
        self.class_embedding = _table(1, w)
        self.positional_embedding = _table(grid * grid + 1, w)
        self.latent_token_positional_embedding = _table(num_latent, w)
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = nn.ModuleList([Block(w, size.num_heads) for _ in range(size.num_layers)])
        self.ln_post = nn.LayerNorm(w)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_pre(x)
        for blk in self.transformer:
            x = blk(x)
        return x

    def _grid_tokens(self, body: torch.Tensor) -> torch.Tensor:
        """[CLS, grid tokens] + positional table for grid tokens ``[B, g*g, W]``."""
        cls = self.class_embedding.to(body.dtype).expand(body.shape[0], 1, -1)
        return torch.cat([cls, body], dim=1) + self.positional_embedding.to(body.dtype)


class TiTokEncoder(_ViT):
    """Images ``[B, 3, H, W]`` + latent tokens ``[K, W]`` -> ``z`` ``[B, K, out_channels]`` (channel-last)."""

    def __init__(self, cfg: TiTokConfig):
        super().__init__(cfg.encoder, cfg.enc_grid, cfg.num_latent_tokens)
        w = cfg.encoder.width
        self.is_legacy = cfg.is_legacy
        self.patch_embed = nn.Conv2d(3, w, cfg.enc_patch_size, stride=cfg.enc_patch_size)
        self.conv_out = nn.Conv2d(w, cfg.encoder_out_channels, 1)

    def latent_features(self, images: torch.Tensor, latent_tokens: torch.Tensor) -> torch.Tensor:
        """The K latent outputs after ``ln_post``, ``[B, K, W]``."""
        patches = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = self._grid_tokens(patches)
        lat = latent_tokens.to(x.dtype) + self.latent_token_positional_embedding.to(x.dtype)
        x = torch.cat([x, lat.expand(x.shape[0], -1, -1)], dim=1)
        x = self._run(x)
        return self.ln_post(x[:, 1 + self.grid * self.grid:])

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """``[B, K, W]`` -> ``[B, K, out_channels]`` through the 1x1 ``conv_out``."""
        b, k, w = h.shape
        if self.is_legacy:
            # the reference views the contiguous [B, K, W] memory as [B, W, K] (no transpose) and convolves
            # over that axis: out[b, :, j] = Wc @ view[b, :, j] + bias
            weight = self.conv_out.weight.reshape(self.conv_out.weight.shape[0], w)
            out = torch.matmul(weight, h.reshape(b, w, k)) + self.conv_out.bias[:, None]
            return out.transpose(1, 2)
        return _conv1x1(h, self.conv_out)

    def forward(self, images: torch.Tensor, latent_tokens: torch.Tensor) -> torch.Tensor:
        return self.project(self.latent_features(images, latent_tokens))


class TiTokDecoder(_ViT):
    """Token vectors ``[B, K, D]`` -> proxy-code logits ``[B, 1024, g, g]`` (legacy) or pixels ``[B, 3, H, W]``."""

    def __init__(self, cfg: TiTokConfig):
        super().__init__(cfg.decoder, cfg.dec_grid, cfg.num_latent_tokens)
        w = cfg.decoder.width
        self.is_legacy = cfg.is_legacy
        self.patch = cfg.dec_patch_size
        self.decoder_embed = nn.Linear(cfg.token_size, w)
        self.mask_token = nn.Parameter(torch.randn(1, 1, w) * w ** -0.5)
        if cfg.is_legacy:
            self.ffn = nn.Sequential(nn.Conv2d(w, 2 * w, 1), nn.Tanh(), nn.Conv2d(2 * w, cfg.proxy_codebook_size, 1))
            self.conv_out = None
        else:
            self.ffn = nn.Sequential(nn.Conv2d(w, self.patch * self.patch * 3, 1))
            self.conv_out = nn.Conv2d(3, 3, 3, padding=1)

    def grid_features(self, z: torch.Tensor) -> torch.Tensor:
        """The g*g mask-token outputs after ``ln_post``, ``[B, g*g, W]``."""
        x = self.decoder_embed(z) + self.latent_token_positional_embedding[: z.shape[1]].to(z.dtype)
        masks = self.mask_token.to(x.dtype).expand(x.shape[0], self.grid * self.grid, -1)
        x = torch.cat([self._grid_tokens(masks), x], dim=1)
        x = self._run(x)
        return self.ln_post(x[:, 1:1 + self.grid * self.grid])

    def proxy_logits_tokens(self, h: torch.Tensor) -> torch.Tensor:
        """Legacy head on ``[B, g*g, W]`` -> proxy-code logits channel-last ``[B, g*g, 1024]``."""
        return _conv1x1(torch.tanh(_conv1x1(h, self.ffn[0])), self.ffn[2])

    def pixels_before_conv_out(self, h: torch.Tensor) -> torch.Tensor:
        """Single-stage head on ``[B, g*g, W]``: per-patch values, depth-to-space -> ``[B, 3, g*p, g*p]``."""
        b, g, p = h.shape[0], self.grid, self.patch
        y = _conv1x1(h, self.ffn[0]).reshape(b, g, g, p, p, 3)  # channel = (p1 * p + p2) * 3 + c
        return y.permute(0, 5, 1, 3, 2, 4).reshape(b, 3, g * p, g * p)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.grid_features(z)
        if self.is_legacy:
            b, g = h.shape[0], self.grid
            return self.proxy_logits_tokens(h).transpose(1, 2).reshape(b, -1, g, g)
        return self.conv_out(self.pixels_before_conv_out(h))


def _check_int(name, value, lo=1):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return value


@register_family("titok")
class TiTok(ImageTokenizer):
    """TiTok tokenizer. Images ``[B, 3, S, S]`` float in [0, 1] (uint8 accepted), ``S = config.image_size``.

    - VQ models: ``encode(images) -> Tokens(ids [B, K])``; ``decode(tokens) -> images [B, 3, S, S]`` in [0, 1]
      (clamped; ``clamp=False`` gives the raw output). ids ``[B, 1, K]`` (the reference's layout) are accepted.
    - VAE models (``spec.discrete == False``): ``encode_latents(images) -> [B, K, C]`` (the posterior mode by
      default; ``sample=True`` with ``noise``/``generator`` draws ``mean + std * noise``) and
      ``decode_latents(latents) -> images``.

    ``chunk_size`` (encode/decode, default 1) is the number of images per forward pass: memory is bounded by it,
    and with 1 an image's tokens never depend on what else is in the batch.
    """

    config_class = TiTokConfig

    def __init__(self, config: Optional[TiTokConfig] = None):
        super().__init__(config if config is not None else TiTokConfig())
        cfg = self.config
        self.encoder = TiTokEncoder(cfg)
        self.decoder = TiTokDecoder(cfg)
        self.latent_tokens = nn.Parameter(torch.randn(cfg.num_latent_tokens, cfg.encoder.width)
                                          * cfg.encoder.width ** -0.5)
        if cfg.quantize_mode == "vq":
            self.quantize = VQ(VQConfig(dim=cfg.token_size, codebook_size=cfg.codebook_size, distance="euclidean",
                                        l2_normalize=cfg.use_l2_norm, ema=False, kmeans_init=False,
                                        commitment_weight=cfg.commitment_cost, codebook_weight=1.0))
        else:
            self.quantize = None
        if cfg.finetune_decoder:
            self.pixel_quantize = vqgan_quantizer(cfg.pixel_vqgan)
            self.pixel_decoder = VQGANDecoder(cfg.pixel_vqgan)
        else:
            self.pixel_quantize = None
            self.pixel_decoder = None
        self.eval()

    # ------------------------------------------------------------------ facts
    def expected_size(self) -> Tuple[int, int]:
        return (self.config.image_size, self.config.image_size)

    @property
    def num_tokens(self) -> int:
        return self.config.num_latent_tokens

    @property
    def spec(self) -> TokenizerSpec:
        cfg = self.config
        if cfg.discrete:
            return TokenizerSpec.discrete_spec("image", cfg.codebook_size, 1, cfg.num_latent_tokens, "tokens/image")
        return TokenizerSpec(modality="image", codebook_size=0, num_codebooks=1,
                             token_rate=float(cfg.num_latent_tokens), token_rate_unit="latents/image",
                             bitrate=float(cfg.num_latent_tokens * cfg.token_size * 32),
                             bitrate_unit="bits/image (float32 latents)", discrete=False,
                             latent_channels=cfg.token_size)

    @property
    def _dtype(self) -> torch.dtype:
        return self.latent_tokens.dtype

    # ------------------------------------------------------------------ validation
    def prepare_input(self, images, chunk_size=None, **kwargs):
        if kwargs:
            raise TypeError(f"TiTok.encode got unexpected keyword arguments {sorted(kwargs)} "
                            "(accepted: chunk_size)")
        if not self.config.discrete:
            raise TypeError("this TiTok model is a VAE (continuous latents, no codebook): use "
                            "encode_latents(images) / decode_latents(latents) instead of encode/decode")
        images, _ = super().prepare_input(images)
        out = {}
        if chunk_size is not None:
            out["chunk_size"] = _check_int("chunk_size", chunk_size)
        return images, out

    def check_tokens(self, tokens: Tokens) -> Tokens:
        if not self.config.discrete:
            return super().check_tokens(tokens)  # raises: continuous model
        ids, k = tokens.ids, self.num_tokens
        if ids.ndim == 3 and ids.shape[1] == 1:
            ids = ids[:, 0]
        if ids.ndim != 2 or ids.shape[1] != k:
            raise ValueError(f"tokens.ids must be [B, {k}] (or the reference's [B, 1, {k}]), got shape "
                             f"{tuple(tokens.ids.shape)}")
        if tokens.lengths is not None and bool((tokens.lengths != ids.shape[-1]).any()):
            raise ValueError(f"TiTok decodes exactly {k} tokens per image; tokens.lengths "
                             f"{tokens.lengths.tolist()} asks for fewer (partial sequences are not supported)")
        tokens = Tokens(ids, None, dict(tokens.metadata))
        return super().check_tokens(tokens)

    def _check_images(self, images) -> torch.Tensor:
        images, _ = ImageTokenizer.prepare_input(self, images)
        return images

    # ------------------------------------------------------------------ encoder side (unvalidated internals)
    def encoder_forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation latents ``[B, K, D]`` (VAE: ``[B, K, 2C]`` = mean | logvar) of [0, 1] images."""
        return self.encoder(images.to(self._dtype), self.latent_tokens)

    def _chunks(self, n: int, chunk_size: Optional[int]):
        step = chunk_size or 1
        return [(i, min(n, i + step)) for i in range(0, n, step)]

    def _encode(self, images: torch.Tensor, chunk_size: Optional[int] = None) -> Tokens:
        ids = [self.quantize.encode(self.encoder_forward(images[a:b]).float())
               for a, b in self._chunks(images.shape[0], chunk_size)]
        return Tokens(torch.cat(ids, dim=0).long())

    @staticmethod
    def _split_moments(z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encoder output ``[B, K, 2C]`` -> (mean, logvar clamped to [-30, 20]), float32 ``[B, K, C]``."""
        mean, logvar = z.float().chunk(2, dim=-1)
        return mean, logvar.clamp(-30.0, 20.0)

    def posterior(self, images, *, chunk_size: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """VAE posterior of validated ``images``: ``{"mean", "logvar", "std"}``, each ``[B, K, C]`` float32."""
        if self.config.discrete:
            raise TypeError("posterior() is for VAE models (quantize_mode 'vae'); this model is a VQ tokenizer")
        images = self._check_images(images)
        chunk_size = _check_int("chunk_size", chunk_size)
        with torch.inference_mode():
            z = torch.cat([self.encoder_forward(images[a:b].to(self.device))
                           for a, b in self._chunks(images.shape[0], chunk_size)], 0)
        mean, logvar = self._split_moments(z)
        out = {"mean": mean, "logvar": logvar, "std": torch.exp(0.5 * logvar)}
        return {k: v.to(images.device) for k, v in out.items()}

    def make_noise(self, batch: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Standard normal noise ``[B, K, C]`` drawn as the reference does: ``randn`` of shape ``[B, C, 1, K]``
        (so a generator seeded like ``torch.manual_seed`` reproduces ``posterior.sample()``), then transposed."""
        c, k = self.config.token_size, self.num_tokens
        device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn((batch, c, 1, k), generator=generator, device=device)
        return noise.reshape(batch, c, k).transpose(1, 2).contiguous()

    def _check_latents(self, name: str, x, channels: int) -> torch.Tensor:
        k = self.num_tokens
        x = check_tensor(name, x, ndim=(3, 4), floating=True, shape_hint=f"[B, {k}, {channels}] or [B, {channels}, 1, {k}]")
        if x.ndim == 4:
            if tuple(x.shape[1:]) != (channels, 1, k):
                raise ValueError(f"{name} must be [B, {k}, {channels}] or the reference's [B, {channels}, 1, {k}], "
                                 f"got shape {tuple(x.shape)}")
            x = x.reshape(x.shape[0], channels, k).transpose(1, 2)
        elif tuple(x.shape[1:]) != (k, channels):
            raise ValueError(f"{name} must be [B, {k}, {channels}] (channel-last) or the reference's "
                             f"[B, {channels}, 1, {k}], got shape {tuple(x.shape)}")
        return x

    def encode_latents(self, images, *, sample: bool = False, noise: Optional[torch.Tensor] = None,
                       generator: Optional[torch.Generator] = None, chunk_size: Optional[int] = None) -> torch.Tensor:
        """Continuous latents ``[B, K, C]`` of ``images``.

        VAE: the posterior mode (mean) by default; ``sample=True`` (or giving ``noise``) returns
        ``mean + std * noise`` with ``noise`` ``[B, K, C]`` (or the reference's ``[B, C, 1, K]``) or drawn from
        ``generator`` by :meth:`make_noise`. VQ: the pre-quantisation encoder output (the quantizer's input).
        """
        if not isinstance(sample, bool):
            raise TypeError(f"sample must be a bool, got {type(sample).__name__}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {describe(generator)}")
        images = self._check_images(images)
        chunk_size = _check_int("chunk_size", chunk_size)
        if self.config.discrete:
            if sample or noise is not None or generator is not None:
                raise ValueError("sample/noise/generator apply to VAE models only; this model is a VQ tokenizer")
            with torch.inference_mode():
                z = torch.cat([self.encoder_forward(images[a:b].to(self.device))
                               for a, b in self._chunks(images.shape[0], chunk_size)], 0)
            return z.to(images.device)
        c = self.config.token_size
        if noise is not None:
            noise = self._check_latents("noise", noise, c)
            if noise.shape[0] != images.shape[0]:
                raise ValueError(f"noise has {noise.shape[0]} items, images has {images.shape[0]}")
        elif sample or generator is not None:
            noise = self.make_noise(images.shape[0], generator)
        post = self.posterior(images, chunk_size=chunk_size)
        if noise is None:
            return post["mean"]
        return post["mean"] + post["std"] * noise.to(post["mean"].device, torch.float32)

    # ------------------------------------------------------------------ decoder side
    def proxy_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Legacy decoders: proxy-code logits ``[B, 1024, g, g]`` of token vectors ``[B, K, D]`` (unvalidated)."""
        if not self.config.is_legacy:
            raise TypeError("proxy_logits() needs a legacy (two-stage / proxy-code) decoder")
        return self.decoder(z.to(self._dtype))

    def pixel_mixture(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over the proxy codes of ``logits`` ``[B, 1024, g, g]`` mixing the VQGAN codebook rows ->
        the pixel decoder's input ``[B, z_channels, g, g]`` (soft, as the reference; not argmax)."""
        probs = logits.float().softmax(dim=1)
        return torch.einsum("nchw,cd->ndhw", probs, self.pixel_quantize.embed.float()).to(logits.dtype)

    def decoder_forward(self, z: torch.Tensor) -> torch.Tensor:
        """Token vectors ``[B, K, D]`` -> unclamped images ``[B, 3, S, S]`` along the config's decoding path."""
        z = z.to(self._dtype)
        if not self.config.is_legacy:
            return self.decoder(z)
        if not self.config.finetune_decoder:
            raise TypeError("this is a stage-1 TiTok (proxy-code logits only, no pixel decoder): decode its "
                            "proxy_logits(z).argmax(1) with the MaskGIT-VQGAN (image.titok.MaskGITVQGAN.decode)")
        h = self.decoder.grid_features(z)
        b, g = h.shape[0], self.decoder.grid
        probs = self.decoder.proxy_logits_tokens(h).softmax(dim=-1)  # [B, g*g, 1024]
        mixed = torch.matmul(probs, self.pixel_quantize.embed.to(probs.dtype))  # [B, g*g, z_channels]
        return self.pixel_decoder(mixed.transpose(1, 2).reshape(b, -1, g, g))

    def ids_to_latents(self, ids: torch.Tensor) -> torch.Tensor:
        """Codebook vectors ``[B, K, D]`` of ids ``[B, K]`` (l2-normalised for ``use_l2_norm`` models)."""
        return self.quantize.decode(ids)

    def _decode(self, tokens: Tokens, chunk_size: Optional[int] = None, clamp: bool = True) -> torch.Tensor:
        chunk_size = _check_int("chunk_size", chunk_size)
        if not isinstance(clamp, bool):
            raise TypeError(f"clamp must be a bool, got {type(clamp).__name__}")
        ids = tokens.ids
        out = torch.cat([self.decoder_forward(self.ids_to_latents(ids[a:b]))
                         for a, b in self._chunks(ids.shape[0], chunk_size)], 0)
        return out.clamp(0.0, 1.0) if clamp else out

    def decode_latents(self, latents, *, clamp: bool = True, chunk_size: Optional[int] = None) -> torch.Tensor:
        """Images ``[B, 3, S, S]`` (in [0, 1] when ``clamp``) from continuous latents ``[B, K, C]`` (or the
        reference's ``[B, C, 1, K]``): VAE latents, or VQ code vectors fed to the decoder as they are."""
        if not isinstance(clamp, bool):
            raise TypeError(f"clamp must be a bool, got {type(clamp).__name__}")
        chunk_size = _check_int("chunk_size", chunk_size)
        latents = self._check_latents("latents", latents, self.config.token_size)
        out_device = latents.device
        with torch.inference_mode():
            z = latents.to(self.device)
            out = torch.cat([self.decoder_forward(z[a:b]) for a, b in self._chunks(z.shape[0], chunk_size)], 0)
        out = out.clamp(0.0, 1.0) if clamp else out
        return out.to(out_device)

    # ------------------------------------------------------------------ training forward
    def forward(self, images: torch.Tensor, noise: Optional[torch.Tensor] = None,
                proxy_only: bool = False) -> Dict[str, torch.Tensor]:
        """Differentiable pass for training (the reference's ``forward``): images ``[B, 3, S, S]`` in [0, 1] ->
        ``{"reconstruction", "latents", ...}`` plus, for VQ, ``ids`` and the quantizer losses ``commitment``
        (``commitment_cost * mse(z, sg[q])``) and ``codebook`` (``mse(sg[z], q)``), the straight-through codes
        feeding the decoder; for VAE, ``mean``/``logvar`` and ``kl`` ``[B]`` (summed over channels and tokens),
        decoding ``mean + std * noise`` (``noise`` drawn with ``torch.randn`` when not given).
        Stage-2 fine-tuning of a two-stage model trains the decoders only: freeze ``encoder``, ``latent_tokens``
        and ``quantize`` yourself, as the reference does.
        ``proxy_only`` (legacy models, stage-1 training): return ``proxy_logits`` ``[B, 1024, g, g]`` instead of
        the reconstruction (so a distributed wrapper sees the whole stage-1 pass as one forward)."""
        images = check_tensor("images", images, ndim=(4,), floating=True, shape_hint="[B, 3, S, S] in [0, 1]")
        if not isinstance(proxy_only, bool):
            raise TypeError(f"proxy_only must be a bool, got {type(proxy_only).__name__}")
        if proxy_only and not (self.config.is_legacy and self.config.discrete):
            raise ValueError("proxy_only needs a legacy (proxy-code) VQ TiTok")
        z = self.encoder_forward(images)
        out: Dict[str, torch.Tensor] = {"latents": z}
        if self.config.discrete:
            q = self.quantize(z.float())
            out.update(ids=q.ids, **q.losses)
            zq = q.quantized
        else:
            mean, logvar = self._split_moments(z)
            if noise is None:
                noise = torch.randn_like(mean)
            zq = mean + torch.exp(0.5 * logvar) * noise
            out.update(mean=mean, logvar=logvar,
                       kl=0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2)))
        if proxy_only:
            out["proxy_logits"] = self.proxy_logits(zq)
        else:
            out["reconstruction"] = self.decoder_forward(zq)
        return out

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_official(cls, *paths, **kwargs):
        """The release's own files (its folder, or ``config.json`` + ``model.safetensors``), see convert.py.
        A MaskGIT-VQGAN ``.bin`` returns a :class:`~image.titok.maskgit_vqgan.MaskGITVQGAN`."""
        from .convert import load_official_titok

        return load_official_titok(*paths, **kwargs)
