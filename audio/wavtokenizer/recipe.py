"""WavTokenizer's GAN training recipe (``tokenzoo train wavtokenizer``).

Follows the original ``decoder/experiment.py`` (facts: ../shared/research/wavtokenizer.md section 6):
alternating steps, discriminators first. Discriminator loss = hinge(MPD) + mrd_loss_coeff x hinge(MRD) +
LSGAN(DAC). Generator loss = hinge adversarial MPD + mrd_loss_coeff x MRD, feature matching for both (divided by
the number of sub-discriminators), ``mel_loss_coeff`` (45) x mel L1, ``commit_loss_coeff`` (1000) x the VQ
commitment MSE, plus DAC LSGAN adversarial and feature matching (all maps but the logits, summed). MPD and MRD are
conditioned on the bandwidth id, drawn uniformly per batch from the AdaLN rows as the original does. AdamW
(lr 2e-4, betas 0.9/0.999, weight decay 0.01) for each side, cosine decay to 0 over ``max_steps``, no warm-up.

Deviation: the released training code wraps a DAC discriminator that its optimiser never updates (a known bug,
open PR jishengpeng/WavTokenizer#24); here the DAC discriminator is trained like the others
(``train_dac_discriminator: false`` reproduces the frozen one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List

import torch

from audio import losses as L
from audio.discriminators import DACDiscriminator, MultiPeriodDiscriminator, MultiResolutionDiscriminator
from zoo.config import ConfigBase
from zoo.train import DataConfig, Recipe, register_recipe

from .config import WavTokenizerConfig
from .model import WavTokenizer

__all__ = ["WavTokenizerRecipe", "WavTokenizerRecipeConfig"]


@dataclass
class WavTokenizerRecipeConfig(ConfigBase):
    model: WavTokenizerConfig = field(default_factory=WavTokenizerConfig)
    segment_samples: int = 72000  # 3 s crops at 24 kHz
    lr: float = 2e-4
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 0.01
    mel_loss_coeff: float = 45.0
    mrd_loss_coeff: float = 1.0
    commit_loss_coeff: float = 1000.0
    use_dac_discriminator: bool = True
    train_dac_discriminator: bool = True
    cosine_schedule: bool = True

    def __post_init__(self):
        if isinstance(self.segment_samples, bool) or not isinstance(self.segment_samples, int) \
                or self.segment_samples < self.model.hop_length:
            raise ValueError(f"segment_samples must be an int >= hop_length {self.model.hop_length}, "
                             f"got {self.segment_samples!r}")
        for name in ("lr", "mel_loss_coeff", "mrd_loss_coeff", "commit_loss_coeff", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")


@register_recipe("wavtokenizer")
class WavTokenizerRecipe(Recipe):
    config_class = WavTokenizerRecipeConfig

    def build_model(self):
        torch.manual_seed(self.train.seed)
        return WavTokenizer(self.config.model)

    def _disc_names(self) -> List[str]:
        return ["mpd", "mrd"] + (["dac"] if self.config.use_dac_discriminator else [])

    def build_aux_modules(self):
        n = self.config.model.adanorm_num_embeddings
        mods = {"mpd": MultiPeriodDiscriminator(num_embeddings=n), "mrd": MultiResolutionDiscriminator(num_embeddings=n)}
        if self.config.use_dac_discriminator:
            mods["dac"] = DACDiscriminator()
            if not self.config.train_dac_discriminator:
                mods["dac"].requires_grad_(False)
                self.notes.append("DAC discriminator frozen (as the released training code effectively does)")
        return mods

    def build_optimizers(self, modules):
        c = self.config

        def adamw(params):
            return torch.optim.AdamW(params, lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay)

        disc = [p for name in self._disc_names() for p in modules[name].parameters() if p.requires_grad]
        return {"model": adamw(modules["model"].parameters()), "disc": adamw(disc)}

    def build_schedulers(self, optimizers):
        if not self.config.cosine_schedule:
            return {}
        total = max(1, self.train.max_steps)

        def cosine(step):
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

        return {k: torch.optim.lr_scheduler.LambdaLR(o, cosine) for k, o in optimizers.items()}

    def data_config(self):
        return DataConfig("audio", sample_rate=self.config.model.sample_rate,
                          segment_samples=self.config.segment_samples, seed=self.train.seed)

    # ------------------------------------------------------------------ steps
    def _mel(self, device):
        if not hasattr(self, "_mel_loss"):
            self._mel_loss = L.MelLoss(sample_rate=self.config.model.sample_rate)
        return self._mel_loss.to(device)

    def _bandwidth(self, batch: int, device) -> torch.Tensor:
        n = self.config.model.adanorm_num_embeddings
        return torch.randint(0, n, (1,), device=device).expand(batch)

    def _discs(self, ctx):
        return [(name, ctx.modules[name]) for name in self._disc_names()]

    def training_step(self, ctx, batch) -> Dict[str, float]:
        c = self.config
        x = batch["x"]
        bw = self._bandwidth(x.shape[0], x.device)
        y_hat, q = ctx.modules["model"](x, bandwidth_id=bw[:1])
        y_hat = y_hat[..., :x.shape[-1]]

        # discriminators
        d_loss = 0.0
        for name, d in self._discs(ctx):
            real, _ = d(x, bw)
            fake, _ = d(y_hat.detach(), bw)
            if name == "dac":
                d_loss = d_loss + L.lsgan_discriminator_loss(real, fake)
            else:
                w = c.mrd_loss_coeff if name == "mrd" else 1.0
                d_loss = d_loss + w * L.hinge_discriminator_loss(real, fake)
        trainable = [n for n in self._disc_names() if n != "dac" or c.train_dac_discriminator]
        ctx.backward(d_loss)
        ctx.optimizer_step("disc", clip_modules=trainable)

        # generator (discriminator weights get no gradient from it)
        for _, d in self._discs(ctx):
            d.requires_grad_(False)
        try:
            g_adv = g_fm = 0.0
            for name, d in self._discs(ctx):
                real, f_real = d(x, bw)
                fake, f_fake = d(y_hat, bw)
                if name == "dac":
                    g_adv = g_adv + L.lsgan_generator_loss(fake)
                    g_fm = g_fm + L.feature_matching_loss(f_real, f_fake, skip_last=True, average=False)
                else:
                    w = c.mrd_loss_coeff if name == "mrd" else 1.0
                    g_adv = g_adv + w * L.hinge_generator_loss(fake)
                    g_fm = g_fm + w * L.feature_matching_loss(f_real, f_fake)
            mel = self._mel(x.device)(x, y_hat)
            commit = q.losses.get("commitment", torch.zeros((), device=x.device))
            g_loss = g_adv + g_fm + c.mel_loss_coeff * mel + c.commit_loss_coeff * commit
            ctx.backward(g_loss)
        finally:
            for name, d in self._discs(ctx):
                if name != "dac" or c.train_dac_discriminator:
                    d.requires_grad_(True)
        ctx.optimizer_step("model")
        util = q.stats.utilization if q.stats is not None else None
        logs = {"loss": float(g_loss.detach()), "d_loss": float(d_loss.detach()), "mel_loss": float(mel.detach()),
                "commit_loss": float(commit.detach())}
        if util is not None:
            logs["utilization"] = float(util[0] if torch.is_tensor(util) and util.ndim else util)
        return logs

    def evaluate(self, ctx, batch) -> Dict[str, float]:
        x = batch["x"]
        model = ctx.unwrap("model")
        if not model.quantizer.initted:
            # before the first training step the codebook has not been k-means initialised yet: report the
            # held-out loss of the unquantised autoencoder
            z = model.encoder(x)
            y_hat = model.head(model.backbone(z, 0))[:, None]
            commit = 0.0
        else:
            y_hat, q = ctx.modules["model"](x, bandwidth_id=0)
            commit = float(q.losses.get("commitment", torch.zeros(())))
        mel = self._mel(x.device)(x, y_hat[..., :x.shape[-1]])
        return {"recon_loss": float(mel), "commit_loss": commit}
