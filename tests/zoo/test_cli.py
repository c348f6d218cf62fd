"""The ``tokenzoo`` command: round trips per modality with toy families, layouts, and exit status 2 cases."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from PIL import Image

from zoo import Tokens
from zoo.cli import main

from .test_hub import add_to_cache
from .toy_plugin import ToyVideo, ToyVideoConfig
from .toy_tokenizers import ToyAudio, ToyAudioConfig, ToyImage, ToyImageConfig, ToySeries, ToySeriesConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def models(tmp_path, toy_families):
    out = {}
    for name, model in {"audio": ToyAudio(ToyAudioConfig(sample_rate=24000, hop=4, levels=256)),
                        "image": ToyImage(ToyImageConfig(image_size=8, pool=2, levels=32)),
                        "video": ToyVideo(ToyVideoConfig(levels=16)),
                        "eeg": ToySeries(ToySeriesConfig(sfreq=200.0, levels=64, scale=4.0))}.items():
        out[name] = str(model.save_pretrained(tmp_path / "models" / name))
    return out


def _stereo_wav(path, sr=48000, n=4800, freq=50.0):
    t = np.arange(n) / sr
    left = 0.5 * np.sin(2 * np.pi * freq * t)
    sf.write(str(path), np.stack([left, left * 0.5], axis=1).astype(np.float32), sr, subtype="FLOAT")
    return path


def test_audio_round_trip_states_mixdown_and_resampling(models, tmp_path, capsys):
    wav = _stereo_wav(tmp_path / "clip.wav")
    tok_path = tmp_path / "clip.npz"
    assert main(["encode", models["audio"], str(wav), "-o", str(tok_path)]) == 0
    printed = capsys.readouterr().out
    assert "mixed 2 channels down to mono" in printed and "48000 Hz -> 24000 Hz" in printed
    tokens = Tokens.load(tok_path)
    assert tokens.ids.shape == (1, 1, 600) and tokens.metadata["family"] == "toy-audio"
    assert "mixed 2 channels" in tokens.metadata["notes"] and tokens.metadata["source"] == str(wav)
    out = tmp_path / "clip.out.wav"
    assert main(["decode", models["audio"], str(tok_path), "-o", str(out)]) == 0
    y, sr = sf.read(str(out))
    assert sr == 24000 and y.shape == (2400,)
    t = np.arange(2400) / 24000
    expected = 0.75 * 0.5 * np.sin(2 * np.pi * 50.0 * t)
    assert np.corrcoef(y, expected)[0, 1] > 0.99


def test_image_round_trip_resizes_and_says_so(models, tmp_path, capsys):
    img = tmp_path / "pic.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 20, 4), dtype=np.uint8), "RGBA").save(img)
    tok = tmp_path / "pic.safetensors"
    assert main(["encode", models["image"], str(img), "-o", str(tok)]) == 0
    printed = capsys.readouterr().out
    assert "converted RGBA to RGB" in printed and "12x20 -> 8x8" in printed
    assert Tokens.load(tok).ids.shape == (1, 48)
    assert main(["decode", models["image"], str(tok), "-o", str(tmp_path / "pic.out.png")]) == 0
    with Image.open(tmp_path / "pic.out.png") as im:
        assert im.size == (8, 8) and im.mode == "RGB"


def test_video_and_eeg_round_trips(models, tmp_path, capsys):
    frames = np.random.default_rng(1).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "v.npz", frames=frames, fps=np.asarray(12.5))
    assert main(["encode", models["video"], str(tmp_path / "v.npz"), "-o", str(tmp_path / "v.tok.npz")]) == 0
    assert main(["decode", models["video"], str(tmp_path / "v.tok.npz"), "-o", str(tmp_path / "v.out.npz")]) == 0
    with np.load(tmp_path / "v.out.npz") as d:
        assert d["frames"].shape == frames.shape and d["frames"].dtype == np.uint8 and float(d["fps"]) == 12.5
        assert np.abs(d["frames"].astype(int) - frames.astype(int)).max() <= 9   # 16 levels: step 17, half 8.5
    sig = np.sin(np.arange(200) / 5.0)[None].repeat(2, 0).astype(np.float32)
    np.savez(tmp_path / "e.npz", signal=sig, sfreq=np.asarray(100.0), ch_names=np.asarray(["C3", "C4"]))
    assert main(["encode", models["eeg"], str(tmp_path / "e.npz"), "-o", str(tmp_path / "e.tok.npz")]) == 0
    assert "resampled 100 Hz -> 200 Hz" in capsys.readouterr().out
    assert main(["decode", models["eeg"], str(tmp_path / "e.tok.npz"), "-o", str(tmp_path / "e.out.npz")]) == 0
    with np.load(tmp_path / "e.out.npz") as d:
        assert d["signal"].shape == (2, 400) and float(d["sfreq"]) == 200.0
        assert list(d["ch_names"]) == ["C3", "C4"]


def test_decoder_output_that_is_not_a_signal(toy_families, tmp_path, capsys):
    model = toy_families.ToySpectro(ToySeriesConfig(sfreq=100.0))
    folder = str(model.save_pretrained(tmp_path / "spectro"))
    np.savez(tmp_path / "e.npz", signal=np.zeros((2, 50), np.float32), sfreq=np.asarray(100.0))
    assert main(["encode", folder, str(tmp_path / "e.npz"), "-o", str(tmp_path / "t.npz")]) == 0
    assert main(["decode", folder, str(tmp_path / "t.npz"), "-o", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as d:
        assert d.files == ["decoded"] and d["decoded"].shape == (2, 2, 50)


def test_many_inputs_one_file_each(models, tmp_path, capsys):
    inputs = [_stereo_wav(tmp_path / f"c{i}.wav", n=4800 + 480 * i) for i in range(3)]
    out = tmp_path / "tokens"
    assert main(["encode", models["audio"], *map(str, inputs), "-o", str(out), "--format", "safetensors"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["c0.safetensors", "c1.safetensors", "c2.safetensors"]
    assert Tokens.load(out / "c2.safetensors").ids.shape == (1, 1, 720)
    dec = tmp_path / "decoded"
    assert main(["decode", models["audio"], *map(str, sorted(out.iterdir())), "-o", str(dec), "-q"]) == 0
    assert sorted(p.name for p in dec.iterdir()) == ["c0.wav", "c1.wav", "c2.wav"]
    assert sf.info(str(dec / "c1.wav")).frames == 2640
    # a tokens file holding a batch decodes to one file per item, padding removed
    batch = Tokens(torch.randint(0, 256, (2, 1, 10)), torch.tensor([10, 4]), {"family": "toy-audio"})
    batch.save(tmp_path / "batch.npz")
    assert main(["decode", models["audio"], str(tmp_path / "batch.npz"), "-o", str(tmp_path / "b.wav")]) == 0
    assert sf.info(str(tmp_path / "b_0.wav")).frames == 40 and sf.info(str(tmp_path / "b_1.wav")).frames == 16


def test_list_info_demo(models, registry_dir, tmp_path, capsys):
    folder = Path(models["audio"])
    entry = {"name": "toy-audio-local", "family": "toy-audio", "modality": "audio", "format": "tokenzoo",
             "files": [{"filename": "config.json", "local": str(folder / "config.json")},
                       {"filename": "model.safetensors", "local": str(folder / "model.safetensors")}],
             "codebook_size": 256, "num_codebooks": 1, "token_rate": 6000, "token_rate_unit": "tokens/s",
             "bundled": True}
    (registry_dir / "toy.yaml").write_text(yaml.safe_dump(entry))
    assert main(["list", "--modality", "audio"]) == 0
    out = capsys.readouterr().out
    assert "toy-audio-local" in out and "6000 tokens/s" in out
    assert main(["list", "--modality", "image", "--json"]) == 0
    assert all(e["modality"] == "image" for e in json.loads(capsys.readouterr().out))
    assert main(["info", "toy-audio-local", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["files_state"] == {"config.json": "local", "model.safetensors": "local"}
    assert info["pinned"], "an entry made only of local files is pinned"
    assert main(["info", models["image"]]) == 0
    assert "family: toy-image" in capsys.readouterr().out
    examples = tmp_path / "examples"
    (examples / "audio").mkdir(parents=True)
    _stereo_wav(examples / "audio" / "a.wav", n=48000, freq=440.0)  # 1 s: PESQ scores >= 0.25 s
    assert main(["demo", "--models", "toy-audio-local", "--examples", str(examples), "--out",
                 str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "families " in out and "| toy-audio-local | 1 | 6000 tokens/s |" in out
    assert (tmp_path / "demo" / "report.html").is_file()


def test_demo_without_bundled_models(registry_dir, capsys, monkeypatch):
    from zoo import hub_configs_schema

    monkeypatch.setattr(hub_configs_schema, "hub_configs_dir", lambda: registry_dir)  # no package entries
    assert main(["demo"]) == 2
    assert "no bundled tokenizers are registered" in capsys.readouterr().err


BAD_USAGE = [
    ([], "a command is required"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["encode", "{audio}"], "required"),
    (["encode", "{audio}", "{missing}", "-o", "{tmp}/t.npz"], "cannot read input file"),
    (["encode", "{audio}", "{corrupt}", "-o", "{tmp}/t.npz"], "cannot read audio file"),
    (["encode", "{audio}", "{wav}", "-o", "{tmp}/t.pt"], "tokens file must end with one of ['.npz', '.safetensors']"),
    (["encode", "{audio}", "{wav}", "-o", "{tmp}/t.npz", "--format", "safetensors"], "does not end with .safetensors"),
    (["encode", "{audio}", "{wav}", "{wav}", "-o", "{tmp}/d"], "would both write"),
    (["encode", "{audio}", "{wav}", "-o", "{tmp}/t.npz", "--option", "novalue"], "--option expects KEY=VALUE"),
    (["encode", "{audio}", "{wav}", "-o", "{tmp}/t.npz", "--option", "bogus=1"], "unexpected keyword argument"),
    (["encode", "no-such-model", "{wav}", "-o", "{tmp}/t.npz"], "neither a registered model name"),
    (["encode", "{image}", "{wav}", "-o", "{tmp}/t.npz"], "cannot read image file"),
    (["decode", "{audio}", "{missing}", "-o", "{tmp}/o.wav"], "cannot read tokens file"),
    (["decode", "{audio}", "{corrupt_tokens}", "-o", "{tmp}/o.wav"], "cannot read tokens file"),
    (["decode", "{image}", "{audio_tokens}", "-o", "{tmp}/o.png"], "was made by a 'toy-audio' tokenizer"),
    (["decode", "{audio}", "{audio_tokens}", "-o", "{tmp}/o.png"], "audio output file must end with one of"),
    (["decode", "{audio}", "{big_tokens}", "-o", "{tmp}/o.wav"], "outside [0, 256)"),
    (["encode", "{video}", "{audio_tokens}", "-o", "{tmp}"], "would overwrite the input"),
    (["list", "--modality", "smell"], "invalid choice: 'smell'"),
    (["list", "--family", "nope"], "unknown family 'nope'"),
    (["info", "no/such-repo", "--offline"], "could not find repo no/such-repo"),
]


@pytest.mark.parametrize("argv, words", BAD_USAGE, ids=[" ".join(a[:2]) + str(i) for i, (a, _) in enumerate(BAD_USAGE)])
def test_exit_status_2_with_one_line(models, tmp_path, capsys, argv, words):
    wav = _stereo_wav(tmp_path / "in.wav")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage")
    (tmp_path / "bad.npz").write_bytes(b"junk")
    Tokens(torch.zeros(1, 1, 4, dtype=torch.long), None, {"family": "toy-audio"}).save(tmp_path / "a.npz")
    Tokens(torch.full((1, 1, 4), 300)).save(tmp_path / "big.npz")
    fmt = {**models, "tmp": str(tmp_path), "missing": str(tmp_path / "nope.wav"), "corrupt": str(corrupt),
           "wav": str(wav), "corrupt_tokens": str(tmp_path / "bad.npz"), "audio_tokens": str(tmp_path / "a.npz"),
           "big_tokens": str(tmp_path / "big.npz")}
    code = main([a.format(**fmt) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tokenzoo: error: ") and words in lines[0], err


def test_help_and_version(capsys):
    assert main(["--help"]) == 0
    assert "encode" in capsys.readouterr().out
    assert main(["--version"]) == 0


def test_console_script_in_a_subprocess_offline(tmp_path, toy_families):
    """The installed command, a fresh interpreter, a registry name resolved through an offline HF cache."""
    model = ToyAudio(ToyAudioConfig(sample_rate=16000, hop=8, levels=64))
    files = {p.name: p.read_bytes() for p in model.save_pretrained(tmp_path / "m").iterdir()}
    cache = tmp_path / "cache"
    add_to_cache(cache, "owner/toy-audio", "c" * 40, files, refs=["main"])
    reg = tmp_path / "reg"
    reg.mkdir()
    (reg / "toy.yaml").write_text(yaml.safe_dump({
        "name": "toy-audio-hub", "family": "toy-audio", "modality": "audio", "format": "tokenzoo",
        "repo_id": "owner/toy-audio", "revision": "c" * 40,
        "files": [{"filename": "config.json"},
                  {"filename": "model.safetensors", "sha256": hashlib.sha256(files["model.safetensors"]).hexdigest()}]}))
    wav = _stereo_wav(tmp_path / "x.wav", sr=16000, n=1600)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "TOKENZOO_HUB_CONFIGS": str(reg),
           "TOKENZOO_FAMILY_MODULES": "tests.zoo.toy_plugin", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    script = Path(sys.executable).with_name("tokenzoo")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "zoo.cli"]
    proc = subprocess.run(cmd + ["encode", "toy-audio-hub", str(wav), "-o", str(tmp_path / "x.npz")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "mixed 2 channels down to mono" in proc.stdout
    tokens = Tokens.load(tmp_path / "x.npz")
    assert tokens.ids.shape == (1, 1, 200) and tokens.metadata["model"] == "toy-audio-hub"
    assert tokens == model.encode(torch.from_numpy(sf.read(str(wav), dtype="float32")[0].mean(1))[None])
    proc = subprocess.run(cmd + ["decode", "toy-audio-hub", str(tmp_path / "missing.npz"), "-o", "y.wav"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"tokenzoo: error: cannot read tokens file "
                                                f"{tmp_path / 'missing.npz'}: no such file"]


def test_bench_and_tokenize_commands(models, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        _stereo_wav(data / f"s{i}.wav", sr=24000, n=2400 + 240 * i)
    assert main(["bench", models["audio"], "--data", str(data), "--out", str(tmp_path / "rep"), "--metrics",
                 "si_sdr", "--limit", "1", "-q"]) == 0
    assert "si_sdr" in capsys.readouterr().out and (tmp_path / "rep" / "report.html").is_file()
    assert main(["bench", models["audio"], "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert main(["tokenize", models["audio"], "--data", str(data), "--out", str(tmp_path / "shards"),
                 "--no-progress"]) == 0
    assert "tokenized 2 files" in capsys.readouterr().out
    assert main(["tokenize", models["audio"]]) == 2
    assert "required: --data, --out" in capsys.readouterr().err


def test_delegated_command_mechanism(tmp_path, monkeypatch, capsys):
    from zoo import cli

    (tmp_path / "fake_cmd_module.py").write_text(
        "def add_arguments(p):\n    p.add_argument('--n', type=int, required=True)\n"
        "def run_from_args(args):\n    print('ran', args.n)\n    return 0\n")
    (tmp_path / "bare_cmd_module.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.DELEGATED, "train", ("fake_cmd_module", "fake"))
    assert main(["train", "--n", "3"]) == 0 and "ran 3" in capsys.readouterr().out
    assert main(["train", "--n", "x"]) == 2 and "invalid int value" in capsys.readouterr().err
    monkeypatch.setitem(cli.DELEGATED, "train", ("bare_cmd_module", "bare"))
    assert main(["train"]) == 2 and "is not available in this version" in capsys.readouterr().err


def test_bench_extractor_option(models, tmp_path, capsys, monkeypatch):
    from zoo import bench

    data = tmp_path / "data"
    data.mkdir()
    _stereo_wav(data / "s0.wav", sr=24000, n=2400)
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"x")
    base = ["bench", models["audio"], "--data", str(data), "--out", str(tmp_path / "rep"), "-q"]
    assert main(base + ["--extractor", "rfid"]) == 2 and "expected METRIC=PATH" in capsys.readouterr().err
    assert main(base + ["--extractor", f"rfid={tmp_path / 'none.pth'}"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(base + ["--extractor", f"rfid={weights}", "--extractor", f"rfid={weights}"]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(base + ["--extractor", f"nope={weights}"]) == 2
    assert "unknown metrics ['nope']" in capsys.readouterr().err
    seen = {}

    def fake_run(*args, **kwargs):
        seen.update(kwargs)
        return {"models": {}, "modality": "audio"}

    monkeypatch.setattr(bench, "run", fake_run)
    monkeypatch.setattr(bench, "markdown_table", lambda results: "table")
    assert main(base + ["--extractor", f"rfid={weights}"]) == 0
    assert seen["extractors"] == {"rfid": str(weights)}
