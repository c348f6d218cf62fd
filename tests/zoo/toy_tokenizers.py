"""Tiny deterministic tokenizers used by the foundation, CLI and benchmark tests (not registered globally)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zoo.config import ConfigBase
from zoo.tokenizer import AudioTokenizer, ImageTokenizer, SeriesTokenizer, TokenizerSpec
from zoo.tokens import Tokens


@dataclass
class ToyAudioConfig(ConfigBase):
    sample_rate: int = 24000
    hop: int = 4
    levels: int = 256


class ToyAudio(AudioTokenizer):
    """Mu-law quantised frame means: one token per ``hop`` samples."""

    family = "toy-audio"
    config_class = ToyAudioConfig

    def __init__(self, config):
        super().__init__(config)
        self.register_buffer("scale", torch.ones(()))

    @property
    def spec(self):
        c = self.config
        return TokenizerSpec.discrete_spec("audio", c.levels, 1, c.sample_rate / c.hop, "tokens/s")

    def _encode(self, wav, lengths=None):
        c = self.config
        n = wav.shape[-1] // c.hop
        frames = wav[:, : n * c.hop].reshape(wav.shape[0], n, c.hop).mean(-1).clamp(-1, 1)
        mu = c.levels - 1
        y = torch.sign(frames) * torch.log1p(mu * frames.abs()) / torch.log1p(torch.tensor(float(mu)))
        ids = ((y + 1) / 2 * mu).round().long()
        return Tokens(ids[:, None], None if lengths is None else lengths // c.hop)

    def _decode(self, tokens):
        c = self.config
        mu = c.levels - 1
        y = tokens.ids[:, 0].float() / mu * 2 - 1
        x = torch.sign(y) * ((1 + mu) ** y.abs() - 1) / mu
        return x.repeat_interleave(c.hop, dim=-1)[:, None] * self.scale


@dataclass
class ToyImageConfig(ConfigBase):
    image_size: int = 64
    pool: int = 2
    levels: int = 32


class ToyImage(ImageTokenizer):
    family = "toy-image"
    config_class = ToyImageConfig

    @property
    def spec(self):
        c = self.config
        n = 3 * (c.image_size // c.pool) ** 2
        return TokenizerSpec.discrete_spec("image", c.levels, 1, n, "tokens/image")

    def _encode(self, images):
        c = self.config
        small = F.avg_pool2d(images, c.pool)
        return Tokens((small * (c.levels - 1)).round().long().flatten(1))

    def _decode(self, tokens):
        c = self.config
        s = c.image_size // c.pool
        small = tokens.ids.float().reshape(-1, 3, s, s) / (c.levels - 1)
        return F.interpolate(small, scale_factor=c.pool, mode="nearest")


@dataclass
class ToySeriesConfig(ConfigBase):
    sfreq: float = 200.0
    levels: int = 64
    scale: float = 4.0


class ToySeries(SeriesTokenizer):
    family = "toy-series"
    config_class = ToySeriesConfig

    @property
    def spec(self):
        c = self.config
        return TokenizerSpec.discrete_spec("eeg", c.levels, 1, c.sfreq, "tokens/s")

    def _encode(self, x, lengths=None):
        c = self.config
        ids = ((x / c.scale).clamp(-1, 1) * 0.5 + 0.5) * (c.levels - 1)
        return Tokens(ids.round().long(), lengths)

    def _decode(self, tokens):
        c = self.config
        return ((tokens.ids.float() / (c.levels - 1)) - 0.5) * 2 * c.scale
