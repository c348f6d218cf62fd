"""FlexTok training recipe on the shared loop (``tokenzoo train flextok``).

FlexTok's authors released no training code (research note "Training"; upstream issues #2, #9). What this
recipe does, following the paper (arXiv 2502.13967) and the released configs' training-only entries:

- images ([0, 1] from the data loader) -> [-1, 1] -> the **frozen** VAE -> scaled latents ``x0`` (posterior mode
  times the scaling factor, as at inference);
- encoder -> register latents -> FSQ with the straight-through round (``zoo.quantizers.FSQ``);
- rectified flow as in the release's ``MinRFNoiseModule``: ``sigma = sigmoid(n)``, ``n ~ N(0, 1)`` (logit-normal,
  ``ln: true``), ``x_t = sigma * eps + (1 - sigma) * x0``, model time = ``sigma``, target velocity ``eps - x0``,
  mean squared error (the sampler integrates ``x <- x - v / T`` from t = 1 to 0, consistent with this target);
- nested dropout over the decoder's registers: per image ``keep_k`` drawn from {1 .. n} ("uniform"), powers of
  two ("pow2") or uniform over the powers of two ("uniform_pow2"), positions ``>= keep_k`` replaced by the
  learned mask token, so every prefix length decodes;
- classifier-free-guidance dropout: with probability ``cfg_dropout_prob`` (default: the null-condition module's
  ``dropout_prob`` in the model config) all registers of an image become the null condition;
- REPA (representation alignment): decoder layer-``intermediate_layers[0]`` patch features -> an MLP projector ->
  negative cosine similarity with a frozen vision encoder's patch features, **only when the user supplies that
  encoder's weights** (``repa_weights``); otherwise the term is off and the fact is recorded in ``recipe.notes``.
  The paper aligns with DINOv2-L; here the target encoder is a torchvision ``VisionTransformer`` built from
  ``repa_arch`` (see docs/models/flextok.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.config import ConfigBase
from zoo.train import DataConfig, Recipe, register_recipe
from zoo.train.schedules import cosine_decay
from zoo.train.distributed import average_gradients, item_generators, per_item

from .config import FlexTokConfig, official_config
from .model import FlexTok, FlexTransformer, SequenceUnpacker, _get

__all__ = ["FlexTokRecipeConfig", "FlexTokRecipe", "flow_matching_loss", "sample_keep_k", "RepaTarget"]

KEEP_K_MODES = ("uniform", "pow2", "uniform_pow2")
#: diffusers' AutoencoderKL default, used when a VAE release's config.json has no scaling_factor
DIFFUSERS_SCALING_FACTOR = 0.18215
#: torchvision VisionTransformer arguments of ViT-B/16 (the default target when only ``repa_weights`` is given)
VIT_B16 = {"image_size": 224, "patch_size": 16, "num_layers": 12, "num_heads": 12, "hidden_dim": 768,
           "mlp_dim": 3072}
# ImageNet statistics: the normalisation torchvision's and DINOv2's ViTs were trained with
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


@dataclass
class FlexTokRecipeConfig(ConfigBase):
    """The ``recipe:`` section. ``model``: a full :class:`FlexTokConfig` (default: the paper's d18-d28).
    ``architecture``: instead of ``model``, keyword arguments of :func:`image.flextok.official_config` (e.g.
    ``{enc_depth: 12, enc_dim: 768, dec_depth: 12, dec_dim: 768}``); with ``vae_weights`` the VAE architecture,
    latent channels and scaling factor are then taken from that VAE release.

    lr / betas / weight_decay / warmup_steps: AdamW with linear warm-up (paper: AdamW; the exact values here are
    this recipe's choice). final_lr: None keeps ``lr`` constant after the warm-up; a value decays it to
    ``final_lr`` with a half cosine over the remaining steps of ``train.max_steps``.
    keep_k_mode: nested-dropout sampling ("uniform" | "pow2" | "uniform_pow2").
    cfg_dropout_prob: null-condition probability (None = the model config's ``dropout_prob``).
    vae_weights: the frozen VAE's weights (a ``FlexTok.from_official``-loadable diffusers folder or
    ``.safetensors``); None keeps the VAE of the model config as built (random unless warm-started with
    ``--init``), recorded in the notes. repa_weights / repa_arch / repa_weight / repa_proj_dim: the REPA term
    (off, and recorded, without repa_weights or with repa_weight 0).
    """

    model: FlexTokConfig = field(default_factory=FlexTokConfig)
    architecture: Optional[Dict[str, Any]] = None
    lr: float = 1e-4
    betas: tuple = (0.9, 0.99)
    weight_decay: float = 0.05
    warmup_steps: int = 0
    final_lr: Optional[float] = None
    keep_k_mode: str = "uniform"
    cfg_dropout_prob: Optional[float] = None
    vae_weights: Optional[str] = None
    repa_weights: Optional[str] = None
    repa_arch: Dict[str, Any] = field(default_factory=lambda: dict(VIT_B16))
    repa_weight: float = 1.0
    repa_proj_dim: int = 2048

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = FlexTokConfig.from_dict(self.model)
        if self.architecture is not None:
            if not isinstance(self.architecture, dict):
                raise TypeError(f"recipe.architecture must be a mapping of official_config arguments, got "
                                f"{type(self.architecture).__name__}")
            import inspect

            known = set(inspect.signature(official_config).parameters)
            unknown = sorted(set(self.architecture) - known)
            if unknown:
                raise ValueError(f"recipe.architecture: unknown arguments {unknown}; known: {sorted(known)}")
            if self.vae_weights is None:
                self.model = FlexTokConfig.from_official(official_config(**self.architecture))
            else:  # the VAE release fixes its architecture, latent channels and scaling factor
                if not isinstance(self.vae_weights, str):
                    raise TypeError(f"recipe.vae_weights must be a path string or null, got "
                                    f"{type(self.vae_weights).__name__}")
                ae = vae_release_config(self.vae_weights)
                arch = {**self.architecture, "latent_channels": int(ae["latent_channels"]),
                        "scaling_factor": float(ae.get("scaling_factor", DIFFUSERS_SCALING_FACTOR))}
                self.model = FlexTokConfig.from_official(official_config(**arch), ae)
        if not isinstance(self.model, FlexTokConfig):
            raise TypeError(f"recipe.model must be a FlexTokConfig or mapping, got {type(self.model).__name__}")
        for name in ("lr", "weight_decay", "repa_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"recipe.{name} must be a finite number >= 0, got {v!r}")
        if self.lr <= 0:
            raise ValueError(f"recipe.lr must be > 0, got {self.lr}")
        if (not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2
                or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas)):
            raise ValueError(f"recipe.betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = tuple(float(b) for b in self.betas)
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"recipe.warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        if self.final_lr is not None and (isinstance(self.final_lr, bool) or not isinstance(self.final_lr, (int, float))
                                          or not 0 <= self.final_lr <= self.lr):
            raise ValueError(f"recipe.final_lr must be None or a number in [0, lr={self.lr}], got {self.final_lr!r}")
        if self.keep_k_mode not in KEEP_K_MODES:
            raise ValueError(f"recipe.keep_k_mode must be one of {KEEP_K_MODES}, got {self.keep_k_mode!r}")
        if self.cfg_dropout_prob is not None and (isinstance(self.cfg_dropout_prob, bool)
                                                  or not isinstance(self.cfg_dropout_prob, (int, float))
                                                  or not 0 <= self.cfg_dropout_prob < 1):
            raise ValueError(f"recipe.cfg_dropout_prob must lie in [0, 1), got {self.cfg_dropout_prob!r}")
        for name in ("vae_weights", "repa_weights"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise TypeError(f"recipe.{name} must be a path string or null, got {type(v).__name__}")
        if not isinstance(self.repa_arch, dict):
            raise TypeError(f"recipe.repa_arch must be a mapping of VisionTransformer arguments, got "
                            f"{type(self.repa_arch).__name__}")
        missing = sorted(set(VIT_B16) - set(self.repa_arch))
        if missing:
            raise ValueError(f"recipe.repa_arch lacks {missing} (VisionTransformer arguments)")
        if isinstance(self.repa_proj_dim, bool) or not isinstance(self.repa_proj_dim, int) or self.repa_proj_dim < 1:
            raise ValueError(f"recipe.repa_proj_dim must be a positive int, got {self.repa_proj_dim!r}")

    @property
    def null_prob(self) -> float:
        if self.cfg_dropout_prob is not None:
            return float(self.cfg_dropout_prob)
        nulls = [m for m in self.model.decoder if m["_target_"].endswith(("LearnedNullCond", "ZeroNullCond"))]
        return float(nulls[0].get("dropout_prob", 0.0)) if nulls else 0.0


# ============================================================================================== pieces


def vae_release_config(vae_weights: str) -> Dict[str, Any]:
    """The diffusers ``AutoencoderKL`` config (``config.json``) of a FlexTok VAE release given as ``vae_weights``:
    its folder, or its ``diffusion_pytorch_model.safetensors`` with ``config.json`` beside it."""
    import json

    path = Path(vae_weights)
    cfg = path / "config.json" if path.is_dir() else path.parent / "config.json"
    if not path.exists():
        raise ValueError(f"recipe.vae_weights {vae_weights}: no such file or folder")
    if not cfg.is_file():
        raise ValueError(f"recipe.vae_weights {vae_weights}: no config.json (a FlexTok VAE release is a diffusers "
                         "folder: config.json + diffusion_pytorch_model.safetensors)")
    try:
        ae = json.loads(cfg.read_text())
    except ValueError as exc:
        raise ValueError(f"recipe.vae_weights: {cfg} is not valid JSON: {exc}") from exc
    if not isinstance(ae, dict) or ae.get("_class_name", "AutoencoderKL") != "AutoencoderKL" \
            or "latent_channels" not in ae:
        raise ValueError(f"recipe.vae_weights: {cfg} is not a diffusers AutoencoderKL config (the FlexTok VAE format)")
    return ae


def sample_keep_k(n: int, batch: int, mode: str, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Per-image number of kept registers ``[batch]`` in ``[1, n]``.

    uniform: uniform over {1 .. n}; pow2: uniform over {1, 2, 4, ..} plus n itself when n is not a power of two;
    uniform_pow2: half the images uniform, half pow2 (paper's options, MaskedNestedDropout ``size_sampling_mode``).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if mode not in KEEP_K_MODES:
        raise ValueError(f"mode must be one of {KEEP_K_MODES}, got {mode!r}")
    uni = torch.randint(1, n + 1, (batch,), generator=generator)
    pows = [2 ** i for i in range(int(math.log2(n)) + 1)]
    if pows[-1] != n:
        pows.append(n)
    pw = torch.tensor(pows)[torch.randint(0, len(pows), (batch,), generator=generator)]
    if mode == "uniform":
        return uni
    if mode == "pow2":
        return pw
    pick = torch.rand(batch, generator=generator) < 0.5
    return torch.where(pick, uni, pw)


class RepaTarget(nn.Module):
    """Frozen vision encoder (torchvision ``VisionTransformer``) whose patch tokens REPA aligns with."""

    def __init__(self, arch: Dict[str, Any], weights: str):
        super().__init__()
        from torchvision.models.vision_transformer import VisionTransformer

        path = Path(weights)
        if not path.is_file():
            raise ValueError(f"repa_weights {weights} is not a file")
        try:
            self.vit = VisionTransformer(**{k: int(v) for k, v in arch.items()})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cannot build the REPA VisionTransformer from repa_arch {arch}: {exc}") from exc
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        from zoo.registry import load_state_strict

        load_state_strict(self.vit, state, source=f"repa_weights {path.name}")
        self.vit.eval().requires_grad_(False)
        self.dim = int(arch["hidden_dim"])
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vit.eval()
        return self

    @torch.no_grad()
    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        """Patch features ``[B, h, w, D]`` of images in [0, 1] (resized to the ViT's input size)."""
        s = self.vit.image_size
        x = F.interpolate(images01, size=(s, s), mode="bicubic", align_corners=False)
        x = (x - self.mean) / self.std
        tok = self.vit._process_input(x)
        cls = self.vit.class_token.expand(tok.shape[0], -1, -1)
        tok = self.vit.encoder(torch.cat([cls, tok], dim=1))[:, 1:]
        g = s // self.vit.patch_size
        return tok.reshape(tok.shape[0], g, g, -1)


def _repa_projector(dim_in: int, hidden: int, dim_out: int) -> nn.Module:
    # REPA's projector: a 3-layer SiLU MLP (arXiv 2410.06940); its size in FlexTok is not released
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, dim_out))


def flow_matching_loss(model: FlexTok, images: torch.Tensor, keep_k: torch.Tensor, null: torch.Tensor,
                       generator: Optional[torch.Generator] = None, sigma: Optional[torch.Tensor] = None,
                       generators: Optional[Sequence[torch.Generator]] = None) -> Dict[str, Any]:
    """Rectified-flow loss of ``model`` on ``images`` ``[B, 3, H, W]`` in [-1, 1].

    keep_k ``[B]``: registers kept per image; null ``[B]`` bool: null-condition images; sigma ``[B]``: noise levels
    (None = ``sigmoid(N(0, 1))``). Noise is drawn from ``generators`` (one per image, see
    :func:`zoo.train.item_generators`; batch-split invariant) when given, else from ``generator``. Returns ``loss`` (MSE to ``eps - x0``), ``ids`` ``[B, n]``, ``repa_feats``
    (decoder intermediate patch features ``[B, h, w, D]`` or None) and ``x0``.
    """
    if not isinstance(model, FlexTok):
        raise TypeError(f"model must be a FlexTok, got {type(model).__name__}")
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a [B, 3, H, W] tensor, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    b = images.shape[0]
    dev = images.device
    with torch.no_grad():  # the VAE is frozen (``frozen: true`` in every release)
        x0 = model.encode_latents(images)
    d = model.encoder({model.keys["latents"]: x0})
    z = _get(d, model.keys["enc_latents"], "regularizer")
    q = model.regularizer(z)
    if generators is not None:
        if len(generators) != b:
            raise ValueError(f"{len(generators)} generators for a batch of {b} images")
        if sigma is None:
            sigma = torch.sigmoid(per_item(generators, lambda g: torch.randn((), generator=g))).to(dev)
        eps = per_item(generators, lambda g: torch.randn(x0.shape[1:], generator=g)).to(dev, x0.dtype)
    else:
        if sigma is None:
            sigma = torch.sigmoid(torch.randn(b, generator=generator)).to(dev)
        eps = torch.randn(x0.shape, generator=generator).to(dev, x0.dtype)
    s = sigma.to(dev, x0.dtype).view(b, 1, 1, 1)
    x_t = s * eps + (1 - s) * x0
    dd = {model.keys["dec_quants"]: q.quantized, model.keys["keep_k"]: keep_k.to(dev),
          model.keys["timesteps"]: sigma.to(dev, torch.float32), model.keys["noised"]: x_t,
          model.keys["null_flag"]: null.to(dev)}
    dd = model.decoder(dd)
    v = _get(dd, model.keys["reconst"], "decoder output")
    loss = F.mse_loss(v.float(), (eps - x0).float())
    feats = None
    inter = [m for _, m in model.decoder.of_type(FlexTransformer) if m.inter_key is not None]
    unpackers = [m for _, m in model.decoder.of_type(SequenceUnpacker)]
    # the intermediate layer exists only when the decoder is deeper than its index (else the trunk stores [])
    if inter and unpackers and isinstance(dd.get(inter[0].inter_key), torch.Tensor):
        up = unpackers[0]
        tmp = {up.read_key: dd[inter[0].inter_key], up.inner_key: dd[up.inner_key], up.outer_key: dd[up.outer_key]}
        feats = up(tmp)[up.write_keys[0]]
    return {"loss": loss, "ids": q.ids, "repa_feats": feats, "x0": x0}


def _flat(x: torch.Tensor) -> torch.Tensor:
    # packed-sequence outputs are [1, ...] per image list or [B, h, w, D]
    return x.reshape(x.shape[0], -1, x.shape[-1])


# ============================================================================================== recipe


@register_recipe("flextok")
class FlexTokRecipe(Recipe):
    config_class = FlexTokRecipeConfig

    def build_model(self):
        c = self.config
        vae = None
        if c.vae_weights is not None:
            from .model import FlexTokVAE

            vae = FlexTok.from_official(c.vae_weights)
            if not isinstance(vae, FlexTokVAE):
                raise ValueError(f"vae_weights {c.vae_weights} is not a FlexTok VAE release")
            # (with ``architecture`` the config already took the release's VAE architecture, channels and scaling
            # factor in __post_init__, so data_config() sees the right image size too)
        torch.manual_seed(self.train.seed)
        model = FlexTok(c.model)
        if vae is not None:
            from zoo.registry import load_state_strict

            load_state_strict(model.vae.vae, vae.vae.vae.state_dict(), source=f"vae_weights {self.config.vae_weights}")
            self.notes.append(f"VAE weights from {self.config.vae_weights} (frozen)")
        else:
            self.notes.append("no vae_weights: the frozen VAE keeps its initial weights (random unless --init "
                              "warm-starts the model); give the release's VAE for a real run")
        model.vae.requires_grad_(False)
        model.train()
        return model

    def build_aux_modules(self):
        c = self.config
        if c.repa_weights is None:
            self.notes.append("REPA off: no repa_weights given (the paper aligns decoder features with DINOv2-L)")
            return {}
        if c.repa_weight == 0:
            self.notes.append(f"REPA off: repa_weight is 0 (repa_weights {c.repa_weights} not used)")
            return {}
        trans = [m for m in c.model.decoder if m["_target_"].endswith("FlexTransformer")
                 and m.get("intermediate_layer_write_key")]
        if not trans:
            raise ValueError("REPA needs a decoder FlexTransformer with intermediate_layer_write_key")
        self._repa_target = RepaTarget(c.repa_arch, c.repa_weights)
        self.notes.append(f"REPA on: weight {c.repa_weight}, target ViT from {c.repa_weights}, "
                          f"decoder layer {trans[0].get('intermediate_layers')}")
        return {"repa_proj": _repa_projector(int(trans[0]["dim"]), c.repa_proj_dim, self._repa_target.dim)}

    def build_optimizers(self, modules):
        params = [p for p in modules["model"].parameters() if p.requires_grad]
        if "repa_proj" in modules:
            params += list(modules["repa_proj"].parameters())
        c = self.config
        return {"model": torch.optim.AdamW(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)}

    def build_schedulers(self, optimizers):
        w, c = self.config.warmup_steps, self.config
        if w == 0 and c.final_lr is None:
            return {}
        total = self.train.max_steps
        ratio = 1.0 if c.final_lr is None else c.final_lr / c.lr

        def factor(step: int) -> float:
            if step < w:
                return (step + 1) / w
            return cosine_decay((step - w) / max(1, total - w), ratio)

        return {"model": torch.optim.lr_scheduler.LambdaLR(optimizers["model"], factor)}

    def data_config(self):
        return DataConfig("image", image_size=self.config.model.image_size, seed=self.train.seed)

    def _repa_loss(self, ctx, feats: Optional[torch.Tensor], images01: torch.Tensor) -> Optional[torch.Tensor]:
        if "repa_proj" not in ctx.modules:
            return None
        if feats is None:
            raise ValueError("REPA is on but the decoder wrote no intermediate-layer features (its depth must exceed "
                             "the trunk's intermediate_layers index)")
        target = self._repa_target.to(images01.device)(images01)  # [B, g, g, Dt]
        pred = ctx.modules["repa_proj"](feats)  # [B, h, w, Dt]
        if pred.shape[1:3] != target.shape[1:3]:  # match the target grid to the decoder's patch grid
            target = F.interpolate(target.permute(0, 3, 1, 2), size=pred.shape[1:3], mode="bilinear",
                                   align_corners=False).permute(0, 2, 3, 1)
        return -F.cosine_similarity(_flat(pred), _flat(target), dim=-1).mean()

    def training_step(self, ctx, batch) -> Dict[str, float]:
        model: FlexTok = ctx.unwrap()
        images01 = batch["x"].float()
        # every random number is drawn per image from its own generator (seed, step, dataset index), in the order
        # keep_k, null flag, noise level, noise: N processes draw what one process with the whole batch draws
        gens = item_generators(self.train.seed, ctx.step, batch["index"])
        keep = torch.cat([sample_keep_k(model.n_max, 1, self.config.keep_k_mode, g) for g in gens])
        null = torch.cat([torch.rand(1, generator=g) for g in gens]) < self.config.null_prob
        out = flow_matching_loss(model, images01 * 2 - 1, keep, null, generators=gens)
        loss = out["loss"]
        logs = {"flow_loss": float(out["loss"].detach())}
        repa = self._repa_loss(ctx, out["repa_feats"], images01)
        if repa is not None:
            loss = loss + self.config.repa_weight * repa
            logs["repa_loss"] = float(repa.detach())
        ctx.backward(loss)
        # the loss ran on the unwrapped model (its pieces, not a DDP forward): average over processes here
        average_gradients(ctx, "model")
        if "repa_proj" in ctx.modules:
            average_gradients(ctx, "repa_proj")
        ctx.optimizer_step("model")
        used = torch.unique(out["ids"].detach()).numel() / model.config.codebook_size
        return {"loss": loss.detach(), **logs, "utilization": used}

    def evaluate(self, ctx, batch) -> Dict[str, float]:
        """Held-out flow loss with fixed noise, noise levels spread over (0, 1), all registers kept, no null."""
        model: FlexTok = ctx.unwrap()
        images = batch["x"].float() * 2 - 1
        b = images.shape[0]
        g = torch.Generator().manual_seed(self.train.seed)
        sigma = (torch.arange(b, dtype=torch.float32) + 0.5) / b
        full = torch.full((b,), model.n_max, dtype=torch.long)
        out = flow_matching_loss(model, images, full, torch.zeros(b, dtype=torch.bool), g, sigma=sigma)
        g = torch.Generator().manual_seed(self.train.seed)
        one = flow_matching_loss(model, images, torch.ones(b, dtype=torch.long), torch.zeros(b, dtype=torch.bool),
                                 g, sigma=sigma)
        return {"recon_loss": float(out["loss"]), "recon_loss_k1": float(one["loss"])}
