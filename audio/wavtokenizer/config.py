"""Hyperparameters of WavTokenizer (Ji et al., ICLR 2025).

Defaults are the paper's main model: 24 kHz, 75 tokens/s (SEANet ratios ``[8, 5, 4, 2]``, ISTFT n_fft 1280 /
hop 320), one 4096-entry codebook of dimension 512, Vocos backbone 768 / 2304 / 12 layers with 4 adaptive
LayerNorm rows. :func:`preset` gives the two released variants (``"75"`` and ``"40"`` tokens/s).

The SEANet widths (``n_filters``, ``dimension``) are hard-coded in the original code, not in its YAML; the
converter reads them (and everything else) from the checkpoint's tensor shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

from zoo.config import ConfigBase

__all__ = ["WavTokenizerConfig", "preset", "PRESETS"]


def _pos_int(name: str, value, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"WavTokenizerConfig.{name} must be a {'non-negative' if allow_zero else 'positive'} "
                         f"int, got {value!r}")


@dataclass
class WavTokenizerConfig(ConfigBase):
    """WavTokenizer architecture.

    Encoder (EnCodec SEANet, non-causal, weight-normed convs, reflect padding):
        n_filters: width of the first conv (doubles at every downsampling stage).
        ratios: downsampling ratios in the original's (decoder) order, e.g. ``[8, 5, 4, 2]``; the encoder
            applies them reversed (strides 2, 4, 5, 8, kernels 2 x stride). Their product is the hop.
        dimension: latent (= codebook) dimension.
        n_residual_layers, residual_kernel_size, dilation_base, compress, true_skip: SEANet residual blocks.
        kernel_size, last_kernel_size: first and last conv kernels. lstm_layers: LSTM layers (with skip).
    Quantizer (one EMA Euclidean codebook):
        codebook_size; vq_decay, vq_eps, vq_kmeans_iters, vq_threshold_ema_dead_code, vq_commitment_weight
        (training only).
    Decoder (Vocos backbone with WavTokenizer's pos_net + ISTFT head):
        backbone_dim, intermediate_dim, num_layers, adanorm_num_embeddings (bandwidth ids), pos_net_groups,
        n_fft, hop_length (must equal prod(ratios)), padding ("same").
    """

    sample_rate: int = 24000
    n_filters: int = 32
    ratios: Tuple[int, ...] = (8, 5, 4, 2)
    dimension: int = 512
    n_residual_layers: int = 1
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    true_skip: bool = False
    kernel_size: int = 7
    last_kernel_size: int = 7
    lstm_layers: int = 2
    codebook_size: int = 4096
    vq_decay: float = 0.99
    vq_eps: float = 1e-5
    vq_kmeans_iters: int = 200
    vq_threshold_ema_dead_code: float = 2.0
    vq_commitment_weight: float = 1.0
    backbone_dim: int = 768
    intermediate_dim: int = 2304
    num_layers: int = 12
    adanorm_num_embeddings: int = 4
    pos_net_groups: int = 32
    n_fft: int = 1280
    hop_length: int = 320
    padding: str = "same"

    def __post_init__(self):
        self.ratios = tuple(self.ratios)
        for name in ("sample_rate", "n_filters", "dimension", "residual_kernel_size", "dilation_base", "compress",
                     "kernel_size", "last_kernel_size", "codebook_size", "backbone_dim", "intermediate_dim",
                     "num_layers", "adanorm_num_embeddings", "pos_net_groups", "n_fft", "hop_length"):
            _pos_int(name, getattr(self, name))
        _pos_int("n_residual_layers", self.n_residual_layers, allow_zero=True)
        _pos_int("lstm_layers", self.lstm_layers, allow_zero=True)
        if not self.ratios:
            raise ValueError("WavTokenizerConfig.ratios must list at least one downsampling ratio")
        for r in self.ratios:
            _pos_int("ratios[i]", r)
        if math.prod(self.ratios) != self.hop_length:
            raise ValueError(f"WavTokenizerConfig: hop_length {self.hop_length} must equal the product of the "
                             f"encoder ratios {list(self.ratios)} = {math.prod(self.ratios)} (one token per hop)")
        if self.padding != "same":
            raise ValueError(f"WavTokenizerConfig.padding must be 'same' (every release uses it; 'center' would "
                             f"not give hop samples per token), got {self.padding!r}")
        if self.n_fft % 2 or self.n_fft < self.hop_length or (self.n_fft - self.hop_length) % 2:
            raise ValueError(f"WavTokenizerConfig: n_fft {self.n_fft} must be even, >= hop_length "
                             f"{self.hop_length}, with n_fft - hop_length even")
        if self.backbone_dim % self.pos_net_groups:
            raise ValueError(f"WavTokenizerConfig: backbone_dim {self.backbone_dim} must be divisible by "
                             f"pos_net_groups {self.pos_net_groups}")
        if self.n_filters // self.compress < 1:
            raise ValueError(f"WavTokenizerConfig: n_filters {self.n_filters} // compress {self.compress} leaves "
                             "no residual hidden channels")

    @property
    def hop(self) -> int:
        return self.hop_length

    @property
    def encoder_strides(self) -> Tuple[int, ...]:
        """Strides of the downsampling convs in forward order (the reversed ``ratios``)."""
        return tuple(reversed(self.ratios))

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length


#: the two released variants (all widths identical, only strides and FFT size differ)
PRESETS = {
    "75": dict(ratios=(8, 5, 4, 2), n_fft=1280, hop_length=320),
    "40": dict(ratios=(6, 5, 5, 4), n_fft=2400, hop_length=600),
}


def preset(name: str = "75", **overrides) -> WavTokenizerConfig:
    """The released architecture ``"75"`` (tokens/s, hop 320) or ``"40"`` (hop 600), with ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"unknown WavTokenizer preset {name!r}; known: {sorted(PRESETS)}")
    return WavTokenizerConfig(**{**PRESETS[name], **overrides})
