"""hub_configs YAML schema: valid entries parse; every malformed file fails naming the file and the key."""

from __future__ import annotations

import os
import textwrap
import time

import pytest
import yaml

import zoo
from zoo.hub_configs_schema import (HubConfigError, config_dirs, get_entry, hub_configs_dir, load_all_entries,
                                    load_entry_file)

GOOD = {
    "name": "toy-audio-small",
    "family": "toy-audio",
    "modality": "audio",
    "format": "tokenzoo",
    "repo_id": "owner/toy",
    "revision": "0123456789abcdef0123456789abcdef01234567",
    "files": [{"filename": "config.json"}, {"filename": "model.safetensors", "sha256": "a" * 64}],
    "license": "MIT",
    "codebook_size": 256,
    "num_codebooks": 1,
    "token_rate": 75,
    "token_rate_unit": "tokens/s",
    "reported": [{"dataset": "LibriTTS test-clean", "source": "paper, Table 1", "metrics": {"PESQ": 2.0}}],
}


def _write(folder, name, data):
    path = folder / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_good_entry(tmp_path):
    e = load_entry_file(_write(tmp_path, "good.yaml", GOOD))
    assert (e.name, e.family, e.modality, e.format) == ("toy-audio-small", "toy-audio", "audio", "tokenzoo")
    assert [f.filename for f in e.files] == ["config.json", "model.safetensors"]
    assert e.files[1].sha256 == "a" * 64 and e.pinned and e.token_rate == 75.0
    assert e.summary()["codebook_size"] == 256
    e2 = load_entry_file(_write(tmp_path, "b.yaml", {**GOOD, "revision": "main",
                                                     "files": ["config.json", {"filename": "w", "local": "w.bin"}]}))
    assert not e2.pinned and e2.files[0].filename == "config.json"
    assert e2.local_path(e2.files[1]) == (tmp_path / "w.bin").resolve() and e2.local_path(e2.files[0]) is None


BAD = [
    ("missing-name", lambda d: d.pop("name"), "name", "required key is missing"),
    ("missing-files", lambda d: d.pop("files"), "files", "required key is missing"),
    ("unknown-key", lambda d: d.update(checkpoint="x"), "checkpoint", "unknown key"),
    ("name-type", lambda d: d.update(name=3), "name", "non-empty string"),
    ("name-space", lambda d: d.update(name="two words"), "name", "letters, digits"),
    ("name-other-namespace", lambda d: d.update(name="someone/model"), "name", "letters, digits"),
    ("name-reserved-prefix", lambda d: d.update(name="tokenzoo/model"), "name", "reserved for the bundled"),
    ("modality", lambda d: d.update(modality="smell"), "modality", "must be one of"),
    ("files-empty", lambda d: d.update(files=[]), "files", "non-empty list"),
    ("files-type", lambda d: d.update(files=[3]), "files[0]", "must be a mapping"),
    ("file-key", lambda d: d.update(files=[{"filename": "a", "md5": "x"}]), "files[0].md5", "unknown key"),
    ("file-name", lambda d: d.update(files=[{"sha256": None}]), "files[0].filename", "required"),
    ("sha", lambda d: d.update(files=[{"filename": "a", "sha256": "ABC"}]), "files[0].sha256", "64 lowercase hex"),
    ("file-repo", lambda d: d.update(files=[{"filename": "a", "repo_id": "noslash"}]), "files[0].repo_id",
     "owner/name"),
    ("file-optional", lambda d: d.update(files=[{"filename": "a", "optional": "yes"}]), "files[0].optional",
     "true or false"),
    ("no-repo", lambda d: d.pop("repo_id"), "files[0].repo_id", "no repo_id for this file"),
    ("repo", lambda d: d.update(repo_id="a/b/c"), "repo_id", "owner/name"),
    ("revision", lambda d: d.update(revision=""), "revision", "non-empty string"),
    ("load_kwargs", lambda d: d.update(load_kwargs=[1]), "load_kwargs", "must be a mapping"),
    ("codebook", lambda d: d.update(codebook_size=True), "codebook_size", "non-negative integer"),
    ("books", lambda d: d.update(num_codebooks=-1), "num_codebooks", "non-negative integer"),
    ("rate", lambda d: d.update(token_rate=0), "token_rate", "positive number"),
    ("unit", lambda d: d.update(token_rate_unit="tok/s"), "token_rate_unit", "must be one of"),
    ("reported", lambda d: d.update(reported={"PESQ": 2}), "reported", "list of mappings"),
    ("reported-key", lambda d: d.update(reported=[{"dataset": "x", "metrics": {}}]), "reported[0].source",
     "required key is missing"),
    ("reported-metrics", lambda d: d.update(reported=[{"dataset": "x", "source": "y", "metrics": [1]}]),
     "reported[0].metrics", "mapping"),
    ("bundled", lambda d: d.update(bundled="no"), "bundled", "true or false"),
]


