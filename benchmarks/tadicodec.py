"""Encode / decode throughput and peak memory of TaDiCodec (CPU, float32, random weights).

Configurations: the parity fixture's small model (hidden 64, 2+2 layers, Vocos 64x2) and the released
``amphion/TaDiCodec`` configuration (hidden 1024, 8+16 layers, Vocos 1024x30; 751M parameters). Batches of 1
and 8 utterances of ``--seconds`` of audio with a 40-character transcript. Decoding runs the full sampler
(``--steps`` Euler steps, each a conditional and an unconditional decoder pass, CFG 2.0, rescale 0.75) and the
vocoder; no prompt. Every measurement runs in a fresh process, so the peak resident memory it reports
(``ru_maxrss`` growth after building the model and its inputs) belongs to that call. Throughput is seconds of
audio per second of wall time ("x real time"); the decode cost grows linearly with ``--steps`` (the release's
pipeline uses 32).

    python benchmarks/tadicodec.py [--seconds 4] [--steps 4] [--repeats 2] [--threads 1] [--configs fixture,release]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

CONFIGS = {
    "fixture": dict(hidden_size=64, num_heads=4, encoder_num_layers=2, decoder_num_layers=2, text_vocab_size=512,
                    vocoder=dict(dim=64, intermediate_dim=192, num_layers=2)),
    "release": dict(),
}


def _measure(args):
    name, batch, op, seconds, steps, repeats, threads = args
    import torch

    from audio.tadicodec import TaDiCodec, TaDiCodecConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = TaDiCodec(TaDiCodecConfig.from_dict({**CONFIGS[name], "num_steps": steps})).eval()
    n_params = sum(p.numel() for p in model.parameters())
    x = 0.1 * torch.randn(batch, int(seconds * 24000))
    tokens = model.encode(x)
    text_ids = torch.randint(0, model.config.text_vocab_size, (batch, 40))
    noise = torch.randn(batch, tokens.ids.shape[1] * 8, 128)
    if op == "encode":
        def fn():
            return model.encode(x)
    else:
        def fn():
            return model.decode(tokens, text_ids=text_ids, noise=noise)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after building the model and its inputs
    fn()  # warm-up (its allocations count towards the peak)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    best = min(times)
    return name, n_params, batch, op, best, batch * seconds / best, max(peak, 0) / 1024.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--configs", default="fixture,release")
    ap.add_argument("--batches", default="1,8")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    for n in names:
        if n not in CONFIGS:
            ap.error(f"unknown config {n!r}; choose from {sorted(CONFIGS)}")
    batches = [int(b) for b in args.batches.split(",")]
    jobs = [(name, b, op, args.seconds, args.steps, args.repeats, args.threads)
            for name in names for b in batches for op in ("encode", "decode")]
    ctx = mp.get_context("spawn")
    rows = []
    for job in jobs:
        with ctx.Pool(1) as pool:
            rows.append(pool.apply(_measure, (job,)))
    print(f"TaDiCodec, CPU float32, {args.threads} thread(s), {args.seconds:g} s utterances, "
          f"decode = {args.steps} steps x (cond + uncond) + vocoder")
    print(f"| config | params | batch | op | wall s | x real time | peak MiB |")
    print(f"|---|---|---|---|---|---|---|")
    for name, n_params, batch, op, best, rtf, peak in rows:
        print(f"| {name} | {n_params / 1e6:.1f}M | {batch} | {op} | {best:.3f} | {rtf:.2f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
