"""TaDiCodec's training recipe (``tokenzoo train tadicodec``): one-stage flow-matching autoencoder + BSQ.

Follows the reference trainer (``tadicodec_trainer.py`` / ``TaDiCodec.forward``; facts in
docs/models/tadicodec.md):

- mel of the crop -> encoder -> linear down-sampling x8 -> Linear -> l2 norm -> BSQ (straight-through) ->
  Linear -> linear up-sampling back to the mel length (``size=T``, as in training) = the per-frame condition;
- flow path ``x_t = (1 - (1 - sigma) t) z + t x`` on the TARGET frames with ``t ~ U(0, 1)`` clamped to
  ``[1e-5, 1]`` per item; one draw per batch, as in the reference, decides the prompt: with probability
  ``1 - context_drop_p`` every item of the batch keeps a clean prompt prefix (its length
  ``randint(min(T // 4, 5), int(0.4 T))`` frames drawn per item), else no item has one; with probability
  ``cond_drop_p`` (another draw per batch) the condition is zeroed for the whole batch;
- held-out evaluation (``mode="eval"``, used by :meth:`TaDiCodecRecipe.evaluate`) never drops the condition and
  gives every item the same clean prompt of :func:`eval_prompt_frames` frames (the middle of the training range);
  flow times and noise come from a generator seeded by ``train.seed``, so the number is comparable across
  evaluations and measures the conditional flow loss the tokens are trained for;
- loss: L1 between the predicted flow and ``x - (1 - sigma) z`` on target frames, averaged over mel bins, summed and
  divided by the number of target frames; plus the BSQ entropy regulariser (here vector-quantize-pytorch's LFQ
  entropy with weight 1, diversity 1, inverse temperature 1: the same structure as bsq-vit's
  ``H_per_sample - H_codebook``, not the identical estimator); commitment weight 0;
- AdamW (lr 7.5e-5, torch defaults otherwise), inverse-square-root schedule with linear warm-up (32000 steps in
  the release, times the number of processes); gradient clipping 0.5 belongs in ``train.clip_grad_norm``.

Text: with ``model.use_text_cond: false`` (a mode the reference trainer supports) the loader gives random
``segment_seconds`` crops. With ``model.use_text_cond: true`` every example is a whole utterance with its transcript
(``<file>.txt`` beside the audio file), trimmed to a whole number of tokens; ``segment_seconds`` is then the longest
utterance kept (longer files are skipped and counted: a crop would no longer match its text). The transcript is
tokenized with the model's text tokenizer (``text_tokenizer``: a ``tokenizer.json``, stored in the saved config)
and the decoder is always given the text in training, as in the reference. Utterances differ in length, so a
text-conditioned run takes batches of one utterance per process (``train.batch_size: 1``; use ``grad_accum`` for a
larger effective batch). The recipe's default model is text-free (``use_text_cond: false``), unlike the release:
a text-conditioned run needs a tokenizer, which has no default.

Loss normalisation over processes: text-free, the flow loss is averaged over the target frames of the GLOBAL batch,
so N processes with batch B train as one process with batch N B. Text-conditioned (one utterance per process and
micro-batch), each utterance's loss is averaged over its own target frames and the processes' losses are averaged,
as the reference does per GPU: N processes then train as one process with ``grad_accum`` N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F

from zoo.config import ConfigBase
from zoo.train import DataConfig, Recipe, register_recipe
from zoo.train.distributed import average_gradients, item_generators, per_item, step_generator
from zoo.train.schedules import cosine_decay

from .config import TaDiCodecConfig
from .model import TaDiCodec

__all__ = ["TaDiCodecRecipe", "TaDiCodecRecipeConfig", "TaDiCodecVocoderRecipe", "TaDiCodecVocoderRecipeConfig",
           "flow_matching_losses", "inverse_sqrt_factor", "eval_prompt_frames", "LOSS_MODES"]

LOSS_MODES = ("train", "eval")


def _finite(name: str, value, lo: float, lo_open: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and (
        value > lo if lo_open else value >= lo)
    if not ok:
        raise ValueError(f"recipe.{name} must be a finite number {'>' if lo_open else '>='} {lo:g}, got {value!r}")


@dataclass
class TaDiCodecRecipeConfig(ConfigBase):
    model: TaDiCodecConfig = field(default_factory=lambda: TaDiCodecConfig(use_text_cond=False))
    segment_seconds: float = 4.0
    lr: float = 7.5e-5
    warmup_steps: int = 32000
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 0.01
    vq_loss_weight: float = 1.0
    text_tokenizer: Optional[str] = None  # tokenizer.json (file or folder) for a text-conditioned model

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = TaDiCodecConfig.from_dict(self.model)
        if self.model.use_text_cond and not self.text_tokenizer and not self.model.text_tokenizer_json:
            raise ValueError("a text-conditioned model (model.use_text_cond: true) needs text_tokenizer: the "
                             "tokenizer.json its transcripts are tokenized with")
        if self.text_tokenizer is not None and not Path(self.text_tokenizer).exists():
            raise ValueError(f"text_tokenizer {self.text_tokenizer}: no such file or folder")
        min_seconds = 2 * self.model.samples_per_token / self.model.sample_rate
        _finite("segment_seconds", self.segment_seconds, 0.0)
        if not self.segment_seconds >= min_seconds:
            raise ValueError(f"recipe.segment_seconds must be >= {min_seconds:g} (two tokens), got "
                             f"{self.segment_seconds}")
        _finite("lr", self.lr, 0.0, lo_open=True)
        _finite("weight_decay", self.weight_decay, 0.0)
        _finite("vq_loss_weight", self.vq_loss_weight, 0.0)
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"recipe.warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        if (not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2
                or not all(not isinstance(b, bool) and isinstance(b, (int, float)) and 0 <= b < 1
                           for b in self.betas)):
            raise ValueError(f"recipe.betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = tuple(float(b) for b in self.betas)

    @property
    def segment_samples(self) -> int:
        return int(self.segment_seconds * self.model.sample_rate)


def inverse_sqrt_factor(step: int, warmup: int) -> float:
    """transformers' ``get_inverse_sqrt_schedule`` factor: linear warm-up, then ``1 / sqrt((step + s) / ts)``."""
    if step < warmup:
        return step / max(1, warmup)
    timescale = warmup or 10_000
    return 1.0 / math.sqrt((step + timescale - warmup) / timescale)


