"""Official FlexTok release files -> :class:`~image.flextok.model.FlexTok`.

A release (``EPFL-VILAB/flextok_*``) is a folder with ``config.json`` (the hydra-style tree, module order = file
order) and ``model.safetensors`` (the whole ``state_dict`` including the VAE under ``vae.vae.*``; its
``__metadata__`` repeats the config with every top-level value written as ``str(python_obj)``). The VAE
architecture comes from ``vae.hf_hub_path`` when it is set (a folder -- relative paths are resolved against the
release folder -- or a Hub repo id whose ``config.json`` is fetched through ``huggingface_hub``), else from the
base VAE config + ``latent_channels``. VAE *weights* always come from ``model.safetensors``.

Nothing is imported or executed from the files: JSON is parsed with ``json``, the metadata with
``ast.literal_eval``, every ``_target_`` is checked against an allow-list, tensors are read with safetensors.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple, Union

import torch

from zoo.registry import load_state_strict

from .config import ALLOWED_TARGETS, FlexTokConfig

__all__ = ["load_official_vae", "read_release", "resolve_vae_config", "convert_state_dict", "load_official_flextok",
           "TRAINING_ONLY_KEYS", "parse_metadata_config"]

PathLike = Union[str, Path]

#: tensors a release may hold that inference never uses (the VAE's optional learnable KL log-variance)
TRAINING_ONLY_KEYS = ("vae.logvar",)
#: wrapper prefixes that carry no meaning for the weights (activation checkpointing, torch.compile)
_WRAPPER_PARTS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def _check_targets(tree: Any, where: str = "config") -> None:
    """Every ``_target_`` anywhere in the tree must be on the allow-list (nothing is ever imported)."""
    if isinstance(tree, dict):
        t = tree.get("_target_")
        if t is not None and t not in ALLOWED_TARGETS:
            raise ValueError(f"{where}: _target_ {t!r} is not an allowed FlexTok class or function; refusing to "
                             "load (allowed targets are FlexTok's own modules only)")
        for k, v in tree.items():
            _check_targets(v, f"{where}.{k}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            _check_targets(v, f"{where}[{i}]")


def parse_metadata_config(metadata: Dict[str, str]) -> Dict[str, Any]:
    """The config tree held in a release's safetensors ``__metadata__`` (values are ``str()`` of Python objects)."""
    out: Dict[str, Any] = {}
    for key, value in metadata.items():
        if key == "format":
            continue
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # plain strings (e.g. the root _target_) are stored without quotes
    return out


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _split_paths(paths: Iterable[PathLike]) -> Tuple[Optional[Path], Optional[Path], Optional[Path]]:
    """(folder, config.json, model.safetensors) from whatever the caller passed."""
    folder = config = weights = None
    for p in paths:
        if p is None:
            continue
        if not isinstance(p, (str, Path)):
            raise TypeError(f"FlexTok release paths must be str or Path, got {type(p).__name__}")
        p = Path(p).expanduser()
        if p.is_dir():
            folder = p
        elif not p.exists():
            raise FileNotFoundError(f"FlexTok release file not found: {p}")
        elif p.suffix == ".safetensors":
            weights = p
        elif p.suffix == ".json":
            config = p
        else:
            raise ValueError(f"unexpected FlexTok release file {p}: expected config.json, model.safetensors or "
                             "the release folder")
    if folder is not None:
        config = config or (folder / "config.json" if (folder / "config.json").is_file() else None)
        weights = weights or folder / "model.safetensors"
    if weights is None:
        raise ValueError("a FlexTok release needs its model.safetensors (pass the release folder or the file)")
    if not weights.is_file():
        raise FileNotFoundError(f"FlexTok weights not found: {weights}")
    return folder or weights.parent, config, weights


def _read_tensors(weights: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for truncated/foreign files
        raise ValueError(f"cannot read {weights} as safetensors (truncated or not a FlexTok checkpoint?): "
                         f"{exc}") from exc
    return tensors, metadata


def read_release(*paths: PathLike) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor], Path]:
    """(config tree, tensors, release folder). The config comes from ``config.json`` when present, else from the
    safetensors metadata; JSON key order (= module execution order) is preserved."""
    folder, config_path, weights = _split_paths(paths)
    tensors, metadata = _read_tensors(weights)
    if config_path is not None:
        official = _read_json(config_path)
    else:
        official = parse_metadata_config(metadata)
        if not official or "encoder" not in official:
            raise ValueError(f"{weights} carries no FlexTok config in its metadata and no config.json was given")
    official = dict(official)
    _check_targets(official)
    return official, tensors, folder


