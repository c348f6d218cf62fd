"""TFM-Tokenizer's training recipe (``tokenzoo train tfm``): masked time-frequency reconstruction.

Follows ``tfm_tokenizer_token_learning.py`` of the original (facts: ../shared/research/tfm.md section 7):

- every channel of a window is one single-channel example (``DataConfig.split_channels``: windows with different
  channel counts share a batch); each is divided by its 0.95 quantile of |x| (+1e-8);
- one random mask per batch over the |STFT|: ``int(G * freq_mask_ratio)`` of the ``G = n_freq / freq_bin_size``
  frequency groups and ``int(nT / time_bin_size * time_mask_ratio)`` time bins are masked; ``keep`` is the
  intersection of the unmasked groups and bins; the two views ``X * keep`` and ``X * (1 - keep)`` are encoded
  (with the unmasked waveform on the temporal path) and each must reconstruct the full ``X`` (MSE, weight 1);
- the codebook learns only by EMA (updated on both forward passes). The original adds
  ``mean((q_st - sg[z])^2) + beta * mean((sg[q_st] - z)^2)`` with the straight-through ``q_st`` and beta = 1:
  the two gradients on ``z`` cancel exactly, so that term changes nothing and is only logged here;
- AdamW (lr 1e-3, weight decay 1e-5, betas 0.9/0.99); linear warm-up from 0 over the first 10 % of the steps,
  then a cosine from ``lr`` to ``final_lr`` (5e-3 in the original: the rate rises);
- the codebook starts, by default, as the shared VQ starts it (Kaiming-uniform rows, EMA cluster sizes of one).
  ``original_init: true`` starts it as the original's ``EMAVectorQuantizer`` does -- rows uniform in
  ``[-1/K, 1/K]``, EMA sums equal to the rows, cluster sizes zero -- quirk included: a code that no vector picks
  in the first EMA update is divided by a smoothed cluster size of about ``eps`` (1e-5), so its row jumps by a
  factor of about 1e5 and then shrinks only by ``decay`` (0.99) per update: such codes stay far from the
  unit-norm encoder outputs, unused, for hundreds of updates.

Logged per log window: codebook utilisation and perplexity of the ids of both views.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from zoo.config import ConfigBase
from zoo.quantizers.stats import CodebookStats
from zoo.train import DataConfig, Recipe, register_recipe
from zoo.train.schedules import cosine_decay

from .config import TFMConfig
from .model import TFMTokenizer

__all__ = ["TFMRecipe", "TFMRecipeConfig", "original_codebook_init", "time_frequency_mask"]


@dataclass
class TFMRecipeConfig(ConfigBase):
    model: TFMConfig = field(default_factory=TFMConfig)
    window_seconds: float = 5.0
    lr: float = 1e-3
    final_lr: float = 5e-3
    warmup_fraction: float = 0.1
    weight_decay: float = 1e-5
    betas: tuple = (0.9, 0.99)
    freq_mask_ratio: float = 0.5
    freq_bin_size: int = 5
    time_mask_ratio: float = 0.5
    time_bin_size: int = 1
    original_init: bool = False  # the original's codebook start (see the module docstring), quirk included

    def __post_init__(self):
        c = self.model
        if not isinstance(self.original_init, bool):
            raise ValueError(f"original_init must be true or false, got {self.original_init!r}")
        if not isinstance(self.window_seconds, (int, float)) or self.window_seconds * c.sfreq < c.n_fft:
            raise ValueError(f"window_seconds must give at least {c.n_fft} samples, got {self.window_seconds!r}")
        for name in ("lr", "final_lr", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        for name in ("warmup_fraction", "freq_mask_ratio", "time_mask_ratio"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {v!r}")
        for name in ("freq_bin_size", "time_bin_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if c.n_freq % self.freq_bin_size:
            raise ValueError(f"freq_bin_size {self.freq_bin_size} must divide n_freq {c.n_freq}")

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.model.sfreq))


def time_frequency_mask(n_freq: int, n_frames: int, freq_bin_size: int, freq_ratio: float, time_bin_size: int,
                        time_ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Bool ``keep`` mask ``[n_freq, n_frames]``: True where neither the frequency group nor the time bin is masked."""
    groups = n_freq // freq_bin_size
    freq_keep = torch.ones(groups, dtype=torch.bool)
    freq_keep[torch.randperm(groups, generator=generator)[: int(groups * freq_ratio)]] = False
    bins = n_frames // time_bin_size
    time_keep = torch.ones(n_frames, dtype=torch.bool)
    masked_bins = torch.randperm(bins, generator=generator)[: int(bins * time_ratio)]
    for b in masked_bins.tolist():
        time_keep[b * time_bin_size:(b + 1) * time_bin_size] = False
    return freq_keep.repeat_interleave(freq_bin_size)[:, None] & time_keep[None, :]


