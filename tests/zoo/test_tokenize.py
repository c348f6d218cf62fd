import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from zoo import tokenize as T

from .multiprocess import run_two_processes
from .toy_tokenizers import ToyAudio, ToyAudioConfig, ToySeries, ToySeriesConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def speech_dir(shared_data, tmp_path):
    """The speech clips plus one corrupt file, in a temporary folder."""
    data = tmp_path / "data"
    shutil.copytree(shared_data("audio/speech"), data)
    (data / "zz_corrupt.wav").write_bytes(b"RIFF\x00\x00garbage")
    return data


def _all_tokens(out: Path):
    items = {}
    for shard in sorted(out.glob("shard-*.safetensors")):
        s = T.read_shard(shard)
        for src, ids in zip(s["sources"], s["ids"]):
            assert src not in items, f"{src} tokenized twice"
            items[Path(src.split("::")[-1]).name] = ids
    return items


def _toy():
    return ToyAudio(ToyAudioConfig(hop=64, levels=256))


def test_tokenize_folder_matches_direct_encode_and_records_errors(speech_dir, tmp_path):
    out = tmp_path / "out"
    tok = _toy()
    summary = T.tokenize_dataset(tok, speech_dir, out, batch_size=3, shard_size=4, progress=False)
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] and index["files"] == 9 and index["errors"] == 1
    assert index["model_weights_sha256"] == T.weights_digest(tok)
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and errors[0]["source"].endswith("zz_corrupt.wav") and "cannot read" in errors[0]["error"]
    assert summary["files"] == 9 and summary["errors"] == 1
    items = _all_tokens(out)
    assert len(items) == 9
    import zoo.io as zio

    for name, ids in items.items():  # batching with padding never changes an item's tokens
        wav = zio.load_audio(speech_dir / name, 24000).data
        assert torch.equal(ids, tok.encode(wav).ids[0]), name


