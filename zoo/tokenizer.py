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
import numbers
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
from .validation import check_ids, check_lengths, check_tensor, describe

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
        """The spec of a discrete tokenizer; the bitrate follows from the other figures."""
        _check_spec_args(modality, num_codebooks, token_rate, token_rate_unit)
        if isinstance(codebook_size, bool) or not isinstance(codebook_size, numbers.Integral) or codebook_size < 2:
            raise ValueError(f"codebook_size must be an int >= 2 for a discrete tokenizer, got {codebook_size!r}")
        per = token_rate_unit.split("/", 1)[1]
        bitrate = float(token_rate) * num_codebooks * math.log2(codebook_size)
        unit = "bit/s" if per == "s" else f"bits/{per}"
        return cls(modality, int(codebook_size), int(num_codebooks), float(token_rate), token_rate_unit,
                   bitrate, unit, True, None)

    @classmethod
    def continuous_spec(cls, modality: str, latent_channels: int, token_rate: float, token_rate_unit: str,
                        bits_per_value: int = 32) -> "TokenizerSpec":
        """The spec of a continuous tokenizer: ``latent_channels`` floats per position (bitrate at ``bits_per_value``)."""
        _check_spec_args(modality, 1, token_rate, token_rate_unit)
        if isinstance(latent_channels, bool) or not isinstance(latent_channels, numbers.Integral) or latent_channels < 1:
            raise ValueError(f"latent_channels must be a positive int, got {latent_channels!r}")
        per = token_rate_unit.split("/", 1)[1]
        unit = ("bit/s" if per == "s" else f"bits/{per}") + f" (float{bits_per_value} latents)"
        return cls(modality, 0, 1, float(token_rate), token_rate_unit,
                   float(token_rate) * int(latent_channels) * bits_per_value, unit, False, int(latent_channels))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _check_spec_args(modality, num_codebooks, token_rate, token_rate_unit) -> None:
    from .hub_configs_schema import MODALITIES

    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {list(MODALITIES)}, got {modality!r}")
    if isinstance(num_codebooks, bool) or not isinstance(num_codebooks, numbers.Integral) or num_codebooks < 1:
        raise ValueError(f"num_codebooks must be a positive int, got {num_codebooks!r}")
    if isinstance(token_rate, bool) or not isinstance(token_rate, numbers.Real) or not token_rate > 0:
        raise ValueError(f"token_rate must be a positive number, got {token_rate!r}")
    if not isinstance(token_rate_unit, str) or "/" not in token_rate_unit:
        raise ValueError(f"token_rate_unit must look like 'tokens/s' or 'tokens/image', got {token_rate_unit!r}")


