"""Official TiTok release files -> :class:`~image.titok.model.TiTok` (and the MaskGIT-VQGAN ``.bin``).

A TiTok release (``yucornetto/tokenizer_titok_*``) is the huggingface_hub mixin layout: ``config.json`` (the
reference's OmegaConf tree, parsed by :func:`~image.titok.config.official_config`) and ``model.safetensors``
(every ``TiTok.state_dict()`` key, float32); older snapshots may carry ``pytorch_model.bin`` instead, read with
``torch.load(weights_only=True)``. The MaskGIT-VQGAN (``fun-research/TiTok`` ``maskgit-vqgan-imagenet-f16-256.bin``)
is a ``torch.save``'d state dict with ``encoder.*``, ``decoder.*`` and ``quantize.embedding.weight``.

Conversion is a pure function of the state dict: the network keeps the release's key names, except that every
``nn.Embedding`` codebook (``quantize.embedding.weight``, ``pixel_quantize.embedding.weight``) becomes the
``zoo.quantizers.VQ`` codebook state. Loading is strict: every release tensor must be consumed (no TiTok release
carries training-only tensors, so :data:`TRAINING_ONLY_PREFIXES` is empty), and every model tensor present,
with the right shape; anything else fails with the list of keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

from zoo.quantizers import VQ
from zoo.registry import load_state_strict

from .config import MaskGITVQGANConfig, official_config, vqgan_config_from

__all__ = ["TRAINING_ONLY_PREFIXES", "convert_state_dict", "export_state_dict", "convert_vqgan_state_dict", "read_release",
           "load_official_titok", "load_maskgit_vqgan", "vqgan_config_from_state", "read_state_file"]

PathLike = Union[str, Path]

#: release tensors that inference never uses (none in the nine TiTok releases)
TRAINING_ONLY_PREFIXES: Tuple[str, ...] = ()
_CODEBOOKS = ("quantize.", "pixel_quantize.")


def _codebook_state(state: Mapping[str, torch.Tensor], prefix: str, out: Dict[str, torch.Tensor]) -> None:
    for k, v in VQ.convert_embedding_state(state, prefix).items():
        out[prefix + k] = v


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Release state dict -> this package's TiTok state dict (pure; the input is not modified)."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of names to tensors, got {type(state).__name__}")
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"checkpoint entry {key!r} is not a tensor ({type(value).__name__})")
        if TRAINING_ONLY_PREFIXES and key.startswith(TRAINING_ONLY_PREFIXES):
            continue
        if any(key == p + "embedding.weight" for p in _CODEBOOKS):
            continue
        out[key] = value
    for p in _CODEBOOKS:
        if p + "embedding.weight" in state:
            _codebook_state(state, p, out)
    return out


def export_state_dict(model) -> Dict[str, torch.Tensor]:
    """The inverse of :func:`convert_state_dict`: a TiTok or MaskGIT-VQGAN model's weights under the reference's
    key names (``*.embedding.weight`` codebooks), e.g. to load them back into the original code."""
    out: Dict[str, torch.Tensor] = {}
    prefixes = tuple(p for p in _CODEBOOKS if getattr(model, p[:-1], None) is not None)
    for key, value in model.state_dict().items():
        if key.startswith(prefixes):
            continue
        out[key] = value.detach().clone()
    for p in prefixes:
        out[p + "embedding.weight"] = getattr(model, p[:-1]).embed.detach().float().clone()
    return out


def convert_vqgan_state_dict(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """MaskGIT-VQGAN ``.bin`` state dict -> :class:`MaskGITVQGAN` state dict (codebook -> VQ state)."""
    return convert_state_dict(state)


def read_state_file(path: PathLike) -> Dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a PyTorch pickle read with ``weights_only=True`` (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types on truncated files
            raise ValueError(f"cannot read {path} as safetensors (truncated or not a safetensors file): "
                             f"{type(exc).__name__}: {exc}") from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors for truncated or foreign files
        raise ValueError(f"cannot read {path} as a PyTorch state dict (weights_only): "
                         f"{type(exc).__name__}: {exc}") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (got {type(obj).__name__})")
    return dict(obj)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def read_release(*paths: PathLike) -> Tuple[Dict[str, Any], Path]:
    """Locate a release's ``config.json`` and weights among ``paths`` (a folder, or the files themselves).

    Returns (the parsed config tree, the weights path).
    """
    if not paths:
        raise ValueError("load_official('titok', ...) needs the release folder or its config.json and "
                         "model.safetensors")
    config_path: Optional[Path] = None
    weights: Optional[Path] = None
    for p in paths:
        if not isinstance(p, (str, Path)):
            raise TypeError(f"release paths must be str or Path, got {type(p).__name__}")
        p = Path(p)
        if p.is_dir():
            if (p / "config.json").is_file():
                config_path = p / "config.json"
            for name in ("model.safetensors", "pytorch_model.bin"):
                if (p / name).is_file():
                    weights = p / name
                    break
        elif not p.exists():
            raise FileNotFoundError(f"no such file or folder: {p}")
        elif p.suffix == ".json":
            config_path = p
        elif p.suffix in (".safetensors", ".bin", ".pt", ".pth"):
            weights = p
        else:
            raise ValueError(f"unrecognised TiTok release file {p} (expected config.json and model.safetensors)")
    if config_path is None:
        raise FileNotFoundError(f"no config.json among {[str(p) for p in paths]}")
    if weights is None:
        raise FileNotFoundError(f"no model.safetensors (or pytorch_model.bin) among {[str(p) for p in paths]}")
    return _read_json(config_path), weights


def _is_vqgan_state(state: Mapping[str, torch.Tensor]) -> bool:
    return ("quantize.embedding.weight" in state and "latent_tokens" not in state
            and any(k.startswith("encoder.down.") for k in state))


def load_official_titok(*paths: PathLike, device=None):
    """Build a TiTok model from its release files (strict). A MaskGIT-VQGAN ``.bin`` (alone, optionally with a
    ``pixel_vqgan``-style JSON of its hyper-parameters) builds a :class:`MaskGITVQGAN` instead."""
    from .model import TiTok

    files = [Path(p) for p in paths if isinstance(p, (str, Path))]
    if files and all(p.is_file() for p in files) and any(p.suffix in (".bin", ".pt", ".pth") for p in files):
        weights = next(p for p in files if p.suffix in (".bin", ".pt", ".pth"))
        state = read_state_file(weights)
        if _is_vqgan_state(state):
            cfg_file = next((p for p in files if p.suffix == ".json"), None)
            return load_maskgit_vqgan(weights, cfg_file, device=device, _state=state)
    tree, weights = read_release(*paths)
    config = official_config(tree)
    state = read_state_file(weights)
    model = TiTok(config)
    load_state_strict(model, convert_state_dict(state), source=str(weights))
    model.eval()
    if device is not None:
        model.to(device)
    return model


def vqgan_config_from_state(state: Mapping[str, torch.Tensor]) -> MaskGITVQGANConfig:
    """Infer a MaskGIT-VQGAN config from its tensor shapes (the release ships no config file)."""
    try:
        emb = state["quantize.embedding.weight"]
        hidden = state["encoder.conv_in.weight"].shape[0]
        levels = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.down.")})
        blocks = sorted({int(k.split(".")[4]) for k in state if k.startswith("encoder.down.0.block.")})
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"not a MaskGIT-VQGAN state dict (missing {exc})") from None
    if not levels or levels != list(range(len(levels))) or not blocks:
        raise ValueError("not a MaskGIT-VQGAN state dict: encoder.down.* levels/blocks are missing or not contiguous")
    mult = []
    for i in levels:
        w = state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]
        if w % hidden:
            raise ValueError(f"encoder.down.{i} width {w} is not a multiple of hidden_channels {hidden}")
        mult.append(w // hidden)
    return MaskGITVQGANConfig(num_embeddings=int(emb.shape[0]), z_channels=int(emb.shape[1]),
                              hidden_channels=int(hidden), channel_mult=tuple(mult), num_res_blocks=len(blocks),
                              resolution=256, num_channels=int(state["encoder.conv_in.weight"].shape[1]))


def load_maskgit_vqgan(weights: PathLike, config: Union[None, PathLike, Dict[str, Any], MaskGITVQGANConfig] = None,
                       *, device=None, _state: Optional[Dict[str, torch.Tensor]] = None):
    """The MaskGIT-VQGAN tokenizer from its ``.bin`` (``torch.load(weights_only=True)``), strictly.

    ``config``: a :class:`MaskGITVQGANConfig`, a dict / JSON file of ``pixel_vqgan``-style keys, or None for the
    architecture read off the tensor shapes (input resolution then defaults to 256; the network itself is fully
    convolutional, the resolution only fixes the accepted image size).
    """
    from .maskgit_vqgan import MaskGITVQGAN

    state = _state if _state is not None else read_state_file(weights)
    if not _is_vqgan_state(state):
        raise ValueError(f"{weights} is not a MaskGIT-VQGAN checkpoint (expected encoder.down.*, decoder.* and "
                         f"quantize.embedding.weight; found e.g. {sorted(state)[:5]})")
    if config is None:
        cfg = vqgan_config_from_state(state)
    elif isinstance(config, MaskGITVQGANConfig):
        cfg = config
    elif isinstance(config, dict):
        cfg = vqgan_config_from(config)
    elif isinstance(config, (str, Path)):
        cfg = vqgan_config_from(_read_json(Path(config)))
    else:
        raise TypeError(f"config must be a MaskGITVQGANConfig, a dict, a JSON path or None, got {type(config).__name__}")
    model = MaskGITVQGAN(cfg)
    load_state_strict(model, convert_vqgan_state_dict(state), source=str(weights))
    model.eval()
    if device is not None:
        model.to(device)
    return model
