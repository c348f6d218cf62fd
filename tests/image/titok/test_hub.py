"""``zoo.from_pretrained("titok-...")`` through the registry YAML and the real huggingface_hub cache lookup, offline.

A local HF cache is laid out as huggingface_hub writes it (blobs + snapshot symlinks + refs/main) holding the
parity fixture's files under the release's repo id, so the YAML -> download -> converter path is exercised.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import load_file

import zoo

COMMIT = "c" * 40


def _add_to_cache(cache: Path, repo_id: str, files: dict) -> None:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    for name, src in files.items():
        data = Path(src).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / COMMIT / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)


@pytest.mark.parametrize("name,fixture", [("titok-l32", "two_stage"), ("titok-bl64-vq8k", "single_stage_vq"),
                                          ("titok-bl64-vae-c16", "single_stage_vae")])
def test_from_pretrained_registry_name_offline(parity, tmp_path, monkeypatch, name, fixture):
    root = parity("titok")
    entry = next(e for e in zoo.list_models(family="titok") if e.name == name)
    cache = tmp_path / "hf-cache"
    _add_to_cache(cache, entry.repo_id, {f.filename: root / fixture / f.filename for f in entry.files})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    tok = zoo.from_pretrained(name, cache_dir=cache)
    assert tok.registry_name == name
    ref = load_file(str(root / f"{fixture}_outputs.safetensors"))
    if tok.spec.discrete:
        assert torch.equal(tok.encode(ref["input"]).ids, ref["tokens"][:, 0])
    else:
        got = tok.encode_latents(ref["input"])
        want = ref["mean"].reshape(2, ref["mean"].shape[1], -1).transpose(1, 2)
        assert (got - want).abs().max() <= 1e-4
