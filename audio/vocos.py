"""Vocos-style vocoder pieces shared by the audio families (WavTokenizer's decoder, TaDiCodec's vocoder).

Vocos (Siuzdak, 2023) turns a feature sequence ``[B, C, T]`` into a waveform ``[B, T * hop]`` with

- :class:`VocosBackbone`: ``embed`` Conv1d(k7) -> optional ``pos_net`` (WavTokenizer: ResNet blocks and one
  full self-attention block, GroupNorm over time) -> ``norm`` (LayerNorm, or :class:`AdaLayerNorm` selected by
  a condition id) -> ``convnext`` (:class:`ConvNeXtBlock` x num_layers) -> ``final_layer_norm``; output
  ``[B, T, dim]``;
- :class:`ISTFTHead`: Linear(dim -> n_fft + 2) -> log-magnitude / phase -> complex spectrum -> :class:`ISTFT`
  with "same" padding (output exactly ``T * hop`` samples) or "center" padding (``torch.istft``).

Module and parameter names follow the published checkpoints (``backbone.embed``, ``backbone.convnext.{i}.dwconv``,
``head.out``, ``head.istft.window`` ...), so an official state dict loads without renaming.

Everything works on one padded batch; note that GroupNorm and attention in ``pos_net`` mix all positions of an
item, so padding an item changes its output (callers that batch items of different lengths must run them
separately).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AdaLayerNorm", "ConvNeXtBlock", "ResnetBlock", "AttnBlock", "make_pos_net", "VocosBackbone", "ISTFT",
    "ISTFTHead", "as_condition_id",
]

CondId = Union[int, torch.Tensor, None]


def as_condition_id(cond: CondId, num_embeddings: int, device=None, name: str = "bandwidth_id") -> torch.Tensor:
    """Turn an int or integer tensor into a LongTensor ``[1]`` or ``[B]`` of condition ids, checked in range."""
    if isinstance(cond, bool):
        raise TypeError(f"{name} must be an int or an integer tensor, got bool")
    if isinstance(cond, int):
        cond = torch.tensor([cond], dtype=torch.long)
    if not isinstance(cond, torch.Tensor):
        raise TypeError(f"{name} must be an int or an integer tensor, got {type(cond).__name__}")
    if cond.is_floating_point() or cond.is_complex() or cond.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {cond.dtype}")
    if cond.ndim == 0:
        cond = cond.reshape(1)
    if cond.ndim != 1 or cond.numel() == 0:
        raise ValueError(f"{name} must be a scalar or a 1-D tensor of ids, got shape {tuple(cond.shape)}")
    lo, hi = int(cond.min()), int(cond.max())
    if lo < 0 or hi >= num_embeddings:
        raise ValueError(f"{name} must lie in [0, {num_embeddings}) (rows of the adaptive LayerNorm), "
                         f"got values in [{lo}, {hi}]")
    return cond.long().to(device) if device is not None else cond.long()


class AdaLayerNorm(nn.Module):
    """LayerNorm without affine parameters followed by a per-condition scale and shift.

    ``scale``/``shift`` are ``nn.Embedding(num_embeddings, dim)`` (state keys ``scale.weight``,
    ``shift.weight``), initialised to ones/zeros. ``forward(x [B, T, dim], cond_id [1] or [B])``.
    """

    def __init__(self, num_embeddings: int, dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim = int(dim)
        self.eps = float(eps)
        self.scale = nn.Embedding(num_embeddings, dim)
        self.shift = nn.Embedding(num_embeddings, dim)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    @property
    def num_embeddings(self) -> int:
        return self.scale.num_embeddings

    def forward(self, x: torch.Tensor, cond_id: torch.Tensor) -> torch.Tensor:
        scale = self.scale(cond_id)  # [1 or B, dim]
        shift = self.shift(cond_id)
        if x.ndim == 3:
            scale, shift = scale[:, None, :], shift[:, None, :]
        y = F.layer_norm(x, (self.dim,), eps=self.eps)
        return y * scale + shift


class ConvNeXtBlock(nn.Module):
    """1-D ConvNeXt block on ``[B, dim, T]``: depthwise conv -> (Ada)LayerNorm -> MLP (exact GELU) -> layer scale
    -> residual.

    ``layer_scale_init_value``: initial value of the per-channel ``gamma``; ``None`` or ``<= 0`` disables the
    layer scale (no ``gamma`` parameter). ``adanorm_num_embeddings``: use :class:`AdaLayerNorm` with that many
    condition rows instead of a LayerNorm.
    """

    def __init__(self, dim: int, intermediate_dim: int, layer_scale_init_value: Optional[float] = None,
                 adanorm_num_embeddings: Optional[int] = None, kernel_size: int = 7, eps: float = 1e-6):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvNeXtBlock kernel_size must be odd, got {kernel_size}")
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.adanorm = bool(adanorm_num_embeddings)
        self.norm = AdaLayerNorm(adanorm_num_embeddings, dim, eps) if self.adanorm else nn.LayerNorm(dim, eps=eps)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        if layer_scale_init_value is not None and layer_scale_init_value > 0:
            self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
        else:
            self.gamma = None

    def forward(self, x: torch.Tensor, cond_id: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.dwconv(x).transpose(1, 2)  # [B, T, dim]
        if self.adanorm:
            if cond_id is None:
                raise ValueError("this ConvNeXtBlock uses an adaptive LayerNorm: pass a condition id")
            h = self.norm(h, cond_id)
        else:
            h = self.norm(h)
        h = self.pwconv2(F.gelu(self.pwconv1(h)))  # exact (erf) GELU, as nn.GELU()
        if self.gamma is not None:
            h = h * self.gamma
        return x + h.transpose(1, 2)


def _group_norm(channels: int, num_groups: int, eps: float) -> nn.GroupNorm:
    if channels % num_groups != 0:
        raise ValueError(f"GroupNorm: {channels} channels are not divisible into {num_groups} groups")
    return nn.GroupNorm(num_groups, channels, eps=eps, affine=True)


class ResnetBlock(nn.Module):
    """``x + conv2(dropout(swish(GN(conv1(swish(GN(x)))))))`` with k3 convs (``pos_net`` ResNet block).

    GroupNorm statistics run over channels-in-group x time, i.e. over the whole item.
    """

    def __init__(self, channels: int, num_groups: int = 32, eps: float = 1e-6, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _group_norm(channels, num_groups, eps)
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.norm2 = _group_norm(channels, num_groups, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return x + h


class AttnBlock(nn.Module):
    """Single-head full self-attention over time on ``[B, C, T]`` with 1x1-conv q/k/v/out and a GroupNorm.

    ``out = x + proj_out(softmax(q^T k / sqrt(C)) v)``; no mask, no positional encoding. Computed with
    :func:`torch.nn.functional.scaled_dot_product_attention` (memory linear in T on CPU and CUDA).
    """

    def __init__(self, channels: int, num_groups: int = 32, eps: float = 1e-6):
        super().__init__()
        self.norm = _group_norm(channels, num_groups, eps)
        self.q = nn.Conv1d(channels, channels, 1)
        self.k = nn.Conv1d(channels, channels, 1)
        self.v = nn.Conv1d(channels, channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = (m(h).transpose(1, 2)[:, None] for m in (self.q, self.k, self.v))  # [B, 1, T, C]
        a = F.scaled_dot_product_attention(q, k, v)  # default scale 1/sqrt(C)
        return x + self.proj_out(a[:, 0].transpose(1, 2))


def make_pos_net(channels: int, num_groups: int = 32, eps: float = 1e-6, dropout: float = 0.0) -> nn.Sequential:
    """WavTokenizer's ``pos_net``: ResnetBlock x2, AttnBlock, ResnetBlock x2, GroupNorm (indices 0..5)."""
    return nn.Sequential(
        ResnetBlock(channels, num_groups, eps, dropout),
        ResnetBlock(channels, num_groups, eps, dropout),
        AttnBlock(channels, num_groups, eps),
        ResnetBlock(channels, num_groups, eps, dropout),
        ResnetBlock(channels, num_groups, eps, dropout),
        _group_norm(channels, num_groups, eps),
    )


