"""TaDiCodec's Vocos vocoder, built from the shared pieces in :mod:`audio.vocos`.

Normalised mel ``[B, 128, T]`` -> ConvNeXt backbone (``backbone.*``) -> ISTFT head with "same" padding
(``head.*``; exp-magnitude clipped at 100) -> waveform ``[B, T * hop]`` at 24 kHz. The state-dict names are the
release's (``vocoder/model.safetensors``), so its tensors load one to one.
"""

from __future__ import annotations

import torch
from torch import nn

from audio.vocos import ISTFTHead, VocosBackbone

from .config import VocosConfig

__all__ = ["TaDiCodecVocoder"]


class TaDiCodecVocoder(nn.Module):
    def __init__(self, config: VocosConfig):
        super().__init__()
        self.config = config
        self.backbone = VocosBackbone(config.input_channels, config.dim, config.intermediate_dim, config.num_layers)
        self.head = ISTFTHead(config.dim, config.n_fft, config.hop_size, padding=config.padding)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``mel [B, input_channels, T]`` (the model's normalised mel) -> ``[B, T * hop_size]``."""
        return self.head(self.backbone(mel))
