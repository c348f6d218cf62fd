"""Family and checkpoint registry.

Families register their tokenizer class with :func:`register_family`; checkpoints are data, one YAML per
checkpoint in ``hub_configs/`` (see :mod:`zoo.hub_configs_schema`). Family modules are imported lazily the first
time a family is asked for, so ``import zoo`` stays light.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Type

# family name -> module that registers it on import
FAMILY_MODULES: Dict[str, str] = {
    "wavtokenizer": "audio.wavtokenizer",
    "tadicodec": "audio.tadicodec",
    "titok": "image.titok",
    "flextok": "image.flextok",
    "cdt": "video.cdt",
    "cdt-fsq": "video.cdt",
    "tfm": "eeg.tfm",
    "tfm-classifier": "eeg.tfm",
    "lipcot": "eeg.lipcot",
}

_FAMILIES: Dict[str, Type] = {}


def register_family(name: str) -> Callable[[Type], Type]:
    """Class decorator: register ``cls`` under ``name`` (sets ``cls.family``).

    The class must provide ``from_config`` (used by ``from_pretrained``) and may provide ``from_official``
    (used by :func:`load_official`).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_family needs a non-empty family name, got {name!r}")

    def deco(cls: Type) -> Type:
        other = _FAMILIES.get(name)
        if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
            raise ValueError(f"family {name!r} is already registered by {other.__module__}.{other.__qualname__}")
        cls.family = name
        _FAMILIES[name] = cls
        return cls

    return deco


def unregister_family(name: str) -> None:
    """Remove a family (for tests that register toy families)."""
    _FAMILIES.pop(name, None)


def get_family(name: str) -> Type:
    """The class registered for ``name``, importing its module on first use."""
    if name not in _FAMILIES and name in FAMILY_MODULES:
        importlib.import_module(FAMILY_MODULES[name])
    if name not in _FAMILIES:
        known = sorted(set(_FAMILIES) | set(FAMILY_MODULES))
        raise ValueError(f"unknown tokenizer family {name!r}; known families: {known}")
    return _FAMILIES[name]


def list_families() -> List[str]:
    return sorted(set(_FAMILIES) | set(FAMILY_MODULES))


def load_official(family: str, *paths, **kwargs):
    """Build a model of ``family`` from the official release's own files (on disk, offline)."""
    cls = get_family(family)
    loader = getattr(cls, "from_official", None)
    if loader is None:
        raise ValueError(f"family {family!r} has no official-release loader")
    return loader(*paths, **kwargs)


def load_local_dir(path: Path, **kwargs):
    """Load a folder written by ``save_pretrained``: ``config.json`` + ``model.safetensors``."""
    from safetensors.torch import load_file

    from .tokenizer import CONFIG_NAME, WEIGHTS_NAME

    path = Path(path)
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{path} has no {CONFIG_NAME}: not a tokenzoo checkpoint folder")
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or "family" not in meta or "config" not in meta:
        raise ValueError(f"{cfg_path} is not a tokenzoo config (needs 'family' and 'config' keys; "
                         f"found {sorted(meta) if isinstance(meta, dict) else type(meta).__name__})")
    cls = get_family(meta["family"])
    model = cls.from_config(meta["config"])
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{path} has no {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for truncated files
        raise ValueError(f"cannot read {weights}: {exc}") from exc
    load_state_strict(model, state, source=str(weights))
    model.eval()
    return model


def load_state_strict(model, state: Dict[str, Any], source: str = "checkpoint") -> None:
    """``load_state_dict`` that reports every missing, unexpected and mis-shaped key."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing[:20]}{' ...' if len(missing) > 20 else ''}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected[:20]}"
                         f"{' ...' if len(unexpected) > 20 else ''}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {shapes[:20]}")
        raise ValueError(f"{source} does not match {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def from_pretrained(name_or_path, *, revision: Optional[str] = None, cache_dir=None,
                    local_files_only: Optional[bool] = None, **kwargs):
    """Load a tokenizer from a registry name, a Hub repo id, or a local folder."""
    from . import hub

    return hub.load_pretrained(name_or_path, revision=revision, cache_dir=cache_dir,
                               local_files_only=local_files_only, **kwargs)


def list_models(modality: Optional[str] = None, family: Optional[str] = None):
    """Registered checkpoints (from ``hub_configs/*.yaml``), optionally filtered."""
    from .hub_configs_schema import load_all_entries

    entries = load_all_entries()
    if modality is not None:
        entries = [e for e in entries if e.modality == modality]
    if family is not None:
        entries = [e for e in entries if e.family == family]
    return entries
