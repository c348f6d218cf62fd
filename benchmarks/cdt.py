"""CDT benchmark: encode/decode throughput and peak memory (CPU, float32), memory vs video length, and the
chunked-vs-one-pass difference on real video.

    python benchmarks/cdt.py                 # everything (a few minutes on 2 cores)
    python benchmarks/cdt.py --section speed --threads 2
    python benchmarks/cdt.py --section memory
    python benchmarks/cdt.py --section chunking
    python benchmarks/cdt.py --section original --original /path/to/ali-vilab/CDT/model/cdt.py

Every measurement runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its own; the
table reports the peak increase over the process's state just before the call (model and inputs allocated).
Configurations: the parity fixture's tiny_base (``shared/parity/cdt``; random weights otherwise) and the paper's
main model CDT-base (random weights, at a reduced resolution so CPU runs stay short).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script: import the packages from this checkout, and keep benchmarks/ off sys.path so that a sibling
# script can never shadow a library module.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import multiprocessing as mp
import os
import resource
import time

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TOKENZOO_SHARED", REPO.parent / "shared"))
FIXTURE_CFG = SHARED / "parity" / "cdt" / "cdt_tiny_base.config.json"


def _config(name: str):
    from video.cdt import CDTConfig

    if name == "tiny_base":
        if FIXTURE_CFG.is_file():
            return CDTConfig.from_reference_kwargs(json.loads(FIXTURE_CFG.read_text()))
        return CDTConfig.base(context_dim=6, latent_dim=4, out_channels=5, unet_dim=4)
    if name == "cdt_base":
        return CDTConfig.base()
    if name == "cdt_small":
        return CDTConfig.small()
    raise ValueError(name)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _worker(job, queue):
    try:
        import torch

        torch.set_num_threads(job["threads"])
        from video.cdt import CDTTokenizer

        torch.manual_seed(0)
        tok = CDTTokenizer(_config(job["config"])).eval()
        b, f, h, w = job["batch"], job["frames"], job["height"], job["width"]
        sf, tf = tok.config.space_factor, tok.config.time_factor
        t_lat = 1 + (f - 1) // tf
        video = torch.rand(b, 3, f, h, w)
        lat = torch.randn(b, tok.config.latent_dim, t_lat, h // sf, w // sf)
        kw = {}
        if job["op"] == "encode":
            if job.get("chunk"):
                kw["chunk_frames"] = job["chunk"]
            run = lambda: tok.encode_latents(video, **kw)  # noqa: E731
        else:
            if job.get("chunk"):
                kw["chunk_latents"] = job["chunk"]
            gen = torch.Generator().manual_seed(0)
            run = lambda: tok.decode_latents(lat, job.get("steps", 1), generator=gen, **kw)  # noqa: E731
        if job.get("warmup", True):
            # a one-frame pass primes the kernels (a warm-up on the real shape would already set the peak)
            if job["op"] == "encode":
                tok.encode_latents(video[:1, :, :1])
            else:
                tok.decode_latents(lat[:1, :, :1], generator=torch.Generator().manual_seed(0))
        base = _rss_mb()
        t0 = time.perf_counter()
        run()
        dt = time.perf_counter() - t0
        queue.put({"seconds": dt, "peak_mb": max(0.0, _rss_mb() - base)})
    except Exception as exc:  # noqa: BLE001 - reported in the table
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def measure(job):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(job, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def section_speed(args):
    rows = []
    shapes = {"tiny_base": (17, 64, 64), "cdt_base": (5, 32, 32)}
    for cfg in ("tiny_base", "cdt_base"):
        f, h, w = shapes[cfg]
        for batch in (1, 8):
            for op in ("encode", "decode"):
                r = measure(dict(config=cfg, op=op, batch=batch, frames=f, height=h, width=w, threads=args.threads))
                rows.append((cfg, f"{f}x{h}x{w}", batch, op, r))
    print(f"\n## Throughput (CPU float32, {args.threads} thread(s), 1 DDIM step, release chunk rule)\n")
    print("| config | clip (FxHxW) | batch | op | seconds | frames/s | peak MB |")
    print("|---|---|---|---|---|---|---|")
    for cfg, clip, batch, op, r in rows:
        if "error" in r:
            print(f"| {cfg} | {clip} | {batch} | {op} | error: {r['error']} | | |")
            continue
        frames = int(clip.split("x")[0]) * batch
        print(f"| {cfg} | {clip} | {batch} | {op} | {r['seconds']:.2f} | {frames / r['seconds']:.1f} | "
              f"{r['peak_mb']:.0f} |")


def section_memory(args):
    print(f"\n## Memory vs length (tiny_base, 64x64, decoder chunks of 2 latent frames, encoder chunks of 8 frames, "
          f"{args.threads} thread(s))\n")
    print("| op | frames | latent frames | chunks | seconds | peak MB |")
    print("|---|---|---|---|---|---|")
    for op in ("decode", "encode"):
        for n_chunks in (1, 2, 10, None):
            t_lat = 2 * (n_chunks or 10)
            frames = 1 + 4 * (t_lat - 1)
            if n_chunks is None:  # the same 10x longer clip in one pass, for scale
                chunk = t_lat if op == "decode" else 4 * t_lat
            else:
                chunk = 2 if op == "decode" else 8
            r = measure(dict(config="tiny_base", op=op, batch=1, frames=frames, height=64, width=64,
                             threads=args.threads, chunk=chunk))
            label = "1 (one pass)" if n_chunks is None else str(n_chunks if op == "decode" else -(-frames // 8))
            if "error" in r:
                print(f"| {op} | {frames} | {t_lat} | {label} | error: {r['error']} | |")
            else:
                print(f"| {op} | {frames} | {t_lat} | {label} | {r['seconds']:.2f} | {r['peak_mb']:.0f} |")
    print("\n(the first chunk of a video is 4c-3 frames long, later ones 4c: two chunks reach the steady state)")
    print("\n## Memory vs length at the released widths (CDT-small, random weights, 32x32, decoder chunks of 1 latent "
          "frame, 1 step)\n")
    print("| op | frames | latent frames | chunks | seconds | peak MB |")
    print("|---|---|---|---|---|---|")
    for n_chunks in (2, 10, None):
        t_lat = n_chunks or 10
        frames = 1 + 4 * (t_lat - 1)
        r = measure(dict(config="cdt_small", op="decode", batch=1, frames=frames, height=32, width=32,
                         threads=args.threads, chunk=1 if n_chunks else t_lat))
        label = "1 (one pass)" if n_chunks is None else str(n_chunks)
        if "error" in r:
            print(f"| decode | {frames} | {t_lat} | {label} | error: {r['error']} | |")
        else:
            print(f"| decode | {frames} | {t_lat} | {label} | {r['seconds']:.2f} | {r['peak_mb']:.0f} |")


def section_chunking(args):
    import numpy as np
    import torch

    import zoo

    torch.set_num_threads(args.threads)
    fixture = SHARED / "parity" / "cdt"
    clip = SHARED / "data" / "video" / "bikes_17f_128.npz"
    if not fixture.is_dir() or not clip.is_file():
        print(f"\n(chunking section skipped: needs {fixture} and {clip})")
        return
    frames = torch.from_numpy(np.load(clip)["frames"]).permute(3, 0, 1, 2)[None].float() / 255  # [1,3,17,128,128]
    frames = frames[:, :, :, 32:96, 32:96]  # 64x64 centre: keeps the CPU time short
    print("\n## Chunked vs one-pass on real video (bikes_17f_128, centre 64x64, 17 frames; tiny random-weight "
          "fixture models, 1 step)\n")
    print("| model | encode chunks 4 frames: max abs latent diff | decode chunks of 1 latent, default mode | "
          "reference_chunking=True |")
    print("|---|---|---|---|")
    for name in ("base", "small"):
        tok = zoo.load_official("cdt", fixture / f"cdt_tiny_{name}.ckpt", fixture / f"cdt_tiny_{name}.config.json")
        lat = tok.encode_latents(frames)
        lat_c = tok.encode_latents(frames, chunk_frames=4)
        noise = 0.8 * torch.randn(1, 3, 17, 64, 64, generator=torch.Generator().manual_seed(0))
        one = tok.decode_latents(lat, noise=noise)
        cons = tok.decode_latents(lat, noise=noise, chunk_latents=1)
        ref = tok.decode_latents(lat, noise=noise, chunk_latents=1, reference_chunking=True)
        print(f"| tiny_{name} | {(lat - lat_c).abs().max():.2e} | {(cons - one).abs().max():.2e} | "
              f"{(ref - one).abs().max():.2e} |")
    print("\n(decoded values in [0, 1] units; the fixture's random weights give outputs of order 1)")


def section_original(args):
    """Time the original implementation (its model/cdt.py, outside this repo) against this one, same inputs."""
    import importlib.util

    import torch

    import zoo
    from video.cdt.convert import read_checkpoint

    if not args.original or not Path(args.original).is_file():
        print("\n(original section skipped: pass --original PATH/TO/ali-vilab/CDT/model/cdt.py)")
        return
    fixture = SHARED / "parity" / "cdt"
    if not fixture.is_dir():
        print(f"\n(original section skipped: needs {fixture})")
        return
    spec = importlib.util.spec_from_file_location("cdt_original", args.original)
    orig = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(orig)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    video = torch.rand(1, 3, 17, 64, 64) * 2 - 1
    keys = ("unet_dim", "context_dim", "latent_dim", "out_channels", "new_upsample", "space_down", "time_down",
            "context_dim_mults", "condition_times", "num_timesteps", "sample_gamma")
    print(f"\n## Against the original (tiny fixture models, 17x64x64, CPU float32, {args.threads} thread(s), "
          "best of 2, release chunk rule = one chunk)\n")
    print("| model | steps | encode original s | encode tokenzoo s | decode original s | decode tokenzoo s | "
          "max abs latent diff | max abs video diff |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("base", "small"):
        kw = json.loads((fixture / f"cdt_tiny_{name}.config.json").read_text())
        ref = orig.ConditionedDiffusionTokenizer(enc_frames=4, dec_frames=1, sample_steps=1,
                                                 **{k: kw[k] for k in keys}).eval()
        # the original's own reader unpickles without weights_only; feed it the weights read safely instead
        ref.load_state_dict(read_checkpoint(fixture / f"cdt_tiny_{name}.ckpt"), strict=True)
        mine = zoo.load_official("cdt", fixture / f"cdt_tiny_{name}.ckpt", fixture / f"cdt_tiny_{name}.config.json")
        for steps in (1, 4):
            ref.sample_steps = steps
            res = {}
            for impl in ("original", "tokenzoo") * 2:
                orig.CausalConv3d.PAD_MODE = "constant" if kw["new_upsample"] else "replicate"
                t0 = time.perf_counter()
                with torch.no_grad():
                    lat = ref.encode(video) if impl == "original" else mine.encode_latents(video, value_range=(-1, 1))
                    t1 = time.perf_counter()
                    torch.manual_seed(1)  # both draw x_T from the global RNG the same way
                    y = ref.decode(lat) if impl == "original" else mine.decode_latents(lat, steps, value_range=(-1, 1))
                t2 = time.perf_counter()
                best = res.get(impl, (float("inf"), float("inf")))
                res[impl] = (min(best[0], t1 - t0), min(best[1], t2 - t1), lat, y)
            o, m = res["original"], res["tokenzoo"]
            print(f"| tiny_{name} | {steps} | {o[0]:.2f} | {m[0]:.2f} | {o[1]:.2f} | {m[1]:.2f} | "
                  f"{(o[2] - m[2]).abs().max():.1e} | {(o[3] - m[3]).abs().max():.1e} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--section", choices=["all", "speed", "memory", "chunking", "original"], default="all")
    p.add_argument("--original", default=None, help="path of the original model/cdt.py (ali-vilab/CDT)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    # large blocks through mmap so that freed memory leaves the resident set: ru_maxrss then tracks live memory
    # rather than the heap's high-water mark (inherited by the measuring subprocesses)
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    if args.section in ("all", "speed"):
        section_speed(args)
    if args.section in ("all", "memory"):
        section_memory(args)
    if args.section in ("all", "chunking"):
        section_chunking(args)
    if args.section in ("all", "original"):
        section_original(args)


if __name__ == "__main__":
    main()
