"""CDT network: causal 3D encoder -> diagonal-Gaussian latent -> context decoder + conditional diffusion U-Net.

Layout of every video tensor: ``[B, C, T, H, W]``. The network runs on the reference's ``[-1, 1]`` pixel range;
:class:`video.cdt.CDTTokenizer` maps the zoo's ``[0, 1]`` convention onto it.

Streaming ("feature cache"). Every temporal operation is causal: a 3-tap causal conv needs the two frames before a
chunk, a stride-2 temporal conv needs the frames of its last unfinished window, 1-tap and per-frame operations need
nothing. A :class:`StreamCache` holds those frames per module between chunks, so a video processed chunk by chunk
gives the same result as in one pass (float noise aside), and memory depends on the chunk size only. The
reference keys its cache by call order; here it is keyed by module, which needs no counters and cannot drift.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import CDTConfig


# ---------------------------------------------------------------------------------------------- streaming state

class StreamCache:
    """Per-module carry-over between consecutive chunks of one video (one item, one diffusion step).

    ``first`` is True until :meth:`advance` is called after the first chunk: temporal upsamplers drop their first
    output frame on the first chunk only (a causal video of ``1 + 4k`` frames has ``1 + k`` latent frames).
    """

    def __init__(self):
        self._store: Dict[int, torch.Tensor] = {}
        self.first = True

    def get(self, module: nn.Module) -> Optional[torch.Tensor]:
        return self._store.get(id(module))

    def put(self, module: nn.Module, value: torch.Tensor) -> None:
        self._store[id(module)] = value

    def advance(self) -> None:
        self.first = False

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._store.values())


def _is_first(cache: Optional[StreamCache]) -> bool:
    return True if cache is None else cache.first


def _torch_pad_mode(pad_mode: str) -> str:
    return "constant" if pad_mode == "zeros" else "replicate"


# ---------------------------------------------------------------------------------------------- primitives

class CausalConv3d(nn.Conv3d):
    """3D conv, spatially 'same'-padded, temporally padded in front only (``kt - 1`` frames).

    ``padding=(pt, ph, pw)`` follows the reference's convention: the temporal front pad is ``2 * pt``. Padding
    (spatial and temporal) uses the model's ``pad_mode`` (zeros or replicate). With a cache the frames carried
    over from the previous chunk replace the temporal padding.
    """

    def __init__(self, dim_in: int, dim_out: int, kernel_size, stride=1, padding=0, bias: bool = True,
                 pad_mode: str = "zeros"):
        kernel_size = _triple(kernel_size)
        padding = _triple(padding)
        super().__init__(dim_in, dim_out, kernel_size, stride=stride, padding=0, bias=bias)
        self.front = 2 * padding[0]
        self.spatial = (padding[2], padding[2], padding[1], padding[1])
        self.pad_mode = pad_mode

    def _pad(self, x: torch.Tensor, front: int) -> torch.Tensor:
        if front == 0 and not any(self.spatial):
            return x
        return F.pad(x, self.spatial + (front, 0), mode=_torch_pad_mode(self.pad_mode))

    def forward(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        if self.front == 0 or cache is None:
            return super().forward(self._pad(x, self.front))
        prev = cache.get(self)
        h, w = x.shape[3:]
        pw, _, ph, _ = self.spatial
        if prev is None:
            # first chunk: pad exactly as the one-pass computation does; carry the last frames of the padded
            # sequence (without the spatial border)
            padded = self._pad(x, self.front)
        elif self.pad_mode == "zeros":
            # one copy: zero-pad, then write the carried frames into the temporal pad (their border is zero too)
            padded = self._pad(x, self.front)
            padded[:, :, : self.front, ph:ph + h, pw:pw + w] = prev
        else:
            padded = self._pad(torch.cat([prev, x], dim=2), 0)
        cache.put(self, padded[:, :, -self.front:, ph:ph + h, pw:pw + w].clone())
        return super().forward(padded)


def _triple(v) -> Tuple[int, int, int]:
    if isinstance(v, int):
        return (v, v, v)
    v = tuple(int(i) for i in v)
    if len(v) != 3:
        raise ValueError(f"expected 3 values, got {v}")
    return v


class LayerNorm(nn.Module):
    """Normalisation over the channel axis of ``[B, C, T, H, W]`` (biased variance), affine ``g``/``b``."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1, 1))
        self.b = nn.Parameter(torch.zeros(1, dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The variance is the mean of the squared centred values, reusing the centred tensor the output needs:
        # the same statistic as torch.var(unbiased=False) (the reference) to float rounding, and several times
        # faster on CPU, where torch.var over the strided channel axis is a slow scalar reduction.
        centred = x - torch.mean(x, dim=1, keepdim=True)
        var = torch.mean(centred * centred, dim=1, keepdim=True)
        return centred / (var + self.eps).sqrt() * self.g + self.b


class ConvNormAct(nn.Module):
    """Causal conv (3x3x3, or 3x7x7 for the first block) -> channel LayerNorm -> ReLU."""

    def __init__(self, dim_in: int, dim_out: int, large_filter: bool, pad_mode: str):
        super().__init__()
        kernel, pad = ((3, 7, 7), (1, 3, 3)) if large_filter else ((3, 3, 3), (1, 1, 1))
        self.conv = CausalConv3d(dim_in, dim_out, kernel, padding=pad, pad_mode=pad_mode)
        self.norm = LayerNorm(dim_out)

    def forward(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x, cache)))


