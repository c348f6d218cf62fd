"""Corpus tokenization throughput: files/s and tokens/s per family, with 1 and 2 processes.

Each family's small configuration is its parity fixture model (../shared/parity, loaded with
zoo.load_official and saved with save_pretrained into a temporary folder); inputs are the matching folder of
../shared/data. Two processes run under ``accelerate launch --multi_gpu --num_processes 2`` (multi-process
torch.distributed; gloo on a machine without CUDA).

    python benchmarks/tokenize_corpus.py [--families tfm flextok ...] [--repeat 1]

Prints a Markdown table: throughput over the wall time (process start-up and model loading included, what a
user waits for) and over the encode loop of the slowest process (reading, batching, encoding, writing).
"""

from __future__ import annotations

import os
import sys

import argparse
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TOKENZOO_SHARED", REPO.parent / "shared"))
P = SHARED / "parity"
D = SHARED / "data"

# family -> (data folder, load_official arguments); only discrete tokenizers
FIXTURES = {
    "wavtokenizer": (D / "audio" / "speech", [P / "wavtokenizer" / "WavTokenizer_tiny_320_24k_128.ckpt",
                                              P / "wavtokenizer" / "wavtokenizer_tiny_frame75_nq1_code128_dim32.yaml"]),
    "tadicodec": (D / "audio" / "speech", [P / "tadicodec" / "ckpt"]),
    "titok": (D / "image" / "256", [P / "titok" / "single_stage_vq"]),
    "flextok": (D / "image" / "256", [P / "flextok" / "flextok_model"]),
    "tfm": (D / "eeg", [P / "tfm" / "tfm_tokenizer_last.pth"]),
    "lipcot": (D / "eeg", [P / "lipcot" / "lipcot_model.joblib"]),
}


def _run(cmd, env):
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, cwd=str(REPO), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return wall, res.stdout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="*", default=list(FIXTURES))
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args(argv)
    import zoo

    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for family in args.families:
            data, files = FIXTURES[family]
            if not all(Path(f).exists() for f in files):
                rows.append((family, "fixture missing", "", "", "", "", "", ""))
                continue
            try:
                model = zoo.load_official(family, *files)
            except Exception as exc:  # noqa: BLE001 - a family not landed yet is reported, not fatal
                rows.append((family, f"not loadable: {type(exc).__name__}", "", "", "", "", "", ""))
                continue
            folder = tmp / family
            model.save_pretrained(folder)
            for procs in (1, 2):
                out = tmp / f"{family}-{procs}"
                launch = [sys.executable, "-m", "zoo.tokenize"] if procs == 1 else \
                    [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(procs),
                     "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "zoo.tokenize"]
                wall, stdout = _run(launch + [str(folder), "--data", str(data), "--out", str(out), "--no-progress",
                                      "--batch-size", str(args.batch_size), "--shard-size", "2"], env)
                index = json.loads((out / "index.json").read_text())
                # per-process "process r/w: N files, T tokens in S s" lines: the slowest process bounds the run
                # (processes share stdout, so lines may interleave: match the pattern, not whole lines)
                busy = max(float(m) for m in re.findall(r"process \d+/\d+: \d+ files, \d+ tokens in ([0-9.]+) s", stdout))
                rows.append((family, str(procs), str(index["files"]), f"{index['files'] / wall:.2f}",
                             f"{index['tokens'] / wall:.0f}", f"{index['files'] / busy:.1f}",
                             f"{index['tokens'] / busy:.0f}", f"{wall:.1f}"))
    print("| family | processes | files | files/s (wall) | tokens/s (wall) | files/s (encode loop) | "
          "tokens/s (encode loop) | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