def resolve_vae_config(vae: Dict[str, Any], folder: Optional[Path], *, local_files_only: Optional[bool] = None,
                       cache_dir=None) -> Optional[Dict[str, Any]]:
    """The AutoencoderKL config named by ``vae.hf_hub_path`` (None when it is null: the base config is used)."""
    path = vae.get("hf_hub_path")
    if path is None:
        return None
    if not isinstance(path, str) or not path:
        raise ValueError(f"vae.hf_hub_path must be a string or null, got {path!r}")
    candidates = [Path(path).expanduser()]
    if folder is not None and not Path(path).is_absolute():
        candidates.insert(0, Path(folder) / path)
    for c in candidates:
        if c.is_dir() and (c / "config.json").is_file():
            return _read_json(c / "config.json")
        if c.is_file() and c.suffix == ".json":
            return _read_json(c)
    if path.count("/") == 1 and not path.startswith((".", "/")):
        from huggingface_hub import hf_hub_download

        from zoo.hub import _offline

        try:
            cfg = hf_hub_download(repo_id=path, filename="config.json", cache_dir=cache_dir,
                                  local_files_only=_offline(local_files_only))
        except Exception as exc:  # noqa: BLE001 - huggingface_hub raises many kinds
            raise FileNotFoundError(f"the FlexTok config names the VAE {path!r}, whose config.json is neither a "
                                    f"local folder nor available from the Hub: {exc}") from exc
        return _read_json(Path(cfg))
    raise FileNotFoundError(f"the FlexTok config names the VAE folder {path!r}, which has no config.json "
                            f"(looked in {[str(c) for c in candidates]})")


def convert_state_dict(tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Release ``state_dict`` -> this model's (a pure function): wrapper prefixes removed, training-only tensors
    dropped. The module tree mirrors the release's, so every other key maps to itself."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        new = key
        for part in _WRAPPER_PARTS:
            new = new.replace(part, "")
        if new in TRAINING_ONLY_KEYS:
            continue
        if new in out:
            raise ValueError(f"checkpoint holds {key!r} twice (after removing wrapper prefixes)")
        out[new] = value
    return out


def load_official_flextok(*paths: PathLike, vae_config: Optional[Union[PathLike, Dict[str, Any]]] = None,
                          local_files_only: Optional[bool] = None, cache_dir=None, device=None, **unused):
    """Build a FlexTok from a release folder (or its ``config.json`` / ``model.safetensors``), strictly.

    vae_config: override the AutoencoderKL config (a dict, a ``config.json`` or a diffusers folder), e.g. when
    ``hf_hub_path`` names a Hub repo and no network is available.
    """
    from .model import FlexTok

    if unused:
        raise TypeError(f"unexpected keyword arguments for the FlexTok loader: {sorted(unused)}")
    if not paths:
        raise ValueError("load_official('flextok', ...) needs the release folder or its files")
    vae_weights = _diffusers_vae_weights(paths)
    if vae_weights is not None:
        return load_official_vae(*paths, device=device)
    official, tensors, folder = read_release(*paths)
    if vae_config is None:
        autoencoder = resolve_vae_config(official.get("vae") or {}, folder, local_files_only=local_files_only,
                                         cache_dir=cache_dir)
    elif isinstance(vae_config, dict):
        autoencoder = dict(vae_config)
    else:
        p = Path(vae_config)
        autoencoder = _read_json(p / "config.json" if p.is_dir() else p)
    config = FlexTokConfig.from_official(official, autoencoder)
    model = FlexTok(config)
    state = convert_state_dict(tensors)
    load_state_strict(model, state, source=str(folder))
    model.eval()
    if device is not None:
        model.to(device)
    return model


VAE_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def _diffusers_vae_weights(paths) -> Optional[Path]:
    """The diffusers VAE weights among ``paths`` (a flextok_vae_c* folder or its files), else None."""
    for p in paths:
        if p is None or not isinstance(p, (str, Path)):
            continue
        p = Path(p).expanduser()
        if p.is_dir() and (p / VAE_WEIGHTS_NAME).is_file() and not (p / "model.safetensors").exists():
            return p / VAE_WEIGHTS_NAME
        if p.name == VAE_WEIGHTS_NAME:
            return p
    return None


def load_official_vae(*paths: PathLike, device=None):
    """A stand-alone FlexTok VAE release (diffusers ``config.json`` + ``diffusion_pytorch_model.safetensors``)."""
    from .config import FlexTokVAEConfig
    from .model import FlexTokVAE

    weights = _diffusers_vae_weights(paths)
    config_path = None
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir() and (p / "config.json").is_file():
            config_path = p / "config.json"
        elif p.suffix == ".json":
            config_path = p
    if config_path is None and (weights.parent / "config.json").is_file():
        config_path = weights.parent / "config.json"
    if config_path is None:
        raise ValueError(f"a FlexTok VAE release needs its config.json beside {weights}")
    autoencoder = _read_json(config_path)
    if autoencoder.get("_class_name", "AutoencoderKL") != "AutoencoderKL" or "latent_channels" not in autoencoder:
        raise ValueError(f"{config_path} is not a diffusers AutoencoderKL config (the FlexTok VAE format)")
    if not weights.is_file():
        raise FileNotFoundError(f"FlexTok VAE weights not found: {weights}")
    tensors, _ = _read_tensors(weights)
    model = FlexTokVAE(FlexTokVAEConfig(autoencoder=autoencoder))
    state = {f"vae.vae.{k}": v for k, v in tensors.items()}
    load_state_strict(model, state, source=str(weights))
    model.eval()
    if device is not None:
        model.to(device)
    return model