class ResnetBlock(nn.Module):
    """Two conv blocks with an optional time-embedding shift between them and a 1x1x1 shortcut."""

    def __init__(self, dim_in: int, dim_out: int, time_dim: Optional[int] = None, large_filter: bool = False,
                 pad_mode: str = "zeros"):
        super().__init__()
        self.time_proj = nn.Linear(time_dim, dim_out) if time_dim is not None else None
        self.block1 = ConvNormAct(dim_in, dim_out, large_filter, pad_mode)
        self.block2 = ConvNormAct(dim_out, dim_out, False, pad_mode)
        self.res_conv = (CausalConv3d(dim_in, dim_out, 1, pad_mode=pad_mode) if dim_in != dim_out
                         else nn.Identity())

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor] = None,
                cache: Optional[StreamCache] = None) -> torch.Tensor:
        h = self.block1(x, cache)
        if temb is not None and self.time_proj is not None:
            h = h + self.time_proj(F.leaky_relu(temb, 0.2))[:, :, None, None, None]
        h = self.block2(h, cache)
        return h + self.res_conv(x)


class LinearAttention(nn.Module):
    """Single-head linear attention within each frame (softmax of q over channels, of k over positions)."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim ** -0.5
        self.to_qkv = CausalConv3d(dim, dim * 3, 1, bias=False)
        self.to_out = CausalConv3d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape

        def frames(y):  # [b, c, t, h, w] -> [(b t), 1, c, (h w)]
            return y.permute(0, 2, 1, 3, 4).reshape(b * t, 1, c, h * w)

        q, k, v = (frames(y) for y in self.to_qkv(x).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        out = out.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)
        return self.to_out(out)


class AttentionBlock(nn.Module):
    """``x + attn(norm(x))``."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = LayerNorm(dim)
        self.attn = LinearAttention(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.norm(x)) + x


class Downsample(nn.Module):
    """Spatial /2 (ceil): causal conv (1,3,3), stride (1,2,2), padded by one pixel with the model's pad mode."""

    def __init__(self, dim: int, pad_mode: str):
        super().__init__()
        self.conv = CausalConv3d(dim, dim, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), pad_mode=pad_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Spatial x2: nearest-exact + (1,5,5) conv (``new_upsample``) or a (1,5,5) transposed conv."""

    def __init__(self, dim_in: int, dim_out: int, new_upsample: bool, pad_mode: str):
        super().__init__()
        self.new_upsample = new_upsample
        if new_upsample:
            self.conv = CausalConv3d(dim_in, dim_out, (1, 5, 5), padding=(0, 2, 2), pad_mode=pad_mode)
        else:
            self.conv = nn.ConvTranspose3d(dim_in, dim_out, (1, 5, 5), stride=(1, 2, 2), padding=(0, 2, 2),
                                           output_padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.new_upsample:
            x = F.interpolate(x.float(), scale_factor=(1.0, 2.0, 2.0), mode="nearest-exact").type_as(x)
        return self.conv(x)


def _to_sequences(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [(B H W), C, T]."""
    b, c, t, h, w = x.shape
    return x.permute(0, 3, 4, 1, 2).reshape(b * h * w, c, t)


