"""cdt-fsq benchmark: encode (to ids), decode (ids -> video, one DDIM step) and one training step, CPU float32.

    python benchmarks/cdt_fsq.py [--threads 1] [--repeats 3] [--size 64] [--frames 17]

Model: the parity fixture's tiny_base CDT (``shared/parity/cdt``) warm-started into cdt-fsq with the default
levels [8, 8, 8, 5, 5, 5], or random tiny weights when the fixture is absent. Median wall time over ``repeats``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from video.cdt import CDTConfig, CDTFSQTokenizer, CDTTokenizer  # noqa: E402
from video.cdt.recipe import CDTFSQRecipe, CDTFSQRecipeConfig  # noqa: E402
from video.cdt.fsq import CDTFSQConfig  # noqa: E402
from zoo.train import TrainConfig  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "parity" / "cdt"


def timed(fn, repeats):
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=17)
    a = ap.parse_args()
    if a.size % 8 or (a.frames - 1) % 4:
        raise SystemExit("--size must be a multiple of 8 and --frames 1 + 4k")
    torch.set_num_threads(a.threads)
    ckpt = FIXTURE / "cdt_tiny_base.ckpt"
    if ckpt.is_file():
        cdt, src = CDTTokenizer.from_official(ckpt, FIXTURE / "cdt_tiny_base.config.json"), "fixture tiny_base"
    else:
        torch.manual_seed(0)
        cdt = CDTTokenizer(CDTConfig.variant("base", context_dim=6, latent_dim=4, out_channels=5, unet_dim=4))
        src = "random tiny_base"
    tok = CDTFSQTokenizer.from_cdt(cdt)
    x = torch.rand(1, 3, a.frames, a.size, a.size, generator=torch.Generator().manual_seed(0))
    ids = tok.encode(x)
    g = torch.Generator().manual_seed(0)

    recipe = CDTFSQRecipe(CDTFSQRecipeConfig(model=CDTFSQConfig.from_cdt_config(cdt.config), frames=a.frames,
                                             image_size=a.size, lpips_weight=0.0), TrainConfig(max_steps=1))
    model = CDTFSQTokenizer.from_cdt(cdt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        out = recipe.losses(model, x * 2 - 1)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    rows = [("encode -> ids", timed(lambda: tok.encode(x), a.repeats)),
            ("decode ids (1 DDIM step)", timed(lambda: tok.decode(ids, generator=g), a.repeats)),
            ("train step (fwd+bwd+AdamW)", timed(train_step, a.repeats))]
    n_tok = ids.ids.numel()
    print(f"cdt-fsq, {src}, clip 1x3x{a.frames}x{a.size}x{a.size}, {n_tok} tokens, threads {a.threads}, "
          f"torch {torch.__version__}")
    print(f"| {'operation':<28} | {'median s':>9} | {'frames/s':>9} |")
    print(f"|{'-' * 30}|{'-' * 11}|{'-' * 11}|")
    for name, s in rows:
        print(f"| {name:<28} | {s:9.3f} | {a.frames / s:9.1f} |")


if __name__ == "__main__":
    main()
