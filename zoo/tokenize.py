"""Tokenize a corpus into token shards: sharded, resumable, multi-process and multi-node.

``tokenize_dataset(model, data, out)`` reads a folder of files (or webdataset ``.tar`` shards), decodes them
in DataLoader workers, batches items of similar length, encodes them on the device and writes token shards:

``out/shard-00000.safetensors`` ... each holding, for its items,

- ``ids``: every item's ids flattened and concatenated (int32 when the codebook fits, else int64),
- ``offsets``: int64 ``[n + 1]`` start of each item in ``ids``,
- ``shapes``: int64 ``[n, k]`` each item's ids shape (padding removed),

and in its metadata the source path of every item, the errors met in the shard, the model name, revision and
a sha256 digest of the model's weights (so tokens are never confused between checkpoints).

``out/index.json`` lists the shards with their item and token counts; ``out/errors.jsonl`` lists the files that
could not be read or had the wrong form, with the reason. The input list is sorted and cut into fixed shards of
``shard_size`` files, so shard ``i`` always holds the same files: a restarted run skips shards already written
(a shard appears atomically, by rename, only when complete) and the output equals an uninterrupted run's.

Under ``accelerate launch`` (or any ``torch.distributed`` launcher setting RANK/WORLD_SIZE), process ``r`` of
``w`` takes shards ``r, r + w, r + 2w, ...``: no overlap, no gaps; the index is written by the main process
after all processes are done.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import io as zio

INDEX_NAME = "index.json"
ERRORS_NAME = "errors.jsonl"
FORMAT = "tokenzoo-token-shards"


@dataclass(frozen=True)
class Source:
    """One input: a file on disk, or a member of a tar shard (``tar_path``, ``member``)."""

    path: str
    tar_path: Optional[str] = None
    member: Optional[str] = None

    @property
    def name(self) -> str:
        return f"{self.tar_path}::{self.member}" if self.tar_path else self.path


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the model's config and state dict (names, dtypes, shapes and bytes, in sorted key order)."""
    h = hashlib.sha256()
    if hasattr(model, "config_dict"):
        h.update(json.dumps(model.config_dict(), sort_keys=True, default=str).encode())
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def list_sources(data: Union[str, Path, Sequence[Union[str, Path]]], modality: str) -> List[Source]:
    """Every input of ``modality`` under ``data`` (a folder, a .tar file, or a list of them), sorted."""
    items = data if isinstance(data, (list, tuple)) else [data]
    out: List[Source] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += [Source(str(f)) for f in zio.list_files(p, modality)]
            out += [s for t in sorted(p.rglob("*.tar")) for s in _tar_members(t, modality)]
        elif p.is_file() and p.suffix == ".tar":
            out += _tar_members(p, modality)
        elif p.is_file():
            out.append(Source(str(p)))
        else:
            raise ValueError(f"data {p} does not exist (expected a folder, a .tar shard or a file)")
    out.sort(key=lambda s: (s.tar_path or "", s.member or "", s.path))
    return out


def _tar_members(path: Path, modality: str) -> List[Source]:
    exts = zio.EXTENSIONS[modality]
    try:
        with tarfile.open(path) as tf:
            names = [m.name for m in tf.getmembers() if m.isfile() and Path(m.name).suffix.lower() in exts]
    except (tarfile.TarError, OSError) as exc:
        raise ValueError(f"cannot read tar shard {path}: {exc}") from exc
    return [Source(str(path), str(path), n) for n in sorted(names)]


def _read_source(src: Source, modality: str, rate: Optional[float]) -> zio.Loaded:
    if src.tar_path is None:
        return zio.load_item(src.path, modality, rate)
    import tempfile

    with tarfile.open(src.tar_path) as tf:
        f = tf.extractfile(src.member)
        if f is None:
            raise ValueError(f"{src.name} is not a regular file")
        payload = f.read()
    suffix = Path(src.member).suffix
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(payload)
        tmp.flush()
        loaded = zio.load_item(tmp.name, modality, rate)
    loaded.path = Path(src.name)
    return loaded


