"""The tokenizer contract: ``Tokenizer`` and its modality subclasses.

A family subclasses one of ``AudioTokenizer``, ``ImageTokenizer``, ``VideoTokenizer`` or ``SeriesTokenizer``,
registers itself with :func:`zoo.registry.register_family`, and implements

- ``_encode(x, **kwargs) -> Tokens`` on an already validated input that lives on the model's device,
- ``_decode(tokens, **kwargs) -> Tensor`` on already validated tokens on the model's device,
- ``spec`` (a :class:`TokenizerSpec`),
- optionally ``from_official(*paths, **kwargs)`` (the release's own files -> a ready model).

The public ``encode``/``decode`` validate their inputs (raising ``TypeError``/``ValueError`` that name the
argument, what was given and what was expected), run under ``torch.inference_mode`` on the model's device, and
return results on the input's device.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, Optional, Tuple, Type, Union

import torch
from huggingface_hub import ModelHubMixin
from torch import nn

from .config import ConfigBase
from .tokens import Tokens
from .validation import check_ids, check_tensor, describe

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_TAG = "tokenzoo"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TokenizerSpec:
    """What a tokenizer produces.

    ``token_rate`` is in ``token_rate_unit`` (``"tokens/s"``, ``"tokens/image"``, ``"tokens/frame"``,
    ``"tokens/window"``) and counts positions, not codebooks; ``bitrate`` multiplies it by the number of
    codebooks and ``log2(codebook_size)``, in ``bitrate_unit`` (``"bit/s"`` or ``"bits/image"``...).
    Continuous tokenizers (``discrete=False``) have ``codebook_size == 0`` and state ``latent_channels``.
    """

    modality: str
    codebook_size: int
    num_codebooks: int
    token_rate: float
    token_rate_unit: str
    bitrate: float
    bitrate_unit: str
    discrete: bool = True
    latent_channels: Optional[int] = None

    @classmethod
    def discrete_spec(cls, modality: str, codebook_size: int, num_codebooks: int, token_rate: float,
                      token_rate_unit: str) -> "TokenizerSpec":
        per = token_rate_unit.split("/", 1)[1] if "/" in token_rate_unit else token_rate_unit
        bitrate = float(token_rate) * num_codebooks * math.log2(codebook_size)
        unit = "bit/s" if per == "s" else f"bits/{per}"
        return cls(modality, int(codebook_size), int(num_codebooks), float(token_rate), token_rate_unit,
                   bitrate, unit, True, None)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _model_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def as_tokens(tokens, name: str = "tokens") -> Tokens:
    """Accept ``Tokens`` or a bare integer tensor (no lengths)."""
    if isinstance(tokens, Tokens):
        return tokens
    if isinstance(tokens, torch.Tensor):
        if tokens.is_floating_point() or tokens.dtype == torch.bool:
            raise TypeError(f"{name} must be zoo.Tokens or an integer tensor, got dtype {tokens.dtype}")
        return Tokens(tokens)
    raise TypeError(f"{name} must be zoo.Tokens or an integer torch.Tensor, got {describe(tokens)}")


class Tokenizer(nn.Module, ModelHubMixin):
    """Base class of every tokenizer (see the module docstring for the contract)."""

    family: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    config_class: ClassVar[Type[ConfigBase]] = ConfigBase

    def __init__(self, config: ConfigBase):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    # ------------------------------------------------------------------ to implement
    @property
    def spec(self) -> TokenizerSpec:  # pragma: no cover - abstract
        raise NotImplementedError

    def _encode(self, x: torch.Tensor, **kwargs) -> Tokens:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode(self, tokens: Tokens, **kwargs) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare_input(self, x, **kwargs) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """Validate and normalise ``x``; consume the modality's keyword arguments, return the rest."""
        raise NotImplementedError

    def check_tokens(self, tokens: Tokens) -> Tokens:
        """Validate ids against the codebook. Families with several codebooks override the layout check."""
        spec = self.spec
        if not spec.discrete:
            raise TypeError(f"{type(self).__name__} is continuous ({spec.latent_channels} latent channels): "
                            "it has no discrete tokens; use encode_latents/decode_latents")
        check_ids("tokens.ids", tokens.ids, spec.codebook_size)
        return tokens

    # ------------------------------------------------------------------ public API
    @property
    def device(self) -> torch.device:
        return _model_device(self)

    def encode(self, x, **kwargs) -> Tokens:
        x, kwargs = self.prepare_input(x, **kwargs)
        out_device = x.device
        with torch.inference_mode():
            tokens = self._encode(x.to(self.device), **kwargs)
        return tokens.to(out_device)

    def decode(self, tokens, **kwargs) -> torch.Tensor:
        tokens = self.check_tokens(as_tokens(tokens))
        out_device = tokens.device
        with torch.inference_mode():
            y = self._decode(tokens.to(self.device), **kwargs)
        return y.to(out_device)

    # ------------------------------------------------------------------ persistence
    def config_dict(self) -> Dict[str, Any]:
        return {
            "format": FORMAT_TAG,
            "format_version": FORMAT_VERSION,
            "family": self.family,
            "modality": self.modality,
            "config": self.config.to_dict(),
        }

    def state_dict_for_saving(self) -> Dict[str, torch.Tensor]:
        """The tensors written to ``model.safetensors`` (contiguous CPU copies, no shared storage)."""
        return {k: v.detach().to("cpu").contiguous().clone() for k, v in self.state_dict().items()}

    def save_pretrained(self, save_directory, *, model_card: Optional[str] = None, **kwargs) -> None:
        """Write ``config.json``, ``model.safetensors`` and a model card ``README.md``.

        Files are written to a temporary folder beside the target and moved into place one by one only after
        all of them were written, so a failure never leaves a half-written checkpoint over a good one.
        """
        from safetensors.torch import save_file

        save_directory = Path(save_directory)
        if save_directory.exists() and not save_directory.is_dir():
            raise ValueError(f"save_pretrained: {save_directory} exists and is not a directory")
        save_directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tokenzoo-save-", dir=save_directory))
        try:
            (tmp / CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2, sort_keys=True) + "\n")
            save_file(self.state_dict_for_saving(), str(tmp / WEIGHTS_NAME),
                      metadata={"format": "pt", "tokenzoo.family": self.family})
            card = model_card if model_card is not None else self.default_model_card()
            (tmp / "README.md").write_text(card)
            for name in (WEIGHTS_NAME, CONFIG_NAME, "README.md"):
                os.replace(tmp / name, save_directory / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def default_model_card(self) -> str:
        spec = self.spec
        lines = [
            "---",
            "library_name: tokenzoo",
            f"tags: [tokenzoo, {self.modality}, {self.family}, tokenizer]",
            "---",
            f"# {self.family} tokenizer",
            "",
            f"A `{self.family}` {self.modality} tokenizer saved by tokenzoo.",
            "",
            "| modality | codebook | codebooks | token rate | bitrate |",
            "|---|---|---|---|---|",
            f"| {spec.modality} | {spec.codebook_size} | {spec.num_codebooks} | "
            f"{spec.token_rate:g} {spec.token_rate_unit} | {spec.bitrate:g} {spec.bitrate_unit} |",
            "",
            "```python",
            "import zoo",
            "tok = zoo.from_pretrained(\"<this folder or repo id>\")",
            "```",
            "",
        ]
        return "\n".join(lines)

    @classmethod
    def from_config(cls, config: Union[ConfigBase, Dict[str, Any]]) -> "Tokenizer":
        if isinstance(config, dict):
            config = cls.config_class.from_dict(config)
        return cls(config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, revision: Optional[str] = None,
                        cache_dir=None, local_files_only: Optional[bool] = None, **kwargs) -> "Tokenizer":
        """Load a tokenizer saved by :meth:`save_pretrained` (a folder, a Hub repo id, or a registry name)."""
        from .registry import from_pretrained as _from_pretrained

        model = _from_pretrained(pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir,
                                 local_files_only=local_files_only, **kwargs)
        if cls is not Tokenizer and not isinstance(model, cls):
            raise TypeError(f"{pretrained_model_name_or_path} holds a {type(model).__name__} "
                            f"(family {model.family!r}), not a {cls.__name__}")
        return model

    @classmethod
    def from_official(cls, *paths, **kwargs) -> "Tokenizer":  # pragma: no cover - per family
        raise NotImplementedError(f"{cls.__name__} has no loader for official release files")

    def extra_repr(self) -> str:
        return f"family={self.family!r}"


# ---------------------------------------------------------------------------------------------- modalities

class AudioTokenizer(Tokenizer):
    """Waveforms ``[B, T]`` or ``[B, 1, T]`` float at ``self.sample_rate`` (mono)."""

    modality = "audio"

    @property
    def sample_rate(self) -> int:
        return int(self.config.sample_rate)

    def prepare_input(self, wav, sample_rate: Optional[int] = None, lengths=None, **kwargs):
        wav = check_tensor("wav", wav, ndim=(2, 3), floating=True,
                           shape_hint="[B, T] or [B, 1, T] mono float audio")
        if wav.ndim == 3:
            if wav.shape[1] != 1:
                raise ValueError(f"wav must be mono: expected [B, 1, T], got {wav.shape[1]} channels "
                                 f"(shape {tuple(wav.shape)}); mix down first")
            wav = wav[:, 0]
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            raise ValueError(f"sample_rate {sample_rate} Hz does not match the model's {self.sample_rate} Hz; "
                             f"resample first (zoo.resample(wav, {sample_rate}, {self.sample_rate}))")
        if lengths is not None:
            kwargs["lengths"] = _check_lengths("lengths", lengths, wav.shape[0], wav.shape[-1])
        return wav, kwargs


class ImageTokenizer(Tokenizer):
    """Images ``[B, 3, H, W]`` float in ``[0, 1]`` (uint8 in ``[0, 255]`` is accepted and converted)."""

    modality = "image"
    value_range: ClassVar[Tuple[float, float]] = (0.0, 1.0)

    def expected_size(self) -> Optional[Tuple[int, int]]:
        """(H, W) the model needs, or None when any size divisible by the patch size works."""
        size = getattr(self.config, "image_size", None)
        if size is None:
            return None
        return (int(size), int(size)) if isinstance(size, int) else tuple(size)

    def prepare_input(self, images, **kwargs):
        images = check_tensor("images", images, ndim=(4,), shape_hint="[B, 3, H, W]")
        images = _to_unit_float("images", images, self.value_range)
        if images.shape[1] != 3:
            raise ValueError(f"images must have 3 channels (RGB) on axis 1, got shape {tuple(images.shape)}")
        size = self.expected_size()
        if size is not None and tuple(images.shape[-2:]) != tuple(size):
            raise ValueError(f"images must be {size[0]}x{size[1]} for this model, got "
                             f"{images.shape[-2]}x{images.shape[-1]}; resize or crop first")
        return images, kwargs


class VideoTokenizer(Tokenizer):
    """Videos ``[B, 3, F, H, W]`` float in ``[0, 1]`` (uint8 accepted); a single image is a one-frame video."""

    modality = "video"
    value_range: ClassVar[Tuple[float, float]] = (0.0, 1.0)

    def prepare_input(self, video, **kwargs):
        video = check_tensor("video", video, ndim=(5,), shape_hint="[B, 3, F, H, W]")
        video = _to_unit_float("video", video, self.value_range)
        if video.shape[1] != 3:
            raise ValueError(f"video must have 3 channels (RGB) on axis 1, got shape {tuple(video.shape)}")
        return video, kwargs


class SeriesTokenizer(Tokenizer):
    """Multichannel series ``[B, C, T]`` float sampled at ``sfreq`` Hz (EEG and other time series)."""

    modality = "eeg"

    @property
    def sfreq(self) -> float:
        return float(self.config.sfreq)

    def prepare_input(self, x, sfreq: Optional[float] = None, lengths=None, **kwargs):
        x = check_tensor("x", x, ndim=(3,), floating=True, shape_hint="[B, C, T] float series")
        if sfreq is not None:
            if not isinstance(sfreq, (int, float)) or isinstance(sfreq, bool) or not sfreq > 0:
                raise ValueError(f"sfreq must be a positive number of Hz, got {sfreq!r}")
            if float(sfreq) != self.sfreq:
                x = resample_series(x, float(sfreq), self.sfreq)
                if lengths is not None:
                    lengths = torch.as_tensor(lengths) * self.sfreq / float(sfreq)
                    lengths = torch.floor(lengths).long()
        if lengths is not None:
            kwargs["lengths"] = _check_lengths("lengths", lengths, x.shape[0], x.shape[-1])
        return x, kwargs


# ---------------------------------------------------------------------------------------------- helpers

def resample_series(x: torch.Tensor, orig: float, target: float) -> torch.Tensor:
    from .signal import resample

    return resample(x, orig, target)


def _to_unit_float(name: str, x: torch.Tensor, value_range: Tuple[float, float]) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.is_floating_point():
        raise TypeError(f"{name} must be float in [{value_range[0]}, {value_range[1]}] or uint8, got dtype {x.dtype}")
    lo, hi = value_range
    tol = 1e-3 * (hi - lo)
    mn, mx = float(x.min()), float(x.max())
    if mn < lo - tol or mx > hi + tol:
        raise ValueError(f"{name} values must lie in [{lo}, {hi}], got min {mn:.4g}, max {mx:.4g}")
    return x


def _check_lengths(name: str, lengths, batch: int, maximum: int) -> torch.Tensor:
    lengths = torch.as_tensor(lengths)
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {lengths.dtype}")
    if lengths.ndim != 1 or lengths.shape[0] != batch:
        raise ValueError(f"{name} must have shape [{batch}] (one per item), got {tuple(lengths.shape)}")
    if int(lengths.min()) < 1 or int(lengths.max()) > maximum:
        raise ValueError(f"{name} must lie in [1, {maximum}] (the padded length), got "
                         f"min {int(lengths.min())}, max {int(lengths.max())}")
    return lengths.long()
