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
(``train_dac_discriminator: false`` reproduces the frozen one: it is then a frozen module of the loop, kept out
of DDP/FSDP, which refuse a module without trainable parameters, and out of the optimiser).

Logged per log window: codebook utilisation and perplexity (the engine sums the quantizer's id histograms).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import torch

from audio import gan
from audio import losses as L
from audio.discriminators import DACDiscriminator, MultiPeriodDiscriminator, MultiResolutionDiscriminator
from zoo.config import ConfigBase
from zoo.train import DataConfig, Recipe, register_recipe
from zoo.train.schedules import cosine_decay

from .config import WavTokenizerConfig
from .model import SConv1d, WavTokenizer

__all__ = ["WavTokenizerRecipe", "WavTokenizerRecipeConfig", "lsuv_init"]


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
    warmup_steps: int = 0  # linear learning-rate warm-up (both optimisers) before the cosine decay
    # discriminator sizes (defaults: the original's MPD/DAC periods and HiFi-GAN period-discriminator widths);
    # smaller widths make a quick CPU run possible
    mpd_periods: tuple = (2, 3, 5, 7, 11)
    period_channels: tuple = (32, 128, 512, 1024, 1024)
    dac_periods: tuple = (2, 3, 5, 7, 11)
    dac_windows: tuple = (2048, 1024, 512)
    # generator-only warm-up: for the first N steps only mel + commitment losses train the generator and the
    # discriminators are neither run nor updated (0 = adversarial from the first step, as the original)
    discriminator_start: int = 0
    # encoder warm-up without the quantizer: for the first N steps the model trains as a plain autoencoder and
    # the codebook is k-means initialised on the first batch after that. From scratch on little data the
    # encoder's output varies far less within a clip than it drifts between steps, so a codebook initialised at
    # step 0 ends with every vector on one code; 0 = quantize from the first step, as the original
    quantizer_start: int = 0
    # "default": PyTorch's initialisation, as the original. "lsuv": before the first step, the gain ``g`` of
    # every weight-normalised encoder convolution is rescaled, in order from the input, so that its output has
    # unit standard deviation on the first training batch (layer-sequential unit-variance init, Mishkin & Matas
    # 2016; averaged over processes). PyTorch's default init shrinks the variance at every layer, so a fresh
    # SEANet encoder puts out a latent that barely varies with its input (measured on speech: time-std 0.0016
    # against a mean of 0.03); it takes the original's hundreds of thousands of steps to grow out of that, and a
    # short CPU run never does (held-out mel loss stays at the level of a stationary spectrum)
    encoder_init: str = "default"

    def __post_init__(self):
        if self.encoder_init not in ("default", "lsuv"):
            raise ValueError(f"encoder_init must be 'default' or 'lsuv', got {self.encoder_init!r}")
        if isinstance(self.segment_samples, bool) or not isinstance(self.segment_samples, int) \
                or self.segment_samples < self.model.hop_length:
            raise ValueError(f"segment_samples must be an int >= hop_length {self.model.hop_length}, "
                             f"got {self.segment_samples!r}")
        for name in ("lr", "mel_loss_coeff", "mrd_loss_coeff", "commit_loss_coeff", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        if isinstance(self.quantizer_start, bool) or not isinstance(self.quantizer_start, int) \
                or self.quantizer_start < 0:
            raise ValueError(f"quantizer_start must be an int >= 0, got {self.quantizer_start!r}")
        if isinstance(self.discriminator_start, bool) or not isinstance(self.discriminator_start, int) \
                or self.discriminator_start < 0:
            raise ValueError(f"discriminator_start must be an int >= 0, got {self.discriminator_start!r}")
        for name in ("mpd_periods", "period_channels", "dac_periods", "dac_windows"):
            v = getattr(self, name)
            if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)) \
                    or any(isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in v):
                raise ValueError(f"{name} must be a list of positive ints, got {v!r}")
            setattr(self, name, tuple(v))
        if not self.mpd_periods or not self.period_channels:
            raise ValueError("mpd_periods and period_channels must not be empty")


@torch.no_grad()
def lsuv_init(encoder: torch.nn.Module, x: torch.Tensor, target: float = 1.0) -> List[float]:
    """Rescale the weight-norm gain of each ``SConv1d`` of ``encoder`` (in module order) so that its output on
    ``x`` has standard deviation ``target`` (mean over channels of the per-channel std over batch and time).

    Under torch.distributed the measured stds are averaged over processes, so every replica gets the same weights.
    Returns the measured stds (before rescaling). Only the gains change; directions, biases and everything else
    stay as initialised."""
    import torch.distributed as dist

    if x.ndim == 2:
        x = x[:, None]
    measured = []
    for conv in [m for m in encoder.modules() if isinstance(m, SConv1d)]:
        seen = {}
        handle = conv.register_forward_hook(lambda mod, inp, out: seen.__setitem__("out", out))
        try:
            encoder(x)
        finally:
            handle.remove()
        std = seen["out"].float().std(dim=(0, 2)).mean()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(std)
            std = std / dist.get_world_size()
        measured.append(float(std))
        gain = conv.conv.parametrizations.weight.original0
        gain.mul_(target / std.clamp_min(1e-12).to(gain.dtype))
    return measured


