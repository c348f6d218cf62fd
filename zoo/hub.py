"""Resolve a registry name, a Hub repo id or a local folder to files on disk, and load them.

All downloads go through ``huggingface_hub`` (``hf_hub_download``/``snapshot_download``), so the usual cache,
``HF_HUB_OFFLINE=1``, ``HF_HUB_CACHE``/``HF_HOME`` and pinned revisions apply. Every file listed with a
``sha256`` in its ``hub_configs`` entry is verified before anything is loaded: a mismatch raises
:class:`ChecksumError` naming the file, the expected and the actual digest. Nothing here unpickles: weights are
read with safetensors, or by a family's converter through :func:`torch_load` (``torch.load(weights_only=True)``).

Resolution order of :func:`load_pretrained`: a registry name (``zoo.list_models()``), then an existing local
folder written by ``save_pretrained``, then a Hub repo id ``owner/name`` holding such a folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from .hub_configs_schema import DirsArg, ModelEntry, get_entry


class ChecksumError(ValueError):
    """A downloaded or cached file does not have the digest its registry entry states."""


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """Hex sha256 digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path, expected: Optional[str], label: Optional[str] = None) -> None:
    """Raise :class:`ChecksumError` naming the file, expected and actual digest when they differ."""
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(f"checksum mismatch for {label or Path(path).name} ({path}): "
                            f"expected sha256 {expected.lower()}, got {actual}; the file is corrupt or was "
                            "tampered with, nothing was loaded")


def is_offline(local_files_only: Optional[bool] = None) -> bool:
    """``local_files_only`` when given, else whether ``HF_HUB_OFFLINE`` is set (env or huggingface_hub)."""
    if local_files_only is not None:
        return bool(local_files_only)
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return bool(getattr(constants, "HF_HUB_OFFLINE", False)) or env in ("1", "true", "yes", "on")


_offline = is_offline  # backwards-compatible private name


