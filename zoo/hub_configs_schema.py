"""Schema of ``hub_configs/*.yaml``: one file per released or bundled checkpoint.

Example::

    name: wavtokenizer-small-600-24k-4096      # registry name, unique; "tokenzoo/NAME" for the bundled models
    family: wavtokenizer                      # a registered family
    modality: audio                           # audio | image | video | eeg
    description: WavTokenizer small, 40 tokens/s, LibriTTS
    format: official-lightning-ckpt           # "tokenzoo" = a save_pretrained folder; anything else is passed to
                                              # the family's from_official with the files in order
    repo_id: novateur/WavTokenizer           # Hub repo holding the files
    revision: main                            # branch, tag or 40-hex commit sha (pin a sha where known)
    files:                                    # in the order load_official takes them
      - filename: WavTokenizer_small_600_24k_4096.ckpt
        sha256: null                          # 64 hex digits where known; verified before loading
        repo_id: other/repo                   # optional: the file lives in another repo
        revision: main                        # optional: per-file revision
        local: bundled/x.safetensors          # optional: a file on disk, relative to the folder of this YAML
                                              # (for the package's own entries: a file shipped inside hub_configs/)
        optional: false                       # optional: a file the loader can do without
    load_kwargs: {}                           # keyword arguments for from_official
    architecture: {...}                       # facts about the network (free-form, for list_models/info)
    license: MIT
    codebook_size: 4096
    num_codebooks: 1
    token_rate: 40
    token_rate_unit: tokens/s                 # tokens/s | tokens/image | tokens/frame | tokens/window
    reported:                                 # the authors' own figures
      - dataset: LibriTTS test-clean
        source: WavTokenizer paper, Table 1
        metrics: {UTMOS: 3.60, PESQ: 2.37}

Where the registry looks: the package's ``hub_configs/`` folder, plus every folder listed in the environment
variable ``TOKENZOO_HUB_CONFIGS`` (separated by ``os.pathsep``), read in that order. Functions that read the
registry also take ``hub_configs=`` (a folder or a list of folders) to use exactly those folders instead. A name
defined twice fails, naming both files. Files are re-read when they change (the cache is keyed on their
modification times).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import yaml

MODALITIES = ("audio", "image", "video", "eeg")
RATE_UNITS = ("tokens/s", "tokens/image", "tokens/frame", "tokens/window", "latents/s", "latents/image",
              "latents/frame")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
ENV_VAR = "TOKENZOO_HUB_CONFIGS"

DirsArg = Optional[Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]]

REQUIRED = ("name", "family", "modality", "format", "files")
OPTIONAL = ("description", "repo_id", "revision", "load_kwargs", "architecture", "license", "codebook_size",
            "num_codebooks", "token_rate", "token_rate_unit", "reported", "paper", "code", "notes", "bundled")
FILE_KEYS = ("filename", "sha256", "repo_id", "revision", "local", "optional")


class HubConfigError(ValueError):
    """A malformed ``hub_configs`` YAML (the message names the file and the key)."""


@dataclass(frozen=True)
class FileEntry:
    filename: str
    sha256: Optional[str] = None
    repo_id: Optional[str] = None
    revision: Optional[str] = None
    local: Optional[str] = None
    optional: bool = False


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    modality: str
    format: str
    files: Tuple[FileEntry, ...]
    source: Path
    description: str = ""
    repo_id: Optional[str] = None
    revision: Optional[str] = None
    load_kwargs: Dict[str, Any] = field(default_factory=dict)
    architecture: Dict[str, Any] = field(default_factory=dict)
    license: Optional[str] = None
    codebook_size: Optional[int] = None
    num_codebooks: Optional[int] = None
    token_rate: Optional[float] = None
    token_rate_unit: Optional[str] = None
    reported: Tuple[Dict[str, Any], ...] = ()
    bundled: bool = False
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def pinned(self) -> bool:
        """True when every Hub file is fetched at a 40-hex commit sha (not a moving branch or tag)."""
        revs = [f.revision or self.revision for f in self.files if f.local is None]
        return all(r is not None and bool(_COMMIT_RE.match(r)) for r in revs)

    def local_path(self, f: FileEntry) -> Optional[Path]:
        """Absolute path of a ``local`` file (relative to the folder of the YAML that lists it)."""
        if f.local is None:
            return None
        return (self.source.parent / f.local).resolve()

    def summary(self) -> Dict[str, Any]:
        return {
            "name": self.name, "family": self.family, "modality": self.modality,
            "codebook_size": self.codebook_size, "num_codebooks": self.num_codebooks,
            "token_rate": self.token_rate, "token_rate_unit": self.token_rate_unit,
            "repo_id": self.repo_id, "bundled": self.bundled, "description": self.description,
        }


def _fail(path: Path, key: str, msg: str):
    raise HubConfigError(f"{path.name}: key {key!r}: {msg}")


def parse_entry(data: Any, path: Path) -> ModelEntry:
    path = Path(path)
    if not isinstance(data, dict):
        raise HubConfigError(f"{path.name}: top level must be a mapping, got {type(data).__name__}")
    for key in REQUIRED:
        if key not in data:
            _fail(path, key, "required key is missing")
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        _fail(path, unknown[0], f"unknown key (allowed: {sorted(REQUIRED + OPTIONAL)})")
    for key in ("name", "family", "modality", "format"):
        if not isinstance(data[key], str) or not data[key].strip():
            _fail(path, key, f"must be a non-empty string, got {data[key]!r}")
    if not re.match(r"^(tokenzoo/)?[A-Za-z0-9][A-Za-z0-9._-]*$", data["name"]):
        _fail(path, "name", f"must use only letters, digits, '.', '_' and '-' (it is a CLI argument), with an "
                            f"optional 'tokenzoo/' prefix for the package's own models, got {data['name']!r}")
    if data["name"].startswith("tokenzoo/") and not data.get("bundled", False):
        _fail(path, "name", "the 'tokenzoo/' prefix is reserved for the bundled models (set bundled: true)")
    if data["modality"] not in MODALITIES:
        _fail(path, "modality", f"must be one of {list(MODALITIES)}, got {data['modality']!r}")
    for key in ("repo_id", "revision", "description", "license"):
        if data.get(key) is not None and (not isinstance(data[key], str) or not data[key].strip()):
            _fail(path, key, f"must be a non-empty string or absent, got {data[key]!r}")
    if data.get("repo_id") is not None and not _REPO_RE.match(data["repo_id"]):
        _fail(path, "repo_id", f"must look like 'owner/name', got {data['repo_id']!r}")
    if "bundled" in data and not isinstance(data["bundled"], bool):
        _fail(path, "bundled", f"must be true or false, got {data['bundled']!r}")
    files = data["files"]
    if not isinstance(files, list) or not files:
        _fail(path, "files", "must be a non-empty list of {filename, sha256, ...} mappings")
    parsed_files = []
    for i, f in enumerate(files):
        where = f"files[{i}]"
        if isinstance(f, str):
            f = {"filename": f}
        if not isinstance(f, dict):
            _fail(path, where, f"must be a mapping, got {type(f).__name__}")
        bad = sorted(set(f) - set(FILE_KEYS))
        if bad:
            _fail(path, f"{where}.{bad[0]}", f"unknown key (allowed: {list(FILE_KEYS)})")
        if not isinstance(f.get("filename"), str) or not f["filename"]:
            _fail(path, f"{where}.filename", "required, must be a non-empty string")
        for k in ("repo_id", "revision", "local"):
            if f.get(k) is not None and (not isinstance(f[k], str) or not f[k].strip()):
                _fail(path, f"{where}.{k}", f"must be a non-empty string or absent, got {f[k]!r}")
        if f.get("repo_id") is not None and not _REPO_RE.match(f["repo_id"]):
            _fail(path, f"{where}.repo_id", f"must look like 'owner/name', got {f['repo_id']!r}")
        if "optional" in f and not isinstance(f["optional"], bool):
            _fail(path, f"{where}.optional", f"must be true or false, got {f['optional']!r}")
        sha = f.get("sha256")
        if sha is not None and (not isinstance(sha, str) or not _SHA_RE.match(sha)):
            _fail(path, f"{where}.sha256", f"must be 64 lowercase hex digits or null, got {sha!r}")
        if f.get("local") is None and not (f.get("repo_id") or data.get("repo_id")):
            _fail(path, f"{where}.repo_id", "no repo_id for this file (set it on the file or at top level)")
        parsed_files.append(FileEntry(filename=f["filename"], sha256=sha, repo_id=f.get("repo_id"),
                                      revision=f.get("revision"), local=f.get("local"),
                                      optional=bool(f.get("optional", False))))
    for key in ("load_kwargs", "architecture"):
        if key in data and data[key] is not None and not isinstance(data[key], dict):
            _fail(path, key, f"must be a mapping, got {type(data[key]).__name__}")
    for key in ("codebook_size", "num_codebooks"):
        v = data.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            _fail(path, key, f"must be a non-negative integer, got {v!r}")
    rate = data.get("token_rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0):
        _fail(path, "token_rate", f"must be a positive number, got {rate!r}")
    unit = data.get("token_rate_unit")
    if unit is not None and unit not in RATE_UNITS:
        _fail(path, "token_rate_unit", f"must be one of {list(RATE_UNITS)}, got {unit!r}")
    reported = data.get("reported") or []
    if not isinstance(reported, list) or not all(isinstance(r, dict) for r in reported):
        _fail(path, "reported", "must be a list of mappings {dataset, source, metrics}")
    for i, r in enumerate(reported):
        for k in ("dataset", "source", "metrics"):
            if k not in r:
                _fail(path, f"reported[{i}].{k}", "required key is missing")
    for i, r in enumerate(reported):
        if not isinstance(r["metrics"], dict):
            _fail(path, f"reported[{i}].metrics", f"must be a mapping of metric name to value, got "
                                                  f"{type(r['metrics']).__name__}")
    extra = {k: data[k] for k in ("paper", "code", "notes") if k in data}
    return ModelEntry(
        name=data["name"], family=data["family"], modality=data["modality"], format=data["format"],
        files=tuple(parsed_files), source=path, description=str(data.get("description") or ""),
        repo_id=data.get("repo_id"), revision=data.get("revision"), load_kwargs=dict(data.get("load_kwargs") or {}),
        architecture=dict(data.get("architecture") or {}), license=data.get("license"),
        codebook_size=data.get("codebook_size"), num_codebooks=data.get("num_codebooks"),
        token_rate=None if rate is None else float(rate), token_rate_unit=unit, reported=tuple(reported),
        bundled=bool(data.get("bundled", False)), extra=extra,
    )


def load_entry_file(path: Path) -> ModelEntry:
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise HubConfigError(f"{path.name}: cannot read ({exc})") from exc
    try:
        # the C implementation of the safe loader when PyYAML was built with libyaml (same semantics, ~10x faster)
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise HubConfigError(f"{path.name}: not valid YAML: {exc}") from exc
    return parse_entry(data, path)


def hub_configs_dir() -> Path:
    """The package's own ``hub_configs/`` folder."""
    import hub_configs

    return Path(hub_configs.__file__).parent


