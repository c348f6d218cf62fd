"""The hub_configs entries of FlexTok through the real huggingface_hub code path, against a local HF cache
(offline). The files in the cache are small stand-ins written in the release layout."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import zoo
from image.flextok import FlexTok, FlexTokVAE
from zoo.hub_configs_schema import load_all_entries

COMMIT = "f" * 8 + "0123456789abcdef0123456789abcdef"


def add_to_cache(cache: Path, repo_id: str, files):
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / COMMIT / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)


@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_every_release_has_an_entry():
    names = {e.name for e in load_all_entries() if e.family == "flextok"}
    assert names == {"flextok-d12-d12-in1k", "flextok-d18-d18-in1k", "flextok-d18-d28-in1k", "flextok-d18-d28-dfn",
                     "flextok-vae-c4", "flextok-vae-c8", "flextok-vae-c16"}
    for e in load_all_entries():
        if e.family == "flextok" and not e.name.startswith("flextok-vae"):
            assert [f.filename for f in e.files] == ["config.json", "model.safetensors"]
            assert e.codebook_size == 64000 and e.token_rate == 256


def test_from_pretrained_registry_name_through_the_hf_cache(make_tiny, tiny_official_config, make_images,
                                                              tmp_path, offline):
    model = make_tiny(seed=11)
    official = tiny_official_config(hf_hub_path="vae")  # a folder relative to the release snapshot
    meta = {"_target_": "flextok.flextok_wrapper.FlexTok", **{k: str(v) for k, v in official.items()}}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"),
              metadata=meta)
    add_to_cache(tmp_path / "cache", "EPFL-VILAB/flextok_d18_d28_dfn", {
        "config.json": json.dumps(official).encode(),
        "model.safetensors": (tmp_path / "w.safetensors").read_bytes(),
        "vae/config.json": json.dumps(dict(model.config.autoencoder)).encode(),
    })
    loaded = zoo.from_pretrained("flextok-d18-d28-dfn", cache_dir=tmp_path / "cache")
    assert isinstance(loaded, FlexTok) and loaded.registry_name == "flextok-d18-d28-dfn"
    x = make_images(2)
    assert torch.equal(loaded.encode(x).ids, model.encode(x).ids)


def test_vae_entry_through_the_hf_cache(make_tiny, make_images, tmp_path, offline):
    model = make_tiny(seed=12)
    model.vae.vae.save_pretrained(str(tmp_path / "src"))
    add_to_cache(tmp_path / "cache", "EPFL-VILAB/flextok_vae_c16", {
        p.name: p.read_bytes() for p in (tmp_path / "src").iterdir()})
    vae = zoo.from_pretrained("flextok-vae-c16", cache_dir=tmp_path / "cache")
    assert isinstance(vae, FlexTokVAE)
    x = make_images(1)
    with torch.no_grad():
        ref = model.vae.vae.encode(x).latent_dist.mode() * 0.5
    assert torch.equal(vae.encode_latents(x), ref)


def test_missing_files_are_named(tmp_path, offline):
    with pytest.raises(FileNotFoundError, match="flextok_d12_d12_in1k"):
        zoo.from_pretrained("flextok-d12-d12-in1k", cache_dir=tmp_path / "empty")
