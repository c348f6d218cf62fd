"""TFM-Encoder training on top of a trained, frozen TFM tokenizer: the two stages after token learning.

``tokenzoo train tfm-mtp``: masked-token-prediction pretraining (``downstream_transformer_masked_token_prediction_
pretraining.py`` of the original; facts: ../shared/research/tfm.md sections 4 and 7):

- the EEG windows are tokenized by the frozen tokenizer (``tokenizer``: a registry name or a folder written by
  ``tokenzoo train tfm``), all channels, ids ``[B, C, nT]``;
- each token is masked with probability ``mask_prob`` (0.5: the original draws ``randint(0, 2)``) and replaced by the
  mask id ``K``; the complementary mask gives a second view; the loss is the cross-entropy of the per-token logits
  on the masked positions of the first view plus the same on the second view;
- the TFM-Encoder's head has ``K`` outputs; its token-embedding rows ``0..K-1`` start from the tokenizer's codebook
  and the mask row from zeros (``load_embedding_weights``);
- AdamW lr 1e-3, weight decay 1e-5, betas (0.9, 0.99), linear warm-up from 0 over 10 % of the steps (5 of 50 epochs)
  then a cosine to ``final_lr`` 5e-3, per step, as the tokenizer recipe.

``tokenzoo train tfm-classifier --init RUN_OF_tfm-mtp``: fine-tuning on labelled windows
(``downstream_transformer_finetuning.py``): the same encoder with ``model.n_classes`` outputs; ``--init`` copies every
weight of the MTP model except the head (the original loads the MTP state dict without ``classification_head*``).
Losses: label-smoothed cross-entropy (0.1) for several classes, binary cross-entropy with logits or the original's
focal loss (alpha 0.8, gamma 0.7, used for CHB-MIT) for one output; AdamW betas (0.9, 0.999), the same schedule.
Labels come from the ``label`` entry of each ``.npz`` window (``zoo.io.load_series``). Held-out evaluation reports the
loss, accuracy, balanced accuracy and (several classes) Cohen's kappa over the whole held-out set; the original keeps
the checkpoint with the best validation kappa / ROC-AUC, here every evaluation row is in ``metrics.jsonl`` and the
last weights are exported.

Randomness (the token masks) is drawn per window from ``zoo.train.item_generators``; the tokenizer never trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F

from zoo.config import ConfigBase
from zoo.train import DataConfig, Recipe, register_recipe
from zoo.train.distributed import item_generators
from zoo.train.schedules import cosine_decay

from .config import TFMClassifierConfig
from .model import TFMClassifier, TFMTokenizer

__all__ = ["TFMMTPRecipe", "TFMMTPRecipeConfig", "TFMClassifierRecipe", "TFMClassifierRecipeConfig",
           "masked_token_loss", "focal_loss", "schedule_factor"]

LOSSES = ("label_smoothing_ce", "bce", "focal")


def schedule_factor(step: int, total: int, warmup_fraction: float, lr: float, final_lr: float) -> float:
    """LR multiplier of the TFM recipes: linear from 0 over ``warmup_fraction`` of ``total`` steps, then a cosine
    from ``lr`` to ``final_lr`` (the original's ``cosine_scheduler``)."""
    warm = int(total * warmup_fraction)
    if step < warm:
        return step / max(1, warm)
    ratio = final_lr / lr if lr > 0 else 1.0
    return cosine_decay((step - warm) / max(1, total - warm), ratio)


def masked_token_loss(model: TFMClassifier, ids: torch.Tensor, masked: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The MTP loss on ids ``[B, C, nT]`` with ``masked`` (bool, same shape; True = replaced by the mask id).

    Returns ``loss`` (CE on the masked positions of the view plus CE on the masked positions of the complementary
    view), ``accuracy`` (of both views' predictions at their masked positions) and the per-view losses.
    """
    if ids.shape != masked.shape or masked.dtype != torch.bool:
        raise ValueError(f"masked must be a bool tensor shaped like ids {tuple(ids.shape)}, got "
                         f"{masked.dtype} {tuple(masked.shape)}")
    mask_id = model.config.mask_id
    target = ids.reshape(ids.shape[0], -1)
    out: Dict[str, torch.Tensor] = {}
    correct = total = 0
    loss = 0.0
    for name, m in (("view", masked), ("complement", ~masked)):
        logits = model.token_logits(ids.masked_fill(m, mask_id))  # [B, C * nT, K]
        sel = m.reshape(m.shape[0], -1)
        if not bool(sel.any()):  # nothing masked in this view: it contributes nothing
            continue
        ce = F.cross_entropy(logits[sel].float(), target[sel])
        out[f"{name}_loss"] = ce.detach()
        loss = loss + ce
        correct += int((logits[sel].argmax(-1) == target[sel]).sum())
        total += int(sel.sum())
    out["loss"] = loss if isinstance(loss, torch.Tensor) else ids.new_zeros((), dtype=torch.float32)
    out["accuracy"] = torch.tensor(correct / max(1, total))
    return out


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.8, gamma: float = 0.7) -> torch.Tensor:
    """The original's binary focal loss: ``mean(-alpha (1-p)^gamma y log p - (1-alpha) p^gamma (1-y) log(1-p))``
    with ``p = sigmoid(logit)`` (written with log-sigmoids, so it stays finite for large logits)."""
    z = logits.reshape(-1).float()
    y = target.reshape(-1).float()
    p = torch.sigmoid(z)
    pos = -alpha * (1 - p).pow(gamma) * y * F.logsigmoid(z)
    neg = -(1 - alpha) * p.pow(gamma) * (1 - y) * F.logsigmoid(-z)
    return (pos + neg).mean()


@dataclass
class _EncoderRecipeConfig(ConfigBase):
    tokenizer: str = ""
    model: TFMClassifierConfig = field(default_factory=TFMClassifierConfig)
    window_seconds: float = 5.0
    lr: float = 1e-3
    final_lr: float = 5e-3
    warmup_fraction: float = 0.1
    weight_decay: float = 1e-5
    betas: tuple = (0.9, 0.99)

    def __post_init__(self):
        if not isinstance(self.tokenizer, str) or not self.tokenizer.strip():
            raise ValueError("tokenizer must name the trained TFM tokenizer (a registry name or a folder written by "
                             "`tokenzoo train tfm`)")
        if isinstance(self.window_seconds, bool) or not isinstance(self.window_seconds, (int, float)) \
                or self.window_seconds < 1.0:
            raise ValueError(f"window_seconds must be a number >= 1 (one token needs 1 s), got {self.window_seconds!r}")
        for name in ("lr", "final_lr", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        if isinstance(self.warmup_fraction, bool) or not isinstance(self.warmup_fraction, (int, float)) \
                or not 0 <= self.warmup_fraction <= 1:
            raise ValueError(f"warmup_fraction must lie in [0, 1], got {self.warmup_fraction!r}")
        if len(tuple(self.betas)) != 2 or not all(0 <= float(b) < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")


@dataclass
class TFMMTPRecipeConfig(_EncoderRecipeConfig):
    mask_prob: float = 0.5
    init_embedding_from_codebook: bool = True

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.mask_prob, bool) or not isinstance(self.mask_prob, (int, float)) \
                or not 0 < self.mask_prob < 1:
            raise ValueError(f"mask_prob must lie in (0, 1), got {self.mask_prob!r}")
        if self.model.n_classes != self.model.codebook_size:
            raise ValueError(f"masked-token prediction predicts token ids: model.n_classes must equal "
                             f"model.codebook_size ({self.model.codebook_size}), got {self.model.n_classes}")


@dataclass
class TFMClassifierRecipeConfig(_EncoderRecipeConfig):
    betas: tuple = (0.9, 0.999)
    loss: str = "label_smoothing_ce"
    label_smoothing: float = 0.1
    focal_alpha: float = 0.8
    focal_gamma: float = 0.7

    def __post_init__(self):
        super().__post_init__()
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        binary = self.model.n_classes == 1
        if binary and self.loss == "label_smoothing_ce":
            raise ValueError("a one-output (binary) classifier needs loss 'bce' or 'focal'")
        if not binary and self.loss != "label_smoothing_ce":
            raise ValueError(f"loss {self.loss!r} is for one-output (binary) classifiers; model.n_classes is "
                             f"{self.model.n_classes}")
        if not 0 <= float(self.label_smoothing) < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing!r}")
        if not 0 <= float(self.focal_alpha) <= 1 or float(self.focal_gamma) < 0:
            raise ValueError(f"focal_alpha must lie in [0, 1] and focal_gamma be >= 0, got {self.focal_alpha!r}, "
                             f"{self.focal_gamma!r}")


class _EncoderRecipe(Recipe):
    """Shared parts: the frozen tokenizer, the optimiser, the schedule, the data."""

    _tok: Optional[TFMTokenizer] = None

    def tokenizer(self, device=None) -> TFMTokenizer:
        if self._tok is None:
            import zoo

            tok = zoo.from_pretrained(self.config.tokenizer)
            if not isinstance(tok, TFMTokenizer):
                raise TypeError(f"tokenizer {self.config.tokenizer!r} is a {type(tok).__name__}, not a TFM tokenizer")
            K = tok.config.codebook_size
            if K != self.config.model.codebook_size:
                raise ValueError(f"tokenizer {self.config.tokenizer!r} has {K} codes but model.codebook_size is "
                                 f"{self.config.model.codebook_size}")
            self._tok = tok.eval().requires_grad_(False)
        if device is not None:
            self._tok.to(device)
        return self._tok

    def build_optimizers(self, modules):
        c = self.config
        return {"model": torch.optim.AdamW(modules["model"].parameters(), lr=c.lr, betas=tuple(c.betas),
                                           weight_decay=c.weight_decay)}

    def build_schedulers(self, optimizers):
        c, total = self.config, max(1, self.train.max_steps)
        return {"model": torch.optim.lr_scheduler.LambdaLR(
            optimizers["model"], lambda s: schedule_factor(s, total, c.warmup_fraction, c.lr, c.final_lr))}

    def _ids(self, x: torch.Tensor) -> torch.Tensor:
        tok = self.tokenizer(x.device)
        with torch.no_grad():
            ids = tok.encode(x.float()).ids  # [B, C, nT]; the tokenizer's own scaling (q95) and eval mode
        return ids.clone()  # encode runs in inference mode: a normal tensor for the autograd graph


@register_recipe("tfm-mtp")
class TFMMTPRecipe(_EncoderRecipe):
    config_class = TFMMTPRecipeConfig

    def build_model(self):
        torch.manual_seed(self.train.seed)
        model = TFMClassifier(self.config.model)
        if self.config.init_embedding_from_codebook:
            model.init_token_embedding(self.tokenizer())
        else:
            self.notes.append("token embedding NOT initialised from the tokenizer codebook")
        return model

    def data_config(self):
        tok_cfg = self.tokenizer().config
        return DataConfig("eeg", sfreq=tok_cfg.sfreq, window_samples=int(round(self.config.window_seconds *
                                                                                 tok_cfg.sfreq)),
                          seed=self.train.seed)

    def _mask(self, ids: torch.Tensor, gens) -> torch.Tensor:
        p = self.config.mask_prob
        return torch.stack([torch.rand(ids.shape[1:], generator=g) < p for g in gens]).to(ids.device)

    def training_step(self, ctx, batch) -> Dict[str, float]:
        model = ctx.modules["model"]
        ids = self._ids(batch["x"])
        masked = self._mask(ids, item_generators(self.train.seed, ctx.step, batch["index"]))
        out = masked_token_loss(_Forward(model, ctx.unwrap()), ids, masked)
        ctx.backward(out["loss"])
        ctx.optimizer_step("model")
        used = torch.unique(ids).numel() / self.config.model.codebook_size
        return {"loss": out["loss"].detach(), "mtp_loss": float(out["loss"].detach()),
                "masked_accuracy": float(out["accuracy"]), "utilization": used}

    def evaluate(self, ctx, batch) -> Dict[str, float]:
        ids = self._ids(batch["x"])
        # a fixed mask per held-out window (its index), the same at every evaluation
        masked = self._mask(ids, item_generators(self.train.seed, -1, batch["index"]))
        out = masked_token_loss(ctx.unwrap(), ids, masked)
        return {"mtp_loss": float(out["loss"]), "masked_accuracy": float(out["accuracy"])}


class _Forward:
    """Runs ``token_logits`` through the (possibly DDP-wrapped) module so gradient synchronisation applies."""

    def __init__(self, wrapped, core: TFMClassifier):
        self.wrapped, self.config = wrapped, core.config

    def token_logits(self, ids):
        return self.wrapped(ids, per_token=True)


@register_recipe("tfm-classifier")
class TFMClassifierRecipe(_EncoderRecipe):
    config_class = TFMClassifierRecipeConfig

    def build_model(self):
        torch.manual_seed(self.train.seed)
        self.tokenizer()  # fail early on a wrong tokenizer
        return TFMClassifier(self.config.model)

    def warm_start(self, model, pretrained) -> None:
        """``--init`` from an MTP run (or any TFM-Encoder): every weight but the classification head."""
        if not isinstance(pretrained, TFMClassifier):
            raise TypeError(f"--init must be a TFM-Encoder (a tfm-mtp or tfm-classifier run), got "
                            f"{type(pretrained).__name__}")
        state = {k: v for k, v in pretrained.state_dict().items() if not k.startswith("head.")}
        own = model.state_dict()
        wrong = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
        if wrong:
            raise ValueError(f"--init checkpoint does not fit this encoder: {wrong[:5]} (check emb_size, depth, "
                             f"codebook_size, max_channels, max_frames)")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("head.") for k in missing):
            raise ValueError(f"--init checkpoint: missing {missing}, unexpected {unexpected}")
        self.notes.append("classification head initialised at random; every other weight from --init")

    def data_config(self):
        tok_cfg = self.tokenizer().config
        return DataConfig("eeg", sfreq=tok_cfg.sfreq, window_samples=int(round(self.config.window_seconds *
                                                                                 tok_cfg.sfreq)),
                          seed=self.train.seed, labels=True)

    def _check_labels(self, labels: torch.Tensor) -> None:
        n = self.config.model.n_classes
        top = 2 if n == 1 else n
        if int(labels.min()) < 0 or int(labels.max()) >= top:
            raise ValueError(f"labels must lie in 0..{top - 1} for model.n_classes={n}, got "
                             f"{sorted(set(labels.tolist()))}")

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.loss == "label_smoothing_ce":
            return F.cross_entropy(logits.float(), labels, label_smoothing=float(c.label_smoothing))
        if c.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits.reshape(-1).float(), labels.float())
        return focal_loss(logits, labels, float(c.focal_alpha), float(c.focal_gamma))

    def training_step(self, ctx, batch) -> Dict[str, float]:
        labels = batch["label"].to(batch["x"].device)
        self._check_labels(labels)
        logits = ctx.modules["model"](self._ids(batch["x"]))
        loss = self._loss(logits, labels)
        ctx.backward(loss)
        ctx.optimizer_step("model")
        return {"loss": loss.detach(), "accuracy": float((self._predict(logits) == labels).float().mean())}

    def _predict(self, logits: torch.Tensor) -> torch.Tensor:
        if self.config.model.n_classes == 1:
            return (logits.reshape(-1) > 0).long()
        return logits.argmax(-1)

    def evaluate(self, ctx, batch) -> Dict[str, float]:
        return self.evaluate_set(ctx, [batch])

    def evaluate_set(self, ctx, batches: List[Dict[str, Any]]) -> Dict[str, float]:
        from zoo.metrics import balanced_accuracy, cohen_kappa

        model = ctx.unwrap()
        logits, labels = [], []
        for b in batches:
            y = b["label"].to(b["x"].device)
            self._check_labels(y)
            logits.append(model(self._ids(b["x"])))
            labels.append(y)
        z, y = torch.cat(logits), torch.cat(labels)
        pred = self._predict(z)
        out = {"ce_loss": float(self._loss(z, y)), "accuracy": float((pred == y).float().mean()),
               "balanced_accuracy": float(balanced_accuracy(y.tolist(), pred.tolist())), "windows": len(y)}
        if self.config.model.n_classes > 1:
            out["cohen_kappa"] = float(cohen_kappa(y.tolist(), pred.tolist()))
        return out