class VocosBackbone(nn.Module):
    """Vocos ConvNeXt backbone: ``[B, input_channels, T] -> [B, T, dim]``.

    Args:
        input_channels: channels of the input features.
        dim: hidden width.
        intermediate_dim: MLP width of every ConvNeXt block.
        num_layers: number of ConvNeXt blocks.
        layer_scale_init_value: initial ``gamma``; default ``1 / num_layers`` (as Vocos).
        adanorm_num_embeddings: condition rows of the adaptive LayerNorms (``None``: plain LayerNorms).
        pos_net: add WavTokenizer's ResNet/attention ``pos_net`` between ``embed`` and ``norm``.
        pos_net_groups: GroupNorm groups of the ``pos_net`` (32 in WavTokenizer).
        dropout: dropout inside the ``pos_net`` ResNet blocks (0.1 in WavTokenizer training; inactive in eval).
        embed_kernel_size, kernel_size: kernel of ``embed`` and of the depthwise convs (7, "same" padding).
        eps: epsilon of every LayerNorm / GroupNorm (1e-6).
    """

    def __init__(self, input_channels: int, dim: int, intermediate_dim: int, num_layers: int,
                 layer_scale_init_value: Optional[float] = None, adanorm_num_embeddings: Optional[int] = None,
                 pos_net: bool = False, pos_net_groups: int = 32, dropout: float = 0.0,
                 embed_kernel_size: int = 7, kernel_size: int = 7, eps: float = 1e-6):
        super().__init__()
        for name, value in (("input_channels", input_channels), ("dim", dim),
                            ("intermediate_dim", intermediate_dim), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"VocosBackbone {name} must be a positive int, got {value!r}")
        if embed_kernel_size % 2 != 1:
            raise ValueError(f"VocosBackbone embed_kernel_size must be odd, got {embed_kernel_size}")
        self.input_channels = input_channels
        self.dim = dim
        self.adanorm = bool(adanorm_num_embeddings)
        self.adanorm_num_embeddings = int(adanorm_num_embeddings) if self.adanorm else 0
        self.embed = nn.Conv1d(input_channels, dim, embed_kernel_size, padding=embed_kernel_size // 2)
        self.pos_net = make_pos_net(dim, pos_net_groups, eps, dropout) if pos_net else None
        self.norm = AdaLayerNorm(adanorm_num_embeddings, dim, eps) if self.adanorm else nn.LayerNorm(dim, eps=eps)
        if layer_scale_init_value is None:
            layer_scale_init_value = 1.0 / num_layers
        self.convnext = nn.ModuleList([
            ConvNeXtBlock(dim, intermediate_dim, layer_scale_init_value, adanorm_num_embeddings, kernel_size, eps)
            for _ in range(num_layers)
        ])
        self.final_layer_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, cond_id: CondId = None) -> torch.Tensor:
        """``x [B, input_channels, T]`` (+ condition id when adaptive) -> ``[B, T, dim]``."""
        if x.ndim != 3 or x.shape[1] != self.input_channels:
            raise ValueError(f"VocosBackbone expects [B, {self.input_channels}, T], got {tuple(x.shape)}")
        cond = None
        if self.adanorm:
            cond = as_condition_id(0 if cond_id is None else cond_id, self.adanorm_num_embeddings, x.device)
            if cond.numel() not in (1, x.shape[0]):
                raise ValueError(f"bandwidth_id has {cond.numel()} entries for a batch of {x.shape[0]}")
        h = self.embed(x)
        if self.pos_net is not None:
            h = self.pos_net(h)
        h = h.transpose(1, 2)
        h = self.norm(h, cond) if self.adanorm else self.norm(h)
        h = h.transpose(1, 2)
        for block in self.convnext:
            h = block(h, cond)
        return self.final_layer_norm(h.transpose(1, 2))


