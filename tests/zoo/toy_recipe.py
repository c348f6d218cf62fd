"""A tiny FSQ waveform autoencoder and its recipe, to test the training engine on real speech quickly."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from zoo.config import ConfigBase
from zoo.quantizers import FSQ, FSQConfig
from zoo.registry import register_family
from zoo.tokenizer import AudioTokenizer, TokenizerSpec
from zoo.tokens import Tokens
from zoo.train import DataConfig, Recipe, register_recipe


@dataclass
class ToyCodecConfig(ConfigBase):
    sample_rate: int = 24000
    hop: int = 40
    channels: int = 16
    levels: tuple = (5, 5, 5)


@register_family("toy-codec")
class ToyCodec(AudioTokenizer):
    config_class = ToyCodecConfig

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.enc = nn.Sequential(nn.Conv1d(1, c.channels, c.hop, c.hop), nn.GELU(), nn.Conv1d(c.channels, len(c.levels), 1))
        self.quant = FSQ(FSQConfig(levels=list(c.levels)))
        self.dec = nn.Sequential(nn.Conv1d(len(c.levels), c.channels, 1), nn.GELU(),
                                 nn.ConvTranspose1d(c.channels, 1, c.hop, c.hop))

    @property
    def spec(self):
        c = self.config
        size = 1
        for l in c.levels:
            size *= l
        return TokenizerSpec.discrete_spec("audio", size, 1, c.sample_rate / c.hop, "tokens/s")

    def forward(self, wav):
        z = self.enc(wav).transpose(1, 2)
        out = self.quant(z)
        return self.dec(out.quantized.transpose(1, 2)), out

    def _encode(self, wav, lengths=None):
        z = self.enc(wav[:, None]).transpose(1, 2)
        return Tokens(self.quant.encode(z)[:, None])

    def _decode(self, tokens):
        z = self.quant.decode(tokens.ids[:, 0])
        return self.dec(z.transpose(1, 2))


@dataclass
class ToyCodecRecipeConfig(ConfigBase):
    model: ToyCodecConfig = field(default_factory=ToyCodecConfig)
    lr: float = 3e-3
    segment_samples: int = 4000


@register_recipe("toy-codec")
class ToyCodecRecipe(Recipe):
    config_class = ToyCodecRecipeConfig

    def build_model(self):
        torch.manual_seed(self.train.seed)
        return ToyCodec(self.config.model)

    def build_optimizers(self, modules):
        return {"model": torch.optim.Adam(modules["model"].parameters(), lr=self.config.lr)}

    def data_config(self):
        return DataConfig("audio", sample_rate=self.config.model.sample_rate,
                          segment_samples=self.config.segment_samples, seed=self.train.seed)

    def _loss(self, ctx, x):
        y, out = ctx.modules["model"](x)
        # per-item normalised L1, averaged over items: the global mean does not depend on how the batch is split
        per_item = (y - x).abs().mean(dim=(1, 2)) / x.abs().mean(dim=(1, 2)).clamp_min(1e-4)
        return per_item.mean(), out

    def training_step(self, ctx, batch):
        loss, out = self._loss(ctx, batch["x"])
        ctx.backward(loss)
        ctx.optimizer_step("model")
        from zoo.quantizers.stats import CodebookStats

        util = CodebookStats.from_ids(out.ids.detach().cpu(), ctx.unwrap().spec.codebook_size).utilization
        return {"loss": loss.detach(), "utilization": float(util[0])}

    def evaluate(self, ctx, batch):
        loss, _ = self._loss(ctx, batch["x"])
        return {"recon_loss": float(loss)}
