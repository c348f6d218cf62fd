"""TiTok training recipes (``tokenzoo train titok``).

Facts from ../shared/research/titok.md section 5 and the reference's ``modeling/modules/losses.py``.

Three stages, chosen with ``stage``:

- ``"single"`` (default; the vq8k / vae_c16 recipe, ``ReconstructionLoss_Single_Stage``): from scratch, a
  non-legacy TiTok (``is_legacy=False, finetune_decoder=False``). Generator loss =
  ``reconstruction_weight x L2`` (or L1) + ``perceptual_weight`` (1.1) x LPIPS (only when the user supplies the
  LPIPS backbone weights, see :func:`zoo.metrics.image.lpips_backbone_path`; otherwise the run trains without it
  and says so in ``recipe.notes``) + ``quantizer_weight`` (1.0) x (commitment + codebook) + from
  ``discriminator_start`` (200k) on ``discriminator_weight`` (0.1) x hinge generator loss. The discriminator
  (:class:`NLayerDiscriminator`) is trained with the hinge loss + ``lecam_weight`` (0.001) x LeCam
  (EMA decay 0.999). VAE models replace the quantizer term by ``kl_weight`` (1e-6) x KL (summed over latents,
  averaged over the batch; logvar of the likelihood fixed at 0).
- ``"stage1"`` (proxy codes): a two-stage TiTok (``is_legacy=True, finetune_decoder=True``) learns to predict the
  MaskGIT-VQGAN teacher's 16x16 codes: cross-entropy of the decoder's proxy logits against the teacher's ids +
  ``quantizer_weight`` x VQ loss. The teacher (``teacher``: the released ``maskgit-vqgan-imagenet-f16-256.bin``)
  is loaded with :func:`image.titok.load_maskgit_vqgan`; its decoder and codebook are copied into the model's
  ``pixel_decoder`` / ``pixel_quantize`` (frozen here) so the exported model decodes to pixels at once.
- ``"stage2"`` (decoder fine-tuning, start with ``--init`` from a stage-1 run): encoder, latent tokens and
  quantizer frozen; decoder + pixel decoder trained with the pixel losses above. The settings left unset take
  the original's stage-2 values (:data:`STAGE_DEFAULTS`): perceptual 0.1, discriminator 0.01 from step 20k,
  quantizer 0, betas (0.9, 0.999), 5k warm-up steps (the original trains 500k steps: ``train.max_steps``).

Optimiser: AdamW (lr 1e-4, betas 0.9/0.99 -- 0.9/0.999 in stage 2 --, weight decay 1e-4 except on biases, norms,
embeddings and latent tokens), linear warm-up (10k; 5k in stage 2) then cosine to ``end_lr`` (1e-5); the
discriminator has its own AdamW.

Whether the perceptual term can run (LPIPS needs the ``lpips`` package and the user's backbone weights) is decided
when the model is built: the loop prints the recipe's notes at start and records them in ``training.json`` at
every checkpoint. Codebook utilisation and perplexity are logged over each log window in every stage (all three
quantize: stage 2 through the frozen quantizer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from zoo.config import ConfigBase
from zoo.train import DataConfig, Recipe, register_recipe
from zoo.train.schedules import cosine_decay

from .config import TiTokConfig, ViTSize
from .model import TiTok

__all__ = ["NLayerDiscriminator", "TiTokRecipe", "TiTokRecipeConfig", "default_single_stage_model"]

STAGES = ("single", "stage1", "stage2")
# the original's settings per stage (../shared/research/titok.md section 5), for the fields a config leaves unset
_SINGLE = dict(perceptual_weight=1.1, discriminator_weight=0.1, discriminator_start=200_000, quantizer_weight=1.0,
               betas=(0.9, 0.99), warmup_steps=10_000)
STAGE_DEFAULTS = {
    "single": _SINGLE,
    "stage1": _SINGLE,  # proxy-code cross-entropy + quantizer_weight x VQ loss; no pixel, perceptual or GAN terms
    "stage2": dict(perceptual_weight=0.1, discriminator_weight=0.01, discriminator_start=20_000, quantizer_weight=0.0,
                   betas=(0.9, 0.999), warmup_steps=5_000),
}


def default_single_stage_model() -> TiTokConfig:
    """TiTok-BL-64-VQ style single-stage model (base ViTs, 64 tokens, 8192 x 64 codes, no pixel decoder)."""
    return TiTokConfig(encoder=ViTSize.named("base"), decoder=ViTSize.named("large"), num_latent_tokens=64,
                       token_size=64, codebook_size=8192, use_l2_norm=False, is_legacy=False,
                       finetune_decoder=False)


# ---------------------------------------------------------------------------------------------- discriminator
class _Blur(nn.Module):
    """Depthwise stride-2 blur with the separable kernel (1, 3, 3, 1)/8, TF 'same' padding for a 4-tap filter."""

    def __init__(self):
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        k2 = k[:, None] * k[None, :]
        self.register_buffer("kernel", (k2 / k2.sum())[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph = max((math.ceil(h / 2) - 1) * 2 + 4 - h, 0)
        pw = max((math.ceil(w / 2) - 1) * 2 + 4 - w, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        c = x.shape[1]
        return F.conv2d(x, self.kernel.to(x.dtype).expand(c, 1, 4, 4), stride=2, groups=c)


class NLayerDiscriminator(nn.Module):
    """TiTok's patch discriminator: 5x5 conv + LeakyReLU(0.1); ``num_stages`` x (3x3 conv doubling channels,
    blur downsample, GroupNorm(32), LeakyReLU); adaptive max-pool to 16x16; 1x1 conv, LeakyReLU, 5x5 conv -> 1
    logit map. All convolutions are stride 1 with 'same' padding (odd kernels: ``k // 2``)."""

    def __init__(self, channels: int = 3, hidden: int = 128, num_stages: int = 3, pool: int = 16):
        super().__init__()
        for name, v in (("channels", channels), ("hidden", hidden), ("num_stages", num_stages), ("pool", pool)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"NLayerDiscriminator: {name} must be a positive int, got {v!r}")
        if hidden % 32:
            raise ValueError(f"NLayerDiscriminator: hidden must be a multiple of 32 (GroupNorm(32)), got {hidden}")
        act = lambda: nn.LeakyReLU(0.1)  # noqa: E731
        self.block_in = nn.Sequential(nn.Conv2d(channels, hidden, 5, padding=2), act())
        blocks = []
        ch = hidden
        for i in range(num_stages):
            out = hidden * 2 ** i
            blocks.append(nn.Sequential(nn.Conv2d(ch, out, 3, padding=1), _Blur(), nn.GroupNorm(32, out), act()))
            ch = out
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveMaxPool2d((pool, pool))
        self.to_logits = nn.Sequential(nn.Conv2d(ch, ch, 1), act(), nn.Conv2d(ch, 1, 5, padding=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"NLayerDiscriminator expects images [B, C, H, W], got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        h = self.block_in(x)
        for b in self.blocks:
            h = b(h)
        return self.to_logits(self.pool(h))


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())


def lecam_loss(real_mean, fake_mean, ema_real, ema_fake) -> torch.Tensor:
    return F.relu(real_mean - ema_fake).pow(2).mean() + F.relu(ema_real - fake_mean).pow(2).mean()


# ---------------------------------------------------------------------------------------------- config
@dataclass
class TiTokRecipeConfig(ConfigBase):
    model: TiTokConfig = field(default_factory=default_single_stage_model)
    stage: str = "single"
    teacher: Optional[str] = None  # MaskGIT-VQGAN .bin (stage1; stage2 optional: re-copies the pixel decoder)
    reconstruction_loss: str = "l2"
    reconstruction_weight: float = 1.0
    # None: the stage's original value (STAGE_DEFAULTS), filled in when the config is built
    quantizer_weight: Optional[float] = None
    perceptual_weight: Optional[float] = None
    lpips_net: str = "vgg"
    discriminator_weight: Optional[float] = None
    discriminator_start: Optional[int] = None
    discriminator_channels: int = 128
    discriminator_stages: int = 3
    lecam_weight: float = 0.001
    lecam_ema_decay: float = 0.999
    kl_weight: float = 1e-6
    lr: float = 1e-4
    discriminator_lr: float = 1e-4
    betas: Optional[tuple] = None
    weight_decay: float = 1e-4
    warmup_steps: Optional[int] = None
    end_lr: float = 1e-5

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = TiTokConfig.from_dict(self.model)
        if not isinstance(self.model, TiTokConfig):
            raise TypeError(f"recipe.model must be a TiTokConfig or dict, got {type(self.model).__name__}")
        if self.stage not in STAGES:
            raise ValueError(f"recipe.stage must be one of {STAGES}, got {self.stage!r}")
        for name, value in STAGE_DEFAULTS[self.stage].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.reconstruction_loss not in ("l1", "l2"):
            raise ValueError(f"recipe.reconstruction_loss must be 'l1' or 'l2', got {self.reconstruction_loss!r}")
        for name in ("reconstruction_weight", "quantizer_weight", "perceptual_weight", "discriminator_weight",
                     "lecam_weight", "kl_weight", "lr", "discriminator_lr", "weight_decay", "end_lr"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"recipe.{name} must be a number >= 0, got {v!r}")
        for name in ("discriminator_start", "warmup_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"recipe.{name} must be an int >= 0, got {v!r}")
        if not 0 < self.lecam_ema_decay < 1:
            raise ValueError(f"recipe.lecam_ema_decay must lie in (0, 1), got {self.lecam_ema_decay}")
        if isinstance(self.betas, (str, bytes)) or not isinstance(self.betas, (list, tuple)) \
                or any(isinstance(b, bool) or not isinstance(b, (int, float)) for b in self.betas):
            raise ValueError(f"recipe.betas must be two numbers, got {self.betas!r}")
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2:
            raise ValueError(f"recipe.betas must be two numbers, got {self.betas}")
        m = self.model
        if self.stage == "single" and (m.is_legacy or m.finetune_decoder):
            raise ValueError("recipe.stage 'single' trains a single-stage TiTok: set model.is_legacy and "
                             "model.finetune_decoder to false (two-stage models use stage1 then stage2)")
        if self.stage in ("stage1", "stage2"):
            if not (m.discrete and m.is_legacy and m.finetune_decoder):
                raise ValueError(f"recipe.stage {self.stage!r} needs a two-stage VQ TiTok (quantize_mode 'vq', "
                                 "is_legacy and finetune_decoder true)")
        if self.stage == "stage1" and not self.teacher:
            raise ValueError("recipe.stage 'stage1' needs recipe.teacher: the MaskGIT-VQGAN .bin "
                             "(maskgit-vqgan-imagenet-f16-256.bin) whose codes are the proxy targets")


# ---------------------------------------------------------------------------------------------- recipe
def _no_decay(name: str, p: torch.Tensor) -> bool:
    # the reference excludes biases, norms, embeddings, latent tokens and the mask token from weight decay
    return p.ndim < 2 or any(s in name for s in ("bias", "ln", "norm", "embed", "latent_tokens", "mask_token",
                                                 "gamma", "codebook"))


@register_recipe("titok")
class TiTokRecipe(Recipe):
    config_class = TiTokRecipeConfig

    def __init__(self, config, train):
        super().__init__(config, train)
        self.teacher = None
        self._lpips = None
        self._lpips_checked = False

    # ------------------------------------------------------------------ building
    def _load_teacher(self):
        if self.teacher is None and self.config.teacher:
            from .convert import load_maskgit_vqgan

            self.teacher = load_maskgit_vqgan(self.config.teacher)
        if self.teacher is not None:
            self.teacher.eval().requires_grad_(False)
        return self.teacher

    def _copy_teacher_into(self, model: TiTok) -> None:
        t = self._load_teacher()
        if t is None:
            return
        if t.config.num_embeddings != model.config.pixel_vqgan.num_embeddings or \
                t.decoder.state_dict().keys() != model.pixel_decoder.state_dict().keys():
            raise ValueError("the MaskGIT-VQGAN teacher does not match model.pixel_vqgan (codebook size or decoder "
                             "layout differ)")
        model.pixel_decoder.load_state_dict(t.decoder.state_dict())
        model.pixel_quantize.load_state_dict(t.quantize.state_dict())

    def build_model(self) -> nn.Module:
        self._setup_perceptual()
        torch.manual_seed(self.train.seed)
        model = TiTok(self.config.model)
        if self.config.stage in ("stage1", "stage2"):
            self._copy_teacher_into(model)
        self._freeze(model)
        return model

    def warm_start(self, model, pretrained) -> None:
        super().warm_start(model, pretrained)
        if self.config.stage == "stage2" and self.config.teacher:
            self.notes.append("stage2: pixel decoder re-initialised from the teacher .bin after --init")
            self._copy_teacher_into(model)
        self._freeze(model)

    def _freeze(self, model: TiTok) -> None:
        model.requires_grad_(True)
        stage = self.config.stage
        if stage == "stage1":
            model.pixel_decoder.requires_grad_(False)
            model.pixel_quantize.requires_grad_(False)
        elif stage == "stage2":
            model.encoder.requires_grad_(False)
            model.latent_tokens.requires_grad_(False)
            model.quantize.requires_grad_(False)

    def _uses_gan(self) -> bool:
        return self.config.stage != "stage1" and self.config.discriminator_weight > 0

    def build_aux_modules(self) -> Dict[str, nn.Module]:
        if not self._uses_gan():
            return {}
        c = self.config
        disc = NLayerDiscriminator(self.config.model.pixel_vqgan.num_channels if self.config.model.pixel_vqgan
                                   else 3, c.discriminator_channels, c.discriminator_stages)
        disc.register_buffer("ema_real", torch.zeros(1))
        disc.register_buffer("ema_fake", torch.zeros(1))
        return {"disc": disc}

    def build_optimizers(self, modules):
        c = self.config
        decay, no_decay = [], []
        for n, p in modules["model"].named_parameters():
            if p.requires_grad:
                (no_decay if _no_decay(n, p) else decay).append(p)
        groups = [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        opts = {"model": torch.optim.AdamW(groups, lr=c.lr, betas=c.betas)}
        if "disc" in modules:
            opts["disc"] = torch.optim.AdamW(modules["disc"].parameters(), lr=c.discriminator_lr, betas=c.betas,
                                             weight_decay=c.weight_decay)
        return opts

    def build_schedulers(self, optimizers):
        c, total = self.config, max(1, self.train.max_steps)

        def factory(base_lr):
            floor = min(c.end_lr / base_lr, 1.0) if base_lr > 0 else 0.0

            def lam(step):
                if step < c.warmup_steps:
                    return (step + 1) / c.warmup_steps
                return cosine_decay((step - c.warmup_steps) / max(1, total - c.warmup_steps), floor)
            return lam

        lrs = {"model": c.lr, "disc": c.discriminator_lr}
        return {k: torch.optim.lr_scheduler.LambdaLR(o, factory(lrs[k])) for k, o in optimizers.items()}

    def data_config(self) -> DataConfig:
        return DataConfig("image", image_size=self.config.model.image_size, seed=self.train.seed)

    # ------------------------------------------------------------------ losses
    def _setup_perceptual(self) -> None:
        """Decide once, when the model is built, whether the perceptual term runs; say which in ``notes``."""
        if self._lpips_checked:
            return
        self._lpips_checked = True
        if self.config.perceptual_weight > 0 and self.config.stage != "stage1":
            from zoo.metrics.image import lpips_backbone_path

            path = lpips_backbone_path(self.config.lpips_net)
            try:
                import lpips as lpips_lib
            except ImportError:
                lpips_lib = None
            if lpips_lib is None or not path.is_file():
                self.notes.append(f"perceptual loss disabled: LPIPS ({self.config.lpips_net}) needs the `lpips` "
                                  f"package and the torchvision weights {path}; trained without it")
            else:
                self._lpips = lpips_lib.LPIPS(net=self.config.lpips_net, verbose=False).eval()
                self._lpips.requires_grad_(False)
                self.notes.append(f"perceptual loss: LPIPS-{self.config.lpips_net} x "
                                  f"{self.config.perceptual_weight} (the reference's ConvNeXt-S logit term is "
                                  "not included)")

    def _perceptual(self, x, y):
        self._setup_perceptual()
        if self._lpips is None:
            return torch.zeros((), device=x.device)
        self._lpips.to(x.device)
        return self._lpips(x * 2 - 1, y * 2 - 1).mean()

    def _recon(self, x, y):
        f = F.mse_loss if self.config.reconstruction_loss == "l2" else F.l1_loss
        return f(y.float(), x.float())

    def _teacher_ids(self, x):
        t = self._load_teacher().to(x.device)
        with torch.no_grad():
            return t._encode(x.float()).ids  # [B, g*g] row-major

    def training_step(self, ctx, batch) -> Dict[str, float]:
        c = self.config
        x = batch["x"]
        model = ctx.modules["model"]
        if c.stage == "stage1":
            out = model(x, proxy_only=True)
            logits = out["proxy_logits"]
            target = self._teacher_ids(x)
            ce = F.cross_entropy(logits.flatten(2).float(), target)
            qloss = out["commitment"] + out["codebook"]
            loss = ce + c.quantizer_weight * qloss
            ctx.backward(loss)
            ctx.optimizer_step("model")
            return {"loss": float(loss.detach()), "proxy_ce": float(ce.detach()), "quantizer_loss": float(qloss.detach()),
                    "proxy_accuracy": float((logits.argmax(1).flatten(1) == target).float().mean()),
                    "codebook": self._codebook_stats(out)}

        out = model(x)
        y = out["reconstruction"].float()
        gan_on = self._uses_gan() and ctx.step >= c.discriminator_start
        logs: Dict[str, float] = {}
        # discriminator step (hinge + LeCam), only once the adversarial term is active
        if gan_on:
            disc = ctx.modules["disc"]
            d = ctx.unwrap("disc")
            real, fake = disc(x), disc(y.detach())
            d_loss = hinge_d_loss(real, fake)
            if c.lecam_weight > 0:
                lc = lecam_loss(real.mean(), fake.mean(), d.ema_real, d.ema_fake)
                d_loss = d_loss + c.lecam_weight * lc
                logs["lecam_loss"] = float(lc.detach())
                with torch.no_grad():
                    d.ema_real.mul_(c.lecam_ema_decay).add_((1 - c.lecam_ema_decay) * real.mean().detach())
                    d.ema_fake.mul_(c.lecam_ema_decay).add_((1 - c.lecam_ema_decay) * fake.mean().detach())
            ctx.backward(d_loss)
            ctx.optimizer_step("disc", clip_modules=["disc"])
            logs["d_loss"] = float(d_loss.detach())
        # generator
        recon = self._recon(x, y) * c.reconstruction_weight
        perc = self._perceptual(x, y)
        loss = recon + c.perceptual_weight * perc
        if c.model.discrete:
            qloss = out["commitment"] + out["codebook"]
            loss = loss + c.quantizer_weight * qloss
            logs["quantizer_loss"] = float(qloss.detach())
        else:
            kl = out["kl"].sum() / out["kl"].shape[0]
            loss = loss + c.kl_weight * kl
            logs["kl_loss"] = float(kl.detach())
        if gan_on:
            disc = ctx.modules["disc"]
            disc.requires_grad_(False)
            try:
                g_loss = -disc(y).mean()
                loss = loss + c.discriminator_weight * g_loss
            finally:
                disc.requires_grad_(True)
            logs["g_loss"] = float(g_loss.detach())
        ctx.backward(loss)
        ctx.optimizer_step("model")
        logs.update(loss=float(loss.detach()), recon_loss=float(recon.detach()), perceptual_loss=float(perc.detach()))
        if c.model.discrete:  # utilisation and perplexity over the log window (the engine merges these)
            logs["codebook"] = self._codebook_stats(out)
        return logs

    def _codebook_stats(self, out):
        from zoo.quantizers.stats import CodebookStats

        return CodebookStats.from_ids(out["ids"].detach(), self.config.model.codebook_size)

    def evaluate(self, ctx, batch) -> Dict[str, float]:
        x = batch["x"]
        core = ctx.unwrap("model")
        if self.config.stage == "stage1":
            z = core.quantize(core.encoder_forward(x).float()).quantized
            logits = core.proxy_logits(z)
            target = self._teacher_ids(x)
            ce = F.cross_entropy(logits.flatten(2).float(), target)
            pixels = core.decoder_forward(z).float()
            return {"recon_loss": float(ce), "pixel_mse": float(F.mse_loss(pixels, x))}
        if self.config.model.discrete:
            z = core.quantize(core.encoder_forward(x).float()).quantized
        else:
            z = core._split_moments(core.encoder_forward(x))[0]
        y = core.decoder_forward(z).float()
        return {"recon_loss": float(self._recon(x, y)), "mse": float(F.mse_loss(y, x))}