class ISTFT(nn.Module):
    """Inverse STFT of a complex spectrum ``[B, n_fft // 2 + 1, T]`` -> ``[B, L]`` with a periodic Hann window.

    ``padding="same"``: inverse FFT, windowing, overlap-add, then ``(win - hop) // 2`` samples are dropped at both
    ends and the result is divided by the overlap-added squared window, so ``L = T * hop`` (when
    ``win - hop`` is even). This is Vocos' own ISTFT ("same" padding is not expressible with ``torch.istft``).
    ``padding="center"``: ``torch.istft(center=True)``, ``L = (T - 1) * hop``.

    The window is a persistent buffer ``window`` (official checkpoints store it as ``head.istft.window``).
    """

    def __init__(self, n_fft: int, hop_length: int, win_length: Optional[int] = None, padding: str = "same"):
        super().__init__()
        if padding not in ("same", "center"):
            raise ValueError(f"ISTFT padding must be 'same' or 'center', got {padding!r}")
        win_length = n_fft if win_length is None else win_length
        if not 0 < hop_length <= win_length <= n_fft:
            raise ValueError(f"ISTFT needs 0 < hop_length <= win_length <= n_fft, got hop {hop_length}, "
                             f"win {win_length}, n_fft {n_fft}")
        self.n_fft, self.hop_length, self.win_length, self.padding = n_fft, hop_length, win_length, padding
        self.register_buffer("window", torch.hann_window(win_length), persistent=True)

    def output_length(self, frames: int) -> int:
        if self.padding == "center":
            return (frames - 1) * self.hop_length
        pad = (self.win_length - self.hop_length) // 2
        return (frames - 1) * self.hop_length + self.win_length - 2 * pad

    def _envelope(self, frames: int, device, dtype) -> torch.Tensor:
        """Overlap-added squared window over the kept samples (what the overlap-add is divided by)."""
        total = (frames - 1) * self.hop_length + self.win_length
        w2 = self.window.to(device=device, dtype=dtype).square()[None, :, None].expand(1, self.win_length, frames)
        env = F.fold(w2, output_size=(1, total), kernel_size=(1, self.win_length),
                     stride=(1, self.hop_length)).reshape(total)
        pad = (self.win_length - self.hop_length) // 2
        env = env[pad:total - pad]
        if not bool((env > 1e-11).all()):
            raise ValueError("ISTFT window envelope vanishes (window/hop violate the NOLA condition)")
        return env

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        if spec.ndim != 3 or spec.shape[1] != self.n_fft // 2 + 1:
            raise ValueError(f"ISTFT expects a complex spectrum [B, {self.n_fft // 2 + 1}, T], "
                             f"got {tuple(spec.shape)}")
        if self.padding == "center":
            return torch.istft(spec, self.n_fft, self.hop_length, self.win_length, self.window, center=True)
        B, _, T = spec.shape
        frames = torch.fft.irfft(spec, self.n_fft, dim=1, norm="backward")
        if self.win_length < self.n_fft:  # keep the window's span (window centred in the frame as torch.stft)
            left = (self.n_fft - self.win_length) // 2
            frames = frames[:, left:left + self.win_length]
        frames = frames * self.window[None, :, None]
        total = (T - 1) * self.hop_length + self.win_length
        y = F.fold(frames, output_size=(1, total), kernel_size=(1, self.win_length),
                   stride=(1, self.hop_length)).reshape(B, total)
        pad = (self.win_length - self.hop_length) // 2
        y = y[:, pad:total - pad]
        return y / self._envelope(T, y.device, y.dtype)


