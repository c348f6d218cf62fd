"""WavTokenizer (Ji et al., ICLR 2025): 24 kHz audio <-> 40 or 75 tokens/s from one 4096-entry codebook.

Importing this package registers the family ``"wavtokenizer"``.
"""

from .config import PRESETS, WavTokenizerConfig, preset
from .convert import (TRAINING_ONLY_PREFIXES, convert_state_dict, infer_config, load_official_wavtokenizer,
                      read_checkpoint, read_yaml)
from .model import WavTokenizer

__all__ = ["PRESETS", "TRAINING_ONLY_PREFIXES", "WavTokenizer", "WavTokenizerConfig", "convert_state_dict",
           "infer_config", "load_official_wavtokenizer", "preset", "read_checkpoint", "read_yaml"]