@register_recipe("wavtokenizer")
class WavTokenizerRecipe(Recipe):
    config_class = WavTokenizerRecipeConfig

    def build_model(self):
        torch.manual_seed(self.train.seed)
        return WavTokenizer(self.config.model)

    def _disc_names(self) -> List[str]:
        return ["mpd", "mrd"] + (["dac"] if self.config.use_dac_discriminator else [])

    def _trained_disc_names(self) -> List[str]:
        return [n for n in self._disc_names() if n != "dac" or self.config.train_dac_discriminator]

    def build_aux_modules(self):
        n = self.config.model.adanorm_num_embeddings
        c = self.config
        mods = {"mpd": MultiPeriodDiscriminator(c.mpd_periods, num_embeddings=n, channels=c.period_channels),
                "mrd": MultiResolutionDiscriminator(num_embeddings=n)}
        if self.config.use_dac_discriminator and self.config.train_dac_discriminator:
            mods["dac"] = self._dac()
        return mods

    def _dac(self):
        c = self.config
        return DACDiscriminator(c.dac_periods, c.dac_windows, period_channels=c.period_channels)

    def build_frozen_modules(self):
        if not (self.config.use_dac_discriminator and not self.config.train_dac_discriminator):
            return {}
        self.notes.append("DAC discriminator frozen at its initial weights (as the released training code "
                          "effectively does): its terms are in the losses, its weights never change")
        return {"dac": self._dac().requires_grad_(False)}

    def build_optimizers(self, modules):
        c = self.config

        def adamw(params):
            return torch.optim.AdamW(params, lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay)

        disc = [p for name in self._trained_disc_names() for p in modules[name].parameters() if p.requires_grad]
        return {"model": adamw(modules["model"].parameters()), "disc": adamw(disc)}

    def build_schedulers(self, optimizers):
        warm = self.config.warmup_steps
        if not self.config.cosine_schedule and not warm:
            return {}
        total = max(1, self.train.max_steps)
        cosine_on = self.config.cosine_schedule

        def factor(step):
            # a codebook initialised by k-means on the first batch cannot follow an encoder that Adam moves at
            # full rate from step 1 (every vector then lands on one code): the warm-up lets it track
            w = min(1.0, (step + 1) / warm) if warm else 1.0
            return w * (cosine_decay(step / total) if cosine_on else 1.0)

        return {k: torch.optim.lr_scheduler.LambdaLR(o, factor) for k, o in optimizers.items()}

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

    def warm_start(self, model, pretrained) -> None:
        super().warm_start(model, pretrained)
        if self.config.encoder_init == "lsuv":
            # LSUV is an initialisation: an encoder copied from --init keeps its trained weights
            self._lsuv_done = True
            self.notes.append("encoder_init: lsuv not applied (the encoder is warm-started from --init)")

    def training_step(self, ctx, batch) -> Dict[str, float]:
        c = self.config
        x = batch["x"]
        if c.encoder_init == "lsuv" and ctx.step == 0 and not getattr(self, "_lsuv_done", False):
            lsuv_init(ctx.unwrap("model").encoder, x)
            self._lsuv_done = True
        bw = self._bandwidth(x.shape[0], x.device)
        y_hat, q = ctx.modules["model"](x, bandwidth_id=bw[:1], quantize=ctx.step >= c.quantizer_start)
        y_hat = y_hat[..., :x.shape[-1]]

        if ctx.step < c.discriminator_start:
            return self._warmup_step(ctx, x, y_hat, q)

        # discriminators, then the generator with them frozen (audio/gan.py, shared with the vocoder recipe)
        discs = self._discs(ctx)
        d_loss = gan.discriminator_loss(discs, x, y_hat, bw, c.mrd_loss_coeff)
        trainable = self._trained_disc_names()
        ctx.backward(d_loss)
        ctx.optimizer_step("disc", clip_modules=trainable)

        g_adv, g_fm = gan.generator_adversarial_terms(discs, x, y_hat, bw, c.mrd_loss_coeff, restore_grad=trainable)
        mel = self._mel(x.device)(x, y_hat)
        commit = q.losses.get("commitment", torch.zeros((), device=x.device))
        g_loss = g_adv + g_fm + c.mel_loss_coeff * mel + c.commit_loss_coeff * commit
        ctx.backward(g_loss)
        ctx.optimizer_step("model")
        logs = {"loss": float(g_loss.detach()), "d_loss": float(d_loss.detach()), "mel_loss": float(mel.detach()),
                "commit_loss": float(commit.detach())}
        if q.stats is not None:  # utilisation and perplexity over the log window (the engine merges these)
            logs["codebook"] = q.stats
        return logs

    def _warmup_step(self, ctx, x, y_hat, q) -> Dict[str, float]:
        """Generator-only step (mel + commitment) before ``discriminator_start``."""
        c = self.config
        mel = self._mel(x.device)(x, y_hat)
        commit = q.losses.get("commitment", torch.zeros((), device=x.device))
        g_loss = c.mel_loss_coeff * mel + c.commit_loss_coeff * commit
        ctx.backward(g_loss)
        ctx.optimizer_step("model")
        logs = {"loss": float(g_loss.detach()), "mel_loss": float(mel.detach()), "commit_loss": float(commit.detach())}
        if q.stats is not None:
            logs["codebook"] = q.stats
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
