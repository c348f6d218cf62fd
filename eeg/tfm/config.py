"""Configurations of TFM-Tokenizer (``TFMConfig``) and its downstream TFM-Encoder classifier (``TFMClassifierConfig``).

Defaults are the released models: ``get_tfm_tokenizer_2x2x8(8192, 64)`` and ``get_tfm_token_classifier_64x4``
(Jathurshan0330/TFM-Tokenizer, ``models/tfm_token.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from zoo.config import ConfigBase
from zoo.validation import check_choice, check_positive_int


def _check_common(name: str, emb_size: int, num_heads: int) -> None:
    check_positive_int(f"{name}.emb_size", emb_size)
    check_positive_int(f"{name}.num_heads", num_heads)
    if emb_size % num_heads:
        raise ValueError(f"{name}.emb_size ({emb_size}) must be divisible by num_heads ({num_heads})")


@dataclass
class TFMConfig(ConfigBase):
    """TFM-Tokenizer (``TFM_VQVAE2_deep``).

    sfreq: the rate the model works at (200 Hz; the STFT window/hop and the temporal conv are tied to it).
    n_fft, hop: STFT and temporal-patch window / hop in samples (200 / 100: 1 s windows, 0.5 s hop).
    n_freq: STFT bins used (0 .. n_freq-1; 100 = all but Nyquist); n_freq_patch: kernel/stride of the frequency
        patch embedding and of the gated frequency aggregation.
    emb_size, codebook_size: token embedding width and number of codes.
    freq_depth, temporal_depth, decoder_depth: layers of the three linear-attention transformers.
    num_heads: attention heads (8 in every released model).
    decoder_head: ``"mlp"`` (Linear-Tanh-Linear, keys ``decoder.0/2.*``, current code) or ``"linear"`` (one
        Linear, key ``decoder.weight``, older checkpoints).
    decay, eps: EMA decay / Laplace epsilon of the codebook (training only).
    normalize: divide each channel by its 0.95 quantile of |x| before tokenizing (what the reference data loaders
        do to every window before the model sees it). Off by default: ``encode`` then equals the reference
        ``tokenize`` on the given input, which must already be scaled (``encode(x, normalize=True)`` or
        ``eeg.preprocess.quantile_scale`` for raw EEG).
    """

    sfreq: float = 200.0
    n_fft: int = 200
    hop: int = 100
    n_freq: int = 100
    n_freq_patch: int = 5
    emb_size: int = 64
    codebook_size: int = 8192
    freq_depth: int = 2
    temporal_depth: int = 2
    decoder_depth: int = 8
    num_heads: int = 8
    decoder_head: str = "mlp"
    decay: float = 0.99
    eps: float = 1e-5
    normalize: bool = False

    def __post_init__(self):
        _check_common("TFMConfig", self.emb_size, self.num_heads)
        for name in ("n_fft", "hop", "n_freq", "n_freq_patch", "codebook_size"):
            check_positive_int(f"TFMConfig.{name}", getattr(self, name))
        for name in ("freq_depth", "temporal_depth", "decoder_depth"):
            check_positive_int(f"TFMConfig.{name}", getattr(self, name), allow_zero=True)
        check_choice("TFMConfig.decoder_head", self.decoder_head, ("mlp", "linear"))
        if not float(self.sfreq) > 0:
            raise ValueError(f"TFMConfig.sfreq must be > 0, got {self.sfreq}")
        if self.n_freq > self.n_fft // 2 + 1:
            raise ValueError(f"TFMConfig.n_freq ({self.n_freq}) exceeds the {self.n_fft // 2 + 1} one-sided bins "
                             f"of n_fft={self.n_fft}")
        if self.n_freq % self.n_freq_patch:
            raise ValueError(f"TFMConfig.n_freq ({self.n_freq}) must be divisible by n_freq_patch "
                             f"({self.n_freq_patch})")
        if self.n_freq_tokens % self.n_freq_patch:
            raise ValueError(f"TFMConfig: the {self.n_freq_tokens} frequency tokens must be divisible by "
                             f"n_freq_patch ({self.n_freq_patch}) for the gated aggregation")
        if self.emb_size % 4:
            raise ValueError(f"TFMConfig.emb_size must be divisible by 4 (GroupNorm(emb/4)), got {self.emb_size}")
        if self.agg_channels * self.n_agg != self.emb_size // 2:
            raise ValueError(f"TFMConfig: the frequency half ({self.agg_channels} x {self.n_agg} = "
                             f"{self.agg_channels * self.n_agg}) must equal emb_size/2 = {self.emb_size // 2}")

    @property
    def n_freq_tokens(self) -> int:
        """Frequency tokens per frame (20 for 100 bins in patches of 5)."""
        return self.n_freq // self.n_freq_patch

    @property
    def n_agg(self) -> int:
        """Positions after the gated frequency aggregation (4)."""
        return self.n_freq_tokens // self.n_freq_patch

    @property
    def agg_channels(self) -> int:
        """Channels of the gated aggregation: ``emb // (2 * (n_freq // n_freq_patch**2))`` as in the original."""
        divider = self.n_freq // (self.n_freq_patch * self.n_freq_patch)
        return self.emb_size // (divider * 2)

    @property
    def tokens_per_second(self) -> float:
        return float(self.sfreq) / self.hop


@dataclass
class TFMClassifierConfig(ConfigBase):
    """TFM-Encoder over token ids (``TFM_TOKEN_Classifier``).

    codebook_size: tokenizer codes; the embedding has one more row, the mask token (id = codebook_size).
    n_classes: outputs of the head (6 TUEV, 1 TUAB/CHB-MIT, codebook_size for the MTP model).
    max_channels: rows of the channel embedding (16); max_frames: length of the sinusoidal table (1000).
    """

    emb_size: int = 64
    codebook_size: int = 8192
    num_heads: int = 8
    depth: int = 4
    n_classes: int = 6
    max_channels: int = 16
    max_frames: int = 1000

    def __post_init__(self):
        _check_common("TFMClassifierConfig", self.emb_size, self.num_heads)
        for name in ("codebook_size", "n_classes", "max_channels", "max_frames"):
            check_positive_int(f"TFMClassifierConfig.{name}", getattr(self, name))
        check_positive_int("TFMClassifierConfig.depth", self.depth, allow_zero=True)
        if self.emb_size % 2:
            raise ValueError(f"TFMClassifierConfig.emb_size must be even (sinusoidal table), got {self.emb_size}")

    @property
    def mask_id(self) -> int:
        return self.codebook_size