def config_dirs(hub_configs: DirsArg = None) -> List[Path]:
    """Folders the registry reads: ``hub_configs`` when given, else the package's plus ``$TOKENZOO_HUB_CONFIGS``."""
    if hub_configs is not None:
        items: Iterable = [hub_configs] if isinstance(hub_configs, (str, os.PathLike)) else hub_configs
        dirs = [Path(d) for d in items]
    else:
        dirs = [hub_configs_dir()]
        extra = os.environ.get(ENV_VAR, "")
        dirs += [Path(d) for d in extra.split(os.pathsep) if d.strip()]
    for d in dirs:
        if not d.is_dir():
            src = "hub_configs" if hub_configs is not None else f"${ENV_VAR}"
            raise HubConfigError(f"{src}: {d} is not a folder of hub_configs YAML files")
    seen, out = set(), []
    for d in dirs:
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def _stamp(directory: Path) -> Tuple[Tuple[str, int, int], ...]:
    stamps = []
    for p in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
        st = p.stat()
        stamps.append((p.name, st.st_mtime_ns, st.st_size))
    return tuple(stamps)


@lru_cache(maxsize=64)
def _load_dir(directory: str, stamp) -> Tuple[ModelEntry, ...]:
    paths = sorted(Path(directory).glob("*.yaml")) + sorted(Path(directory).glob("*.yml"))
    return tuple(load_entry_file(p) for p in paths)


def load_all_entries(directory: DirsArg = None) -> List[ModelEntry]:
    """Every entry of the registry folders (see :func:`config_dirs`); a name defined twice fails."""
    entries: Dict[str, ModelEntry] = {}
    for d in config_dirs(directory):
        for entry in _load_dir(str(d), _stamp(d)):
            if entry.name in entries:
                raise HubConfigError(f"{entry.source.name}: key 'name': {entry.name!r} is also defined in "
                                     f"{entries[entry.name].source}")
            entries[entry.name] = entry
    return list(entries.values())


def get_entry(name: str, hub_configs: DirsArg = None) -> Optional[ModelEntry]:
    for e in load_all_entries(hub_configs):
        if e.name == name:
            return e
    return None
