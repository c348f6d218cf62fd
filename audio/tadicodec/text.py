"""The release's text tokenizer (``text_tokenizer/tokenizer.json``), read with the ``tokenizers`` library.

The reference pipeline calls ``AutoTokenizer(text_tokenizer)(prompt_text + text, add_special_tokens=False)``:
plain concatenation, no separator, no BOS/EOS, no text normalisation. A fast tokenizer's ``tokenizer.json``
holds the whole pipeline (normaliser, pre-tokenizer, model), so ``tokenizers.Tokenizer`` gives the same ids
offline without the ``transformers`` package.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Union

__all__ = ["TextTokenizer"]


class TextTokenizer:
    """Transcript -> list of ids (``encode``); built from a ``tokenizer.json`` file or its text."""

    def __init__(self, json_text: str, source: str = "tokenizer.json"):
        from tokenizers import Tokenizer

        if not isinstance(json_text, str) or not json_text.strip():
            raise ValueError(f"{source}: empty tokenizer description")
        try:
            self._tok = Tokenizer.from_str(json_text)
        except Exception as exc:  # tokenizers raises a plain Exception for malformed files
            raise ValueError(f"{source} is not a valid tokenizers JSON file: {exc}") from exc
        self.json_text = json_text
        self.source = source

    @classmethod
    def from_file(cls, path: Union[str, Path]) -> "TextTokenizer":
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {path} (the release's text_tokenizer/ folder holds it)")
        return cls(path.read_text(encoding="utf-8"), str(path))

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> List[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("text is empty: TaDiCodec's decoder needs the transcript")
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def __repr__(self) -> str:
        return f"TextTokenizer(source={self.source!r}, vocab_size={self.vocab_size})"
