"""Configuration of LiPCoT (``LiPCoTConfig``). Defaults are the released model's settings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

from zoo.config import ConfigBase
from zoo.validation import check_positive_int

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class LiPCoTConfig(ConfigBase):
    """LiPCoT: one token per window from a warped-LPC feature vector and a K-means vocabulary.

    order: LPC order p (16). warp: frequency-warping factor lambda in (-1, 1) (0.2); ``None`` = plain Burg.
    method: latent features, 1 = poles (2p+1), 2 = LPC coefficients + log10 E (p+1), 3 = weighted cepstrum (p+1).
    sfreq: rate the model was fitted at (500 Hz); inputs at other rates are resampled to it.
    window_seconds: window length for ``encode`` of long series (``None``: every channel of an item is one
        window, as in the reference pipeline, where each 5 s segment channel is one window).
    vocab_size: number of clusters K; ``words``: cluster id -> word (K entries); ``bert_vocab``: the BERT vocabulary
        (``vocab.txt`` lines: the special tokens then the words), so cluster ``i`` has BERT id
        ``bert_vocab.index(words[i])``. model_max_length: BERT sentence length (``[CLS]`` + words + ``[SEP]``,
        padded with ``[PAD]``). unk_token: the word of an unknown cluster.
    """

    order: int = 16
    warp: Optional[float] = 0.2
    method: int = 2
    sfreq: float = 500.0
    window_seconds: Optional[float] = None
    vocab_size: int = 64
    model_max_length: int = 64
    unk_token: str = "[UNK]"
    words: List[str] = field(default_factory=list)
    bert_vocab: List[str] = field(default_factory=list)

    def __post_init__(self):
        check_positive_int("LiPCoTConfig.order", self.order)
        check_positive_int("LiPCoTConfig.vocab_size", self.vocab_size)
        check_positive_int("LiPCoTConfig.model_max_length", self.model_max_length)
        if self.method not in (1, 2, 3):
            raise ValueError(f"LiPCoTConfig.method must be 1 (poles), 2 (LPC) or 3 (cepstrum), got {self.method!r}")
        if self.warp is not None:
            if isinstance(self.warp, bool) or not isinstance(self.warp, (int, float)) or not -1 < self.warp < 1:
                raise ValueError(f"LiPCoTConfig.warp must be None or a number in (-1, 1), got {self.warp!r}")
        if isinstance(self.sfreq, bool) or not isinstance(self.sfreq, (int, float)) or not self.sfreq > 0 \
                or not math.isfinite(self.sfreq):
            raise ValueError(f"LiPCoTConfig.sfreq must be a positive number of Hz, got {self.sfreq!r}")
        if self.window_seconds is not None and not (isinstance(self.window_seconds, (int, float))
                                                    and self.window_seconds > 0):
            raise ValueError(f"LiPCoTConfig.window_seconds must be None or > 0, got {self.window_seconds!r}")
        if self.model_max_length < 3:
            raise ValueError("LiPCoTConfig.model_max_length must be at least 3 ([CLS] word [SEP])")
        if not self.words:
            self.words = [f"lpc{i}" for i in range(self.vocab_size)]
        if len(self.words) != self.vocab_size:
            raise ValueError(f"LiPCoTConfig.words has {len(self.words)} entries, expected vocab_size="
                             f"{self.vocab_size} (one word per cluster)")
        if len(set(self.words)) != len(self.words):
            raise ValueError("LiPCoTConfig.words must be distinct")
        if not self.bert_vocab:
            self.bert_vocab = SPECIAL_TOKENS + list(self.words)
        missing = [s for s in SPECIAL_TOKENS if s not in self.bert_vocab]
        if missing:
            raise ValueError(f"LiPCoTConfig.bert_vocab lacks the special tokens {missing}")
        if self.unk_token not in self.bert_vocab:
            raise ValueError(f"LiPCoTConfig.unk_token {self.unk_token!r} is not in bert_vocab")
        absent = [w for w in self.words if w not in self.bert_vocab]
        if absent:
            raise ValueError(f"LiPCoTConfig: words not in bert_vocab: {absent[:10]}")

    @property
    def num_features(self) -> int:
        return 2 * self.order + 1 if self.method == 1 else self.order + 1

    @property
    def method_name(self) -> str:
        return {1: "poles", 2: "lpc", 3: "cepstrum"}[self.method]