class _eval_mode:
    """Run in eval mode (no dropout, no EMA codebook updates) and restore the previous mode afterwards."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.modes: Dict[nn.Module, bool] = {}

    def __enter__(self):
        self.modes = {m: m.training for m in self.module.modules()}
        self.module.eval()
        return self.module

    def __exit__(self, *exc):
        for m, mode in self.modes.items():
            m.training = mode
        return False


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
        """Validate ``x`` (see the modality class), tokenize it on the model's device, return on ``x``'s device."""
        x, kwargs = self.prepare_input(x, **kwargs)
        out_device = x.device
        device = self.device
        kwargs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        with torch.inference_mode(), _eval_mode(self):
            tokens = self._encode(x.to(device), **kwargs)
        if not isinstance(tokens, Tokens):
            raise TypeError(f"{type(self).__name__}._encode must return zoo.Tokens, got {describe(tokens)}")
        return tokens.to(out_device)

    def decode(self, tokens, **kwargs) -> torch.Tensor:
        """Validate ``tokens`` against the codebook, decode on the model's device, return on the tokens' device."""
        tokens = self.check_tokens(as_tokens(tokens))
        out_device = tokens.device
        device = self.device
        kwargs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        with torch.inference_mode(), _eval_mode(self):
            y = self._decode(tokens.to(device), **kwargs)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"{type(self).__name__}._decode must return a torch.Tensor, got {describe(y)}")
        return y.to(out_device)

    # ------------------------------------------------------------------ files
    def read_file(self, path) -> Tuple[torch.Tensor, Dict[str, Any], Dict[str, str]]:
        """Read one input file -> (a batch of one item, keyword arguments for ``encode``, metadata strings).

        The metadata records the source file and every conversion made on the way (``notes``).
        """
        raise NotImplementedError(f"{type(self).__name__} does not read files")

    def write_file(self, y: torch.Tensor, path, metadata: Optional[Dict[str, str]] = None) -> Path:
        """Write one decoded item ``y`` (a batch of one, as returned by ``decode``) to ``path``.

        This default writes a ``.npz`` holding the array under ``decoded``; the modality classes write their
        own formats and fall back to this for outputs that are not signals (e.g. a reconstructed spectrogram).
        """
        return _save_decoded_npz(path, _single_item(y))

    def output_suffix(self) -> str:
        """File suffix ``write_file`` uses by default."""
        return ".npz"

    def encode_file(self, path, **kwargs) -> Tokens:
        """Read ``path`` with :meth:`read_file` and encode it; the Tokens' metadata names the file and the notes."""
        x, enc_kwargs, meta = self.read_file(path)
        tokens = self.encode(x, **{**enc_kwargs, **kwargs})
        tokens.metadata.update(meta)
        tokens.metadata.setdefault("family", self.family)
        tokens.metadata.setdefault("modality", self.modality)
        name = getattr(self, "registry_name", None)
        if name:
            tokens.metadata.setdefault("model", str(name))
        return tokens

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

    def save_pretrained(self, save_directory, *, model_card: Optional[str] = None, config=None,
                        model_card_kwargs=None, push_to_hub: bool = False, repo_id: Optional[str] = None,
                        **push_to_hub_kwargs) -> Path:
        """Write ``config.json``, ``model.safetensors`` and a model card ``README.md``.

        ``push_to_hub=True`` then uploads the folder with ``huggingface_hub`` (``repo_id`` defaults to the
        folder's name; ``push_to_hub_kwargs`` go to :meth:`push_to_hub`). ``config`` and ``model_card_kwargs``
        are accepted for ``ModelHubMixin`` compatibility and ignored: the config is always the model's own.

        Files are written to a temporary folder beside the target and moved into place one by one only after
        all of them were written, so a failure never leaves a half-written checkpoint over a good one.
        """
        from safetensors.torch import save_file

        if not isinstance(save_directory, (str, os.PathLike)):
            raise TypeError(f"save_pretrained: save_directory must be a path, got {type(save_directory).__name__}")
        if push_to_hub_kwargs and not push_to_hub:
            raise TypeError(f"save_pretrained got unexpected keyword arguments {sorted(push_to_hub_kwargs)}")
        if model_card is not None and not isinstance(model_card, str):
            raise TypeError(f"save_pretrained: model_card must be a str, got {type(model_card).__name__}")
        save_directory = Path(save_directory)
        if save_directory.exists() and not save_directory.is_dir():
            raise ValueError(f"save_pretrained: {save_directory} exists and is not a directory")
        created = not save_directory.exists()
        save_directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tokenzoo-save-", dir=save_directory))
        moved = False
        try:
            config_text = json.dumps(self.config_dict(), indent=2, sort_keys=True) + "\n"
            card = model_card if model_card is not None else self.default_model_card()
            save_file(self.state_dict_for_saving(), str(tmp / WEIGHTS_NAME),
                      metadata={"format": "pt", "tokenzoo.family": self.family})
            (tmp / CONFIG_NAME).write_text(config_text)
            (tmp / "README.md").write_text(card)
            # Everything is written; only now replace the old files (each os.replace is atomic).
            for name in (WEIGHTS_NAME, CONFIG_NAME, "README.md"):
                os.replace(tmp / name, save_directory / name)
            moved = True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if created and not moved:
                shutil.rmtree(save_directory, ignore_errors=True)
        if push_to_hub:
            self.push_to_hub(repo_id or save_directory.resolve().name, **push_to_hub_kwargs)
        return save_directory

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
        if sample_rate is not None and (isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real)
                                        or not sample_rate > 0):
            raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate!r}")
        if sample_rate is not None and float(sample_rate) != self.sample_rate:
            raise ValueError(f"sample_rate {sample_rate} Hz does not match the model's {self.sample_rate} Hz; "
                             f"resample first (zoo.resample(wav, {sample_rate}, {self.sample_rate}))")
        if lengths is not None:
            kwargs["lengths"] = check_lengths("lengths", lengths, wav.shape[0], wav.shape[-1])
        return wav, kwargs

    def read_file(self, path):
        from . import io as zio

        loaded = zio.load_audio(path, self.sample_rate)
        meta = {"source": str(loaded.path), "sample_rate": str(self.sample_rate)}
        if loaded.notes:
            meta["notes"] = "; ".join(loaded.notes)
        return loaded.data, {}, meta

    def output_suffix(self) -> str:
        return ".wav"

    def write_file(self, y, path, metadata=None):
        from . import io as zio

        y = _single_item(y)
        return zio.save_audio(path, y.reshape(-1), self.sample_rate)


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

    def read_file(self, path):
        from . import io as zio

        loaded = zio.load_image(path)
        img, notes = loaded.data, list(loaded.notes)
        size = self.expected_size()
        if size is not None and tuple(img.shape[-2:]) != tuple(size):
            notes.append(f"resized and centre-cropped {img.shape[-2]}x{img.shape[-1]} -> {size[0]}x{size[1]}")
            img = zio.center_crop_resize(img, size)
        meta = {"source": str(loaded.path), "size": f"{img.shape[-2]}x{img.shape[-1]}"}
        if notes:
            meta["notes"] = "; ".join(notes)
        return img[None], {}, meta

    def output_suffix(self) -> str:
        return ".png"

    def write_file(self, y, path, metadata=None):
        from . import io as zio

        return zio.save_image(path, _to_unit_range(_single_item(y), self.value_range))


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

    def read_file(self, path):
        from . import io as zio

        loaded = zio.load_video(path)
        meta = {"source": str(loaded.path), "frames": str(loaded.data.shape[1])}
        if loaded.rate is not None:
            meta["fps"] = repr(float(loaded.rate))
        return loaded.data[None], {}, meta

    def write_file(self, y, path, metadata=None):
        from . import io as zio

        fps = (metadata or {}).get("fps")
        return zio.save_video(path, _to_unit_range(_single_item(y), self.value_range),
                              None if fps is None else float(fps))