@pytest.mark.parametrize("fname, mutate, key, words", BAD, ids=[b[0] for b in BAD])
def test_malformed_entry_names_file_and_key(tmp_path, fname, mutate, key, words):
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    mutate(data)
    path = _write(tmp_path, f"{fname}.yaml", data)
    with pytest.raises(HubConfigError) as info:
        load_entry_file(path)
    msg = str(info.value)
    assert msg.startswith(f"{fname}.yaml: key {key!r}"), msg
    assert words in msg


def test_not_yaml_and_not_a_mapping(tmp_path):
    with pytest.raises(HubConfigError, match=r"^broken.yaml: not valid YAML"):
        load_entry_file(_write(tmp_path, "broken.yaml", "name: [unclosed\nfamily: x\n"))
    with pytest.raises(HubConfigError, match=r"^list.yaml: top level must be a mapping, got list"):
        load_entry_file(_write(tmp_path, "list.yaml", "- a\n- b\n"))


def test_registry_reads_extra_dirs_and_refuses_duplicates(registry_dir, tmp_path, monkeypatch):
    _write(registry_dir, "one.yaml", GOOD)
    names = [e.name for e in zoo.list_models()]
    assert "toy-audio-small" in names
    assert get_entry("toy-audio-small").source == (registry_dir / "one.yaml").resolve()
    assert [e.name for e in zoo.list_models(modality="audio", family="toy-audio")] == ["toy-audio-small"]
    assert zoo.list_models(modality="image", family="toy-audio") == []
    # exactly these folders, the package's own ignored
    assert [e.name for e in zoo.list_models(hub_configs=registry_dir)] == ["toy-audio-small"]
    assert config_dirs(registry_dir) == [registry_dir.resolve()]
    assert config_dirs()[0] == hub_configs_dir().resolve()
    other = tmp_path / "other"
    other.mkdir()
    _write(other, "two.yaml", GOOD)
    monkeypatch.setenv("TOKENZOO_HUB_CONFIGS", os.pathsep.join([str(registry_dir), str(other)]))
    with pytest.raises(HubConfigError, match=r"two.yaml: key 'name': 'toy-audio-small' is also defined in .*one.yaml"):
        zoo.list_models()
    monkeypatch.setenv("TOKENZOO_HUB_CONFIGS", str(tmp_path / "nope"))
    with pytest.raises(HubConfigError, match=r"\$TOKENZOO_HUB_CONFIGS: .*nope is not a folder"):
        zoo.list_models()


def test_registry_sees_edits(registry_dir):
    path = _write(registry_dir, "one.yaml", GOOD)
    assert get_entry("toy-audio-small").description == ""
    time.sleep(0.01)
    _write(registry_dir, "one.yaml", {**GOOD, "description": "edited"})
    os.utime(path, ns=(time.time_ns() + 10 ** 9, time.time_ns() + 10 ** 9))
    assert get_entry("toy-audio-small").description == "edited"
    _write(registry_dir, "bad.yaml", textwrap.dedent("""\
        name: bad
        family: toy-audio
        modality: audio
        format: tokenzoo
        files: [{filename: a}]
    """))
    with pytest.raises(HubConfigError, match=r"^bad.yaml: key 'files\[0\].repo_id'"):
        zoo.list_models()


def test_package_entries_are_valid():
    """Every YAML shipped in hub_configs/ parses, names a known family and has a unique name."""
    entries = load_all_entries(hub_configs_dir())
    families = set(zoo.list_families())
    for e in entries:
        assert e.family in families, f"{e.source.name}: unknown family {e.family!r}"
