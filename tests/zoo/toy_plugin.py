"""Toy families for the foundation and CLI tests, plus a registration switch.

Importing this module registers the toy families, which is how a subprocess finds them
(``TOKENZOO_FAMILY_MODULES=tests.zoo.toy_plugin``). In-process tests use the ``toy_families`` fixture of
``tests/zoo/conftest.py``, which registers them for one test and removes them afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple

import torch
from torch import nn

from zoo.config import ConfigBase
from zoo.hub import torch_load
from zoo.registry import load_state_strict, register_family, unregister_family
from zoo.tokenizer import AudioTokenizer, TokenizerSpec, VideoTokenizer
from zoo.tokens import Tokens

from .toy_tokenizers import (ToyAudio, ToyAudioConfig, ToyImage, ToyImageConfig, ToySeries,  # noqa: F401
                             ToySeriesConfig)


@dataclass
class ToyVideoConfig(ConfigBase):
    levels: int = 16


class ToyVideo(VideoTokenizer):
    """One token per pixel and channel of every frame (``levels`` grey levels); ids keep the video layout."""

    family = "toy-video"
    config_class = ToyVideoConfig

    @property
    def spec(self):
        return TokenizerSpec.discrete_spec("video", self.config.levels, 1, 1.0, "tokens/frame")

    def _encode(self, video):
        ids = (video * (self.config.levels - 1)).round().long()
        return Tokens(ids)

    def _decode(self, tokens):
        return tokens.ids.float() / (self.config.levels - 1)


@dataclass
class ToyLinearConfig(ConfigBase):
    sample_rate: int = 16000
    hop: int = 8
    dim: int = 4
    codebook_size: int = 32
    extra: Tuple[int, ...] = field(default_factory=lambda: (1, 2))


class ToyLinear(AudioTokenizer):
    """A toy with real parameters (a projection and a codebook), for bit-exact persistence tests."""

    family = "toy-linear"
    config_class = ToyLinearConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = nn.Linear(config.hop, config.dim)
        self.codebook = nn.Parameter(torch.randn(config.codebook_size, config.dim))
        self.register_buffer("count", torch.zeros(config.codebook_size, dtype=torch.long))

    @property
    def spec(self):
        c = self.config
        return TokenizerSpec.discrete_spec("audio", c.codebook_size, 1, c.sample_rate / c.hop, "tokens/s")

    def _encode(self, wav, lengths=None):
        c = self.config
        n = wav.shape[-1] // c.hop
        z = self.proj(wav[:, : n * c.hop].reshape(wav.shape[0], n, c.hop))
        ids = torch.cdist(z, self.codebook[None].expand(z.shape[0], -1, -1)).argmin(-1)
        return Tokens(ids, None if lengths is None else lengths // c.hop)

    def _decode(self, tokens):
        z = self.codebook[tokens.ids]                      # [B, N, dim]
        w = torch.linalg.pinv(self.proj.weight)             # [hop, dim]
        return ((z - self.proj.bias) @ w.T).flatten(1)

    @classmethod
    def from_official(cls, checkpoint, config=None, *, scale: float = 1.0):
        """A stand-in converter: a torch checkpoint ``{"state_dict": ...}`` read with weights_only=True."""
        state = torch_load(checkpoint)["state_dict"]
        model = cls(ToyLinearConfig(**(config or {})))
        load_state_strict(model, {k: v * scale if v.is_floating_point() else v for k, v in state.items()},
                          source=str(checkpoint))
        model.loaded_from = [str(checkpoint)]
        return model.eval()


class ToySpectro(ToySeries):
    """A series tokenizer whose decoder reconstructs a feature map ``[B, C, 2, T]``, not a signal."""

    family = "toy-spectro"

    def _decode(self, tokens):
        y = super()._decode(tokens)
        return torch.stack([y, y.abs()], dim=2)


TOY_FAMILIES = {"toy-audio": ToyAudio, "toy-image": ToyImage, "toy-series": ToySeries, "toy-video": ToyVideo,
                "toy-linear": ToyLinear, "toy-spectro": ToySpectro}


def register() -> None:
    for name, cls in TOY_FAMILIES.items():
        register_family(name)(cls)


def unregister() -> None:
    for name in TOY_FAMILIES:
        unregister_family(name)


register()
