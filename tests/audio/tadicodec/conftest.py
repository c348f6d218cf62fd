"""Small random TaDiCodec models for unit tests."""

from __future__ import annotations

import pytest
import torch


def tiny_config(**overrides):
    from audio.tadicodec import TaDiCodecConfig, VocosConfig

    kw = dict(hidden_size=32, num_heads=2, encoder_num_layers=1, decoder_num_layers=1, text_vocab_size=64,
              vocoder=VocosConfig(dim=32, intermediate_dim=48, num_layers=1), num_steps=2)
    kw.update(overrides)
    return TaDiCodecConfig(**kw)


# transcripts of the English clips in ../shared/data/audio/speech (from its DATA.md)
TRANSCRIPTS = {
    "en_real_arctic_a0007.wav": "And you always want to see it in the superlative degree.",
    "en_real_arctic_a0009.wav": "He turned sharply, and faced Gregson across the table.",
    "en_real_pyannote_diane.wav": "Oh, I'm originally from Chicago also. I'm in New Jersey now though.",
    "en_real_pyannote_sheila.wav": "And I'm Sheila in Texas, originally from Chicago.",
    "en_real_trump0.wav": "In short, we embarked on a mission to make America great again.",
    "en_synth_espeak_us_male.wav": "The quick brown fox jumps over the lazy dog near the river bank.",
    "en_synth_espeak_gb_female.wav": "Please call Stella and ask her to bring these things with her from the store.",
}


def word_tokenizer_json(texts=None) -> str:
    """A tiny word-level tokenizer.json (lower-case words, whitespace / punctuation split) built with the
    tokenizers library: ``[UNK]`` + the words of ``texts`` (default: a fixed ten-word list)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    if texts is None:
        words = ["[UNK]", "hello", "world", "this", "is", "a", "test", "prompt", "speech", "."]
    else:
        split = pre_tokenizers.Whitespace()
        words = ["[UNK]"] + sorted({w for t in texts for w, _ in split.pre_tokenize_str(t.lower())})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok.to_str()


def randomize(model, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim > 1 else 0.1)
                    + (1.0 if name.endswith("to_weight.bias") or name.endswith("norm.weight") else 0.0))
    return model.eval()


@pytest.fixture(scope="module")
def tiny():
    from audio.tadicodec import TaDiCodec

    torch.manual_seed(0)
    return randomize(TaDiCodec(tiny_config(text_tokenizer_json=word_tokenizer_json())))


@pytest.fixture
def speech():
    """Two seconds of a deterministic speech-like signal at 24 kHz (harmonics with a moving pitch + noise)."""
    g = torch.Generator().manual_seed(1)
    t = torch.arange(48000) / 24000.0
    f0 = 120 + 30 * torch.sin(2 * torch.pi * 0.7 * t)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / 24000.0
    x = sum(torch.sin(k * phase) / k for k in range(1, 6)) * 0.1 + 0.01 * torch.randn(48000, generator=g)
    return x.float()
