"""Encode / decode throughput and peak memory of TFM-Tokenizer (CPU, float32).

Configurations: the parity fixture's small tokenizer (E 32, K 256, depths 1/1/2) and the paper's main
configuration (E 64, K 8192, depths 2/2/8) with random weights; batch 1 and 8 of 16-channel, 10 s EEG at 200 Hz
(a TUAB / CHB-MIT window). Every measurement runs in a fresh process so that the peak resident memory it reports
(``ru_maxrss`` growth over the process after building the model and the input) belongs to that call.

    python benchmarks/tfm.py [--seconds 10] [--channels 16] [--repeats 3] [--threads 1] [--original DIR ...]

``--original`` takes folders to put on ``sys.path`` so that the reference code imports (a folder holding the
original repository's ``models/tfm_token.py`` and one holding ``linear_attention_transformer`` 0.19.1 and its
dependencies, all outside this repo). The paper configuration with the same random weights is then timed with
both implementations, calls interleaved, and the token ids and reconstructions are compared.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time

CONFIGS = {
    "fixture (E32 K256 1/1/2)": dict(emb_size=32, codebook_size=256, freq_depth=1, temporal_depth=1, decoder_depth=2),
    "paper (E64 K8192 2/2/8)": dict(emb_size=64, codebook_size=8192, freq_depth=2, temporal_depth=2, decoder_depth=8),
}


def _measure(args):
    name, batch, op, seconds, channels, repeats, threads = args
    import torch

    from eeg.tfm import TFMConfig, TFMTokenizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = TFMTokenizer(TFMConfig(**CONFIGS[name])).eval()
    x = torch.randn(batch, channels, int(seconds * 200))
    tokens = model.encode(x)
    fn = (lambda: model.encode(x)) if op == "encode" else (lambda: model.decode(tokens))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after building the model and its input
    fn()  # warm-up (its allocations count towards the peak)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    best = min(times)
    return name, batch, op, best, batch * seconds / best, max(peak, 0) / 1024.0


def _compare_original(folders, seconds, channels, repeats, threads):
    import torch

    sys.path[:0] = list(folders)
    from models.tfm_token import get_tfm_tokenizer_2x2x8  # the reference implementation (outside this repo)

    from eeg.preprocess import stft_magnitude
    from eeg.tfm import TFMTokenizer
    from eeg.tfm.convert import convert_tokenizer_state
    from zoo.registry import load_state_strict

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    orig = get_tfm_tokenizer_2x2x8(8192, 64).eval()
    with torch.no_grad():
        for p in orig.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    config, state = convert_tokenizer_state(orig.state_dict())
    mine = TFMTokenizer(config)
    load_state_strict(mine, state)
    mine.eval()
    print(f"\nOriginal vs tokenzoo, paper config, random weights, {channels} channels x {seconds:g} s, best of "
          f"{repeats} interleaved calls")
    print("| batch | original encode (ms) | tokenzoo encode (ms) | ids equal | original decode (ms) | "
          "tokenzoo decode (ms) | max abs diff of decode |")
    print("|---|---|---|---|---|---|---|")
    for batch in (1, 8):
        x = torch.randn(batch, channels, int(seconds * 200))
        n = batch * channels

        def enc_orig():
            with torch.no_grad():
                spec = stft_magnitude(x).reshape(n, 100, -1)
                return orig.tokenize(spec, x.reshape(n, -1))[1].reshape(batch, channels, -1)

        tokens = mine.encode(x, normalize=False)

        def dec_orig():
            with torch.no_grad():
                q = orig.quantizer.embedding(tokens.ids.reshape(n, -1))
                return orig.decoder(orig.trans_decoder(q)).permute(0, 2, 1).reshape(batch, channels, 100, -1)

        fns = {"eo": enc_orig, "em": lambda: mine.encode(x, normalize=False).ids, "do": dec_orig,
               "dm": lambda: mine.decode(tokens)}
        best = {k: float("inf") for k in fns}
        for _ in range(repeats + 1):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                best[k] = min(best[k], time.perf_counter() - t0)
        same = bool(torch.equal(enc_orig(), fns["em"]()))
        diff = float((dec_orig() - fns["dm"]()).abs().max())
        print(f"| {batch} | {best['eo'] * 1e3:.0f} | {best['em'] * 1e3:.0f} | {same} | {best['do'] * 1e3:.0f} | "
              f"{best['dm'] * 1e3:.0f} | {diff:.1e} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--original", nargs="+", default=None, help="folders for sys.path to import the reference code")
    args = ap.parse_args(argv)
    jobs = [(name, b, op, args.seconds, args.channels, args.repeats, args.threads)
            for name in CONFIGS for b in (1, 8) for op in ("encode", "decode")]
    ctx = mp.get_context("spawn")
    rows = []
    for job in jobs:
        with ctx.Pool(1) as pool:
            rows.append(pool.apply(_measure, (job,)))
    print(f"TFM-Tokenizer, CPU fp32, {args.threads} thread(s), {args.channels} channels x {args.seconds:g} s at 200 Hz")
    print(f"| config | batch | op | time per call (ms) | EEG seconds/s (x channels {args.channels}) | "
          "peak RSS growth (MiB) |")
    print("|---|---|---|---|---|---|")
    for name, b, op, best, thr, peak in rows:
        print(f"| {name} | {b} | {op} | {best * 1e3:.1f} | {thr:.1f} | {peak:.1f} |")
    if args.original:
        _compare_original(args.original, args.seconds, args.channels, args.repeats, args.threads)


if __name__ == "__main__":
    main()