@torch.no_grad()
def original_codebook_init(model: TFMTokenizer, generator: Optional[torch.Generator] = None) -> None:
    """Start ``model``'s codebook as the original ``EMAVectorQuantizer`` does: ``embedding.weight`` uniform in
    ``[-1/K, 1/K]``, ``ema_w`` a copy of it, ``cluster_size`` zeros (draws from ``generator``, else the global
    RNG)."""
    if not isinstance(model, TFMTokenizer):
        raise TypeError(f"original_codebook_init needs a TFMTokenizer, got {type(model).__name__}")
    k, dim = model.quantizer.codebook_size, model.quantizer.config.code_dim
    embed = (torch.rand(k, dim, generator=generator) * 2 - 1) / k
    model.quantizer.load_codebook(embed, cluster_size=torch.zeros(k), embed_avg=embed.clone(), initted=True)


@register_recipe("tfm")
class TFMRecipe(Recipe):
    config_class = TFMRecipeConfig

    def build_model(self):
        torch.manual_seed(self.train.seed)
        model = TFMTokenizer(self.config.model)
        if self.config.original_init:
            original_codebook_init(model)
            self.notes.append("codebook started as the original's: uniform in [-1/K, 1/K], cluster sizes zero")
        return model

    def build_optimizers(self, modules):
        c = self.config
        return {"model": torch.optim.AdamW(modules["model"].parameters(), lr=c.lr, betas=tuple(c.betas),
                                           weight_decay=c.weight_decay)}

    def build_schedulers(self, optimizers):
        c = self.config
        total = max(1, self.train.max_steps)
        warm = int(total * c.warmup_fraction)
        ratio = c.final_lr / c.lr if c.lr > 0 else 1.0

        def factor(step):
            if step < warm:
                return step / max(1, warm)
            return cosine_decay((step - warm) / max(1, total - warm), ratio)

        return {"model": torch.optim.lr_scheduler.LambdaLR(optimizers["model"], factor)}

    def data_config(self):
        return DataConfig("eeg", sfreq=self.config.model.sfreq, window_samples=self.config.window_samples,
                          seed=self.train.seed, split_channels=True)

    @staticmethod
    def _waves(batch) -> torch.Tensor:
        x = batch["x"].float()  # [B, C, T]
        wave = x.reshape(-1, x.shape[-1])
        return wave / (torch.quantile(wave.abs(), 0.95, dim=-1, keepdim=True) + 1e-8)

    def training_step(self, ctx, batch) -> Dict[str, float]:
        c = self.config
        model = ctx.modules["model"]
        core: TFMTokenizer = ctx.unwrap()
        wave = self._waves(batch)
        spec = core.stft(wave)
        g = torch.Generator().manual_seed(self.train.seed * 1_000_003 + ctx.step)
        keep = time_frequency_mask(spec.shape[-2], spec.shape[-1], c.freq_bin_size, c.freq_mask_ratio,
                                   c.time_bin_size, c.time_mask_ratio, g).to(spec.device)
        out = model(spec * keep, wave)
        out_sym = model(spec * ~keep, wave)
        recon = F.mse_loss(out["recon"], spec) + F.mse_loss(out_sym["recon"], spec)
        ctx.backward(recon)
        ctx.optimizer_step("model")
        vq = sum(float(v.detach()) for o in (out, out_sym) for v in o["losses"].values())
        ids = torch.cat([out["ids"].reshape(-1), out_sym["ids"].reshape(-1)]).detach()
        return {"loss": recon.detach(), "recon_loss": float(recon.detach()), "vq_loss": vq,
                "codebook": CodebookStats.from_ids(ids, core.config.codebook_size)}

    def evaluate(self, ctx, batch) -> Dict[str, float]:
        core: TFMTokenizer = ctx.unwrap()
        wave = self._waves(batch)
        spec = core.stft(wave)
        return {"recon_loss": float(F.mse_loss(ctx.modules["model"](spec, wave)["recon"], spec))}
