"""TiTok encode/decode throughput and peak memory (CPU fp32 by default, random weights).

    python benchmarks/titok.py                       # fixture-sized models at batch 1 and 8, TiTok-L-32 at batch 1
    python benchmarks/titok.py --configs l32 bl64-vq8k --batches 1 8 --reps 2

Configs: ``fixture-two-stage`` / ``fixture-vq`` / ``fixture-vae`` (the parity fixtures' architectures, read from
../shared/parity/titok/*/config.json when present) and any hub_configs name without the ``titok-`` prefix
(``l32`` = the paper's main model; ``b64``, ``s128``, ``bl64-vq8k``, ...). Peak memory is the growth of the
process's resident set during the call (sampled every 2 ms), so it includes activations and workspace but not
the weights already loaded. Tokens are produced with the default ``chunk_size=1`` (batch-independent ids) and,
for comparison, ``chunk_size=batch`` (one forward pass for the whole batch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from image.titok import TiTok, official_config  # noqa: E402

SHARED = Path(os.environ.get("TOKENZOO_SHARED", ROOT.parent / "shared"))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident-set growth (bytes) while the block runs."""

    def __enter__(self):
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())
        self.growth = self.peak - self.base


def config_tree(name: str) -> dict:
    if name.startswith("fixture-"):
        folder = {"fixture-two-stage": "two_stage", "fixture-vq": "single_stage_vq",
                  "fixture-vae": "single_stage_vae"}[name]
        path = SHARED / "parity" / "titok" / folder / "config.json"
        if not path.is_file():
            raise SystemExit(f"{path} not found (set TOKENZOO_SHARED)")
        return json.loads(path.read_text())
    entry = ROOT / "hub_configs" / f"titok-{name}.yaml"
    if not entry.is_file():
        raise SystemExit(f"unknown config {name!r}: no {entry}")
    return yaml.safe_load(entry.read_text())["architecture"]["config_json"]


WARMUP = True


def timed(fn, reps: int):
    if WARMUP:
        fn()
    best = float("inf")
    with PeakRSS() as mem:
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
    return best, mem.growth


def bench(name: str, batch: int, reps: int, chunks=None):
    torch.manual_seed(0)
    model = TiTok(official_config(config_tree(name))).eval()
    s = model.config.image_size
    x = torch.rand(batch, 3, s, s)
    rows = []
    if model.spec.discrete:
        ids = model.encode(x).ids
        for c in chunks or ([1] if batch == 1 else [1, batch]):
            t, m = timed(lambda: model.encode(x, chunk_size=c), reps)
            rows.append((name, batch, f"encode (chunk {c})", t, m))
            t, m = timed(lambda: model.decode(ids, chunk_size=c), reps)
            rows.append((name, batch, f"decode (chunk {c})", t, m))
    else:
        lat = model.encode_latents(x)
        for c in chunks or ([1] if batch == 1 else [1, batch]):
            t, m = timed(lambda: model.encode_latents(x, chunk_size=c), reps)
            rows.append((name, batch, f"encode_latents (chunk {c})", t, m))
            t, m = timed(lambda: model.decode_latents(lat, chunk_size=c), reps)
            rows.append((name, batch, f"decode_latents (chunk {c})", t, m))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=None)
    ap.add_argument("--batches", nargs="+", type=int, default=None)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--chunks", nargs="+", type=int, default=None,
                    help="chunk_size values to time (default: 1, and the batch size when > 1)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up call (large models)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    global WARMUP
    WARMUP = not args.no_warmup
    plan = []
    if args.configs is None:
        plan += [(c, b) for c in ("fixture-two-stage", "fixture-vq", "fixture-vae") for b in (1, 8)]
        plan += [("l32", 1)]
    else:
        plan += [(c, b) for c in args.configs for b in (args.batches or [1, 8])]
    print(f"torch {torch.__version__}, CPU fp32, {torch.get_num_threads()} threads, best of {args.reps}")
    print("| config | batch | op | seconds | images/s | peak RSS growth (MiB) |")
    print("|---|---|---|---|---|---|")
    for name, b in plan:
        chunks = None if args.chunks is None else [min(c, b) for c in args.chunks]
        for cfg, batch, op, t, m in bench(name, b, args.reps, sorted(set(chunks)) if chunks else None):
            print(f"| {cfg} | {batch} | {op} | {t:.4f} | {batch / t:.2f} | {m / 2**20:.1f} |", flush=True)


if __name__ == "__main__":
    main()
