"""Encode / decode throughput and peak memory of FlexTok (CPU, float32).

Configurations: the parity fixture's small model (encoder 96x2, decoder 64x2, 32 registers, tiny VAE; read from
../shared/parity/flextok when present, else the same architecture with random weights) and the paper's main
model flextok_d18_d28 (encoder 1152x18, decoder 1792x28, 256 registers, the 84M-parameter 16-channel VAE) with
random weights. Images are 256x256; decoding uses APG guidance 7.5 (two decoder passes per step). Every
measurement runs in a fresh process; peak memory is the growth of the resident set (VmHWM) over the resident
size once the model is built, i.e. the working memory of the call (the model's own size is shown in brackets).

The main model is ~2.5 G parameters: on a small CPU one decoder step of it takes minutes, so by default it is
measured for ``--main-steps 1`` step and batch ``--main-batches 1``; the table extrapolates to the README's 20
steps (decode time is linear in the steps). Pass ``--main-batches 1 8 --main-steps 20`` on a larger machine.

    python benchmarks/flextok.py [--steps 6] [--repeats 2] [--threads 1] [--skip-main]
    PYTHONPATH=/path/to/hydra+mup python benchmarks/flextok.py --compare-reference /path/to/ml-flextok
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# run as a script: import the packages of this checkout
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
FIXTURE = Path(os.environ.get("TOKENZOO_SHARED", REPO.parent / "shared")) / "parity" / "flextok" / "flextok_model"


def _vm(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0  # MiB
    return float("nan")


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
    except OSError:
        pass


def _build(name: str):
    import torch

    from image.flextok import FlexTok, FlexTokConfig, official_config

    torch.manual_seed(0)
    if name == "fixture":
        if FIXTURE.is_dir():
            import zoo

            return zoo.load_official("flextok", FIXTURE)
        vae = {"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [8, 16, 16, 16],
               "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
               "in_channels": 3, "out_channels": 3, "latent_channels": 16, "layers_per_block": 2,
               "norm_num_groups": 4, "sample_size": 256, "scaling_factor": 0.7311}
        official = official_config(enc_dim=96, enc_depth=2, dec_dim=64, dec_depth=2, head_dim=32, n_registers=32)
        return FlexTok(FlexTokConfig.from_official(official, vae))
    return FlexTok(FlexTokConfig())  # flextok_d18_d28, random weights


def _measure(args):
    name, batch, op, steps, repeats, threads, warmup = args
    import torch

    torch.set_num_threads(threads)
    model = _build(name).eval()
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    x = torch.rand((batch, 3, 256, 256), generator=g) * 2 - 1
    tokens = model.encode(x[:1]).ids.repeat(batch, 1)
    if op == "encode":
        fn = lambda: model.encode(x)  # noqa: E731
    else:
        fn = lambda: model.decode(tokens, num_steps=steps, guidance_scale=7.5,  # noqa: E731
                                  generator=torch.Generator().manual_seed(0))
    base = _vm("VmRSS")  # model built, inputs ready
    _reset_peak()
    if warmup:
        fn()  # warm-up (counted in the peak: it allocates the same working memory as a timed call)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    peak = _vm("VmHWM") - base
    return name, batch, op, steps, min(times), n_params, max(peak, 0.0), base


def compare_reference(ref_path: str, threads: int, steps: int = 6) -> None:
    """Time the reference apple/ml-flextok (a checkout at ``ref_path``, with hydra-core and mup importable) against
    this implementation on the parity fixture, batch 1 and 8, at equal outputs. The reference runs its SDPA
    fallback (``use_flex_attention=False`` + materialised masks): on CPU its default flex_attention path spends
    tens of seconds compiling."""
    import json

    import torch
    from safetensors.torch import load_file

    import zoo

    torch.set_num_threads(threads)
    sys.path.insert(0, str(Path(ref_path).resolve()))
    from hydra.utils import instantiate
    from flextok.flextok_wrapper import FlexTok as RefFlexTok

    cwd = os.getcwd()
    os.chdir(FIXTURE)  # the fixture's vae.hf_hub_path is relative to the process cwd for the reference
    try:
        cfg = json.loads(Path("config.json").read_text())
        parts = {k: instantiate(cfg[k]) for k in ("vae", "encoder", "decoder", "regularizer",
                                                   "flow_matching_noise_module")}
        ref = RefFlexTok(**parts, pipeline=instantiate(cfg["pipeline"]))
        ref.load_state_dict(load_file("model.safetensors"), strict=True)
    finally:
        os.chdir(cwd)
    ref.eval()
    for m in ref.modules():
        if hasattr(m, "use_flex_attention"):
            m.use_flex_attention = False
        if hasattr(m, "return_materialized_mask"):
            m.return_materialized_mask = True
    mine = zoo.load_official("flextok", FIXTURE)
    x = load_file(str(FIXTURE.parent / "fixture.safetensors"))["input_image"]

    def best(fn, rep=2):
        out = fn()
        t = []
        for _ in range(rep):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        return min(t), out

    print(f"reference apple/ml-flextok (SDPA fallback) vs tokenzoo, parity fixture model, CPU fp32, {threads} thread(s)")
    print("| batch | encode ref s | encode tokenzoo s | tokens equal | decode ref s | decode tokenzoo s | max abs image diff |")
    print("|---|---|---|---|---|---|---|")
    for b in (1, 8):
        xb = (x.repeat(b, 1, 1, 1) + 0.01 * torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1)).clamp(-1, 1)
        with torch.no_grad():
            te_r, tok_r = best(lambda: ref.tokenize(xb))
            te_m, tok_m = best(lambda: mine.encode(xb))
            td_r, img_r = best(lambda: ref.detokenize(list(tok_r), vae_image_sizes=32, timesteps=steps,
                                                      generator=torch.Generator().manual_seed(7), guidance_scale=7.5,
                                                      perform_norm_guidance=True, verbose=False))
            td_m, img_m = best(lambda: mine.decode(tok_m, num_steps=steps, guidance_scale=7.5,
                                                   generator=torch.Generator().manual_seed(7)))
        same = torch.equal(torch.cat(list(tok_r)), tok_m.ids)
        print(f"| {b} | {te_r:.3f} | {te_m:.3f} | {same} | {td_r:.3f} | {td_m:.3f} | "
              f"{(img_r - img_m).abs().max().item():.1e} |", flush=True)


def _estimate_main_decode(threads: int, repeats: int):
    """Decode cost of flextok_d18_d28 from its parts: 28 decoder blocks x (cond + uncond) passes over 512 tokens
    per step, plus one VAE decode per image (the embedders and the output head are negligible)."""
    import torch

    from image.flextok import FlexTokConfig
    from image.flextok.model import VAE, Block, _EmbPacking

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = FlexTokConfig()
    tr = dict(cfg.find_modules("FlexTransformer", "decoder"))["dec_transformer"]
    dim, depth = tr["dim"], tr["depth"]
    block = Block(dim, dim // tr["head_dim"], int(dim * 4.0), True, False, False, False, True, tr["adaLN_expansion"])
    vae = VAE(cfg.autoencoder, 1.0)
    pack = _EmbPacking([256, 256], True)

    def best(fn):
        fn()
        t = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        return min(t)

    lines = []
    with torch.inference_mode():
        t_vae = best(lambda: vae.decode(torch.randn(1, 16, 32, 32)))
        for b in (1, 8):
            x, emb = torch.randn(2 * b, 512, dim), torch.randn(2 * b, dim)
            t_blk = best(lambda: block(x, None, pack.segments(block.adaLN_modulation(emb))))
            per_image = (20 * depth * t_blk + b * t_vae) / b
            lines.append(f"| paper d18-d28 decode, estimated from parts (block {t_blk:.2f} s x {depth} x 20 steps "
                         f"+ VAE {t_vae:.2f} s/image) | 2540.9M | {b} | decode | 20 | {per_image * b:.1f} | "
                         f"{1 / per_image:.4f} | {per_image:.1f} | - |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6, help="decode steps for the fixture model (fixture: 6)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-main", action="store_true", help="only the fixture model")
    ap.add_argument("--main-batches", type=int, nargs="+", default=[1])
    ap.add_argument("--main-steps", type=int, default=1)
    ap.add_argument("--skip-fixture", action="store_true")
    ap.add_argument("--skip-main-encode", action="store_true", help="skip the ~10 GB full-model encode")
    ap.add_argument("--estimate-decode", action="store_true",
                    help="instead of decoding with the full main model (~10 GB), time its parts (one decoder block "
                         "over a guided step's tokens, the VAE decoder) and add them up for 20 steps")
    ap.add_argument("--compare-reference", metavar="PATH", default=None,
                    help="also time a checkout of apple/ml-flextok (needs hydra-core and mup) on the fixture")
    args = ap.parse_args(argv)
    if args.compare_reference:
        compare_reference(args.compare_reference, args.threads)
        return
    jobs = [] if args.skip_fixture else [("fixture", b, op, args.steps, args.repeats, args.threads, True)
                                         for b in (1, 8) for op in ("encode", "decode")]
    if not args.skip_main:
        # one cold call each: a warm-up of the 2.5 G-parameter model would double a minutes-long measurement
        ops = ("encode",) if args.estimate_decode else ("encode", "decode")
        if not args.skip_main_encode:
            jobs += [("main", b, op, args.main_steps, 1, args.threads, False) for b in args.main_batches
                     for op in ops]
    ctx = mp.get_context("spawn")
    print(f"FlexTok, CPU float32, {args.threads} thread(s), 256x256 images, APG 7.5 "
          "(decode = Euler steps x 2 decoder passes + VAE decode)")
    print("| model | params | batch | op | steps | s/call | images/s | s/image @20 steps | peak MiB (+model RSS) |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for job in jobs:
        with ctx.Pool(1) as pool:
            name, batch, op, steps, sec, n_params, peak, base = pool.apply(_measure, (job,))
        label = "fixture (96x2 / 64x2, 32 reg)" if name == "fixture" else "paper d18-d28 (random, cold)"
        per20 = "" if op == "encode" else f"{sec / batch / steps * 20:.3f}"
        print(f"| {label} | {n_params / 1e6:.1f}M | {batch} | {op} | {steps if op == 'decode' else '-'} | "
              f"{sec:.3f} | {batch / sec:.2f} | {per20} | {peak:.0f} (+{base:.0f}) |", flush=True)
    if args.estimate_decode:
        with ctx.Pool(1) as pool:
            for line in pool.apply(_estimate_main_decode, (args.threads, args.repeats)):
                print(line, flush=True)

if __name__ == "__main__":
    main()