class _ShardDataset(torch.utils.data.Dataset):
    def __init__(self, sources: List[Source], modality: str, rate: Optional[float], image_size):
        self.sources, self.modality, self.rate, self.image_size = sources, modality, rate, image_size

    def __len__(self):
        return len(self.sources)

    def __getitem__(self, i):
        src = self.sources[i]
        try:
            loaded = _read_source(src, self.modality, self.rate)
            x = loaded.data
            if self.modality == "image":
                if self.image_size is not None and tuple(x.shape[-2:]) != tuple(self.image_size):
                    x = zio.center_crop_resize(x, self.image_size)
                x = x.float() / 255.0
            elif self.modality == "video":
                x = x.float() / 255.0
            else:
                x = x.float()
            return i, x, loaded.rate, None
        except Exception as exc:  # noqa: BLE001 - any unreadable input is recorded, never fatal
            return i, None, None, f"{type(exc).__name__}: {exc}"


def _collate(batch):
    return batch


def _batches(items: List[Tuple[int, torch.Tensor, Optional[float]]], batch_size: int, modality: str):
    """Group items of similar length: sort by length, then cut; items of another shape start a new batch."""
    items = sorted(items, key=lambda it: (tuple(it[1].shape[:-1]), it[1].shape[-1], it[0]))
    batch: List = []
    for it in items:
        if batch:
            same_lead = tuple(batch[0][1].shape[:-1]) == tuple(it[1].shape[:-1]) and batch[0][2] == it[2]
            same_shape = tuple(batch[0][1].shape) == tuple(it[1].shape)
            paddable = modality in ("audio", "eeg")
            if len(batch) >= batch_size or not same_lead or not (same_shape or paddable):
                yield batch
                batch = []
        batch.append(it)
    if batch:
        yield batch


def _encode_batch(model, batch, modality: str, device) -> List[torch.Tensor]:
    """-> ids of each item (padding removed), in batch order."""
    lens = [it[1].shape[-1] for it in batch]
    kwargs: Dict[str, Any] = {}
    if modality == "eeg" and batch[0][2] is not None:
        kwargs["sfreq"] = float(batch[0][2])
    if len(set(lens)) == 1:
        x = torch.stack([it[1] for it in batch]).to(device)
        tokens = model.encode(x, **kwargs)
        return [t.cpu() for t in tokens.unbind()]
    longest = max(lens)
    x = torch.stack([torch.nn.functional.pad(it[1], (0, longest - it[1].shape[-1])) for it in batch]).to(device)
    tokens = model.encode(x, lengths=torch.tensor(lens), **kwargs)
    if tokens.lengths is None:
        # the tokenizer does not report per-item lengths: encode one at a time instead of guessing
        return [model.encode(it[1][None].to(device), **kwargs).ids[0].cpu() for it in batch]
    return [t.cpu() for t in tokens.unbind()]


def _shard_path(out: Path, i: int) -> Path:
    return out / f"shard-{i:05d}.safetensors"


def _write_shard(path: Path, ids_list: List[torch.Tensor], names: List[str], errors: List[Dict[str, str]],
                 identity: Dict[str, str], codebook_size: int) -> Dict[str, Any]:
    from safetensors.torch import save_file

    dtype = torch.int32 if codebook_size <= 2 ** 31 - 1 else torch.int64
    flat = [t.reshape(-1).to(dtype) for t in ids_list]
    lengths = [t.numel() for t in flat]
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]) if lengths else [0], dtype=torch.int64)
    ndim = max((t.ndim for t in ids_list), default=1)
    shapes = torch.tensor([list(t.shape) + [1] * (ndim - t.ndim) for t in ids_list] or [[0] * ndim], dtype=torch.int64)
    if not ids_list:
        shapes = shapes[:0]
    tensors = {"ids": torch.cat(flat) if flat else torch.zeros(0, dtype=dtype), "offsets": offsets, "shapes": shapes}
    meta = {"format": FORMAT, "sources": json.dumps(names), "errors": json.dumps(errors), **identity}
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return {"file": path.name, "items": len(ids_list), "tokens": int(sum(lengths)), "errors": len(errors)}