def test_killed_run_resumes_to_the_same_output(speech_dir, tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    T.tokenize_dataset(_toy(), speech_dir, ref, batch_size=2, shard_size=3, progress=False)
    out = tmp_path / "out"
    real_write = T._write_shard
    calls = {"n": 0}

    def dying_write(path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # the process dies while writing its third shard
            path.with_name(path.name + ".partial").write_bytes(b"half a shard")
            raise KeyboardInterrupt("killed")
        return real_write(path, *a, **k)

    monkeypatch.setattr(T, "_write_shard", dying_write)
    with pytest.raises(KeyboardInterrupt):
        T.tokenize_dataset(_toy(), speech_dir, out, batch_size=2, shard_size=3, progress=False)
    assert not (out / "index.json").exists()
    monkeypatch.setattr(T, "_write_shard", real_write)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.safetensors")}
    summary = T.tokenize_dataset(_toy(), speech_dir, out, batch_size=2, shard_size=3, progress=False)
    assert summary["shards_skipped"] == 2
    for name, mtime in before.items():  # finished shards are never rewritten
        assert (out / name).stat().st_mtime_ns == mtime
    assert not list(out.glob("*.partial")) or all(p.stat().st_size for p in out.glob("*.partial"))
    assert sorted(p.name for p in out.glob("shard-*.safetensors")) == sorted(p.name for p in ref.glob("shard-*.safetensors"))
    for shard in ref.glob("shard-*.safetensors"):
        a, b = T.read_shard(shard), T.read_shard(out / shard.name)
        assert a["sources"] == b["sources"] and a["errors"] == b["errors"] and a["identity"] == b["identity"]
        assert all(torch.equal(x, y) for x, y in zip(a["ids"], b["ids"]))
    assert json.loads((out / "index.json").read_text()) == json.loads((ref / "index.json").read_text())


def test_refuses_to_mix_models_in_one_folder(speech_dir, tmp_path):
    out = tmp_path / "out"
    T.tokenize_dataset(_toy(), speech_dir, out, shard_size=50, progress=False, limit=2)
    other = ToyAudio(ToyAudioConfig(hop=32, levels=256))
    with torch.no_grad():
        other.scale.fill_(0.5)
    with pytest.raises(ValueError, match="another model"):
        T.tokenize_dataset(other, speech_dir, out, shard_size=50, progress=False, limit=2)


def test_tar_shards_and_series(shared_data, tmp_path):
    import tarfile

    tar = tmp_path / "eeg-000.tar"
    with tarfile.open(tar, "w") as tf:
        for f in sorted(shared_data("eeg").glob("tuev_*.npz")):
            tf.add(f, arcname=f"{f.stem}.npz")
    out = tmp_path / "out"
    tok = ToySeries(ToySeriesConfig())
    T.tokenize_dataset(tok, tar, out, batch_size=4, shard_size=4, progress=False)
    items = _all_tokens(out)
    assert len(items) == 6 and all(v.shape == (1, 1000) for v in items.values())


def test_bad_arguments(speech_dir, tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        T.tokenize_dataset(_toy(), speech_dir, tmp_path / "o", batch_size=0)
    with pytest.raises(ValueError, match="does not exist"):
        T.tokenize_dataset(_toy(), tmp_path / "missing", tmp_path / "o")
    assert not (tmp_path / "o").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no audio inputs"):
        T.tokenize_dataset(_toy(), empty, tmp_path / "o")
    with pytest.raises(TypeError, match="model must be"):
        T.tokenize_dataset(42, speech_dir, tmp_path / "o")


_WORKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from tests.zoo.toy_tokenizers import ToyAudio, ToyAudioConfig
    from zoo.tokenize import tokenize_dataset
    import json
    s = tokenize_dataset(ToyAudio(ToyAudioConfig(hop=64, levels=256)), {data!r}, {out!r}, batch_size=2,
                         shard_size=2, progress=False)
    print("SUMMARY", json.dumps({{k: s[k] for k in ("process", "processes", "files", "errors")}}))
""")


@pytest.mark.slow
def test_two_processes_give_the_same_tokens_as_one(speech_dir, tmp_path):
    one = tmp_path / "one"
    T.tokenize_dataset(_toy(), speech_dir, one, batch_size=2, shard_size=2, progress=False)
    two = tmp_path / "two"
    script = _WORKER.format(repo=str(REPO), data=str(speech_dir), out=str(two))
    summaries = [json.loads(out.split("SUMMARY", 1)[1]) for out in run_two_processes(script, timeout=300)]
    assert sorted(s["process"] for s in summaries) == [0, 1] and all(s["processes"] == 2 for s in summaries)
    assert all(s["files"] > 0 for s in summaries)  # both processes did work: 5 shards split 3 + 2
    assert sum(s["files"] for s in summaries) == 9 and sum(s["errors"] for s in summaries) == 1
    a, b = _all_tokens(one), _all_tokens(two)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k])
    ia, ib = json.loads((one / "index.json").read_text()), json.loads((two / "index.json").read_text())
    assert ia == ib


_SLOW_WORKER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from tests.zoo.toy_tokenizers import ToyAudio, ToyAudioConfig
    from zoo.tokenize import tokenize_dataset

    class Slow(ToyAudio):
        family = "toy-audio"

        def _encode(self, wav, lengths=None):
            time.sleep(0.4)  # slow enough to be killed between shards
            return super()._encode(wav, lengths)

    tokenize_dataset(Slow(ToyAudioConfig(hop=64, levels=256)), {data!r}, {out!r}, batch_size=1, shard_size=1,
                     progress=False)
""")


@pytest.mark.slow
def test_a_process_killed_with_sigkill_resumes_to_the_same_output(speech_dir, tmp_path):
    import signal
    import time

    ref = tmp_path / "ref"
    T.tokenize_dataset(_toy(), speech_dir, ref, batch_size=1, shard_size=1, progress=False)
    out = tmp_path / "out"
    script = _SLOW_WORKER.format(repo=str(REPO), data=str(speech_dir), out=str(out))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=str(REPO))
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("shard-*.safetensors"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: a hard kill mid-run
    proc.wait()
    done = sorted(p.name for p in out.glob("shard-*.safetensors"))
    assert 3 <= len(done) < 10 and not (out / "index.json").exists()
    summary = T.tokenize_dataset(_toy(), speech_dir, out, batch_size=1, shard_size=1, progress=False)
    assert summary["shards_skipped"] >= len(done)
    assert not list(out.glob("*.partial"))
    a, b = _all_tokens(ref), _all_tokens(out)  # _all_tokens also asserts no source appears twice
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((out / "index.json").read_text()) == json.loads((ref / "index.json").read_text())
