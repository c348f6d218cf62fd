"""Family and checkpoint registry.

Families register their tokenizer class with :func:`register_family`; checkpoints are data, one YAML per
checkpoint in ``hub_configs/`` (see :mod:`zoo.hub_configs_schema`). Family modules are imported lazily the first
time a family is asked for, so ``import zoo`` stays light.

Families living outside this package register the same way; the registry finds them through the entry-point
group ``tokenzoo.families`` (``name = "module"``) of an installed distribution, or through the environment
variable ``TOKENZOO_FAMILY_MODULES`` (module names separated by commas), imported when an unknown family is
asked for. Nothing else is ever imported on behalf of a checkpoint's ``config.json``.
"""

from __future__ import annotations

import importlib
import json
import os
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
    "titok-maskgit-vqgan": "image.titok",
    "baseline-audio": "zoo.baselines",
    "baseline-image": "zoo.baselines",
    "baseline-video": "zoo.baselines",
    "baseline-series": "zoo.baselines",
}

_FAMILIES: Dict[str, Type] = {}
PLUGIN_ENV_VAR = "TOKENZOO_FAMILY_MODULES"
ENTRY_POINT_GROUP = "tokenzoo.families"


def register_family(name: str) -> Callable[[Type], Type]:
    """Class decorator: register ``cls`` under ``name`` (sets ``cls.family``).

    The class must provide ``from_config`` (used by ``from_pretrained``) and may provide ``from_official``
    (used by :func:`load_official`).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_family needs a non-empty family name, got {name!r}")

    def deco(cls: Type) -> Type:
        if not isinstance(cls, type) or not callable(getattr(cls, "from_config", None)):
            raise TypeError(f"register_family({name!r}) decorates a tokenizer class with from_config, "
                            f"got {cls!r}")
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


def _plugin_modules() -> Dict[str, Optional[str]]:
    """Family name (or None when unknown until imported) -> module, from entry points and the env variable."""
    found: Dict[str, Optional[str]] = {}
    try:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            found[ep.name] = ep.value.split(":", 1)[0]
    except Exception:  # noqa: BLE001 - broken distribution metadata must not break the registry
        pass
    return found


def _env_modules() -> List[str]:
    return [m.strip() for m in os.environ.get(PLUGIN_ENV_VAR, "").split(",") if m.strip()]


def get_family(name: str) -> Type:
    """The class registered for ``name``, importing its module on first use."""
    if not isinstance(name, str):
        raise TypeError(f"family name must be a string, got {type(name).__name__}")
    if name not in _FAMILIES and name in FAMILY_MODULES:
        importlib.import_module(FAMILY_MODULES[name])
    if name not in _FAMILIES:
        plugins = _plugin_modules()
        modules = ([plugins[name]] if name in plugins else []) + _env_modules()
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ValueError(f"cannot import tokenizer family module {module!r} "
                                 f"(from {ENTRY_POINT_GROUP} or ${PLUGIN_ENV_VAR}): {exc}") from exc
            if name in _FAMILIES:
                break
    if name not in _FAMILIES:
        known = list_families()
        raise ValueError(f"unknown tokenizer family {name!r}; known families: {known}")
    return _FAMILIES[name]


def list_families() -> List[str]:
    """Names of every family: built in, registered at run time, or declared by an installed plugin."""
    return sorted(set(_FAMILIES) | set(FAMILY_MODULES) | set(_plugin_modules()))


def load_official(family: str, *paths, **kwargs):
    """Build a model of ``family`` from the official release's own files (on disk, offline)."""
    if not isinstance(family, str):
        raise TypeError(f"load_official: family must be a family name (str), got {type(family).__name__}")
    cls = get_family(family)
    loader = getattr(cls, "from_official", None)
    from .tokenizer import Tokenizer

    if loader is None or getattr(loader, "__func__", None) is getattr(Tokenizer.from_official, "__func__", ()):
        raise ValueError(f"family {family!r} has no official-release loader (from_official)")
    return loader(*paths, **kwargs)


def load_local_dir(path: Path, **kwargs):
    """Load a folder written by ``save_pretrained``: ``config.json`` + ``model.safetensors``."""
    from safetensors.torch import load_file

    from .tokenizer import CONFIG_NAME, WEIGHTS_NAME

    if kwargs:
        raise TypeError(f"unexpected keyword arguments {sorted(kwargs)} for loading a save_pretrained folder "
                        "(the architecture comes from its config.json)")
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
    fmt = meta.get("format")
    if fmt is not None and fmt != "tokenzoo":
        raise ValueError(f"{cfg_path} has format {fmt!r}, expected 'tokenzoo'")
    cls = get_family(meta["family"])
    try:
        model = cls.from_config(meta["config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{cfg_path}: cannot build a {meta['family']!r} model from its 'config': {exc}") from exc
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


def state_mismatches(own: Dict[str, Any], state: Dict[str, Any], limit: int = 20) -> List[str]:
    """What keeps ``state`` from loading into a model whose state dict is ``own``: lists of missing, unexpected and
    mis-shaped keys (at most ``limit`` of each named); empty when every key and shape matches."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {missing[:limit]}{' ...' if len(missing) > limit else ''}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {unexpected[:limit]}"
                     f"{' ...' if len(unexpected) > limit else ''}")
    if shapes:
        parts.append(f"shape mismatches ({len(shapes)}): {shapes[:limit]}")
    return parts


def load_state_strict(model, state: Dict[str, Any], source: str = "checkpoint") -> None:
    """``load_state_dict`` that reports every missing, unexpected and mis-shaped key."""
    parts = state_mismatches(model.state_dict(), state)
    if parts:
        raise ValueError(f"{source} does not match {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def from_pretrained(name_or_path, *, revision: Optional[str] = None, cache_dir=None,
                    local_files_only: Optional[bool] = None, **kwargs):
    """Load a tokenizer from a registry name, a local folder, or a Hub repo id (in that order).

    ``revision`` pins a branch, tag or commit; ``cache_dir`` is the Hugging Face cache; ``local_files_only``
    (default: ``HF_HUB_OFFLINE``) never touches the network. Also accepts ``hub_configs=`` (other registry
    folders), ``device=``, and keyword arguments for the family's ``from_official``. See :mod:`zoo.hub`.
    """
    from . import hub

    return hub.load_pretrained(name_or_path, revision=revision, cache_dir=cache_dir,
                               local_files_only=local_files_only, **kwargs)


def list_models(modality: Optional[str] = None, family: Optional[str] = None, *, hub_configs=None):
    """Registered checkpoints (``ModelEntry`` objects from ``hub_configs/*.yaml``), optionally filtered.

    ``hub_configs`` reads other folders instead of the package's (see :mod:`zoo.hub_configs_schema`).
    """
    from .hub_configs_schema import MODALITIES, load_all_entries

    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"modality must be one of {list(MODALITIES)} or None, got {modality!r}")
    if family is not None and not isinstance(family, str):
        raise TypeError(f"family must be a family name or None, got {type(family).__name__}")
    entries = load_all_entries(hub_configs)
    if modality is not None:
        entries = [e for e in entries if e.modality == modality]
    if family is not None:
        entries = [e for e in entries if e.family == family]
    return entries