def read_shard(path: Union[str, Path]) -> Dict[str, Any]:
    """-> {"ids": [tensor per item], "sources": [...], "errors": [...], "identity": {...}}."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such token shard {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            ids, offsets, shapes = f.get_tensor("ids"), f.get_tensor("offsets"), f.get_tensor("shapes")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type on damaged files
        raise ValueError(f"cannot read token shard {path}: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a tokenzoo token shard (format {meta.get('format')!r})")
    items = []
    for i in range(shapes.shape[0]):
        shape = [int(s) for s in shapes[i]]
        items.append(ids[offsets[i]: offsets[i + 1]].long().reshape(shape))
    identity = {k: v for k, v in meta.items() if k.startswith("model")}
    return {"ids": items, "sources": json.loads(meta["sources"]), "errors": json.loads(meta["errors"]),
            "identity": identity}


def _state():
    """accelerate's process state; on machines without CUDA (or with ACCELERATE_USE_CPU) it uses gloo on CPU."""
    from accelerate import PartialState

    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    return PartialState(cpu=use_cpu)


def tokenize_dataset(model, data, out, *, batch_size: int = 8, num_workers: int = 0, shard_size: int = 1000,
                     device: Optional[Union[str, torch.device]] = None, progress: bool = True,
                     limit: Optional[int] = None) -> Dict[str, Any]:
    """Tokenize every file of the model's modality under ``data`` into shards in ``out``; returns the summary.

    ``model`` is a Tokenizer or anything ``zoo.from_pretrained`` accepts. See the module docstring for the
    output layout, resumption and multi-process behaviour.
    """
    from tqdm.auto import tqdm

    from .registry import from_pretrained
    from .tokenizer import Tokenizer

    for name, v, lo in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0), ("shard_size", shard_size, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    state = _state()
    if device is None:
        device = state.device
    device = torch.device(device)
    if isinstance(model, Tokenizer):
        name = getattr(model, "registry_name", None) or model.family
    elif isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        model = from_pretrained(model)
    else:
        raise TypeError(f"model must be a Tokenizer or a registry name / folder / repo id, got {type(model).__name__}")
    model = model.to(device).eval()
    spec = model.spec
    if not spec.discrete:
        raise ValueError(f"{name} is a continuous tokenizer: it has no discrete tokens to write")
    modality = model.modality
    identity = {"model_name": str(name), "model_family": model.family,
                "model_revision": str(getattr(model, "revision", None) or "unknown"),
                "model_weights_sha256": weights_digest(model)}
    sources = list_sources(data, modality)
    if limit is not None:
        sources = sources[:limit]
    if not sources:
        raise ValueError(f"no {modality} inputs ({', '.join(zio.EXTENSIONS[modality])} or .tar shards) under {data}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_existing_index(out, identity, shard_size)
    n_shards = (len(sources) + shard_size - 1) // shard_size
    mine = list(range(state.process_index, n_shards, state.num_processes))
    rate = getattr(model, "sample_rate", None) if modality == "audio" else None
    image_size = model.expected_size() if modality == "image" and hasattr(model, "expected_size") else None
    t_start = time.perf_counter()
    done_here = {"files": 0, "tokens": 0, "errors": 0, "shards_skipped": 0}
    bar = tqdm(total=sum(min(shard_size, len(sources) - i * shard_size) for i in mine), disable=not progress,
               desc=f"tokenize [{state.process_index}/{state.num_processes}]", unit="file")
    for i in mine:
        path = _shard_path(out, i)
        chunk = sources[i * shard_size: (i + 1) * shard_size]
        if path.is_file():
            try:
                if read_shard(path)["identity"].get("model_weights_sha256") == identity["model_weights_sha256"]:
                    done_here["shards_skipped"] += 1
                    bar.update(len(chunk))
                    continue
            except ValueError:
                pass  # a damaged shard is rewritten
        ds = _ShardDataset(chunk, modality, rate, image_size)
        loader = torch.utils.data.DataLoader(ds, batch_size=max(1, batch_size), num_workers=num_workers,
                                             collate_fn=_collate, shuffle=False)
        good, errors = [], []
        for batch in loader:
            for j, x, r, err in batch:
                if err is not None:
                    errors.append({"source": chunk[j].name, "error": err})
                else:
                    good.append((j, x, r))
                bar.update(1)
        results: Dict[int, torch.Tensor] = {}
        for b in _batches(good, batch_size, modality):
            try:
                for (j, _, _), ids in zip(b, _encode_batch(model, b, modality, device)):
                    results[j] = ids
            except Exception:  # noqa: BLE001 - a bad batch is retried item by item to isolate the culprit
                for it in b:
                    try:
                        results[it[0]] = _encode_batch(model, [it], modality, device)[0]
                    except Exception as exc1:  # noqa: BLE001
                        errors.append({"source": chunk[it[0]].name, "error": f"{type(exc1).__name__}: {exc1}"})
        order = sorted(results)
        info = _write_shard(path, [results[j] for j in order], [chunk[j].name for j in order],
                            sorted(errors, key=lambda e: e["source"]), identity, spec.codebook_size)
        done_here["files"] += info["items"]
        done_here["tokens"] += info["tokens"]
        done_here["errors"] += info["errors"]
    bar.close()
    elapsed = time.perf_counter() - t_start
    state.wait_for_everyone()
    summary = {"process": state.process_index, "processes": state.num_processes, "seconds": elapsed,
               **done_here, "files_per_s": done_here["files"] / elapsed if elapsed > 0 else None,
               "tokens_per_s": done_here["tokens"] / elapsed if elapsed > 0 else None}
    if state.is_main_process:
        summary["index"] = write_index(out, identity, shard_size, len(sources), n_shards)
    state.wait_for_everyone()
    return summary


def _check_existing_index(out: Path, identity: Dict[str, str], shard_size: int) -> None:
    index = out / INDEX_NAME
    if not index.is_file():
        return
    try:
        old = json.loads(index.read_text())
    except json.JSONDecodeError:
        return
    if old.get("model_weights_sha256") not in (None, identity["model_weights_sha256"]):
        raise ValueError(f"{out} holds tokens of another model ({old.get('model_name')}, weights sha256 "
                         f"{old.get('model_weights_sha256')}); use another output folder")
    if old.get("shard_size") not in (None, shard_size):
        raise ValueError(f"{out} was written with shard_size {old.get('shard_size')}; resume with the same "
                         f"shard_size (got {shard_size}) or use another output folder")


def write_index(out: Path, identity: Dict[str, str], shard_size: int, n_sources: int, n_shards: int) -> Dict[str, Any]:
    """Scan the shard files and write ``index.json`` and ``errors.jsonl`` (atomically)."""
    shards, errors = [], []
    total_items = total_tokens = 0
    for i in range(n_shards):
        path = _shard_path(out, i)
        if not path.is_file():
            shards.append({"file": path.name, "complete": False})
            continue
        s = read_shard(path)
        n_tok = int(sum(t.numel() for t in s["ids"]))
        shards.append({"file": path.name, "complete": True, "items": len(s["ids"]), "tokens": n_tok,
                       "errors": len(s["errors"])})
        total_items += len(s["ids"])
        total_tokens += n_tok
        errors += s["errors"]
    index = {"format": FORMAT, **identity, "shard_size": shard_size, "inputs": n_sources, "shards": shards,
             "files": total_items, "tokens": total_tokens, "errors": len(errors),
             "complete": all(s["complete"] for s in shards)}
    for name, text in ((INDEX_NAME, json.dumps(index, indent=2)),
                       (ERRORS_NAME, "".join(json.dumps(e) + "\n" for e in errors))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
    return index


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m zoo.tokenize MODEL --data DIR --out DIR`` (the same options as ``tokenzoo tokenize``)."""
    import argparse

    p = argparse.ArgumentParser(prog="tokenzoo tokenize", description="Tokenize a corpus into token shards.")
    add_arguments(p)
    args = p.parse_args(argv)
    return run_from_args(args)


def add_arguments(p) -> None:
    p.add_argument("model", help="registry name, Hub repo id or local folder")
    p.add_argument("--data", required=True, nargs="+", help="folder(s) or webdataset .tar shards")
    p.add_argument("--out", required=True, help="output folder for the token shards")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--device", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")


def run_from_args(args) -> int:
    summary = tokenize_dataset(args.model, [Path(d) for d in args.data], args.out, batch_size=args.batch_size,
                               num_workers=args.num_workers, shard_size=args.shard_size, device=args.device,
                               progress=not args.no_progress, limit=args.limit)
    if "index" in summary:
        idx = summary["index"]
        print(f"tokenized {idx['files']} files into {len(idx['shards'])} shards ({idx['tokens']} tokens, "
              f"{idx['errors']} errors) in {args.out}")
    print(f"process {summary['process']}/{summary['processes']}: {summary['files']} files, {summary['tokens']} tokens "
          f"in {summary['seconds']:.2f} s ({summary['shards_skipped']} shards already done)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
