"""WavTokenizer speed and memory on CPU (fp32), and the effect of chunking on real speech.

    python benchmarks/wavtokenizer.py                       # fixture config + paper main config, batch 1 and 8
    python benchmarks/wavtokenizer.py --original /path/to/WavTokenizer   # also time the original code
    python benchmarks/wavtokenizer.py --chunking            # token agreement of chunked vs one-pass encoding

Throughput is seconds of audio processed per wall-clock second (x real time). Peak memory is the largest
resident-set growth over the process' size before the call, sampled every 2 ms (CPU has no allocator counter
for torch tensors). ``main`` is the released 75 tokens/s architecture with random weights (the codebook is a
random Gaussian marked initialised); ``fixture`` is the parity fixture's tiny checkpoint when ../shared is
present. With ``--original`` the original implementation (a checkout of jishengpeng/WavTokenizer, imported
from that folder, never copied here) is built from its own frame75 YAML, its random weights are converted into
this implementation, and both are timed on the same inputs; the table reports the largest output difference.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# run from a checkout: import the packages of this repository
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import glob  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from audio.wavtokenizer import WavTokenizer, convert_state_dict, infer_config, preset  # noqa: E402
from zoo.registry import load_state_strict  # noqa: E402

SHARED = Path(os.environ.get("TOKENZOO_SHARED", REPO.parent / "shared"))
FIXTURE = SHARED / "parity" / "wavtokenizer"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(fn, repeats: int, warmup: bool = True):
    """(best seconds, peak RSS growth in bytes) of ``fn()`` over ``repeats`` runs (after one warm-up)."""
    if warmup:
        fn()
    best, peak_growth = float("inf"), 0
    for _ in range(repeats):
        base = rss_bytes()
        peak = [base]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_bytes())
                time.sleep(0.002)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
        stop.set()
        t.join()
        peak_growth = max(peak_growth, peak[0] - base)
    return best, peak_growth


def random_main_model(seed: int = 0) -> WavTokenizer:
    torch.manual_seed(seed)
    m = WavTokenizer(preset("75"))
    m.quantizer.load_codebook(torch.randn(4096, 512))
    return m.eval()


def fixture_model():
    import zoo

    return zoo.load_official("wavtokenizer", FIXTURE / "WavTokenizer_tiny_320_24k_128.ckpt",
                             FIXTURE / "wavtokenizer_tiny_frame75_nq1_code128_dim32.yaml")


def original_main_model(root: Path, seed: int = 0):
    """The original implementation's 75 tokens/s model (random weights) and ours with the same weights."""
    sys.path.insert(0, str(root))
    from decoder.pretrained import WavTokenizer as Original  # noqa: WPS433 (the original, from its own folder)

    torch.manual_seed(seed)
    orig = Original.from_hparams0802(
        str(root / "configs" / "wavtokenizer_smalldata_frame75_3s_nq1_code4096_dim512_kmeans200_attn.yaml"))
    cb = orig.feature_extractor.encodec.quantizer.vq.layers[0]._codebook
    with torch.no_grad():
        cb.embed.copy_(torch.randn_like(cb.embed))
        cb.embed_avg.copy_(cb.embed)
        cb.inited.fill_(1.0)
    orig.eval()
    state = {k: v for k, v in orig.state_dict().items()}
    ours = WavTokenizer(infer_config(state))
    load_state_strict(ours, convert_state_dict(state))
    return orig.eval(), ours.eval()