def torch_load(path, map_location: Any = "cpu") -> Any:
    """``torch.load`` that never executes pickled code (``weights_only=True``), with a clear error.

    For official releases stored as PyTorch pickles (``.ckpt``/``.pth``/``.bin``): tensors, dicts, lists and
    plain numbers load; anything else (classes, functions) is refused by PyTorch's restricted unpickler.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file {path}")
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError...
        raise ValueError(f"cannot load {path} safely with torch.load(weights_only=True): "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


def _hub_errors():
    from huggingface_hub import errors as E

    names = ("EntryNotFoundError", "LocalEntryNotFoundError", "RemoteEntryNotFoundError",
             "RepositoryNotFoundError", "RevisionNotFoundError", "HfHubHTTPError", "HFValidationError")
    return tuple(getattr(E, n) for n in names if hasattr(E, n)) + (FileNotFoundError,)


def resolve_entry_files(entry: ModelEntry, *, revision: Optional[str] = None, cache_dir=None,
                        local_files_only: Optional[bool] = None, token=None,
                        force_download: bool = False) -> List[Optional[Path]]:
    """Find (download, or look up in the cache) every file of ``entry``; verify digests; return paths in order.

    ``revision`` overrides the entry's revision for files of the entry's own repo. Every digest is checked
    before this returns, so a caller loads nothing when one file is bad. Optional files that cannot be found
    resolve to ``None``; a missing required file raises ``FileNotFoundError`` naming it.
    """
    from huggingface_hub import hf_hub_download

    offline = is_offline(local_files_only)
    found: List[Optional[Path]] = []
    for f in entry.files:
        if f.local is not None:
            path = entry.local_path(f)
            if not path.is_file():
                if f.optional:
                    found.append(None)
                    continue
                raise FileNotFoundError(f"{entry.name}: file {f.filename!r} is missing: no such local file "
                                        f"{path} (listed as 'local: {f.local}' in {entry.source.name})")
        else:
            repo = f.repo_id or entry.repo_id
            rev = revision if (revision is not None and f.repo_id is None) else (f.revision or entry.revision)
            try:
                path = Path(hf_hub_download(repo_id=repo, filename=f.filename, revision=rev,
                                            cache_dir=cache_dir, local_files_only=offline, token=token,
                                            force_download=force_download and not offline))
            except _hub_errors() as exc:
                if f.optional:
                    found.append(None)
                    continue
                where = "in the local Hugging Face cache (offline)" if offline else "on the Hub or in the cache"
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise FileNotFoundError(f"{entry.name}: file {f.filename!r} of {repo}@{rev or 'main'} was not "
                                        f"found {where} ({first})") from exc
        found.append(path)
    for f, path in zip(entry.files, found):
        if path is not None:
            verify_file(path, f.sha256, label=f"{entry.name}/{f.filename}")
    return found


def load_entry(entry: ModelEntry, *, revision: Optional[str] = None, cache_dir=None,
               local_files_only: Optional[bool] = None, token=None, force_download: bool = False, **kwargs):
    """Resolve and verify ``entry``'s files, then build the model (``tokenzoo`` folder or the family's converter)."""
    from .registry import load_local_dir, load_official

    paths = resolve_entry_files(entry, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                                token=token, force_download=force_download)
    if entry.format == "tokenzoo":
        folders = {p.parent for p in paths if p is not None}
        if len(folders) != 1:
            raise ValueError(f"{entry.name}: a 'tokenzoo' entry needs config.json and model.safetensors in one "
                             f"folder, its files resolved to {sorted(str(f) for f in folders)}")
        model = load_local_dir(folders.pop(), **kwargs)
    else:
        model = load_official(entry.family, *paths, **{**entry.load_kwargs, **kwargs})
    try:
        model.registry_name = entry.name
    except Exception:  # noqa: BLE001 - models that refuse attributes still load
        pass
    return model


def _looks_like_repo_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


def resolve_pretrained_dir(repo_id: str, *, revision: Optional[str] = None, cache_dir=None,
                           local_files_only: Optional[bool] = None, token=None, force_download: bool = False) -> Path:
    """The local snapshot folder of a Hub repo holding a ``save_pretrained`` checkpoint."""
    from huggingface_hub import snapshot_download

    offline = is_offline(local_files_only)
    try:
        folder = snapshot_download(repo_id=repo_id, revision=revision, cache_dir=cache_dir,
                                   local_files_only=offline, token=token,
                                   force_download=force_download and not offline,
                                   allow_patterns=["config.json", "model.safetensors", "README.md"])
    except Exception as exc:  # noqa: BLE001 - huggingface_hub raises many kinds; report them uniformly
        where = "in the local Hugging Face cache (offline)" if offline else "on the Hub or in the cache"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FileNotFoundError(f"could not find repo {repo_id}@{revision or 'main'} {where} ({first})") from exc
    return Path(folder)


def load_pretrained(name_or_path, *, revision: Optional[str] = None, cache_dir=None,
                    local_files_only: Optional[bool] = None, hub_configs: DirsArg = None,
                    device=None, token=None, force_download: bool = False, **kwargs):
    """Local folder with a ``config.json`` -> that folder; registry name -> its entry; otherwise a Hub repo id.

    ``hub_configs`` points the registry at other YAML folders (see :mod:`zoo.hub_configs_schema`);
    ``device`` moves the loaded model; ``token`` and ``force_download`` go to huggingface_hub; other keyword arguments go to the family's ``from_official``
    (official-format entries) and are refused for ``save_pretrained`` folders.
    """
    from .registry import load_local_dir

    if not isinstance(name_or_path, (str, os.PathLike)) or isinstance(name_or_path, bytes):
        raise TypeError(f"from_pretrained expects a registry name, a Hub repo id or a folder, "
                        f"got {type(name_or_path).__name__}")
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise ValueError(f"revision must be a branch, tag or commit sha, got {revision!r}")
    text = os.fspath(name_or_path)
    if not text.strip():
        raise ValueError("from_pretrained got an empty name")
    local = Path(text).expanduser()
    # a folder on disk that holds a saved tokenizer wins over a registry name spelled the same, as in
    # transformers/diffusers: save_pretrained("x") then from_pretrained("x") must load what was saved
    entry = None if (local.is_dir() and (local / "config.json").is_file()) else get_entry(text, hub_configs)
    if entry is not None:
        model = load_entry(entry, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                           token=token, force_download=force_download, **kwargs)
    elif local.is_dir():
        model = load_local_dir(local, **kwargs)
    elif local.exists():
        raise ValueError(f"{text} is a file; from_pretrained expects a folder with config.json and "
                         "model.safetensors (use zoo.load_official for a release's own files)")
    elif not _looks_like_repo_id(text):
        raise ValueError(f"{text!r} is neither a registered model name (see zoo.list_models()), nor an "
                         "existing folder, nor a Hub repo id of the form 'owner/name'")
    else:
        folder = resolve_pretrained_dir(text, revision=revision, cache_dir=cache_dir,
                                        local_files_only=local_files_only, token=token,
                                        force_download=force_download)
        model = load_local_dir(folder, **kwargs)
    if device is not None:
        model = model.to(device)
    return model


def entry_info(entry: ModelEntry) -> Dict[str, Any]:
    """Everything a registry entry states, as plain data (for ``tokenzoo info``)."""
    return {
        **entry.summary(),
        "format": entry.format,
        "revision": entry.revision,
        "pinned": entry.pinned,
        "license": entry.license,
        "files": [{"filename": f.filename, "sha256": f.sha256, "repo_id": f.repo_id or entry.repo_id,
                   "revision": f.revision or entry.revision, "local": f.local, "optional": f.optional}
                  for f in entry.files],
        "load_kwargs": dict(entry.load_kwargs),
        "architecture": dict(entry.architecture),
        "reported": [dict(r) for r in entry.reported],
        "source": str(entry.source),
        **entry.extra,
    }
