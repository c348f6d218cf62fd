"""CDT training recipes (``tokenzoo train cdt`` and ``tokenzoo train cdt-fsq``).

CDT released no training code (facts: ../shared/research/cdt.md section 7). The paper trains from scratch, single
stage, with an MSE diffusion loss + KL + LPIPS and no GAN; the code CDT inherits (CDC) uses the x0-prediction
parametrisation implemented here:

- pixels ``x0`` in [-1, 1]; the encoder gives the diagonal-Gaussian posterior, ``z = mean + std * eps``
  (``posterior.sample()``) for ``cdt``; for ``cdt-fsq`` the FSQ-quantized posterior MEAN (straight-through);
- ``t ~ U{0 .. N-1}`` per item (N = ``num_timesteps`` = 8192, cosine schedule s = 0.008, the same
  ``alphas_cumprod`` as sampling); ``x_t = sqrt(ac_t) x0 + sqrt(1 - ac_t) eps``; the U-Net sees ``t / N`` and the
  context decoded from ``z`` and predicts ``x0``;
- loss ``(1 - w) * MSE(x0_hat, x0) + w * LPIPS_vgg(x0_hat, x0)`` (per frame) ``+ kl_weight * KL`` (``cdt`` only).

Choices (not given by the paper, stated in docs/models/cdt.md): KL weight 1e-6 (KL summed over latent elements,
averaged over the batch, as the LDM/VidTok convention), LPIPS weight w = 0.5, AdamW lr 1e-4 with a linear
warm-up. The LPIPS term needs the backbone's weights, which are never downloaded: ``lpips_weights`` (a file with a
torchvision ``vgg16`` / ``alexnet`` / ``squeezenet1_1`` state dict, or a whole ``lpips.LPIPS`` state dict; read
with ``torch.load(weights_only=True)`` or safetensors), else torchvision's file in the torch hub cache. Without
either, w is treated as 0; whether the term is on or off, and why, is recorded in ``recipe.notes`` (saved in
``training.json``).
``cdt-fsq`` fine-tunes encoder, quantizer projections and decoder without the KL term (warm-start with
``--init`` from a ``cdt`` or ``cdt-fsq`` model whose configuration matches ``recipe.model``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from zoo.config import ConfigBase
from zoo.train import DataConfig, Recipe, register_recipe
from zoo.train.distributed import average_gradients, item_generators, per_item

from .config import CDTConfig
from .fsq import CDTFSQConfig, CDTFSQTokenizer
from .model import CDTTokenizer, cosine_alphas_cumprod

__all__ = ["CDTRecipe", "CDTRecipeConfig", "CDTFSQRecipe", "CDTFSQRecipeConfig", "diffusion_inputs",
           "item_generators", "average_gradients", "load_lpips"]


def _check_number(name, v, lo=0.0, hi=None, lo_open=False):
    """A finite real number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``; no upper bound when ``hi`` is None)."""
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
    ok = ok and (v > lo if lo_open else v >= lo) and (hi is None or v <= hi)
    if not ok:
        left = "(" if lo_open else "["
        rng = f"{left}{lo:g}, {hi:g}]" if hi is not None else f"{'>' if lo_open else '>='} {lo:g}"
        raise ValueError(f"recipe.{name} must be a finite number {'in ' if hi is not None else ''}{rng}, got {v!r}")


@dataclass
class CDTRecipeConfig(ConfigBase):
    model: CDTConfig = field(default_factory=CDTConfig)
    frames: int = 17  # 1 + 4k frames per clip (the paper's evaluation length)
    image_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    kl_weight: float = 1e-6
    lpips_weight: float = 0.5
    lpips_net: str = "vgg"
    lpips_weights: Optional[str] = None  # backbone (torchvision) or whole LPIPS state dict; None: torch hub cache
    random_flip: bool = True

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = type(self).__dataclass_fields__["model"].default_factory().from_dict(self.model)
        tf, sf = self.model.time_factor, self.model.space_factor
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or self.frames < 1 or (self.frames - 1) % tf:
            raise ValueError(f"frames must be 1 + {tf}k (1, {1 + tf}, {1 + 2 * tf}, ...), got {self.frames!r}")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < sf \
                or self.image_size % sf:
            raise ValueError(f"image_size must be a positive multiple of {sf}, got {self.image_size!r}")
        _check_number("lr", self.lr, lo_open=True)
        _check_number("weight_decay", self.weight_decay)
        _check_number("kl_weight", self.kl_weight)
        _check_number("lpips_weight", self.lpips_weight, 0.0, 1.0)
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        if self.lpips_net not in ("vgg", "alex", "squeeze"):
            raise ValueError(f"recipe.lpips_net must be 'vgg', 'alex' or 'squeeze', got {self.lpips_net!r}")
        if self.lpips_weights is not None:
            if not isinstance(self.lpips_weights, (str, Path)):
                raise TypeError(f"recipe.lpips_weights must be a path or null, got {type(self.lpips_weights).__name__}")
            self.lpips_weights = str(self.lpips_weights)
            if not Path(self.lpips_weights).is_file():
                raise ValueError(f"recipe.lpips_weights {self.lpips_weights}: no such file")


@dataclass
class CDTFSQRecipeConfig(CDTRecipeConfig):
    model: CDTFSQConfig = field(default_factory=CDTFSQConfig)
    kl_weight: float = 0.0  # no KL: the bottleneck is the quantizer

    def __post_init__(self):
        super().__post_init__()
        if self.kl_weight != 0:
            raise ValueError("cdt-fsq trains without the KL term: recipe.kl_weight must be 0")


def load_lpips(net: str, weights) -> "torch.nn.Module":
    """An ``lpips.LPIPS`` (v0.1, linear heads from the ``lpips`` wheel) whose ``net`` backbone comes from the file
    ``weights``: a torchvision ``vgg16`` / ``alexnet`` / ``squeezenet1_1`` state dict (``features.*`` keys;
    ``classifier.*`` ignored) or a whole ``lpips.LPIPS`` state dict (``net.slice*`` and ``lin*`` keys, which then
    replace the wheel's heads too). ``.safetensors`` or a ``torch.save`` file (``torch.load(weights_only=True)``).
    Every backbone weight must be present."""
    import lpips

    from zoo.registry import load_state_strict

    path = Path(weights)
    if not path.is_file():
        raise ValueError(f"lpips_weights {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"lpips_weights {path.name}: expected a state dict of tensors")
    # pnet_rand: build the backbone without asking torchvision for its (downloaded) weights
    model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    if any(k.startswith("net.slice") for k in state):  # a whole LPIPS state dict
        load_state_strict(model, state, source=f"lpips_weights {path.name}")
        return model
    mapped = {}
    for name in model.net.state_dict():  # "slice{k}.{i}.<rest>" <- torchvision "features.{i}.<rest>"
        src = "features." + name.split(".", 1)[1]
        if src in state:
            mapped[name] = state[src]
    missing = sorted("features." + n.split(".", 1)[1] for n in model.net.state_dict() if n not in mapped)
    extra = sorted(k for k in state if not k.startswith(("features.", "classifier.")))
    if missing or extra:
        raise ValueError(f"lpips_weights {path.name} is not a torchvision {net} backbone state dict (nor a whole "
                         f"LPIPS one): missing {missing[:4]}{' ...' if len(missing) > 4 else ''}, unexpected "
                         f"{extra[:4]}{' ...' if len(extra) > 4 else ''}")
    load_state_strict(model.net, mapped, source=f"lpips_weights {path.name}")
    return model


def diffusion_inputs(x0: torch.Tensor, alphas_cumprod: torch.Tensor, generator: Optional[torch.Generator] = None,
                     t: Optional[torch.Tensor] = None, eps: Optional[torch.Tensor] = None):
    """Sample ``t ~ U{0..N-1}`` per item and ``x_t = sqrt(ac_t) x0 + sqrt(1 - ac_t) eps``.

    Returns ``(x_t, t_input [B, 1] = t / N, t [B])``. ``generator`` (CPU) makes the draw reproducible; ``t`` ``[B]``
    and ``eps`` (shape of ``x0``) given together replace the draw (per-item draws, see :func:`item_generators`).
    """
    n = alphas_cumprod.shape[0]
    b = x0.shape[0]
    if (t is None) != (eps is None):
        raise ValueError("give both t and eps, or neither")
    if t is None:
        t = torch.randint(0, n, (b,), generator=generator)
        eps = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
    elif t.shape != (b,) or eps.shape != x0.shape:
        raise ValueError(f"t must be [{b}] and eps {list(x0.shape)}, got {list(t.shape)} and {list(eps.shape)}")
    eps = eps.to(x0)
    t = t.to(x0.device)
    ac = alphas_cumprod.to(x0)[t].reshape(b, *([1] * (x0.ndim - 1)))
    x_t = ac.sqrt() * x0 + (1 - ac).sqrt() * eps
    return x_t, (t.float() / n).reshape(b, 1), t


@register_recipe("cdt")
class CDTRecipe(Recipe):
    config_class = CDTRecipeConfig
    tokenizer_class = CDTTokenizer
    quantized = False

    def __init__(self, config, train):
        super().__init__(config, train)
        self._ac = torch.tensor(cosine_alphas_cumprod(config.model.num_timesteps), dtype=torch.float32)
        self._lpips = None
        self.lpips_active = False
        rest = "the diffusion MSE" + (" + KL" if not self.quantized and config.kl_weight > 0 else "")
        if config.lpips_weight == 0:
            self.notes.append(f"LPIPS term off (lpips_weight 0): the loss is {rest}")
        elif config.lpips_weights is not None:
            self.lpips_active = True
            self.notes.append(f"LPIPS term on: weight {config.lpips_weight}, {config.lpips_net} weights from "
                              f"lpips_weights {config.lpips_weights}")
        else:
            from zoo.metrics.image import lpips_backbone_path

            path = lpips_backbone_path(config.lpips_net)
            if path.is_file():
                self.lpips_active = True
                self.notes.append(f"LPIPS term on: weight {config.lpips_weight}, {config.lpips_net} backbone from "
                                  f"the torch hub cache {path}")
            else:
                self.notes.append(f"LPIPS term disabled (weight {config.lpips_weight} treated as 0): no "
                                  f"lpips_weights given and no {config.lpips_net} backbone weights at {path}; the "
                                  f"loss is {rest}")
        if self.quantized:
            self.notes.append("cdt-fsq: FSQ on the posterior mean, no KL term")

    # ------------------------------------------------------------------ building
    def build_model(self):
        torch.manual_seed(self.train.seed)
        return self.tokenizer_class(self.config.model)

    def build_optimizers(self, modules):
        c = self.config
        return {"model": torch.optim.AdamW(modules["model"].parameters(), lr=c.lr, weight_decay=c.weight_decay)}

    def build_schedulers(self, optimizers):
        warm = self.config.warmup_steps
        if not warm:
            return {}
        return {"model": torch.optim.lr_scheduler.LambdaLR(optimizers["model"],
                                                           lambda s: min(1.0, (s + 1) / warm))}

    def data_config(self) -> DataConfig:
        c = self.config
        return DataConfig("video", image_size=c.image_size, frames=c.frames, random_flip=c.random_flip,
                          seed=self.train.seed)

    def _lpips_model(self, device):
        if self._lpips is None:
            import lpips

            if self.config.lpips_weights is None:  # torchvision reads the backbone from the torch hub cache
                self._lpips = lpips.LPIPS(net=self.config.lpips_net, verbose=False)
            else:
                self._lpips = load_lpips(self.config.lpips_net, self.config.lpips_weights)
            self._lpips.eval()
            for p in self._lpips.parameters():
                p.requires_grad_(False)
        return self._lpips.to(device)

    # ------------------------------------------------------------------ warm start
    def _check_init_config(self, model, pretrained) -> None:
        """Refuse a ``--init`` checkpoint whose CDT configuration differs from ``recipe.model`` (sampling,
        chunking and padding fields included: they are not in the weights, so a strict state copy would not
        notice, and the run would silently train and save another model than the checkpoint)."""
        mine, theirs = model.config, getattr(pretrained, "config", None)
        if not isinstance(theirs, CDTConfig):
            raise TypeError(f"--init checkpoint has no CDT config (got {type(pretrained).__name__})")
        diff = [f"{f.name} (checkpoint {getattr(theirs, f.name)!r}, recipe {getattr(mine, f.name)!r})"
                for f in fields(CDTConfig) if getattr(theirs, f.name) != getattr(mine, f.name)]
        if diff:
            raise ValueError("the --init checkpoint's CDT configuration differs from recipe.model in "
                             + "; ".join(diff) + ": set these fields of recipe.model to the checkpoint's values")

    def warm_start(self, model, pretrained) -> None:
        """From a ``cdt`` model of the same configuration: strict copy of every weight."""
        from zoo.registry import load_state_strict

        if not isinstance(pretrained, CDTTokenizer) or isinstance(pretrained, CDTFSQTokenizer):
            raise TypeError(f"cdt warm-starts from a cdt tokenizer, got {type(pretrained).__name__}")
        self._check_init_config(model, pretrained)
        load_state_strict(model, pretrained.state_dict(), source="--init checkpoint")

    # ------------------------------------------------------------------ losses
    def latent(self, core: CDTTokenizer, x0: torch.Tensor, sample: bool, generator=None, generators=None):
        """-> (z for the decoder, KL per item averaged over the batch (0 for cdt-fsq), ids or None).
        ``generators``: one per item (:func:`item_generators`) for the posterior sample, else ``generator``."""
        moments = core.net.autoencoder.encode(x0)
        mean, logvar = core.posterior(moments)
        if self.quantized:
            z, ids = core.quantize(mean)
            return z, x0.new_zeros(()), ids
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean()
        if sample:
            if generators is not None:
                eps = per_item(generators, lambda g: torch.randn(mean.shape[1:], generator=g, dtype=torch.float32))
            else:
                eps = torch.randn(mean.shape, generator=generator, dtype=torch.float32)
            eps = eps.to(mean)
            z = mean + (0.5 * logvar).exp() * eps
        else:
            z = mean
        return z, kl, None

    def losses(self, core: CDTTokenizer, x0: torch.Tensor, generator=None, sample: bool = True, generators=None):
        """``generators``: one per item (:func:`item_generators`); else everything is drawn from ``generator``."""
        c = self.config
        if generators is not None and len(generators) != x0.shape[0]:
            raise ValueError(f"{len(generators)} generators for a batch of {x0.shape[0]}")
        z, kl, ids = self.latent(core, x0, sample, generator, generators)
        t = eps = None
        if generators is not None:  # after the posterior sample's draw, in the same order on every item
            n = int(self._ac.shape[0])
            t = torch.cat([torch.randint(0, n, (1,), generator=g) for g in generators])
            eps = per_item(generators, lambda g: torch.randn(x0.shape[1:], generator=g, dtype=torch.float32))
        context = core.net.autoencoder.decode_context(z)
        x_t, t_in, _ = diffusion_inputs(x0, self._ac, generator, t=t, eps=eps)
        x0_hat = core.net.unet(x_t, t_in, context)
        mse = F.mse_loss(x0_hat, x0)
        out = {"mse": mse, "kl": kl, "ids": ids}
        w = c.lpips_weight if self.lpips_active else 0.0
        loss = (1 - w) * mse
        if w > 0:
            b, ch, f, h, wd = x0.shape
            frames = lambda v: v.transpose(1, 2).reshape(b * f, ch, h, wd)  # noqa: E731
            lp = self._lpips_model(x0.device)(frames(x0_hat), frames(x0)).mean()
            loss = loss + w * lp
            out["lpips"] = lp
        if not self.quantized and c.kl_weight > 0:
            loss = loss + c.kl_weight * kl
        out["loss"] = loss
        return out

    def training_step(self, ctx, batch) -> Dict[str, float]:
        core = ctx.unwrap()
        x0 = batch["x"].float() * 2 - 1
        if "index" not in batch:
            raise ValueError("the CDT recipe needs the dataset index of every item (batch['index']) to seed its "
                             "per-item noise")
        out = self.losses(core, x0, generators=item_generators(self.train.seed, ctx.step, batch["index"]))
        ctx.backward(out["loss"])
        average_gradients(ctx)
        ctx.optimizer_step("model")
        row = {"loss": out["loss"].detach(), "recon_loss": float(out["mse"].detach())}
        if not self.quantized:
            row["kl"] = float(out["kl"].detach())
        if "lpips" in out:
            row["lpips"] = float(out["lpips"].detach())
        if out["ids"] is not None:
            row["utilization"] = torch.unique(out["ids"].detach().cpu()).numel() / core.quantizer.codebook_size
        return row

    def evaluate(self, ctx, batch) -> Dict[str, float]:
        """Held-out loss with a FIXED draw of timesteps and noise (seeded by the batch), posterior mean as z."""
        core = ctx.unwrap()
        x0 = batch["x"].float() * 2 - 1
        g = torch.Generator().manual_seed(1234 + int(batch["index"].sum()) if "index" in batch else 1234)
        out = self.losses(core, x0, generator=g, sample=False)
        row = {"recon_loss": float(out["mse"]), "loss": float(out["loss"])}
        if not self.quantized:
            row["kl"] = float(out["kl"])
        return row


@register_recipe("cdt-fsq")
class CDTFSQRecipe(CDTRecipe):
    config_class = CDTFSQRecipeConfig
    tokenizer_class = CDTFSQTokenizer
    quantized = True

    def warm_start(self, model, pretrained) -> None:
        """From a ``cdt-fsq`` model: strict copy. From a continuous ``cdt`` model: strict copy of every CDT
        weight and the identity-like projection init of :meth:`CDTFSQTokenizer.init_projections`."""
        from zoo.registry import load_state_strict

        if isinstance(pretrained, CDTTokenizer):
            self._check_init_config(model, pretrained)
            if isinstance(pretrained, CDTFSQTokenizer) and pretrained.config.levels != model.config.levels:
                raise ValueError(f"the --init cdt-fsq checkpoint has levels {pretrained.config.levels}, "
                                 f"recipe.model.levels is {model.config.levels}: set recipe.model.levels to match")
        if isinstance(pretrained, CDTFSQTokenizer):
            load_state_strict(model, pretrained.state_dict(), source="--init checkpoint")
        elif isinstance(pretrained, CDTTokenizer):
            load_state_strict(model.net, pretrained.net.state_dict(), source="--init checkpoint (cdt)")
            model.init_projections(self.train.seed)
            self.notes.append("warm-started from a continuous cdt model; FSQ projections initialised orthonormally")
        else:
            raise TypeError(f"cdt-fsq warm-starts from a cdt or cdt-fsq tokenizer, got {type(pretrained).__name__}")