def _from_sequences(y: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    """[(B H W), C, T] -> [B, C, T, H, W]."""
    return y.reshape(b, h, w, y.shape[1], y.shape[2]).permute(0, 3, 4, 1, 2).contiguous()


class TimeDownsample(nn.Module):
    """Temporal /2 (ceil): a 3-tap stride-2 conv over frames, causally padded by two frames.

    Streaming keeps the not-yet-consumed tail of the padded frame sequence (1 frame when chunks start at odd
    frame positions, as all of CDT's chunkings do), so any chunking gives the one-pass windows.
    """

    def __init__(self, dim: int, pad_mode: str):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, stride=2)
        self.pad_mode = pad_mode

    def forward(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        b, _, _, h, w = x.shape
        seq = _to_sequences(x)
        prev = cache.get(self) if cache is not None else None
        if prev is None:
            seq = F.pad(seq, (2, 0), mode=_torch_pad_mode(self.pad_mode))
        else:
            seq = torch.cat([prev, seq], dim=-1)
        n_out = (seq.shape[-1] - 3) // 2 + 1 if seq.shape[-1] >= 3 else 0
        if cache is not None:
            cache.put(self, seq[..., 2 * n_out:].clone())
        if n_out == 0:
            raise ValueError("TimeDownsample received too few frames to produce an output frame; "
                             "chunks must hold a multiple of the model's time factor")
        return _from_sequences(self.conv(seq), b, h, w)


class TimeUpsample(nn.Module):
    """Temporal x2: a 1-tap conv to 2C channels; channel ``2c + p`` becomes frame ``2t + p`` of channel ``c``.

    On the first chunk of a video the first output frame is dropped (T -> 2T - 1), so ``1 + k`` latent frames
    give ``1 + 4k`` video frames after two of these.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim * 2, 1)

    def forward(self, x: torch.Tensor, first_chunk: bool) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.conv(_to_sequences(x))  # [(b h w), 2c, t]
        y = y.reshape(-1, c, 2, t).transpose(2, 3).reshape(-1, c, 2 * t)
        y = _from_sequences(y, b, h, w)
        if first_chunk:
            y = y[:, :, 1:]
        return y


def _maybe(module: Optional[nn.Module]) -> nn.Module:
    return module if module is not None else nn.Identity()


# ---------------------------------------------------------------------------------------------- autoencoder

class CausalAutoencoder(nn.Module):
    """Encoder to the Gaussian moments and the context decoder that turns a latent into 4 conditioning tensors.

    Parameter names follow the reference's ``Compressor`` (``enc``, ``quant_conv``, ``quant_conv_res``,
    ``post_quant_conv``, ``post_quant_conv_res``, ``dec``) with the renames of :mod:`video.cdt.convert`.
    """

    def __init__(self, cfg: CDTConfig):
        super().__init__()
        pm = cfg.pad_mode
        d = cfg.context_dim
        dims = [3] + [d * m for m in cfg.context_dim_mults]
        rdims = [d * m for m in reversed(cfg.context_dim_mults)] + [cfg.out_channels]
        n = len(cfg.context_dim_mults)
        rspace = list(reversed(cfg.space_down))
        rtime = list(reversed(cfg.time_down))
        latent = cfg.latent_dim

        self.enc = nn.ModuleList()
        for i in range(n):
            self.enc.append(nn.ModuleList([
                ResnetBlock(dims[i], dims[i + 1], None, large_filter=(i == 0), pad_mode=pm),
                Downsample(dims[i + 1], pm) if cfg.space_down[i] else nn.Identity(),
                TimeDownsample(dims[i + 1], pm) if cfg.time_down[i] else nn.Identity(),
            ]))
        # two heads summed: a 1x1 conv and a residual tower narrowing 4d -> d before its own 1x1 conv
        self.quant_conv = nn.Conv3d(dims[-1], 2 * latent, 1)
        self.quant_conv_res = nn.ModuleList(
            [ResnetBlock(a, b, pad_mode=pm) for a, b in zip(rdims[:-2], rdims[1:-1])]
            + [nn.Conv3d(rdims[-2], 2 * latent, 1)])
        self.post_quant_conv = nn.Conv3d(latent, dims[-1], 1)
        self.post_quant_conv_res = nn.ModuleList(
            [nn.Conv3d(latent, dims[1], 1)]
            + [ResnetBlock(a, b, pad_mode=pm) for a, b in zip(dims[1:-1], dims[2:])])

        self.dec = nn.ModuleList()
        for i in range(n):
            din, dout = rdims[i], rdims[i + 1]
            last = i == n - 1
            if rspace[i]:
                slot = Upsample(din if last else dout, dout, cfg.new_upsample, pm)
            elif last:
                # no spatial upsampling at the last stage: a ResnetBlock maps d -> out_channels instead
                slot = ResnetBlock(din, dout, pad_mode=pm)
            else:
                slot = nn.Identity()
            self.dec.append(nn.ModuleList([
                ResnetBlock(din, din if last else dout, pad_mode=pm),
                slot,
                TimeUpsample(dout) if rtime[i] else nn.Identity(),
            ]))

    def encode_features(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        """Encoder trunk: ``[B, 3, T, H, W]`` in [-1, 1] -> ``[B, 4d, T', H', W']``."""
        for resnet, down, tdown in self.enc:
            x = resnet(x, cache=cache)
            x = down(x)
            if isinstance(tdown, TimeDownsample):
                x = tdown(x, cache)
        return x

    def moments(self, features: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        """Trunk features -> ``[B, 2L, T', H', W']`` = [mean ; logvar] before clamping."""
        direct = self.quant_conv(features)
        h = features
        for layer in self.quant_conv_res:
            h = layer(h, cache=cache) if isinstance(layer, ResnetBlock) else layer(h)
        return h + direct

    def encode(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        return self.moments(self.encode_features(x, cache), cache)

    def decode_context(self, z: torch.Tensor, cache: Optional[StreamCache] = None,
                       cache_mapping: bool = True) -> List[torch.Tensor]:
        """Latent ``[B, L, T', H', W']`` -> conditioning tensors, finest first (the U-Net's level order).

        ``cache_mapping=False`` reproduces the reference, which calls the last stage's mapping ResnetBlock
        (base path) without the feature cache, so every chunk after the first re-pads its temporal start.
        """
        direct = self.post_quant_conv(z)
        h = z
        for layer in self.post_quant_conv_res:
            h = layer(h, cache=cache) if isinstance(layer, ResnetBlock) else layer(h)
        h = h + direct
        first = _is_first(cache)
        outputs = []
        for resnet, slot, tup in self.dec:
            h = resnet(h, cache=cache)
            if isinstance(slot, ResnetBlock):
                h = slot(h, cache=cache if cache_mapping else None)
            else:
                h = slot(h)
            if isinstance(tup, TimeUpsample):
                h = tup(h, first)
            outputs.append(h)
        return outputs[::-1]


# ---------------------------------------------------------------------------------------------- denoiser

class UNet(nn.Module):
    """Conditional causal 3D U-Net predicting the clean video (x0) from a noisy one and the context tensors."""

    def __init__(self, cfg: CDTConfig):
        super().__init__()
        pm = cfg.pad_mode
        dim = cfg.unet_dim
        mults = cfg.unet_dim_mults
        n_levels = len(mults)
        dims = [3] + [dim * m for m in mults]
        ctx_dims = [cfg.out_channels] + [cfg.context_dim * m for m in cfg.context_dim_mults]
        n_enc = len(cfg.space_down)
        # the U-Net extends the encoder's layout: extra levels downsample space, the last level does not
        self.space_down = list(cfg.space_down) + [1] * (n_levels - n_enc - 1) + [0]
        self.time_down = list(cfg.time_down) + [0] * (n_levels - n_enc)
        self.condition_times = cfg.condition_times
        time_dim = dim
        self.time_mlp = nn.Sequential(nn.Linear(1, dim * 4), nn.GELU(), nn.Linear(dim * 4, dim))

        self.downs = nn.ModuleList()
        for i in range(n_levels):
            conditioned = i < n_levels - 1 and i < cfg.condition_times
            din = dims[i] + (ctx_dims[i] if conditioned else 0)
            dout = dims[i + 1]
            self.downs.append(nn.ModuleList([
                ResnetBlock(din, dout, time_dim, large_filter=(i == 0), pad_mode=pm),
                ResnetBlock(dout, dout, time_dim, pad_mode=pm),
                AttentionBlock(dout),
                Downsample(dout, pm) if self.space_down[i] else nn.Identity(),
                TimeDownsample(dout, pm) if self.time_down[i] else nn.Identity(),
            ]))
        mid = dims[-1]
        self.mid_block1 = ResnetBlock(mid, mid, time_dim, pad_mode=pm)
        self.mid_attn = AttentionBlock(mid)
        self.mid_block2 = ResnetBlock(mid, mid, time_dim, pad_mode=pm)

        rspace = list(reversed(self.space_down[:-1]))
        rtime = list(reversed(self.time_down[:-1]))
        pairs = list(zip(dims[1:-1], dims[2:]))[::-1]  # (dim_in, dim_out) of levels n-1 .. 1
        self.ups = nn.ModuleList()
        for j, (din, dout) in enumerate(pairs):
            self.ups.append(nn.ModuleList([
                ResnetBlock(dout * 2, din, time_dim, pad_mode=pm),
                ResnetBlock(din, din, time_dim, pad_mode=pm),
                AttentionBlock(din),
                Upsample(din, din, cfg.new_upsample, pm) if rspace[j] else nn.Identity(),
                TimeUpsample(din) if rtime[j] else nn.Identity(),
            ]))
        self.final_norm = LayerNorm(dim)
        self.final_conv = CausalConv3d(dim, 3, (3, 7, 7), padding=(1, 3, 3), pad_mode=pm)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: Sequence[torch.Tensor],
                cache: Optional[StreamCache] = None) -> torch.Tensor:
        """``x`` [B, 3, T, H, W] noisy video, ``t`` [B, 1] = index / num_timesteps, ``context`` finest first."""
        temb = self.time_mlp(t)
        first = _is_first(cache)
        skips = []
        for i, (res1, res2, attn, down, tdown) in enumerate(self.downs):
            if i < self.condition_times:
                x = torch.cat([x, context[i]], dim=1)
            x = res1(x, temb, cache)
            x = res2(x, temb, cache)
            x = attn(x)
            skips.append(x)
            x = down(x)
            if isinstance(tdown, TimeDownsample):
                x = tdown(x, cache)
        x = self.mid_block1(x, temb, cache)
        x = self.mid_attn(x)
        x = self.mid_block2(x, temb, cache)
        for res1, res2, attn, up, tup in self.ups:
            skip = skips.pop()
            if x.shape[2:] != skip.shape[2:]:
                # odd sizes: the x2 upsampler overshoots by one; legacy nearest resize onto the skip's grid
                x = F.interpolate(x.float(), size=skip.shape[2:], mode="nearest").type_as(x)
            x = torch.cat([x, skip], dim=1)
            x = res1(x, temb, cache)
            x = res2(x, temb, cache)
            x = attn(x)
            x = up(x)
            if isinstance(tup, TimeUpsample):
                x = tup(x, first)
        return self.final_conv(self.final_norm(x), cache)


# ---------------------------------------------------------------------------------------------- diffusion schedule

def cosine_alphas_cumprod(num_timesteps: int, s: float = 0.008) -> np.ndarray:
    """Cumulative alphas of the cosine schedule (Nichol & Dhariwal), float64, betas clipped to 0.999.

    The grid is ``np.linspace(0, N + 1, N + 1)`` (spacing (N+1)/N), as in the reference; pinned by the fixtures.
    """
    steps = num_timesteps + 1
    grid = np.linspace(0, steps, steps)
    f = np.cos(((grid / steps) + s) / (1 + s) * np.pi * 0.5) ** 2
    f = f / f[0]
    betas = np.clip(1 - (f[1:] / f[:-1]), a_min=0, a_max=0.999)
    return np.cumprod(1.0 - betas, axis=0)


class DDIMSchedule:
    """The ``num_steps``-step sub-schedule: indices, alphas_cumprod and their predecessors (float32)."""

    def __init__(self, num_timesteps: int, num_steps: int, device=None):
        full = torch.tensor(cosine_alphas_cumprod(num_timesteps), dtype=torch.float32, device=device)
        if num_steps == 1:
            index = torch.tensor([num_timesteps - 1], device=device).long()
        else:
            index = torch.linspace(0, num_timesteps - 1, num_steps, device=device).long()
        self.num_timesteps = num_timesteps
        self.index = index
        self.alphas_cumprod = full[index]
        self.alphas_cumprod_prev = F.pad(self.alphas_cumprod[:-1], (1, 0), value=1.0)
        self.sqrt_alphas_cumprod_prev = torch.sqrt(self.alphas_cumprod_prev)
        self.one_minus_alphas_cumprod_prev = 1.0 - self.alphas_cumprod_prev
        self.sqrt_recip_alphas_cumprod = torch.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = torch.sqrt(1.0 / self.alphas_cumprod - 1)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def time_input(self, step: int, batch: int) -> torch.Tensor:
        """U-Net time input ``index / N`` as float32 ``[batch, 1]``."""
        return (self.index[step].float() / self.num_timesteps).reshape(1, 1).expand(batch, 1)

    def step(self, x: torch.Tensor, x0: torch.Tensor, step: int) -> torch.Tensor:
        """One deterministic DDIM update (eta = 0) from the x0 prediction; the last step returns x0."""
        eps = (self.sqrt_recip_alphas_cumprod[step] * x - x0) / self.sqrt_recipm1_alphas_cumprod[step]
        return (self.sqrt_alphas_cumprod_prev[step] * x0
                + torch.sqrt(self.one_minus_alphas_cumprod_prev[step].clamp(min=0)) * eps)



# ---------------------------------------------------------------------------------------------- the tokenizer

VALUE_RANGES = ((0.0, 1.0), (-1.0, 1.0))


def _chunk_bounds(total: int, size: int, first: Optional[int] = None) -> List[Tuple[int, int]]:
    """Consecutive ``[start, end)`` ranges covering ``total``; the first has ``first`` items when given."""
    bounds = []
    start = 0
    if first:
        bounds.append((0, first))
        start = first
    while start < total:
        bounds.append((start, min(start + size, total)))
        start += size
    return bounds


class CDTModel(nn.Module):
    """The CDT network (encoder + context decoder + U-Net) with its chunked encode and sampling loops.

    Everything here works on ``[-1, 1]`` pixels and one batch item at a time (as the reference, whose results do
    not depend on the batch composition); :class:`video.cdt.CDTTokenizer` adds validation, ranges and batching.
    """

    def __init__(self, config: CDTConfig):
        super().__init__()
        self.config = config
        self.autoencoder = CausalAutoencoder(config)
        self.unet = UNet(config)
        self._schedules: Dict[Tuple[int, str], DDIMSchedule] = {}

    # ------------------------------------------------------------------ chunk rules of the reference
    def encode_chunk_frames(self, height: int, width: int) -> int:
        """Pixel frames per encoder chunk: ``max(4, int(enc_frames * (1024/H)(1024/W) / 4) * 4)``."""
        ratio = (1024 / height * 1024 / width) ** 1.0
        return max(int(self.config.enc_frames * ratio / 4) * 4, 4)

    def decode_chunk_latents(self, height: int, width: int) -> int:
        """Latent frames per decoder chunk: ``max(1, int(dec_frames * (1024/s/H')(1024/s/W')))``, s = 8."""
        sf = self.config.space_factor
        ratio = (1024 / sf / height * 1024 / sf / width) ** 1.0
        return max(1, int(self.config.dec_frames * ratio))

    def schedule(self, num_steps: int, device) -> DDIMSchedule:
        key = (int(num_steps), str(device))
        if key not in self._schedules:
            self._schedules[key] = DDIMSchedule(self.config.num_timesteps, int(num_steps), device)
        return self._schedules[key]

    # ------------------------------------------------------------------ one item
    def encode_item(self, x: torch.Tensor, chunk_frames: int) -> torch.Tensor:
        """``x`` [1, 3, T, H, W] in [-1, 1] -> moments [1, 2L, T', H', W'], encoded in pixel-frame chunks.

        As in the reference the first chunk takes ``T mod chunk`` frames (when non-zero) so that the later ones
        start right after a latent frame boundary.
        """
        t = x.shape[2]
        size = min(chunk_frames, t)
        rem = t % size
        cache = StreamCache()
        parts = []
        for a, b in _chunk_bounds(t, size, rem or None):
            parts.append(self.autoencoder.encode(x[:, :, a:b], cache))
            cache.advance()
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]

    def decode_item(self, z: torch.Tensor, x_init: torch.Tensor, num_steps: int, chunk_latents: int,
                    reference_chunking: bool = False) -> torch.Tensor:
        """``z`` [1, L, T', H', W'] and the initial sample ``x_init`` [1, 3, 1 + 4(T'-1), 8H', 8W'] -> video.

        Latent chunks are decoded in order; each carries a context-decoder cache and one U-Net cache per DDIM
        step, so a chunk runs all its steps before the next chunk starts. This gives exactly the reference's
        results (which loops steps outside and chunks inside, recomputing the context every step) with the
        context computed once per chunk and memory bounded by the chunk size.
        """
        sched = self.schedule(num_steps, z.device)
        tf = self.config.time_factor
        t_lat = z.shape[2]
        ctx_cache = StreamCache()
        unet_caches = [StreamCache() for _ in range(len(sched))]
        outputs = []
        for k, (a, b) in enumerate(_chunk_bounds(t_lat, min(chunk_latents, t_lat))):
            f0 = 0 if k == 0 else a * tf - (tf - 1)
            f1 = b * tf - (tf - 1)
            context = self.autoencoder.decode_context(z[:, :, a:b], ctx_cache, cache_mapping=not reference_chunking)
            x = x_init[:, :, f0:f1]
            for s in reversed(range(len(sched))):
                x0 = self.unet(x, sched.time_input(s, x.shape[0]), context, unet_caches[s])
                x = sched.step(x, x0, s)
            outputs.append(x)
            ctx_cache.advance()
            for c in unet_caches:
                c.advance()
        return torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]


