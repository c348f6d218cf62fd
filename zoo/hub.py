"""Resolve a registry name, a Hub repo id or a local folder to files on disk, and load them.

All downloads go through ``huggingface_hub`` (``hf_hub_download``/``snapshot_download``), so the usual cache,
``HF_HUB_OFFLINE=1``, ``HF_HOME`` and pinned revisions apply. Every file listed with a ``sha256`` in its
``hub_configs`` entry is verified before anything is loaded. Nothing here unpickles: weights are read with
safetensors, or by the family's converter with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import List, Optional

from .hub_configs_schema import ModelEntry, get_entry, hub_configs_dir


class ChecksumError(ValueError):
    """A downloaded or cached file does not have the digest its registry entry states."""


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path, expected: Optional[str], label: Optional[str] = None) -> None:
    """Raise :class:`ChecksumError` naming the file, expected and actual digest when they differ."""
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(f"checksum mismatch for {label or Path(path).name} ({path}): "
                            f"expected sha256 {expected}, got {actual}; the file is corrupt or was tampered "
                            "with, nothing was loaded")


def _offline(local_files_only: Optional[bool]) -> bool:
    if local_files_only is not None:
        return bool(local_files_only)
    from huggingface_hub import constants

    return bool(getattr(constants, "HF_HUB_OFFLINE", False)) or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


def resolve_entry_files(entry: ModelEntry, *, revision: Optional[str] = None, cache_dir=None,
                        local_files_only: Optional[bool] = None) -> List[Optional[Path]]:
    """Download (or find in the cache) every file of ``entry``, verify digests, return local paths in order.

    Optional files that cannot be found resolve to ``None``; a missing required file raises
    ``FileNotFoundError`` naming it.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    offline = _offline(local_files_only)
    paths: List[Optional[Path]] = []
    for f in entry.files:
        if f.local is not None:
            path = (hub_configs_dir() / f.local).resolve()
            if not path.is_file():
                if f.optional:
                    paths.append(None)
                    continue
                raise FileNotFoundError(f"{entry.name}: bundled file {f.local} is missing from the package ({path})")
        else:
            repo = f.repo_id or entry.repo_id
            rev = revision if (revision is not None and f.repo_id is None) else (f.revision or entry.revision)
            try:
                path = Path(hf_hub_download(repo_id=repo, filename=f.filename, revision=rev,
                                            cache_dir=cache_dir, local_files_only=offline))
            except (EntryNotFoundError, LocalEntryNotFoundError, FileNotFoundError) as exc:
                if f.optional:
                    paths.append(None)
                    continue
                where = "in the local Hugging Face cache (offline)" if offline else "on the Hub"
                raise FileNotFoundError(f"{entry.name}: file {f.filename!r} of {repo}@{rev or 'main'} "
                                        f"was not found {where}: {exc}") from exc
        verify_file(path, f.sha256, label=f"{entry.name}/{f.filename}")
        paths.append(path)
    return paths


def load_entry(entry: ModelEntry, *, revision: Optional[str] = None, cache_dir=None,
               local_files_only: Optional[bool] = None, **kwargs):
    from .registry import load_local_dir, load_official

    paths = resolve_entry_files(entry, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    if entry.format == "tokenzoo":
        folders = {p.parent for p in paths if p is not None}
        if len(folders) != 1:
            raise ValueError(f"{entry.name}: a 'tokenzoo' entry needs config.json and model.safetensors in one folder")
        model = load_local_dir(folders.pop())
    else:
        model = load_official(entry.family, *paths, **{**entry.load_kwargs, **kwargs})
    try:
        model.registry_name = entry.name
    except Exception:  # noqa: BLE001 - models that refuse attributes still load
        pass
    return model


def load_pretrained(name_or_path, *, revision: Optional[str] = None, cache_dir=None,
                    local_files_only: Optional[bool] = None, **kwargs):
    """Registry name -> its entry; existing local folder -> that folder; otherwise a Hub repo id."""
    from huggingface_hub import snapshot_download

    from .registry import load_local_dir

    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"from_pretrained expects a registry name, a Hub repo id or a folder, "
                        f"got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    entry = get_entry(text)
    if entry is not None:
        return load_entry(entry, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, **kwargs)
    local = Path(text).expanduser()
    if local.is_dir():
        return load_local_dir(local, **kwargs)
    if local.exists():
        raise ValueError(f"{text} is a file; from_pretrained expects a folder with config.json and model.safetensors")
    if text.count("/") != 1 or text.startswith((".", "/")):
        raise ValueError(f"{text!r} is neither a registered model name (see zoo.list_models()), nor an existing "
                         "folder, nor a Hub repo id of the form 'owner/name'")
    offline = _offline(local_files_only)
    try:
        folder = snapshot_download(repo_id=text, revision=revision, cache_dir=cache_dir, local_files_only=offline,
                                   allow_patterns=["config.json", "model.safetensors", "README.md"])
    except Exception as exc:  # noqa: BLE001 - huggingface_hub raises many kinds; report them uniformly
        where = "in the local Hugging Face cache (offline)" if offline else "on the Hub"
        raise FileNotFoundError(f"could not find repo {text}@{revision or 'main'} {where}: {exc}") from exc
    return load_local_dir(Path(folder), **kwargs)
