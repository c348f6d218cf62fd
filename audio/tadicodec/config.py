"""TaDiCodec configuration. Defaults = the released ``amphion/TaDiCodec`` (config.json of the release)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from zoo.config import ConfigBase

from .sampler import RESCALE_MODES

__all__ = ["TaDiCodecConfig", "VocosConfig"]


def _pos(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"TaDiCodecConfig.{name} must be a positive int, got {value!r}")


def _unit(name: str, value, interval: str) -> None:
    """``value`` must be a real number in ``interval`` (``"[0, 1]"`` or ``"[0, 1)"``)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value
    ok = ok and (value < 1 if interval.endswith(")") else value <= 1)
    if not ok:
        raise ValueError(f"TaDiCodecConfig.{name} must be a number in {interval}, got {value!r}")


@dataclass
class VocosConfig(ConfigBase):
    """The Vocos vocoder (release: top-level ``model.vocos``): normalised mel ``[B, input_channels, T]`` ->
    waveform ``[B, T * hop_size]``."""

    input_channels: int = 128
    dim: int = 1024
    intermediate_dim: int = 4096
    num_layers: int = 30
    n_fft: int = 1920
    hop_size: int = 480
    padding: str = "same"
    adanorm_num_embeddings: Optional[int] = None

    def __post_init__(self):
        for name in ("input_channels", "dim", "intermediate_dim", "num_layers", "n_fft", "hop_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"VocosConfig.{name} must be a positive int, got {value!r}")
        if self.padding not in ("same", "center"):
            raise ValueError(f"VocosConfig.padding must be 'same' or 'center', got {self.padding!r}")
        if self.adanorm_num_embeddings is not None:
            raise ValueError("VocosConfig.adanorm_num_embeddings: the TaDiCodec vocoder has no adaptive norms "
                             f"(got {self.adanorm_num_embeddings!r}); no release uses them")


@dataclass
class TaDiCodecConfig(ConfigBase):
    """Hyperparameters of TaDiCodec (names follow the release's ``preprocess`` and ``model.tadicodec`` blocks).

    Front-end: 24 kHz, ``n_fft``/``win_size`` 1920, ``hop_size`` 480 (50 frames/s), ``num_mels`` slaney mels from
    ``fmin`` to ``fmax``, natural log clamped at 1e-5, normalised ``(x - mel_mean) / sqrt(mel_var)``.
    Codec: encoder (``encoder_num_layers``), linear down-sampling by ``down_sample_factor`` (6.25 tokens/s),
    ``vq_emb_dim``-bit BSQ (codebook ``2**vq_emb_dim``), decoder (``decoder_num_layers``) conditioned on the text
    (``text_vocab_size`` ids), the tokens and a mel prompt. ``sigma`` is the flow path's minimum noise (training).
    Sampling defaults: ``num_steps``, ``guidance_scale``, ``rescale`` (the reference pipeline's 32 / 2.0 / 0.75),
    ``rescale_mode`` (``"item"``: per-item CFG rescale; ``"batch"``: the reference's batch-coupled rescale),
    ``self_prompt_frames`` (:meth:`reconstruct` without a prompt utterance uses the first 150 frames = 3 s of the
    target as prompt, as the reference pipeline does). ``text_tokenizer_json``: the release's ``tokenizer.json``
    text, kept so a saved model can still tokenize transcripts (``None``: pass ``text_ids``).
    """

    # preprocess
    sample_rate: int = 24000
    n_fft: int = 1920
    win_size: int = 1920
    hop_size: int = 480
    num_mels: int = 128
    fmin: float = 0.0
    fmax: float = 12000.0
    mel_mean: float = -4.92
    mel_var: float = 8.14
    # model.tadicodec
    mel_dim: int = 128
    in_dim: int = 128
    hidden_size: int = 1024
    encoder_num_layers: int = 8
    decoder_num_layers: int = 16
    num_heads: int = 16
    down_sample_factor: int = 8
    vq_emb_dim: int = 14
    use_text_cond: bool = True
    text_vocab_size: int = 32100
    sigma: float = 1e-5
    cond_drop_p: float = 0.2
    context_drop_p: float = 0.2
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    # model.vocos
    vocoder: VocosConfig = field(default_factory=VocosConfig)
    # sampling defaults
    num_steps: int = 32
    guidance_scale: float = 2.0
    rescale: float = 0.75
    rescale_mode: str = "item"
    self_prompt_frames: int = 150
    # text tokenizer (tokenizer.json contents)
    text_tokenizer_json: Optional[str] = field(default=None, repr=False)

    def __post_init__(self):
        if isinstance(self.vocoder, dict):
            self.vocoder = VocosConfig.from_dict(self.vocoder)
        for name in ("sample_rate", "n_fft", "win_size", "hop_size", "num_mels", "mel_dim", "in_dim",
                     "hidden_size", "encoder_num_layers", "decoder_num_layers", "num_heads", "down_sample_factor",
                     "vq_emb_dim", "text_vocab_size", "num_steps", "self_prompt_frames"):
            _pos(name, getattr(self, name))
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"TaDiCodecConfig: hidden_size {self.hidden_size} must split into {self.num_heads} "
                             "heads of even size (RoPE)")
        if self.hidden_size < 4 or self.hidden_size % 2:
            raise ValueError(f"TaDiCodecConfig.hidden_size must be even and >= 4, got {self.hidden_size}")
        if self.vq_emb_dim > 20:
            raise ValueError(f"TaDiCodecConfig.vq_emb_dim must be <= 20 bits, got {self.vq_emb_dim}")
        if self.in_dim != self.num_mels or self.mel_dim != self.num_mels:
            raise ValueError(f"TaDiCodecConfig: in_dim ({self.in_dim}) and mel_dim ({self.mel_dim}) must equal "
                             f"num_mels ({self.num_mels}): the encoder and decoder work on the mel front-end")
        if self.vocoder.input_channels != self.mel_dim:
            raise ValueError(f"TaDiCodecConfig: vocoder.input_channels ({self.vocoder.input_channels}) must equal "
                             f"mel_dim ({self.mel_dim})")
        if self.vocoder.hop_size != self.hop_size:
            raise ValueError(f"TaDiCodecConfig: vocoder.hop_size ({self.vocoder.hop_size}) must equal hop_size "
                             f"({self.hop_size}) so one mel frame becomes one hop of audio")
        if not self.mel_var > 0:
            raise ValueError(f"TaDiCodecConfig.mel_var must be > 0, got {self.mel_var}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"TaDiCodecConfig: need 0 <= fmin < fmax <= sample_rate/2, got {self.fmin}, {self.fmax}")
        if self.win_size > self.n_fft or self.hop_size > self.win_size:
            raise ValueError("TaDiCodecConfig: need hop_size <= win_size <= n_fft")
        if self.rescale_mode not in RESCALE_MODES:
            raise ValueError(f"TaDiCodecConfig.rescale_mode must be one of {list(RESCALE_MODES)}, "
                             f"got {self.rescale_mode!r}")
        if not (0 <= self.rescale <= 1):
            raise ValueError(f"TaDiCodecConfig.rescale must lie in [0, 1], got {self.rescale}")
        if self.guidance_scale < 0:
            raise ValueError(f"TaDiCodecConfig.guidance_scale must be >= 0, got {self.guidance_scale}")
        for name in ("cond_drop_p", "context_drop_p"):
            _unit(name, getattr(self, name), "[0, 1]")
        _unit("sigma", self.sigma, "[0, 1)")
        for name in ("rope_theta", "rms_norm_eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"TaDiCodecConfig.{name} must be a finite number > 0, got {v!r}")
        if self.text_tokenizer_json is not None and not isinstance(self.text_tokenizer_json, str):
            raise TypeError("TaDiCodecConfig.text_tokenizer_json must be the tokenizer.json text or None")

    # ------------------------------------------------------------------ derived figures
    @property
    def frame_rate(self) -> float:
        """Mel frames per second (50)."""
        return self.sample_rate / self.hop_size

    @property
    def token_rate(self) -> float:
        """Tokens per second (6.25)."""
        return self.frame_rate / self.down_sample_factor

    @property
    def codebook_size(self) -> int:
        return 2 ** self.vq_emb_dim

    @property
    def samples_per_token(self) -> int:
        return self.hop_size * self.down_sample_factor

    @property
    def mel_std(self) -> float:
        return math.sqrt(self.mel_var)
