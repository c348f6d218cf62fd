"""zoo.hub through the real huggingface_hub code path, against a genuine local HF cache layout, offline.

The cache is built the way huggingface_hub writes it: ``models--owner--name/blobs/<digest>``,
``snapshots/<commit>/<file>`` symlinked to the blob, and ``refs/<branch>`` holding the commit sha.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
import yaml

import zoo
from zoo import hub, registry
from zoo.hub import ChecksumError, sha256_file, verify_file

from .toy_plugin import ToyLinear, ToyLinearConfig

COMMIT_A = "a" * 8 + "0123456789abcdef0123456789abcdef"
COMMIT_B = "b" * 8 + "0123456789abcdef0123456789abcdef"
REPO = "owner/toy-linear"


def add_to_cache(cache: Path, repo_id: str, commit: str, files, refs=()):
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return repo


def _checkpoint_bytes(tmp_path, seed):
    torch.manual_seed(seed)
    model = ToyLinear(ToyLinearConfig())
    folder = model.save_pretrained(tmp_path / f"src{seed}")
    return model, {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture
def hf_cache(tmp_path, toy_families, monkeypatch):
    """Two commits of one repo in a local HF cache: A (tag v1) and B (main); offline via HF_HUB_OFFLINE=1."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    model_a, files_a = _checkpoint_bytes(tmp_path, 0)
    model_b, files_b = _checkpoint_bytes(tmp_path, 1)
    add_to_cache(cache, REPO, COMMIT_A, files_a, refs=["v1"])
    add_to_cache(cache, REPO, COMMIT_B, files_b, refs=["main"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return {"cache": cache, "A": model_a, "B": model_b, "files_A": files_a, "files_B": files_b}


def _same(m1, m2):
    a, b = m1.state_dict(), m2.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _entry(registry_dir, name="toy-linear-v1", revision=COMMIT_A, files=None, **extra):
    files = files if files is not None else [
        {"filename": "config.json"},
        {"filename": "model.safetensors", "sha256": hashlib.sha256(extra.pop("weights")).hexdigest()},
    ]
    data = {"name": name, "family": "toy-linear", "modality": "audio", "format": "tokenzoo", "repo_id": REPO,
            "revision": revision, "files": files, **extra}
    (registry_dir / f"{name}.yaml").write_text(yaml.safe_dump(data))
    return data


def test_load_by_registry_name_offline(hf_cache, registry_dir):
    _entry(registry_dir, weights=hf_cache["files_A"]["model.safetensors"])
    model = zoo.from_pretrained("toy-linear-v1", cache_dir=hf_cache["cache"])
    assert isinstance(model, ToyLinear) and _same(model, hf_cache["A"])
    assert model.registry_name == "toy-linear-v1" and not model.training
    # the class method and an explicit registry folder argument reach the same entry
    assert _same(ToyLinear.from_pretrained("toy-linear-v1", cache_dir=hf_cache["cache"]), hf_cache["A"])
    assert _same(zoo.from_pretrained("toy-linear-v1", cache_dir=hf_cache["cache"], hub_configs=registry_dir),
                 hf_cache["A"])


def test_load_by_repo_id_and_revision(hf_cache):
    cache = hf_cache["cache"]
    assert _same(zoo.from_pretrained(REPO, cache_dir=cache), hf_cache["B"])              # refs/main
    assert _same(zoo.from_pretrained(REPO, revision="v1", cache_dir=cache), hf_cache["A"])  # a tag
    assert _same(zoo.from_pretrained(REPO, revision=COMMIT_A, cache_dir=cache), hf_cache["A"])  # a commit
    assert _same(zoo.from_pretrained(REPO, revision=COMMIT_B, cache_dir=cache), hf_cache["B"])
    with pytest.raises(FileNotFoundError, match=r"could not find repo owner/toy-linear@v9 in the local Hugging "
                                                r"Face cache \(offline\)"):
        zoo.from_pretrained(REPO, revision="v9", cache_dir=cache)
    with pytest.raises(FileNotFoundError, match="could not find repo owner/absent@main"):
        zoo.from_pretrained("owner/absent", cache_dir=cache)


def test_registry_revision_override(hf_cache, registry_dir):
    _entry(registry_dir, revision="main", files=[{"filename": "config.json"}, {"filename": "model.safetensors"}])
    cache = hf_cache["cache"]
    assert _same(zoo.from_pretrained("toy-linear-v1", cache_dir=cache), hf_cache["B"])
    assert _same(zoo.from_pretrained("toy-linear-v1", revision="v1", cache_dir=cache), hf_cache["A"])


def test_local_files_only_argument_without_env(hf_cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert not hub.is_offline() and hub.is_offline(True)
    model = zoo.from_pretrained(REPO, revision=COMMIT_A, cache_dir=hf_cache["cache"], local_files_only=True)
    assert _same(model, hf_cache["A"])


def test_tampered_file_is_refused_and_nothing_loads(hf_cache, registry_dir, monkeypatch):
    good = hf_cache["files_A"]["model.safetensors"]
    _entry(registry_dir, weights=good)
    blob = (hf_cache["cache"] / "models--owner--toy-linear" / "snapshots" / COMMIT_A / "model.safetensors").resolve()
    tampered = bytearray(good)
    tampered[-1] ^= 0xFF
    blob.write_bytes(bytes(tampered))
    calls = []
    monkeypatch.setattr(registry, "load_local_dir", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(ToyLinear, "from_config", classmethod(lambda cls, c: calls.append(c)))
    with pytest.raises(ChecksumError) as info:
        zoo.from_pretrained("toy-linear-v1", cache_dir=hf_cache["cache"])
    msg = str(info.value)
    assert "toy-linear-v1/model.safetensors" in msg
    assert f"expected sha256 {hashlib.sha256(good).hexdigest()}" in msg
    assert f"got {hashlib.sha256(bytes(tampered)).hexdigest()}" in msg
    assert calls == [], "nothing is loaded when a digest does not match"
    assert isinstance(info.value, ValueError)


def test_missing_file_is_named(hf_cache, registry_dir):
    files = [{"filename": "config.json"}, {"filename": "model.safetensors"}, {"filename": "extra_codebook.bin"}]
    _entry(registry_dir, files=files)
    with pytest.raises(FileNotFoundError) as info:
        zoo.from_pretrained("toy-linear-v1", cache_dir=hf_cache["cache"])
    msg = str(info.value)
    assert "'extra_codebook.bin'" in msg and f"{REPO}@{COMMIT_A}" in msg and "offline" in msg
    # the same file marked optional is skipped
    files[2]["optional"] = True
    _entry(registry_dir, files=files)
    assert _same(zoo.from_pretrained("toy-linear-v1", cache_dir=hf_cache["cache"]), hf_cache["A"])


def test_official_format_entry_with_local_files(toy_families, registry_dir, tmp_path):
    torch.manual_seed(3)
    ref = ToyLinear(ToyLinearConfig(hop=4))
    ckpt = registry_dir / "weights" / "release.ckpt"
    ckpt.parent.mkdir()
    torch.save({"state_dict": ref.state_dict()}, ckpt)
    data = {"name": "toy-official", "family": "toy-linear", "modality": "audio", "format": "toy-lightning-ckpt",
            "files": [{"filename": "release.ckpt", "local": "weights/release.ckpt", "sha256": sha256_file(ckpt)}],
            "load_kwargs": {"config": {"hop": 4}}}
    (registry_dir / "official.yaml").write_text(yaml.safe_dump(data))
    model = zoo.from_pretrained("toy-official")
    assert _same(model, ref) and model.loaded_from == [str(ckpt.resolve())]
    doubled = zoo.from_pretrained("toy-official", scale=2.0)        # extra kwargs reach from_official
    assert torch.equal(doubled.codebook, ref.codebook * 2)
    ckpt.unlink()
    with pytest.raises(FileNotFoundError, match=r"toy-official: file 'release.ckpt' is missing: no such local file"):
        zoo.from_pretrained("toy-official")


def test_plain_local_folder_and_name_errors(toy_families, tmp_path):
    torch.manual_seed(0)
    m = ToyLinear(ToyLinearConfig())
    folder = m.save_pretrained(tmp_path / "ckpt")
    assert _same(zoo.from_pretrained(folder), m) and _same(zoo.from_pretrained(str(folder)), m)
    with pytest.raises(ValueError, match="is a file; from_pretrained expects a folder"):
        zoo.from_pretrained(folder / "config.json")
    with pytest.raises(ValueError, match="neither a registered model name"):
        zoo.from_pretrained("no-such-model")
    with pytest.raises(TypeError, match="from_pretrained expects a registry name, a Hub repo id or a folder, got int"):
        zoo.from_pretrained(3)
    with pytest.raises(ValueError, match="empty name"):
        zoo.from_pretrained("  ")
    with pytest.raises(ValueError, match="revision must be a branch, tag or commit sha"):
        zoo.from_pretrained(folder, revision="")


def test_verify_file(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    assert sha256_file(f) == digest
    verify_file(f, digest)
    verify_file(f, digest.upper())
    verify_file(f, None)
    with pytest.raises(ChecksumError, match=rf"checksum mismatch for w.bin .*expected sha256 {'0' * 64}, got {digest}"):
        verify_file(f, "0" * 64)


def test_torch_load_is_weights_only(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2), "step": 3}, good)
    assert hub.torch_load(good)["step"] == 3
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        hub.torch_load(tmp_path / "nope.pt")


def test_a_saved_folder_wins_over_a_registry_name_spelled_the_same(tmp_path, monkeypatch):
    import zoo
    from zoo.hub_configs_schema import load_all_entries

    name = load_all_entries()[0].name  # a real registry name, used as a folder name
    monkeypatch.chdir(tmp_path)
    from tests.zoo.toy_tokenizers import ToyAudio, ToyAudioConfig

    saved = ToyAudio(ToyAudioConfig(hop=7))
    from zoo.registry import register_family, unregister_family

    register_family("toy-audio")(ToyAudio)
    try:
        saved.save_pretrained(name)
        loaded = zoo.from_pretrained(name)
        assert isinstance(loaded, ToyAudio) and loaded.config.hop == 7
    finally:
        unregister_family("toy-audio")
