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
                                   [--batches 1,8] [--no-warmup]
                                   [--reference DIR [--reference-path DIR]]

``--reference DIR`` also times the original implementation (a checkout of HeCheng0625/Diffusion-Speech-Tokenizer,
kept outside this repo; it needs transformers 4.42, importable from ``--reference-path`` if not installed) on the
same random weights and inputs, batch 1, and reports whether the outputs agree (ids exact, mel / wav max-abs).

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
    # between the two, for comparisons with the original that must hold two models in memory
    "medium": dict(hidden_size=512, num_heads=8, encoder_num_layers=4, decoder_num_layers=8,
                   vocoder=dict(dim=512, intermediate_dim=1536, num_layers=8)),
}


def _measure(args):
    name, batch, op, seconds, steps, repeats, threads, warmup = args
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
    if warmup:
        fn()  # warm-up (its allocations count towards the peak)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    best = min(times)
    return name, n_params, batch, op, best, batch * seconds / best, max(peak, 0) / 1024.0


def _reference(args):
    """Time the original (``reverse_diffusion`` + its Vocos) against this implementation on identical weights."""
    name, ref_dir, extra, seconds, steps, repeats, threads = args
    import sys
    import types

    sys.path[:0] = [p for p in (extra, ref_dir) if p]
    sys.modules.setdefault("pyworld", types.ModuleType("pyworld"))  # imported by the reference's mel module, unused
    import torch
    from models.codec.amphion_codec.vocos import Vocos as RefVocos
    from models.tts.tadicodec.modeling_tadicodec import TaDiCodec as RefTaDiCodec

    from audio.tadicodec import TaDiCodec, TaDiCodecConfig
    from audio.tadicodec.convert import convert_state_dict
    from zoo.registry import load_state_strict

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = TaDiCodecConfig.from_dict(CONFIGS[name])
    ref = RefTaDiCodec(mel_dim=128, in_dim=128, hidden_size=cfg.hidden_size, num_heads=cfg.num_heads,
                       encoder_num_layers=cfg.encoder_num_layers, decoder_num_layers=cfg.decoder_num_layers,
                       text_vocab_size=cfg.text_vocab_size).eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            p.normal_(0, 0.05)
            if n.endswith("to_weight.bias"):
                p.add_(1.0)
    v = cfg.vocoder
    ref_voc = RefVocos(input_channels=128, dim=v.dim, intermediate_dim=v.intermediate_dim, num_layers=v.num_layers,
                       n_fft=v.n_fft, hop_size=v.hop_size, padding=v.padding).eval()
    ours = TaDiCodec(cfg).eval()
    load_state_strict(ours, convert_state_dict(ref.state_dict(), ref_voc.state_dict(), cfg))
    T = int(seconds * 50)
    mel = torch.randn(1, T, 128)
    text = torch.randint(0, cfg.text_vocab_size, (1, 40))

    def best(fn):
        out, times = fn(), []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), out

    with torch.inference_mode():
        te_r, (_, ids_r) = best(lambda: ref.encode(mel, torch.ones(1, T)))
        te_o, ids_o = best(lambda: ours.encode_mel(mel))
        n_frames = 8 * ids_o.shape[1]
        prompt = mel[:, :min(50, n_frames // 2)]

        def run_ref():
            torch.manual_seed(5)  # the reference draws its noise from the global RNG
            m = ref.reverse_diffusion(indices=ids_r, text_ids=text, prompt_mel=prompt, n_timesteps=steps, cfg=2.0,
                                      rescale_cfg=0.75)
            return m, ref_voc(m.transpose(1, 2))[:, 0]

        def run_ours():
            torch.manual_seed(5)
            noise = torch.randn(1, n_frames - prompt.shape[1], 128)
            m = ours.generate_mel(ids_o, text, prompt, noise=noise, num_steps=steps, guidance_scale=2.0, rescale=0.75)
            return m, ours.vocode(m)

        td_r, (mel_r, wav_r) = best(run_ref)
        td_o, (mel_o, wav_o) = best(run_ours)
    return (name, bool(torch.equal(ids_r, ids_o)), (mel_r - mel_o).abs().max().item(),
            (wav_r - wav_o).abs().max().item(), te_r, te_o, td_r, td_o)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--configs", default="fixture,release")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--no-warmup", action="store_true", help="skip the warm-up call (for the large config)")
    ap.add_argument("--reference", default=None, help="checkout of the original repo: also time it (batch 1)")
    ap.add_argument("--reference-path", default=None, help="extra sys.path entry holding transformers 4.42")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    for n in names:
        if n not in CONFIGS:
            ap.error(f"unknown config {n!r}; choose from {sorted(CONFIGS)}")
    batches = [int(b) for b in args.batches.split(",")]
    jobs = [(name, b, op, args.seconds, args.steps, args.repeats, args.threads, not args.no_warmup)
            for name in names for b in batches for op in ("encode", "decode")]
    ctx = mp.get_context("spawn")
    rows = []
    for job in jobs:
        with ctx.Pool(1) as pool:
            rows.append(pool.apply(_measure, (job,)))
    print(f"TaDiCodec, CPU float32, {args.threads} thread(s), {args.seconds:g} s utterances, "
          f"decode = {args.steps} steps x (cond + uncond) + vocoder")
    print("| config | params | batch | op | wall s | x real time | peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for name, n_params, batch, op, best, rtf, peak in rows:
        print(f"| {name} | {n_params / 1e6:.1f}M | {batch} | {op} | {best:.3f} | {rtf:.2f} | {peak:.0f} |")
    if args.reference:
        print()
        print(f"Against the original (batch 1, {args.seconds:g} s, {args.steps} steps + vocoder, "
              "same weights and noise)")
        print("| config | ids equal | mel max-abs | wav max-abs | encode s (orig / ours) | decode s (orig / ours) |")
        print("|---|---|---|---|---|---|")
        for name in names:
            with ctx.Pool(1) as pool:
                r = pool.apply(_reference, ((name, args.reference, args.reference_path, args.seconds, args.steps,
                                             args.repeats, args.threads),))
            print(f"| {r[0]} | {r[1]} | {r[2]:.1e} | {r[3]:.1e} | {r[4]:.3f} / {r[5]:.3f} | {r[6]:.3f} / {r[7]:.3f} |")


if __name__ == "__main__":
    main()