class SeriesTokenizer(Tokenizer):
    """Multichannel series ``[B, C, T]`` float sampled at ``sfreq`` Hz (EEG and other time series)."""

    modality = "eeg"

    @property
    def sfreq(self) -> float:
        return float(self.config.sfreq)

    def prepare_input(self, x, sfreq: Optional[float] = None, lengths=None, **kwargs):
        x = check_tensor("x", x, ndim=(3,), floating=True, shape_hint="[B, C, T] float series")
        if lengths is not None:
            lengths = check_lengths("lengths", lengths, x.shape[0], x.shape[-1])
        if sfreq is not None:
            if not isinstance(sfreq, numbers.Real) or isinstance(sfreq, bool) or not sfreq > 0:
                raise ValueError(f"sfreq must be a positive number of Hz, got {sfreq!r}")
            if float(sfreq) != self.sfreq:
                x = resample_series(x, float(sfreq), self.sfreq)
                if lengths is not None:  # valid samples after resampling, at least one
                    lengths = torch.floor(lengths.double() * self.sfreq / float(sfreq)).long()
                    lengths = lengths.clamp(1, x.shape[-1])
        if lengths is not None:
            kwargs["lengths"] = lengths
        return x, kwargs

    def read_file(self, path):
        from . import io as zio

        loaded = zio.load_series(path)
        meta = {"source": str(loaded.path), "sfreq": repr(float(loaded.rate))}
        if float(loaded.rate) != self.sfreq:
            meta["notes"] = f"resampled {float(loaded.rate):g} Hz -> {self.sfreq:g} Hz"
        names = loaded.extra.get("ch_names")
        if names:
            meta["ch_names"] = json.dumps(list(names))
        return loaded.data[None], {"sfreq": float(loaded.rate)}, meta

    def write_file(self, y, path, metadata=None):
        from . import io as zio

        names = (metadata or {}).get("ch_names")
        y = _single_item(y)
        if y.ndim == 1:
            y = y[None]
        if y.ndim != 2:  # not a [C, T] signal (e.g. a reconstructed spectrogram): keep it as it is
            return _save_decoded_npz(path, y)
        ch_names = json.loads(names) if names else None
        if ch_names is not None and len(ch_names) != y.shape[0]:
            ch_names = None
        return zio.save_series(path, y, self.sfreq, ch_names)


# ---------------------------------------------------------------------------------------------- helpers

def resample_series(x: torch.Tensor, orig: float, target: float) -> torch.Tensor:
    from .signal import resample

    return resample(x, orig, target)


def _save_decoded_npz(path, y: torch.Tensor) -> Path:
    import numpy as np

    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise ValueError(f"{path}: this decoder's output (shape {tuple(y.shape)}) can only be written as .npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, decoded=y.detach().float().cpu().numpy())
    return path


def _single_item(y) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"expected a decoded tensor, got {describe(y)}")
    if y.ndim < 2 or y.shape[0] != 1:
        raise ValueError(f"write_file expects a batch of one item, got shape {tuple(y.shape)}")
    return y[0].detach().cpu()


def _to_unit_range(x: torch.Tensor, value_range: Tuple[float, float]) -> torch.Tensor:
    """Map a float tensor from ``value_range`` to ``[0, 1]`` (uint8 is left alone)."""
    if x.dtype == torch.uint8:
        return x
    lo, hi = value_range
    return ((x.float() - lo) / (hi - lo)).clamp(0, 1)


def _to_unit_float(name: str, x: torch.Tensor, value_range: Tuple[float, float]) -> torch.Tensor:
    """Check a float tensor lies in ``value_range``; uint8 ``[0, 255]`` is mapped onto ``value_range``."""
    if x.dtype == torch.uint8:
        lo, hi = value_range
        return x.float() / 255.0 * (hi - lo) + lo
    if not x.is_floating_point():
        raise TypeError(f"{name} must be float in [{value_range[0]}, {value_range[1]}] or uint8, got dtype {x.dtype}")
    lo, hi = value_range
    tol = 1e-3 * (hi - lo)
    mn, mx = float(x.min()), float(x.max())
    if mn < lo - tol or mx > hi + tol:
        raise ValueError(f"{name} values must lie in [{lo}, {hi}], got min {mn:.4g}, max {mx:.4g}")
    return x