def eval_prompt_frames(frames: int) -> int:
    """Clean prompt length of every item in held-out evaluation (``mode="eval"``) for a ``frames``-frame mel:
    the middle of the training range ``[min(T // 4, 5), int(0.4 T))``, i.e. ``(lo + hi) // 2`` (8 of 32 frames,
    40 of 200)."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a positive int, got {frames!r}")
    lo, hi = min(frames // 4, 5), int(frames * 0.4)
    return int(min((lo + hi) // 2, max(hi - 1, lo)))


def flow_matching_losses(core: TaDiCodec, mel: torch.Tensor, generator: Optional[torch.Generator] = None,
                         text_ids: Optional[torch.Tensor] = None,
                         generators: Optional[Sequence[torch.Generator]] = None,
                         mode: str = "train") -> Dict[str, torch.Tensor]:
    """The reference's training losses on normalised mels ``[B, T, mels]`` (see the module docstring).

    ``generators`` (one per item, :func:`zoo.train.item_generators`): the per-item draws (flow time, noise, prompt
    length) come from them, so they do not depend on how a batch is split over processes; the per-batch decisions
    (drop the prompt, drop the condition) then come from ``generator``, which must be the same on every process
    (:func:`zoo.train.step_generator`). Without ``generators`` everything is drawn from ``generator``.
    ``mode``: ``"train"`` (the reference's draws, above) or ``"eval"``: the condition is never dropped and every
    item keeps a clean prompt of :func:`eval_prompt_frames` frames; flow times and noise are still drawn (pass a
    freshly seeded ``generator`` for a fixed draw).
    Returns ``diff_loss`` (flow L1 averaged over the target frames), its numerator ``diff_sum`` and denominator
    ``target_frames``, ``vq_loss`` (BSQ regulariser, 0 when the model is in eval mode) and ``ids``.
    """
    if mode not in LOSS_MODES:
        raise ValueError(f"mode must be one of {LOSS_MODES}, got {mode!r}")
    if not isinstance(mel, torch.Tensor) or mel.ndim != 3 or mel.shape[-1] != core.config.mel_dim:
        raise ValueError(f"mel must be a [B, T, {core.config.mel_dim}] tensor, got "
                         f"{tuple(mel.shape) if isinstance(mel, torch.Tensor) else type(mel).__name__}")
    c = core.config
    B, T, _ = mel.shape
    dev = mel.device

    def rand(*shape):
        return torch.rand(shape, generator=generator, device="cpu" if generator is not None else dev).to(dev)

    if generators is not None and len(generators) != B:
        raise ValueError(f"{len(generators)} generators for a batch of {B}")

    def rand_items() -> torch.Tensor:  # [B] uniform, one draw per item
        if generators is None:
            return rand(B)
        return per_item(generators, lambda g: torch.rand((), generator=g)).to(dev)

    h = core.encoder(mel)
    down = F.interpolate(h.transpose(1, 2), size=T // c.down_sample_factor, mode="linear").transpose(1, 2)
    latent = F.normalize(core.vq_in_linear(down), dim=-1)
    q = core.bsq(latent)
    post = core.vq_out_linear(q.quantized)
    cond = F.interpolate(post.transpose(1, 2), size=T, mode="linear").transpose(1, 2)

    t = rand_items().clamp(1e-5, 1.0)
    if generators is None:
        z = torch.randn(mel.shape, generator=generator, device="cpu" if generator is not None else dev).to(dev)
    else:
        z = per_item(generators, lambda g: torch.randn(mel.shape[1:], generator=g)).to(dev)
    if mode == "eval":
        prompt_len = torch.full((B,), eval_prompt_frames(T), dtype=torch.long, device=dev)
    elif float(rand(1)) > c.context_drop_p:
        lo, hi = min(T // 4, 5), int(T * 0.4)
        prompt_len = (lo + (rand_items() * max(hi - lo, 1)).long()).clamp(max=max(hi - 1, lo))
    else:
        prompt_len = torch.zeros(B, dtype=torch.long, device=dev)
    target = (torch.arange(T, device=dev)[None] >= prompt_len[:, None]).float()[..., None]  # 1 = target frame
    tt = t[:, None, None]
    xt = ((1 - (1 - c.sigma) * tt) * z + tt * mel) * target + mel * (1 - target)
    if mode == "train" and float(rand(1)) < c.cond_drop_p:
        cond = torch.zeros_like(cond)
    text = None
    if c.use_text_cond:  # the reference always conditions a text model on its transcript in training
        if text_ids is None:
            raise ValueError("text_ids are required: the model is text-conditioned (model.use_text_cond)")
        text = core.text_emb(text_ids)
    flow = core.decoder(xt, cond=cond, t=t, text=text)
    flow_gt = mel - (1 - c.sigma) * z
    diff_sum = (F.l1_loss(flow, flow_gt, reduction="none").float() * target).mean(dim=2).sum()
    frames = target.sum()
    vq = sum(q.losses.values()) if q.losses else diff_sum.new_zeros(())
    return {"diff_loss": diff_sum / frames.clamp(min=1), "diff_sum": diff_sum, "target_frames": frames.detach(),
            "vq_loss": vq, "ids": q.ids}


@register_recipe("tadicodec")
class TaDiCodecRecipe(Recipe):
    config_class = TaDiCodecRecipeConfig

    def __init__(self, config, train):
        super().__init__(config, train)
        if config.model.use_text_cond and train.batch_size != 1:
            raise ValueError(f"a text-conditioned run takes whole utterances of different lengths: train.batch_size "
                             f"must be 1 (got {train.batch_size}); use train.grad_accum for a larger batch")

    def build_model(self):
        torch.manual_seed(self.train.seed)
        model = TaDiCodec(self.config.model)
        if self.config.text_tokenizer:
            model.set_text_tokenizer(self.config.text_tokenizer)
        return model

    def warm_start(self, model, pretrained) -> None:
        super().warm_start(model, pretrained)
        if self.config.text_tokenizer:  # the configured tokenizer wins over the checkpoint's
            model.set_text_tokenizer(self.config.text_tokenizer)
        elif getattr(pretrained, "text_tokenizer", None) is not None:
            model.set_text_tokenizer(pretrained.text_tokenizer)

    def _inputs(self, core: TaDiCodec, batch):
        """``(mel [B, T, mels], text_ids [B, Lt] or None)``; text-conditioned: one utterance trimmed to whole tokens."""
        wav = batch["x"].float().reshape(batch["x"].shape[0], -1)
        if not core.config.use_text_cond:
            return core.mel(wav), None
        spt = core.config.samples_per_token
        n = (wav.shape[-1] // spt) * spt
        if n < 2 * spt:
            raise ValueError(f"utterance of {wav.shape[-1]} samples is shorter than two tokens ({2 * spt} samples)")
        if core.text_tokenizer is None:
            raise ValueError("the model has no text tokenizer (set text_tokenizer in the recipe config)")
        ids = torch.tensor([core.text_tokenizer.encode(t) for t in batch["text"]], dtype=torch.long)
        if ids.shape[-1] == 0 or int(ids.max()) >= core.config.text_vocab_size:
            raise ValueError(f"transcript ids must be non-empty and below text_vocab_size "
                             f"{core.config.text_vocab_size}: {batch['text']}")
        return core.mel(wav[:, :n]), ids.to(wav.device)

    def build_optimizers(self, modules):
        c = self.config
        return {"model": torch.optim.AdamW(modules["model"].parameters(), lr=c.lr, betas=c.betas,
                                           weight_decay=c.weight_decay)}

    def build_schedulers(self, optimizers):
        warm = self.config.warmup_steps
        return {"model": torch.optim.lr_scheduler.LambdaLR(optimizers["model"],
                                                           lambda step: inverse_sqrt_factor(step, warm))}

    def data_config(self):
        return DataConfig("audio", sample_rate=self.config.model.sample_rate,
                          segment_samples=self.config.segment_samples, seed=self.train.seed,
                          transcripts=self.config.model.use_text_cond)

    def training_step(self, ctx, batch) -> Dict[str, float]:
        core: TaDiCodec = ctx.unwrap()
        with torch.no_grad():
            mel, text_ids = self._inputs(core, batch)
        # per-item draws from per-item generators, per-batch decisions from the step's generator (the same on
        # every process): see zoo.train.distributed
        out = flow_matching_losses(core, mel, step_generator(self.train.seed, ctx.step), text_ids=text_ids,
                                   generators=item_generators(self.train.seed, ctx.step, batch["index"]))
        diff = out["diff_loss"]
        acc = ctx.accelerator
        if acc.num_processes > 1 and not core.config.use_text_cond:
            # text-free: the flow loss is averaged over the target frames of the GLOBAL batch (prompts differ in
            # length, so per-process averages weighted equally would weight frames differently than one process
            # does); the mean over processes that average_gradients takes then equals the one-process gradient.
            # Text-conditioned (one utterance per process and micro-batch): each utterance's own average, as the
            # reference per GPU, so N processes equal one process with grad_accum N (see the module docstring)
            frames = acc.reduce(out["target_frames"].reshape(1).clone(), reduction="sum")[0]
            diff = out["diff_sum"] * acc.num_processes / frames.clamp(min=1)
        loss = diff + self.config.vq_loss_weight * out["vq_loss"]
        ctx.backward(loss)
        average_gradients(ctx, "model")  # the loss ran on the unwrapped model, not through DDP's forward
        ctx.optimizer_step("model")
        used = torch.unique(out["ids"].detach()).numel() / core.config.codebook_size
        return {"loss": loss.detach(), "diff_loss": float(out["diff_loss"].detach()),
                "vq_loss": float(out["vq_loss"].detach()), "utilization": used}

    def evaluate(self, ctx, batch) -> Dict[str, float]:
        """Held-out flow loss in ``mode="eval"``: condition always kept, the fixed prompt of
        :func:`eval_prompt_frames`, flow times and noise from a generator seeded by ``train.seed``."""
        core: TaDiCodec = ctx.unwrap()
        mel, text_ids = self._inputs(core, batch)
        out = flow_matching_losses(core, mel, torch.Generator().manual_seed(self.train.seed), text_ids=text_ids,
                                   mode="eval")
        return {"recon_loss": float(out["diff_loss"])}


# ====================================================================================== the Vocos vocoder

@dataclass
class TaDiCodecVocoderRecipeConfig(ConfigBase):
    """``tokenzoo train tadicodec-vocoder``: the Vocos vocoder that turns the codec's normalised mel into audio.

    TaDiCodec's repository has no vocoder training (Amphion's Vocos family trains it); the defaults follow Vocos'
    own configuration (gemelo-ai/vocos ``VocosExp``: AdamW lr 5e-4, betas (0.8, 0.9), cosine schedule without
    warm-up, mel L1 x45, multi-period + multi-resolution discriminators with the MRD terms x0.1, 16384-sample
    crops -- here 16320, the nearest multiple of the 480-sample hop). The adversarial step is WavTokenizer's
    (``audio/gan.py``): one implementation for both recipes. ``model``: the codec whose mel front-end feeds the
    vocoder and whose ``model.vocoder`` configuration is trained.
    """

    model: TaDiCodecConfig = field(default_factory=lambda: TaDiCodecConfig(use_text_cond=False))
    segment_samples: int = 16320
    lr: float = 5e-4
    betas: tuple = (0.8, 0.9)
    weight_decay: float = 0.01
    mel_loss_coeff: float = 45.0
    mrd_loss_coeff: float = 0.1
    cosine_schedule: bool = True
    mpd_periods: tuple = (2, 3, 5, 7, 11)
    period_channels: tuple = (32, 128, 512, 1024, 1024)
    use_dac_discriminator: bool = False

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = TaDiCodecConfig.from_dict(self.model)
        hop = self.model.vocoder.hop_size
        if hop != self.model.hop_size:
            raise ValueError(f"model.vocoder.hop_size {hop} must equal the mel hop model.hop_size "
                             f"{self.model.hop_size}")
        if isinstance(self.segment_samples, bool) or not isinstance(self.segment_samples, int) \
                or self.segment_samples < 4 * hop or self.segment_samples % hop:
            raise ValueError(f"segment_samples must be a multiple of the hop {hop} and at least {4 * hop}, got "
                             f"{self.segment_samples!r}")
        for name in ("lr", "weight_decay", "mel_loss_coeff", "mrd_loss_coeff"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if len(tuple(self.betas)) != 2 or not all(0 <= float(b) < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")


@register_recipe("tadicodec-vocoder")
class TaDiCodecVocoderRecipe(Recipe):
    config_class = TaDiCodecVocoderRecipeConfig

    def build_model(self):
        from .vocoder import TaDiCodecVocoder

        torch.manual_seed(self.train.seed)
        return TaDiCodecVocoder(self.config.model.vocoder)

    def warm_start(self, model, pretrained) -> None:
        """``--init`` a TaDiCodec (e.g. a release) or a vocoder: fine-tune its vocoder."""
        from zoo.registry import load_state_strict

        source = getattr(pretrained, "vocoder", pretrained)
        load_state_strict(model, source.state_dict(), source="--init vocoder")

    def _disc_names(self):
        return ["mpd", "mrd"] + (["dac"] if self.config.use_dac_discriminator else [])

    def build_aux_modules(self):
        from audio.discriminators import DACDiscriminator, MultiPeriodDiscriminator, MultiResolutionDiscriminator

        c = self.config
        mods = {"mpd": MultiPeriodDiscriminator(c.mpd_periods, channels=c.period_channels),
                "mrd": MultiResolutionDiscriminator()}
        if c.use_dac_discriminator:
            mods["dac"] = DACDiscriminator(period_channels=c.period_channels)
        return mods

    def build_optimizers(self, modules):
        c = self.config

        def adamw(params):
            return torch.optim.AdamW(params, lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay)

        disc = [p for n in self._disc_names() for p in modules[n].parameters()]
        return {"model": adamw(modules["model"].parameters()), "disc": adamw(disc)}

    def build_schedulers(self, optimizers):
        if not self.config.cosine_schedule:
            return {}
        total = max(1, self.train.max_steps)
        return {k: torch.optim.lr_scheduler.LambdaLR(
            o, lambda s: cosine_decay(s / total)) for k, o in optimizers.items()}

    def data_config(self):
        return DataConfig("audio", sample_rate=self.config.model.sample_rate,
                          segment_samples=self.config.segment_samples, seed=self.train.seed)

    def _frontend(self, device):
        if not hasattr(self, "_mel_in"):
            from audio import losses as L

            from .model import mel_frontend

            self._mel_in = mel_frontend(self.config.model)
            # Vocos' reconstruction loss: L1 of log mels, 24 kHz, n_fft 1024, hop 256, 100 mels (WavTokenizer's)
            self._mel_loss = L.MelLoss(sample_rate=self.config.model.sample_rate)
        return self._mel_in.to(device), self._mel_loss.to(device)

    def _vocode(self, vocoder, wav: torch.Tensor):
        mel_in, _ = self._frontend(wav.device)
        with torch.no_grad():
            mel = mel_in(wav[:, 0].float()).transpose(1, 2)  # [B, mels, frames]
        return vocoder(mel)[:, None, : wav.shape[-1]]

    def training_step(self, ctx, batch) -> Dict[str, float]:
        from audio import gan

        c = self.config
        x = batch["x"].float()  # [B, 1, T]
        y_hat = self._vocode(ctx.modules["model"], x)
        discs = [(n, ctx.modules[n]) for n in self._disc_names()]
        d_loss = gan.discriminator_loss(discs, x, y_hat, None, c.mrd_loss_coeff)
        ctx.backward(d_loss)
        ctx.optimizer_step("disc", clip_modules=self._disc_names())
        g_adv, g_fm = gan.generator_adversarial_terms(discs, x, y_hat, None, c.mrd_loss_coeff)
        mel = self._frontend(x.device)[1](x, y_hat)
        g_loss = g_adv + g_fm + c.mel_loss_coeff * mel
        ctx.backward(g_loss)
        ctx.optimizer_step("model")
        return {"loss": float(g_loss.detach()), "d_loss": float(d_loss.detach()), "mel_loss": float(mel.detach())}

    def evaluate(self, ctx, batch) -> Dict[str, float]:
        x = batch["x"].float()
        y_hat = self._vocode(ctx.unwrap(), x)
        return {"recon_loss": float(self._frontend(x.device)[1](x, y_hat))}
