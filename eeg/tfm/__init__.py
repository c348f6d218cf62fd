"""TFM-Tokenizer: single-channel EEG time-frequency motif tokens (families ``tfm`` and ``tfm-classifier``)."""

from .config import TFMClassifierConfig, TFMConfig
from .model import TFMClassifier, TFMTokenizer

__all__ = ["TFMConfig", "TFMClassifierConfig", "TFMTokenizer", "TFMClassifier"]
