"""``Tokens``: the integer ids a tokenizer produces, with optional per-item lengths."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import torch

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)

PathLike = Union[str, Path]


class _OwnError(ValueError):
    """A ValueError raised by ``Tokens.load`` itself (already names the file)."""


@dataclass
class Tokens:
    """Token ids of a batch.

    ``ids`` is a LongTensor whose first axis is the batch; the meaning of the other axes is stated by each
    tokenizer (e.g. ``[B, num_codebooks, N]`` for audio, ``[B, N]`` for 1D image tokens). ``lengths``, when
    given, is a LongTensor ``[B]`` with the number of valid positions of each item along the last axis;
    positions past an item's length are padding and carry no meaning. ``metadata`` holds small string facts
    (e.g. the model name that produced the ids) and is saved with the ids.
    """

    ids: torch.Tensor
    lengths: Optional[torch.Tensor] = None
    metadata: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        ids = self.ids
        if isinstance(ids, np.ndarray):
            ids = torch.from_numpy(ids)
        if not isinstance(ids, torch.Tensor):
            raise TypeError(f"Tokens.ids must be a torch.Tensor, got {type(ids).__name__}")
        if ids.dtype not in _INT_DTYPES:
            raise TypeError(f"Tokens.ids must have an integer dtype, got {ids.dtype}")
        if ids.ndim < 1:
            raise ValueError(f"Tokens.ids must have a batch axis (at least 1 dimension), got shape {tuple(ids.shape)}")
        self.ids = ids.long()
        if self.lengths is not None:
            lengths = self.lengths
            if isinstance(lengths, (list, tuple, np.ndarray)):
                lengths = torch.as_tensor(np.asarray(lengths))
            if not isinstance(lengths, torch.Tensor):
                raise TypeError(f"Tokens.lengths must be a torch.Tensor or None, got {type(lengths).__name__}")
            if lengths.dtype not in _INT_DTYPES:
                raise TypeError(f"Tokens.lengths must have an integer dtype, got {lengths.dtype}")
            if lengths.ndim != 1 or lengths.shape[0] != ids.shape[0]:
                raise ValueError(f"Tokens.lengths must have shape [{ids.shape[0]}] (one length per item), "
                                 f"got {tuple(lengths.shape)}")
            if ids.ndim < 2:
                raise ValueError("Tokens.lengths needs ids with a sequence axis (at least 2 dimensions), "
                                 f"got ids of shape {tuple(ids.shape)}")
            if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > ids.shape[-1]):
                raise ValueError(f"Tokens.lengths must lie in [0, {ids.shape[-1]}] (the last axis of ids), "
                                 f"got min {int(lengths.min())}, max {int(lengths.max())}")
            self.lengths = lengths.long().to(self.ids.device)
        if not isinstance(self.metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()):
            raise TypeError("Tokens.metadata must be a dict of str to str")

    # ------------------------------------------------------------------ basics
    @property
    def batch_size(self) -> int:
        return int(self.ids.shape[0])

    @property
    def shape(self) -> torch.Size:
        return self.ids.shape

    @property
    def device(self) -> torch.device:
        return self.ids.device

    def __len__(self) -> int:
        return self.batch_size

    def to(self, device) -> "Tokens":
        return Tokens(self.ids.to(device), None if self.lengths is None else self.lengths.to(device),
                      dict(self.metadata))

    def cpu(self) -> "Tokens":
        return self.to("cpu")

    def item_lengths(self) -> torch.Tensor:
        """Valid length of every item along the last axis (the full length when ``lengths`` is None)."""
        if self.lengths is not None:
            return self.lengths
        n = self.ids.shape[-1] if self.ids.ndim >= 2 else 1
        return torch.full((self.batch_size,), n, dtype=torch.long, device=self.ids.device)

    def unbind(self) -> List[torch.Tensor]:
        """The ids of each item with its padding removed."""
        if self.lengths is None:
            return list(self.ids.unbind(0))
        return [self.ids[i, ..., : int(n)] for i, n in enumerate(self.lengths.tolist())]

    def __getitem__(self, index) -> "Tokens":
        """Select items of the batch (an int keeps the batch axis)."""
        if isinstance(index, int) and not isinstance(index, bool):
            if not -self.batch_size <= index < self.batch_size:
                raise IndexError(f"item {index} is out of range for a batch of {self.batch_size}")
            index = index % self.batch_size
            index = slice(index, index + 1)
        ids = self.ids[index]
        lengths = None if self.lengths is None else self.lengths[index]
        return Tokens(ids, lengths, dict(self.metadata))

    def __eq__(self, other) -> bool:
        if not isinstance(other, Tokens):
            return NotImplemented
        if self.ids.shape != other.ids.shape or not torch.equal(self.ids.cpu(), other.ids.cpu()):
            return False
        if (self.lengths is None) != (other.lengths is None):
            return False
        return self.lengths is None or torch.equal(self.lengths.cpu(), other.lengths.cpu())

    # ------------------------------------------------------------------ files
    def save(self, path: PathLike) -> Path:
        """Write to ``.npz`` or ``.safetensors`` (chosen by the suffix). The write is atomic."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".npz", ".safetensors"):
            raise ValueError(f"Tokens.save: unsupported file type {path.suffix!r} for {path}; use .npz or .safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp" + path.suffix)
        ids = self.ids.detach().cpu().contiguous()
        lengths = None if self.lengths is None else self.lengths.detach().cpu().contiguous()
        try:
            if suffix == ".npz":
                arrays = {"ids": ids.numpy()}
                if lengths is not None:
                    arrays["lengths"] = lengths.numpy()
                arrays["metadata"] = np.asarray(json.dumps(self.metadata, sort_keys=True))
                with open(tmp, "wb") as f:
                    np.savez(f, **arrays)
            else:
                from safetensors.torch import save_file
                tensors = {"ids": ids}
                if lengths is not None:
                    tensors["lengths"] = lengths
                save_file(tensors, str(tmp),
                          metadata={"tokenzoo.metadata": json.dumps(self.metadata, sort_keys=True)})
            tmp.replace(path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @classmethod
    def load(cls, path: PathLike) -> "Tokens":
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Tokens.load: no such file {path}")
        suffix = path.suffix.lower()
        try:
            if suffix == ".npz":
                with np.load(path, allow_pickle=False) as data:
                    if "ids" not in data.files:
                        raise _OwnError(f"Tokens.load: {path} has no 'ids' array (found {sorted(data.files)})")
                    ids = torch.from_numpy(np.array(data["ids"]))
                    lengths = torch.from_numpy(np.array(data["lengths"])) if "lengths" in data.files else None
                    metadata = json.loads(str(data["metadata"])) if "metadata" in data.files else {}
            elif suffix == ".safetensors":
                from safetensors import safe_open
                with safe_open(str(path), framework="pt") as f:
                    keys = set(f.keys())
                    if "ids" not in keys:
                        raise _OwnError(f"Tokens.load: {path} has no 'ids' tensor (found {sorted(keys)})")
                    ids = f.get_tensor("ids")
                    lengths = f.get_tensor("lengths") if "lengths" in keys else None
                    meta = f.metadata() or {}
                metadata = json.loads(meta.get("tokenzoo.metadata", "{}"))
            else:
                raise _OwnError(f"Tokens.load: unsupported file type {path.suffix!r} for {path}; "
                                "use .npz or .safetensors")
        except _OwnError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated or foreign files (numpy/safetensors error types)
            raise ValueError(f"Tokens.load: cannot read {path}: {type(exc).__name__}: {exc}") from exc
        return cls(ids, lengths, metadata)