class ISTFTHead(nn.Module):
    """``[B, T, dim] -> [B, T * hop]``: Linear(dim, n_fft + 2) -> [log-magnitude | phase] -> ISTFT.

    ``magnitude = min(exp(log_magnitude), mag_clip)`` (Vocos clips at 100 after the exponential); the spectrum is
    ``magnitude * (cos(phase) + i sin(phase))``.
    """

    def __init__(self, dim: int, n_fft: int, hop_length: int, padding: str = "same", mag_clip: float = 100.0,
                 win_length: Optional[int] = None):
        super().__init__()
        if n_fft % 2 != 0:
            raise ValueError(f"ISTFTHead n_fft must be even, got {n_fft}")
        self.n_fft, self.hop_length, self.mag_clip = n_fft, hop_length, float(mag_clip)
        self.out = nn.Linear(dim, n_fft + 2)
        self.istft = ISTFT(n_fft, hop_length, n_fft if win_length is None else win_length, padding)

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """The complex spectrum ``[B, n_fft // 2 + 1, T]`` the head predicts from ``x [B, T, dim]``."""
        # the spectrum is built in float32 whatever autocast made of the linear layer: complex tensors (and the
        # inverse FFT) exist for float32/float64 only, and exp() of a half-precision log-magnitude overflows early
        h = self.out(x).transpose(1, 2).float()
        log_mag, phase = h.chunk(2, dim=1)
        mag = torch.exp(log_mag).clamp(max=self.mag_clip)
        return torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.istft(self.spectrum(x))
