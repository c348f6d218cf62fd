"""Strict loading of official releases: coverage, truncation, foreign files, config/weights agreement, hub path."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import zoo
from audio.tadicodec.convert import config_from_release, convert_state_dict

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def release(parity, tmp_path):
    """A writable copy of the fixture release."""
    src = parity("tadicodec") / "ckpt"
    dst = tmp_path / "release"
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    os.chmod(dst, 0o755)
    return dst


def _edit_weights(path: Path, fn):
    state = load_file(str(path))
    fn(state)
    save_file(state, str(path), metadata={"format": "pt"})


def test_loads_from_folder_and_from_listed_files(release):
    a = zoo.load_official("tadicodec", release)
    files = [release / "config.json", release / "model.safetensors", release / "vocoder" / "config.json",
             release / "vocoder" / "model.safetensors", release / "text_tokenizer" / "tokenizer.json",
             release / "text_tokenizer" / "tokenizer_config.json"]
    b = zoo.load_official("tadicodec", *files)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.config.hidden_size == 64 and a.config.vocoder.dim == 64 and a.text_tokenizer is not None
    assert not a.training


def test_missing_and_unexpected_keys_are_listed(release):
    _edit_weights(release / "model.safetensors", lambda s: s.pop("decoder.layers.0.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing keys.*decoder\.layers\.0\.mlp\.up_proj\.weight"):
        zoo.load_official("tadicodec", release)


def test_unexpected_key(release):
    _edit_weights(release / "vocoder" / "model.safetensors", lambda s: s.__setitem__("head.extra", torch.zeros(2)))
    with pytest.raises(ValueError, match=r"unexpected keys.*vocoder\.head\.extra"):
        zoo.load_official("tadicodec", release)


def test_training_only_repa_and_optional_bsq_buffers(release):
    def edit(s):
        s["repa_mlp.0.weight"] = torch.zeros(2, 2)
        s.pop("bsq.basis")
        s.pop("bsq.group_basis")
    _edit_weights(release / "model.safetensors", edit)
    m = zoo.load_official("tadicodec", release)
    assert m.bsq.lfq.mask.tolist() == [2 ** i for i in range(13, -1, -1)]


def test_bad_bsq_basis_is_rejected(release):
    _edit_weights(release / "model.safetensors", lambda s: s.__setitem__("bsq.basis", 2 ** torch.arange(14)))
    with pytest.raises(ValueError, match="MSB-first"):
        zoo.load_official("tadicodec", release)


def test_truncated_weights(release):
    p = release / "model.safetensors"
    p.write_bytes(p.read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated"):
        zoo.load_official("tadicodec", release)


def test_missing_vocoder(release):
    (release / "vocoder" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="vocoder/model.safetensors"):
        zoo.load_official("tadicodec", release)


@pytest.mark.filterwarnings("ignore:.*differs from model.vocos")
def test_config_disagreeing_with_weights(release):
    cfg = json.loads((release / "config.json").read_text())
    cfg["model"]["tadicodec"]["decoder_num_layers"] = 3
    cfg["model"]["vocos"]["intermediate_dim"] = 100
    (release / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"decoder_num_layers: config 3, checkpoint 2.*intermediate_dim"):
        zoo.load_official("tadicodec", release)


def test_foreign_config_and_unsupported_options(release):
    (release / "config.json").write_text(json.dumps({"model": {"wavtokenizer": {}}}))
    with pytest.raises(ValueError, match="not a TaDiCodec release config"):
        zoo.load_official("tadicodec", release)
    base = {"preprocess": {"hop_size": 480, "sample_rate": 24000, "n_fft": 1920, "num_mels": 128,
                           "win_size": 1920, "fmin": 0, "fmax": 12000, "mel_var": 8.14, "mel_mean": -4.92},
            "model": {"tadicodec": {"hidden_size": 64, "encoder_num_layers": 2, "decoder_num_layers": 2,
                                    "num_heads": 4, "vq_emb_dim": 14, "vq_type": "simple"}, "vocos": {}}}
    with pytest.raises(ValueError, match="vq_type"):
        config_from_release(base)
    base["model"]["tadicodec"]["vq_type"] = "bsq"
    base["model"]["tadicodec"]["new_thing"] = 1
    with pytest.raises(ValueError, match="new_thing"):
        config_from_release(base)
    # absent keys take the reference constructors' defaults (Vocos: 256 input channels, not the release's 128)
    base["model"]["tadicodec"].pop("new_thing")
    with pytest.raises(ValueError, match="input_channels"):
        config_from_release(base)
    base["model"]["vocos"] = {"input_channels": 128, "hop_size": 480}
    cfg = config_from_release(base)
    assert (cfg.vocoder.dim, cfg.vocoder.num_layers, cfg.vocoder.n_fft) == (384, 8, 800)
    assert (cfg.text_vocab_size, cfg.down_sample_factor, cfg.use_text_cond) == (32100, 8, True)
    (release / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        zoo.load_official("tadicodec", release)


def test_vocoder_config_mismatch_warns(release):
    vc = json.loads((release / "vocoder" / "config.json").read_text())
    vc["model"]["vocos"]["num_layers"] = 7
    (release / "vocoder" / "config.json").write_text(json.dumps(vc))
    with pytest.warns(UserWarning, match="top-level"):
        m = zoo.load_official("tadicodec", release)
    assert m.config.vocoder.num_layers == 2


def test_convert_is_pure_and_casts_half_precision(release):
    state = load_file(str(release / "model.safetensors"))
    voc = load_file(str(release / "vocoder" / "model.safetensors"))
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    cfg = config_from_release(json.loads((release / "config.json").read_text()))
    out = convert_state_dict(half, voc, cfg)
    assert out["encoder.in_linear.weight"].dtype == torch.float32
    assert "bsq.lfq.mask" in out and "bsq.basis" not in out and "vocoder.head.istft.window" in out
    assert half["encoder.in_linear.weight"].dtype == torch.float16  # input untouched


def test_hub_registry_entries_resolve_and_load(release, tmp_path):
    """Every hub_configs/tadicodec-*.yaml is valid; an entry of the same form with local files loads."""
    from zoo.hub_configs_schema import load_entry_file

    entries = [load_entry_file(p) for p in sorted((REPO / "hub_configs").glob("tadicodec*.yaml"))]
    assert {e.name for e in entries} == {"tadicodec-6.25hz", "tadicodec-old"}
    for e in entries:
        assert e.family == "tadicodec" and e.codebook_size == 16384 and e.token_rate == 6.25
        names = [f.filename for f in e.files]
        assert names[:4] == ["config.json", "model.safetensors", "vocoder/config.json", "vocoder/model.safetensors"]
    reg = tmp_path / "registry"
    reg.mkdir()
    text = (REPO / "hub_configs" / "tadicodec-6.25hz.yaml").read_text()
    text = text.replace("name: tadicodec-6.25hz\n", "name: tadicodec-local\n")
    lines = []
    for line in text.splitlines():
        lines.append(line)
        if line.strip().startswith("- filename:"):
            fname = line.split(":", 1)[1].strip()
            lines.append(f"    local: {release / fname}")
    (reg / "tadicodec-local.yaml").write_text("\n".join(lines) + "\n")
    m = zoo.from_pretrained("tadicodec-local", hub_configs=reg)
    assert m.registry_name == "tadicodec-local" and m.config.hidden_size == 64


def test_from_pretrained_through_a_local_hugging_face_cache(release, tmp_path):
    """The registry entry resolved by huggingface_hub (offline) from a cache laid out like a real download."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "models--amphion--TaDiCodec"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(release, repo / "snapshots" / commit)
    m = zoo.from_pretrained("tadicodec-6.25hz", cache_dir=str(tmp_path / "hf"), local_files_only=True)
    assert m.registry_name == "tadicodec-6.25hz" and m.text_tokenizer is not None
    (repo / "snapshots" / commit / "vocoder" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="vocoder/model.safetensors"):
        zoo.from_pretrained("tadicodec-6.25hz", cache_dir=str(tmp_path / "hf"), local_files_only=True)
