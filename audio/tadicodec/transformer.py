"""The non-causal Llama-style transformer used by TaDiCodec's encoder and flow-matching decoder.

Facts from the reference (``DiffLlamaPrefix`` / ``LlamaNARDecoderLayer`` on transformers 4.42, see
docs/models/tadicodec.md): pre-norm layers ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``; bias-free q/k/v/o
projections, ``num_heads`` heads of ``hidden / num_heads``; rotate-half RoPE with theta 10000 over positions
``0 .. L-1`` of the whole sequence (text prefix included); SwiGLU MLP ``down(silu(gate(x)) * up(x))`` of width
``4 * hidden``; RMS norms with eps 1e-6 whose scale is either absent (encoder) or predicted per item from the
time embedding by ``to_weight`` (decoder). Attention is fully visible; padded keys are masked.

Module names follow the reference's state dict (``layers.{i}.self_attn.q_proj``, ``input_layernorm.to_weight``,
``in_linear``, ``text_mlp.0`` ...), so official weights load without renaming.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SinusoidalTimeEmbedding", "AdaptiveRMSNorm", "RotaryEmbedding", "SelfAttention", "SwiGLU",
           "TransformerLayer", "PrefixTransformer", "conditioning_mlp"]


class SinusoidalTimeEmbedding(nn.Module):
    """``t [B] -> [B, dim]``: ``[sin(t f), cos(t f)]`` with ``f_i = exp(-i ln(10000) / (dim/2 - 1))``.

    ``t`` is used as given (TaDiCodec feeds flow times in [0, 1], not scaled by 1000).
    """

    def __init__(self, dim: int):
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"SinusoidalTimeEmbedding needs an even dim >= 4, got {dim}")
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        step = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=t.device) * -step)
        args = t[:, None] * freqs[None, :] * 1.0
        return torch.cat((args.sin(), args.cos()), dim=-1)


class AdaptiveRMSNorm(nn.Module):
    """RMS norm (eps 1e-6, statistics in float32); with ``conditional`` the scale is ``to_weight(c)`` per item.

    ``to_weight`` is ``Linear(dim_cond, dim)`` initialised to weight 0, bias 1 (identity at start). There is no
    additive shift and no learnable weight when unconditional.
    """

    def __init__(self, dim: int, conditional: bool, dim_cond: Optional[int] = None, eps: float = 1e-6):
        super().__init__()
        self.eps = float(eps)
        self.conditional = bool(conditional)
        if self.conditional:
            self.to_weight = nn.Linear(dim if dim_cond is None else dim_cond, dim)
            nn.init.zeros_(self.to_weight.weight)
            nn.init.ones_(self.to_weight.bias)

    def forward(self, x: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x [B, L, dim]``; ``scale`` = the precomputed ``to_weight(c)`` ``[B, dim]`` (conditional only)."""
        dtype = x.dtype
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps)
        if not self.conditional:
            return x
        if scale is None:
            raise ValueError("this AdaptiveRMSNorm is conditional: it needs the time embedding")
        if scale.ndim == 2:
            scale = scale.unsqueeze(1)
        return (scale * x).to(dtype)