# ---------------------------------------------------------------------------------------------- public tokenizer

from zoo.tokenizer import TokenizerSpec, VideoTokenizer  # noqa: E402  (kept beside its only user)
from zoo.validation import check_positive_int, check_tensor  # noqa: E402


class CDTTokenizer(VideoTokenizer):
    """CDT video tokenizer (continuous latents; the discrete FSQ variant is a separate, later family).

    Pixels: ``[B, 3, F, H, W]`` (or an image batch ``[B, 3, H, W]`` = one-frame videos) with ``F = 1 + 4k`` and
    H, W multiples of 8. By default values are in ``[0, 1]`` (``value_range=(0, 1)``); they are mapped to the
    reference's ``[-1, 1]`` as ``2x - 1`` and outputs back as ``(y + 1) / 2``. Pass ``value_range=(-1, 1)`` to
    work in the reference's range directly (no mapping).

    Latents: ``[B, 16, 1 + k, H/8, W/8]``, the posterior mean (encoding is deterministic).
    """

    config_class = CDTConfig

    def __init__(self, config: CDTConfig):
        super().__init__(config)
        self.net = CDTModel(config)

    # ------------------------------------------------------------------ contract
    @property
    def spec(self) -> TokenizerSpec:
        cfg = self.config
        # latent positions per frame of a 256x256 video (asymptotically: 1/4 latent frame per frame)
        per_frame = (256 // cfg.space_factor) ** 2 / cfg.time_factor
        return TokenizerSpec(modality="video", codebook_size=0, num_codebooks=1, token_rate=per_frame,
                             token_rate_unit="latents/frame", bitrate=per_frame * cfg.latent_dim * 32.0,
                             bitrate_unit="bits/frame (float32 latents, 256x256)", discrete=False,
                             latent_channels=cfg.latent_dim)

    def encode(self, *args, **kwargs):
        raise TypeError(f"CDT is a continuous tokenizer ({self.config.latent_dim}-channel Gaussian latents): it has "
                        "no discrete tokens. Use encode_latents(video) / decode_latents(latents); a discrete FSQ "
                        "variant is video.cdt.CDTFSQTokenizer (family 'cdt-fsq').")

    def decode(self, *args, **kwargs):
        raise TypeError("CDT is a continuous tokenizer: it has no discrete tokens to decode. "
                        "Use decode_latents(latents).")

    def _encode(self, x, **kwargs):  # pragma: no cover - encode() refuses before reaching this
        raise TypeError("CDT is continuous: use encode_latents")

    def _decode(self, tokens, **kwargs):  # pragma: no cover
        raise TypeError("CDT is continuous: use decode_latents")

    # ------------------------------------------------------------------ validation helpers
    def _value_range(self, value_range) -> Tuple[float, float]:
        try:
            vr = (float(value_range[0]), float(value_range[1]))
            if len(value_range) != 2:
                raise ValueError
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"value_range must be (0, 1) or (-1, 1), got {value_range!r}") from None
        if vr not in VALUE_RANGES:
            raise ValueError(f"value_range must be (0, 1) or (-1, 1), got {value_range!r}")
        return vr

    def _check_video(self, video, value_range) -> torch.Tensor:
        video = check_tensor("video", video, ndim=(4, 5), shape_hint="[B, 3, F, H, W] video or [B, 3, H, W] images")
        if video.ndim == 4:
            video = video.unsqueeze(2)
        if video.dtype == torch.uint8:
            video = video.float() / 255.0
            if value_range == (-1.0, 1.0):
                video = video * 2 - 1
        elif not video.is_floating_point():
            raise TypeError(f"video must be float (or uint8), got dtype {video.dtype}")
        if video.shape[1] != 3:
            raise ValueError(f"video must have 3 channels (RGB) on axis 1, got shape {tuple(video.shape)}")
        lo, hi = value_range
        mn, mx = float(video.min()), float(video.max())
        tol = 1e-3 * (hi - lo)
        if mn < lo - tol or mx > hi + tol:
            raise ValueError(f"video values must lie in [{lo:g}, {hi:g}] (value_range={value_range}), got min "
                             f"{mn:.4g}, max {mx:.4g}")
        sf, tf = self.config.space_factor, self.config.time_factor
        f, h, w = video.shape[2:]
        if h % sf or w % sf:
            raise ValueError(f"video height and width must be multiples of {sf}, got {h}x{w}; crop or resize first")
        if (f - 1) % tf:
            raise ValueError(f"video must have 1 + {tf}k frames (1, {1 + tf}, {1 + 2 * tf}, ...), got {f}; "
                             f"trim to {1 + tf * ((f - 1) // tf)} frames")
        return video

    def _check_lengths(self, lengths, batch: int, maximum: int, what: str, step: int) -> Optional[torch.Tensor]:
        if lengths is None:
            return None
        lengths = torch.as_tensor(lengths)
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
        if lengths.ndim != 1 or lengths.shape[0] != batch:
            raise ValueError(f"lengths must have shape [{batch}] (one per item), got {tuple(lengths.shape)}")
        lengths = lengths.long().cpu()
        if int(lengths.min()) < 1 or int(lengths.max()) > maximum:
            raise ValueError(f"lengths must lie in [1, {maximum}] ({what}), got min {int(lengths.min())}, "
                             f"max {int(lengths.max())}")
        if step > 1 and bool(((lengths - 1) % step != 0).any()):
            raise ValueError(f"every length must be 1 + {step}k {what}, got {lengths.tolist()}")
        return lengths

    # ------------------------------------------------------------------ encode
    def encode_moments(self, video, *, value_range=(0.0, 1.0), lengths=None, chunk_frames: Optional[int] = None):
        """Raw posterior parameters ``[B, 2L, T', H', W']`` = [mean ; logvar] (logvar not yet clamped).

        With ``lengths`` (valid frames per item, each ``1 + 4k``) returns ``(moments, latent_lengths)``; latent
        frames past an item's length are zero.
        """
        vr = self._value_range(value_range)
        video = self._check_video(video, vr)
        b, _, f, h, w = video.shape
        tf = self.config.time_factor
        lengths = self._check_lengths(lengths, b, f, "frames", tf)
        if chunk_frames is None:
            chunk = self.net.encode_chunk_frames(h, w)
        else:
            chunk = check_positive_int("chunk_frames", chunk_frames)
            if chunk % tf:
                raise ValueError(f"chunk_frames must be a multiple of {tf} (whole latent frames), got {chunk}")
        out_device = video.device
        dtype = video.dtype
        with torch.inference_mode():
            x = video.to(self.device, torch.float32)
            if vr == (0.0, 1.0):
                x = x * 2 - 1
            items = []
            t_lat = 1 + (f - 1) // tf
            for i in range(b):
                n = f if lengths is None else int(lengths[i])
                m = self.net.encode_item(x[i:i + 1, :, :n], chunk)
                if m.shape[2] < t_lat:
                    m = F.pad(m, (0, 0, 0, 0, 0, t_lat - m.shape[2]))
                items.append(m)
            moments = torch.cat(items, 0).to(out_device, dtype if dtype.is_floating_point else torch.float32)
        if lengths is None:
            return moments
        return moments, (1 + (lengths - 1) // tf).to(out_device)

    def encode_latents(self, video, *, value_range=(0.0, 1.0), lengths=None, chunk_frames: Optional[int] = None):
        """Video ``[B, 3, 1 + 4k, H, W]`` (or images ``[B, 3, H, W]``) -> latents ``[B, 16, 1 + k, H/8, W/8]``.

        The latent is the posterior mean (the reference's encode is deterministic). ``chunk_frames`` (a multiple
        of 4) overrides the reference's resolution-based chunk (``enc_frames`` rule); chunking does not change
        the result beyond float noise. With ``lengths`` returns ``(latents, latent_lengths)``.
        """
        out = self.encode_moments(video, value_range=value_range, lengths=lengths, chunk_frames=chunk_frames)
        l = self.config.latent_dim
        if isinstance(out, tuple):
            return out[0][:, :l].contiguous(), out[1]
        return out[:, :l].contiguous()

    @staticmethod
    def posterior(moments: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar clamped to [-30, 20]) of the diagonal Gaussian posterior."""
        moments = check_tensor("moments", moments, ndim=(5,), floating=True, shape_hint="[B, 2L, T', H', W']")
        if moments.shape[1] % 2:
            raise ValueError(f"moments must have an even number of channels (mean ; logvar), got {moments.shape[1]}")
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    # ------------------------------------------------------------------ decode
    def decode_latents(self, latents, num_steps: Optional[int] = None, noise: Optional[torch.Tensor] = None,
                       generator: Optional[torch.Generator] = None, *, lengths=None,
                       chunk_latents: Optional[int] = None, reference_chunking: bool = False,
                       value_range=(0.0, 1.0), noise_scale: Optional[float] = None, clamp: bool = False):
        """Latents ``[B, 16, T', H', W']`` -> video ``[B, 3, 1 + 4(T'-1), 8H', 8W']`` by DDIM sampling.

        - ``num_steps``: DDIM steps (default ``config.sample_steps`` = 1, the release's setting).
        - ``noise``: the initial sample x_T, ``[B, 3, 1 + 4(T'-1), 8H', 8W']``, used as given (the reference draws
          ``sample_gamma * N(0, I)`` over ``4T'`` frames and drops the first 3). Same noise -> same output.
        - ``generator``: when ``noise`` is None, x_T is drawn as ``noise_scale * randn`` over ``4T'`` frames with
          the first 3 dropped, from ``generator`` (or the global RNG, which then matches the reference's draw).
        - ``chunk_latents``: latent frames per chunk (default: the reference's resolution rule, ``dec_frames``).
        - ``reference_chunking``: reproduce the reference's uncached mapping block of the base layout, whose
          output changes at chunk boundaries (see docs/models/cdt.md); the default streams every causal layer,
          so chunked decoding equals one-pass decoding up to float noise. No effect on the small layout.
        - ``value_range``: output range convention (``(0, 1)`` maps ``(y + 1) / 2``); ``clamp`` clips to it.
        - ``lengths``: valid latent frames per item; returns ``(video, frame_lengths)`` (frames past an item's
          length are zero).
        """
        vr = self._value_range(value_range)
        cfg = self.config
        latents = check_tensor("latents", latents, ndim=(5,), floating=True,
                               shape_hint=f"[B, {cfg.latent_dim}, T', H', W'] float latents")
        b, c, t_lat, h_lat, w_lat = latents.shape
        if c != cfg.latent_dim:
            raise ValueError(f"latents must have {cfg.latent_dim} channels on axis 1, got shape {tuple(latents.shape)}")
        steps = cfg.sample_steps if num_steps is None else check_positive_int("num_steps", num_steps)
        if steps > cfg.num_timesteps:
            raise ValueError(f"num_steps must be at most num_timesteps={cfg.num_timesteps}, got {steps}")
        lengths = self._check_lengths(lengths, b, t_lat, "latent frames", 1)
        if chunk_latents is None:
            chunk = self.net.decode_chunk_latents(h_lat, w_lat)
        else:
            chunk = check_positive_int("chunk_latents", chunk_latents)
        if not isinstance(reference_chunking, bool):
            raise TypeError(f"reference_chunking must be a bool, got {type(reference_chunking).__name__}")
        tf, sf = cfg.time_factor, cfg.space_factor
        frames = 1 + tf * (t_lat - 1)
        shape = (b, 3, frames, h_lat * sf, w_lat * sf)
        if noise is not None:
            if generator is not None:
                raise ValueError("pass either noise or generator, not both")
            noise = check_tensor("noise", noise, ndim=(5,), floating=True, shape_hint=f"{list(shape)} initial sample")
            if tuple(noise.shape) != shape:
                raise ValueError(f"noise must have shape {list(shape)} (the initial sample for these latents), got "
                                 f"{list(noise.shape)}")
        elif generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        scale = cfg.sample_gamma if noise_scale is None else float(noise_scale)
        if not scale > 0:
            raise ValueError(f"noise_scale must be positive, got {noise_scale!r}")
        out_device, out_dtype = latents.device, latents.dtype
        with torch.inference_mode():
            z = latents.to(self.device, torch.float32)
            if noise is None:
                gen_device = generator.device if generator is not None else self.device
                raw = torch.randn((b, 3, tf * t_lat) + shape[3:], generator=generator, dtype=torch.float32,
                                  device=gen_device)
                x_init = (scale * raw)[:, :, tf - 1:].to(self.device)
            else:
                x_init = noise.to(self.device, torch.float32)
            items = []
            for i in range(b):
                n = t_lat if lengths is None else int(lengths[i])
                nf = 1 + tf * (n - 1)
                y = self.net.decode_item(z[i:i + 1, :, :n], x_init[i:i + 1, :, :nf], steps, chunk,
                                         reference_chunking)
                if vr == (0.0, 1.0):
                    y = (y + 1) / 2
                if clamp:
                    y = y.clamp(vr[0], vr[1])
                if nf < frames:  # padding frames are zeros in the output's range
                    y = F.pad(y, (0, 0, 0, 0, 0, frames - nf))
                items.append(y)
            video = torch.cat(items, 0).to(out_device, out_dtype)
        if lengths is None:
            return video
        return video, (1 + tf * (lengths - 1)).to(out_device)

    def reconstruct(self, video, num_steps: Optional[int] = None, generator: Optional[torch.Generator] = None,
                    **kwargs) -> torch.Tensor:
        """``decode_latents(encode_latents(video))`` in the same value range."""
        vr = kwargs.pop("value_range", (0.0, 1.0))
        lat = self.encode_latents(video, value_range=vr, chunk_frames=kwargs.pop("chunk_frames", None))
        return self.decode_latents(lat, num_steps, generator=generator, value_range=vr, **kwargs)

    # ------------------------------------------------------------------ official release
    @classmethod
    def from_official(cls, ckpt_path, config=None, *, variant: Optional[str] = None, **overrides) -> "CDTTokenizer":
        """Build from a release file (``cdt_base.ckpt`` / ``cdt_small.ckpt``), offline, strictly.

        ``config``: optional JSON file / dict of the reference constructor's kwargs, or a :class:`CDTConfig`;
        ``variant``: ``"base"`` or ``"small"`` (the release's hard-coded configurations); otherwise the
        configuration is read from the tensor shapes (see :func:`video.cdt.convert.infer_config`).
        ``overrides`` set sampling/chunking fields (``sample_steps``, ``enc_frames``, ...).
        """
        from zoo.registry import load_state_strict

        from .convert import convert_state_dict, read_checkpoint, resolve_config

        state = convert_state_dict(read_checkpoint(ckpt_path))
        cfg = resolve_config(state, config, variant, **overrides)
        model = cls(cfg)
        load_state_strict(model.net, state, source=str(ckpt_path))
        return model.eval()

    def extra_repr(self) -> str:
        c = self.config
        return (f"family={self.family!r}, context_dim={c.context_dim}, latent_dim={c.latent_dim}, "
                f"space_down={list(c.space_down)}, pad_mode={c.pad_mode!r}, new_upsample={c.new_upsample}")
