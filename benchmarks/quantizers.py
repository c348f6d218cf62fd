"""Throughput of the quantizer core (encode and decode), and of the nearest-code search against
vector-quantize-pytorch's own ``-cdist`` ranking.

    OMP_NUM_THREADS=1 python benchmarks/quantizers.py [--vectors 16384] [--repeats 3] [--threads 1]

Prints one table row per configuration: million vectors per second for encode (ids) and decode (codes).
Shapes follow the released models: WavTokenizer (4096 x 512 EMA VQ), TiTok vq8k (8192 x 64), TFM (8192 x 64),
TaDiCodec (BSQ 14 bits), FlexTok (FSQ [8,8,8,5,5,5]), plus a 4-level residual VQ.
"""

from __future__ import annotations

import argparse
import time

import torch
from vector_quantize_pytorch.vector_quantize_pytorch import cdist as lib_cdist

from zoo.quantizers import BSQ, FSQ, VQ, ResidualVQ, VQConfig, nearest_code


def _time(fn, repeats):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=16384, help="vectors per call (flattened leading axes)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = args.vectors
    configs = [
        ("VQ 4096x512 (WavTokenizer)", VQ(dim=512, codebook_size=4096)),
        ("VQ 8192x64 l2 (TiTok)", VQ(dim=64, codebook_size=8192, l2_normalize=True, ema=False)),
        ("VQ 8192x64 (TFM)", VQ(dim=64, codebook_size=8192)),
        ("ResidualVQ 4x1024x128", ResidualVQ(vq=VQConfig(dim=128, codebook_size=1024), num_quantizers=4)),
        ("BSQ 14 bits (TaDiCodec)", BSQ(bits=14)),
        ("FSQ [8,8,8,5,5,5] (FlexTok)", FSQ(levels=[8, 8, 8, 5, 5, 5])),
    ]
    rows = []
    for name, q in configs:
        q.eval()
        z = torch.randn(n, q.dim)
        ids = q.encode(z)
        t_enc = _time(lambda: q.encode(z), args.repeats)
        t_dec = _time(lambda: q.decode(ids), args.repeats)
        rows.append((name, n / t_enc / 1e6, n / t_dec / 1e6))
    print(f"| quantizer | encode Mvec/s | decode Mvec/s |   (N={n}, threads={args.threads})")
    print("|---|---|---|")
    for name, e, d in rows:
        print(f"| {name} | {e:.3f} | {d:.3f} |")

    # the one piece the core writes itself: nearest code by expanded squared distance vs the library's -cdist
    print()
    print("| search 4096x512 | Mvec/s | ids equal |")
    print("|---|---|---|")
    x, e = torch.randn(n, 512), torch.randn(4096, 512)
    ours = nearest_code(x, e)
    lib = (-lib_cdist(x[None], e[None]))[0].argmax(dim=-1)
    t_ours = _time(lambda: nearest_code(x, e), args.repeats)
    t_lib = _time(lambda: (-lib_cdist(x[None], e[None]))[0].argmax(dim=-1), args.repeats)
    print(f"| core nearest_code (float32, blocked) | {n / t_ours / 1e6:.3f} | - |")
    print(f"| library -cdist argmax | {n / t_lib / 1e6:.3f} | {bool(torch.equal(ours, lib))} |")


if __name__ == "__main__":
    main()