def speech(seconds: float, batch: int) -> torch.Tensor:
    """``batch`` different crops of the real speech clips (tiled to length), or noise without ../shared."""
    import soundfile as sf

    files = sorted(glob.glob(str(SHARED / "data" / "audio" / "speech" / "*.wav")))
    n = int(seconds * 24000)
    if not files:
        return 0.1 * torch.randn(batch, n, generator=torch.Generator().manual_seed(0))
    rows = []
    for i in range(batch):
        x, _ = sf.read(files[i % len(files)], dtype="float32")
        x = torch.from_numpy(x)
        rows.append(x.repeat(n // x.numel() + 1)[:n])
    return torch.stack(rows)


def bench(args) -> None:
    rows = []
    models = []
    if "fixture" in args.configs and FIXTURE.is_dir():
        models.append(("fixture (tiny, 75 tok/s)", fixture_model(), None))
    if "main" in args.configs:
        if args.original:
            orig, ours = original_main_model(Path(args.original))
            models.append(("main 75 tok/s (random)", ours, orig))
        else:
            models.append(("main 75 tok/s (random)", random_main_model(), None))
    for name, model, orig in models:
        for batch in args.batch:
            x = speech(args.seconds, batch)
            audio_s = batch * args.seconds
            tokens = model.encode(x)
            jobs = {("tokenzoo", "enc"): lambda: model.encode(x), ("tokenzoo", "dec"): lambda: model.decode(tokens)}
            note = ""
            if orig is not None:
                bw = torch.tensor([0])
                with torch.inference_mode():
                    feats, codes = orig.encode_infer(x, bandwidth_id=bw)
                    y_orig = orig.decode(feats, bandwidth_id=bw)

                def run_enc():
                    with torch.inference_mode():
                        return orig.encode_infer(x, bandwidth_id=bw)

                def run_dec():
                    with torch.inference_mode():
                        return orig.decode(orig.codes_to_features(codes), bandwidth_id=bw)

                jobs[("original", "enc")] = run_enc
                jobs[("original", "dec")] = run_dec
                same = torch.equal(codes.permute(1, 0, 2), tokens.ids)
                err = (model.decode(tokens)[:, 0] - y_orig).abs().max().item()
                note = f"codes equal: {same}, audio max-abs diff {err:.2e}"
            # interleave the implementations repeat by repeat so that load changes hit both alike
            best = {k: (float("inf"), 0) for k in jobs}
            for fn in jobs.values():
                fn()  # warm-up
            for _ in range(args.repeats):
                for key, fn in jobs.items():
                    t, m = measure(fn, 1, warmup=False)
                    best[key] = (min(best[key][0], t), max(best[key][1], m))
            for impl in ("tokenzoo", "original"):
                if (impl, "enc") in best:
                    (te, me), (td, md) = best[(impl, "enc")], best[(impl, "dec")]
                    rows.append((name, impl, batch, audio_s / te, me, audio_s / td, md,
                                 note if impl == "original" else ""))
    print(f"\nWavTokenizer on CPU fp32, {torch.get_num_threads()} thread(s), {args.seconds:g} s of audio per item, "
          f"best of {args.repeats} interleaved runs\n")
    print("| model | implementation | batch | encode x RT | encode peak MB | decode x RT | decode peak MB | note |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name, impl, b, enc, me, dec, md, note in rows:
        print(f"| {name} | {impl} | {b} | {enc:.1f} | {me / 2**20:.0f} | {dec:.1f} | {md / 2**20:.0f} | {note} |")


def chunking(args) -> None:
    """How many tokens chunked encoding changes, and how much chunked decoding changes the waveform."""
    import soundfile as sf

    model = fixture_model() if FIXTURE.is_dir() else random_main_model()
    files = sorted(glob.glob(str(SHARED / "data" / "audio" / "speech" / "*.wav")))
    if not files:
        raise SystemExit(f"no speech clips under {SHARED / 'data' / 'audio' / 'speech'}")
    clips = [torch.from_numpy(sf.read(f, dtype="float32")[0])[None] for f in files]
    print(f"\nChunked vs one-pass on {len(clips)} speech clips ({sum(c.shape[-1] for c in clips) / 24000:.1f} s), "
          f"model: {'parity fixture' if FIXTURE.is_dir() else 'random main'}\n")
    print("| chunk s | context s | tokens changed | decode max-abs diff | decode SNR vs one pass dB |")
    print("|---:|---:|---:|---:|---:|")
    for chunk in (1.0, 2.0):
        for ctx in (0.0, 0.1, 0.25, 1.0):
            changed = total = 0
            worst, noise, signal = 0.0, 0.0, 0.0
            for x in clips:
                one = model.encode(x)
                ch = model.encode(x, chunk_seconds=chunk, context_seconds=ctx)
                changed += int((one.ids != ch.ids).sum())
                total += one.ids.numel()
                y1 = model.decode(one)
                y2 = model.decode(one, chunk_seconds=chunk, context_seconds=ctx)
                worst = max(worst, (y1 - y2).abs().max().item())
                noise += (y1 - y2).pow(2).sum().item()
                signal += y1.pow(2).sum().item()
            snr = float("inf") if noise == 0 else 10 * torch.log10(torch.tensor(signal / noise)).item()
            print(f"| {chunk:g} | {ctx:g} | {changed}/{total} ({100 * changed / total:.2f} %) | {worst:.2e} | "
                  f"{snr:.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["fixture", "main"], choices=["fixture", "main"])
    p.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--original", default=None, help="folder of a checkout of jishengpeng/WavTokenizer")
    p.add_argument("--chunking", action="store_true", help="measure chunked vs one-pass results instead")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.chunking:
        chunking(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
