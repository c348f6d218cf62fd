"""Building blocks of TFM-Tokenizer: the linear-attention transformer and the sinusoidal position table.

The original builds every transformer with ``linear_attention_transformer.LinearAttentionTransformer`` (v0.19.1)
in its plain configuration (non-causal, no local heads, no positional embedding, no final norm). This module
re-implements that configuration:

- pre-norm residual blocks ``x = x + attn(LN(x)); x = x + ff(LN(x))`` (LayerNorm eps 1e-5);
- "efficient" linear attention: per head, ``q`` softmaxed over the head dim then scaled by ``dh**-0.5``,
  ``k`` softmaxed over the sequence, ``out = q (k^T v)``; q/k/v projections without bias, output projection
  with bias, dropout 0.2 after it (training only);
- feed-forward ``Linear(D, 4D) -> GELU (erf) -> Linear(4D, D)``.

Linear attention mixes every position of a sequence (the key softmax runs over the sequence), so a padded
sequence does not give the same result as the unpadded one: callers process items of different lengths
separately.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LinearAttention", "FeedForward", "TransformerBlock", "LinearAttentionTransformer", "sinusoid_table"]


class LinearAttention(nn.Module):
    """Multi-head linear attention over ``x [N, L, D]``."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.2):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.dim_head = dim // heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        n, length, _ = t.shape
        return t.reshape(n, length, self.heads, self.dim_head)  # [N, L, H, dh]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        # softmax of q over the (small) head dim, computed on a transposed copy: PyTorch's CPU softmax is ~8x
        # slower over an innermost axis of 8 than over an outer one; same values up to float rounding (~1e-7)
        q = self.to_q(x).reshape(-1, self.dim_head).t().contiguous().softmax(dim=0).t()
        q = q.reshape(n, length, self.heads, self.dim_head).transpose(1, 2) * self.dim_head ** -0.5
        k = self._split(self.to_k(x)).softmax(dim=1).transpose(1, 2)  # over the sequence
        v = self._split(self.to_v(x)).transpose(1, 2)
        context = torch.einsum("nhld,nhle->nhde", k, v)
        out = torch.einsum("nhld,nhde->nhle", q, context)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.dropout(self.to_out(out))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.w1 = nn.Linear(dim, dim * mult)
        self.w2 = nn.Linear(dim * mult, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.gelu(self.w1(x)))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.2):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = LinearAttention(dim, heads, dropout)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.ff(self.ff_norm(x))


class LinearAttentionTransformer(nn.Module):
    """``depth`` pre-norm blocks over ``x [N, L, D]`` (no positional embedding, no final norm)."""

    def __init__(self, dim: int, heads: int, depth: int, dropout: float = 0.2):
        super().__init__()
        self.layers = nn.ModuleList(TransformerBlock(dim, heads, dropout) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """``[length, dim]``: sin on even, cos on odd channels, frequencies ``10000**(-2i/dim)`` (float32)."""
    position = torch.arange(0, length).unsqueeze(1).float()
    div = torch.exp(torch.arange(0, dim, 2).float() * -(math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table
