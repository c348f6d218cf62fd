"""Encode / decode throughput and peak memory of LiPCoT (CPU, NumPy float64 inside).

Configurations: the released model's settings (order 16, warp 0.2, method 2, K 64) and the two other feature
methods (1 = poles, 3 = cepstrum), each with random centres/scaler (the fitted values do not change the cost);
batch 1 and 8 of 59-channel, 5 s segments at 500 Hz (the reference pipeline's segment). Each measurement runs
in a fresh process; peak memory is the growth of ``ru_maxrss`` after building the model and the input.

With ``--original DIR`` (a folder holding the ``turbolpc`` package of MDFahimAnjum/TurboLPC, which the reference
LiPCoT code imports, e.g. extracted from its GitHub repository outside this repo) the LPC analysis of the same
windows is also timed with the original ``arburg_warped_matrix`` and the outputs are compared.

    python benchmarks/lipcot.py [--repeats 3] [--original /path/to/turbolpc_checkout]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time

import numpy as np

METHODS = {"released (method 2, p16)": 2, "poles (method 1, p16)": 1, "cepstrum (method 3, p16)": 3}
SFREQ, SECONDS, CHANNELS = 500, 5.0, 59


def _model(method: int):
    import torch

    from eeg.lipcot import LiPCoT, LiPCoTConfig

    model = LiPCoT(LiPCoTConfig(order=16, warp=0.2, method=method, sfreq=SFREQ, vocab_size=64))
    g = torch.Generator().manual_seed(0)
    F = model.config.num_features
    model.centers.copy_(torch.randn(64, F, generator=g, dtype=torch.float64))
    model.scaler_scale.copy_(torch.rand(F, generator=g, dtype=torch.float64) + 0.5)
    return model


def _signal(batch: int):
    import torch
    from scipy.signal import lfilter

    rng = np.random.default_rng(0)
    x = lfilter([1.0], [1.0, -1.6, 0.8], rng.normal(0, 10, (batch, CHANNELS, int(SFREQ * SECONDS))), axis=-1)
    return torch.from_numpy(x)


def _measure(args):
    name, batch, op, repeats = args
    model = _model(METHODS[name])
    x = _signal(batch)
    tokens = model.encode(x)
    fn = (lambda: model.encode(x)) if op == "encode" else (lambda: model.decode(tokens))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    best = min(times)
    return name, batch, op, best, batch * CHANNELS / best, max(peak, 0) / 1024.0


def _compare_original(folder: str, repeats: int):
    sys.path.insert(0, folder)
    from turbolpc.analysis import arburg_warped_matrix  # the original implementation (outside this repo)

    from eeg.lipcot.lpc import warped_burg

    windows = _signal(8).numpy().reshape(-1, int(SFREQ * SECONDS))  # 472 windows
    fns = {"original turbolpc.arburg_warped_matrix": lambda: arburg_warped_matrix(windows.T, 16, 0.2),
           "tokenzoo warped_burg": lambda: warped_burg(windows, 16, 0.2)}
    best = {k: float("inf") for k in fns}
    outs = {}
    for _ in range(repeats):  # interleaved, so both see the same machine load
        for label, fn in fns.items():
            t0 = time.perf_counter()
            outs[label] = fn()
            best[label] = min(best[label], time.perf_counter() - t0)
    rows = [(label, best[label], outs[label]) for label in fns]
    (_, _, (a_o, e_o, _)), (_, _, (a_n, e_n)) = rows
    err_a = float(np.abs(np.real(a_o.T) - a_n).max())
    err_e = float(np.abs(e_n / e_o - 1).max())
    print(f"\nLPC analysis of the same {windows.shape[0]} windows (order 16, warp 0.2):")
    print("| implementation | time (ms) | windows/s |")
    print("|---|---|---|")
    for label, best, _ in rows:
        print(f"| {label} | {best * 1e3:.1f} | {windows.shape[0] / best:.0f} |")
    print(f"max |a_orig - a| = {err_a:.2e}, max rel |E_orig / E - 1| = {err_e:.2e}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--original", default=None, help="folder containing the original turbolpc package")
    args = ap.parse_args(argv)
    jobs = [(name, b, op, args.repeats) for name in METHODS for b in (1, 8) for op in ("encode", "decode")]
    ctx = mp.get_context("spawn")
    rows = []
    for job in jobs:
        with ctx.Pool(1) as pool:
            rows.append(pool.apply(_measure, (job,)))
    print(f"LiPCoT, CPU float64, {CHANNELS} channels x {SECONDS:g} s at {SFREQ} Hz (one token per channel window)")
    print("| config | batch | op | time per call (ms) | windows/s | peak RSS growth (MiB) |")
    print("|---|---|---|---|---|---|")
    for name, b, op, best, thr, peak in rows:
        print(f"| {name} | {b} | {op} | {best * 1e3:.2f} | {thr:.0f} | {peak:.1f} |")
    if args.original:
        _compare_original(args.original, args.repeats)


if __name__ == "__main__":
    main()