class RotaryEmbedding(nn.Module):
    """Rotate-half rotary position embedding (``inv_freq = theta^(-2i/d)``, non-persistent)."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, length: int, device, dtype):
        """``cos, sin`` ``[1, 1, length, head_dim]`` for positions ``0 .. length-1`` (computed in float32)."""
        pos = torch.arange(length, device=device, dtype=torch.float32)
        freqs = pos[:, None] * self.inv_freq.to(device=device, dtype=torch.float32)[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[None, None], emb.sin().to(dtype)[None, None]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class SelfAttention(nn.Module):
    """Multi-head non-causal self-attention with RoPE; ``q_proj/k_proj/v_proj/o_proj`` without bias."""

    def __init__(self, hidden: int, num_heads: int):
        super().__init__()
        if hidden % num_heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.q_proj = nn.Linear(hidden, hidden, bias=False)
        self.k_proj = nn.Linear(hidden, hidden, bias=False)
        self.v_proj = nn.Linear(hidden, hidden, bias=False)
        self.o_proj = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, L, H = x.shape
        q, k, v = (p(x).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        mask = None
        if key_mask is not None:  # [B, L] bool, True = real key
            mask = key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(B, L, H))


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` without biases."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class TransformerLayer(nn.Module):
    """Pre-norm layer: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))`` (norms optionally time-modulated)."""

    def __init__(self, hidden: int, num_heads: int, conditional: bool, mlp_ratio: int = 4, eps: float = 1e-6):
        super().__init__()
        self.self_attn = SelfAttention(hidden, num_heads)
        self.mlp = SwiGLU(hidden, hidden * mlp_ratio)
        self.input_layernorm = AdaptiveRMSNorm(hidden, conditional, eps=eps)
        self.post_attention_layernorm = AdaptiveRMSNorm(hidden, conditional, eps=eps)

    def forward(self, x, cos, sin, c: Optional[torch.Tensor] = None, key_mask=None):
        s1 = s2 = None
        if c is not None:
            s1 = self.input_layernorm.to_weight(c)
            s2 = self.post_attention_layernorm.to_weight(c)
        x = x + self.self_attn(self.input_layernorm(x, s1), cos, sin, key_mask)
        return x + self.mlp(self.post_attention_layernorm(x, s2))


def conditioning_mlp(hidden: int, ratio: int = 4) -> nn.Sequential:
    """``Linear(h, 4h) -> SiLU -> Linear(4h, h)`` (state keys ``0.*`` and ``2.*``)."""
    return nn.Sequential(nn.Linear(hidden, hidden * ratio), nn.SiLU(), nn.Linear(hidden * ratio, hidden))


class PrefixTransformer(nn.Module):
    """Encoder / decoder stack: optional ``in_linear``, per-frame ``cond_mlp``, text prefix (``text_mlp``),
    time conditioning (``diff_step_mlp``), ``num_layers`` layers, final norm, optional ``out_linear``.

    ``forward(x [B, L, in_dim], cond=None [B, L, hidden], t=None [B], text=None [B, Lt, hidden],
    key_mask=None [B, Lt + L] bool)`` -> ``[B, L, out_dim or hidden]`` (the text positions are dropped).
    Conditioning inputs that are reused across sampler steps can be passed precomputed (``cond_emb``,
    ``text_emb`` = the MLP outputs) to skip their MLPs.
    """

    def __init__(self, hidden: int, num_heads: int, num_layers: int, in_dim: Optional[int] = None,
                 out_dim: Optional[int] = None, use_text: bool = False, use_time: bool = False,
                 use_cond: bool = False, rope_theta: float = 10000.0, mlp_ratio: int = 4, eps: float = 1e-6):
        super().__init__()
        self.hidden, self.num_heads = hidden, num_heads
        self.use_text, self.use_time, self.use_cond = use_text, use_time, use_cond
        conditional = use_cond or use_time  # the reference modulates every norm whenever either is on
        self.conditional = conditional
        self.layers = nn.ModuleList([TransformerLayer(hidden, num_heads, conditional, mlp_ratio, eps)
                                     for _ in range(num_layers)])
        self.norm = AdaptiveRMSNorm(hidden, conditional, eps=eps)
        if use_text:
            self.text_mlp = conditioning_mlp(hidden, mlp_ratio)
        if use_time:
            self.time_embedding = SinusoidalTimeEmbedding(hidden)
            self.diff_step_mlp = conditioning_mlp(hidden, mlp_ratio)
        if use_cond:
            self.cond_mlp = conditioning_mlp(hidden, mlp_ratio)
        self.in_linear = nn.Linear(in_dim, hidden) if in_dim is not None else None
        self.out_linear = nn.Linear(hidden, out_dim) if out_dim is not None else None
        self.rotary = RotaryEmbedding(hidden // num_heads, rope_theta)

    def time_condition(self, t: torch.Tensor) -> torch.Tensor:
        """``diff_step_mlp(sinusoid(t))`` ``[B, hidden]``."""
        return self.diff_step_mlp(self.time_embedding(t))

    def forward(self, x: torch.Tensor, *, cond: Optional[torch.Tensor] = None,
                cond_emb: Optional[torch.Tensor] = None, t: Optional[torch.Tensor] = None,
                time_emb: Optional[torch.Tensor] = None, text: Optional[torch.Tensor] = None,
                text_emb: Optional[torch.Tensor] = None, key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.in_linear(x) if self.in_linear is not None else x
        if self.use_cond:
            if cond_emb is None and cond is not None:
                cond_emb = self.cond_mlp(cond)
            if cond_emb is not None:
                h = h + cond_emb
        n_text = 0
        if self.use_text:
            if text_emb is None and text is not None:
                text_emb = self.text_mlp(text)
            if text_emb is not None:
                n_text = text_emb.shape[1]
                h = torch.cat([text_emb, h], dim=1)
        c = None
        if self.use_time:
            if time_emb is None and t is not None:
                time_emb = self.time_condition(t)
            c = time_emb
        if self.conditional and c is None:
            raise ValueError("this transformer's norms are time-conditioned: pass t (or time_emb)")
        if key_mask is not None and key_mask.shape != h.shape[:2]:
            raise ValueError(f"key_mask must be [B, {h.shape[1]}] (text prefix + frames), got "
                             f"{tuple(key_mask.shape)}")
        cos, sin = self.rotary(h.shape[1], h.device, h.dtype)
        for layer in self.layers:
            h = layer(h, cos, sin, c, key_mask)
        h = self.norm(h, self.norm.to_weight(c) if self.conditional else None)
        h = h[:, n_text:]
        return self.out_linear(h) if self.out_linear is not None else h
