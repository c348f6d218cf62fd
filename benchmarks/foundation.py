"""Foundation benchmark: what the shared layers cost on top of a family's own work.

    python benchmarks/foundation.py            # a few seconds on 2 cores
    python benchmarks/foundation.py --threads 2 --repeat 20

Sections (one table each):

- ``contract``: ``tok.encode``/``tok.decode`` (validation, inference mode, device moves) against calling the
  family's ``_encode``/``_decode`` directly, for a small audio tokenizer defined here, at several batch sizes.
- ``tokens``: ``Tokens.save`` + ``Tokens.load`` round trip for .npz and .safetensors.
- ``hub``: sha256 verification throughput, and the registry lookup (``get_entry``) over the package's YAMLs,
  cold (files parsed) and warm (cached by modification time).
"""

from __future__ import annotations

import sys
from pathlib import Path

# run from a checkout: import the packages of this repository
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass

import torch


def _timeit(fn, repeat: int) -> float:
    """Median wall time of ``fn()`` in milliseconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _table(title, header, rows):
    print(f"\n{title}")
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")


def bench_contract(repeat: int):
    import zoo

    @dataclass
    class Cfg(zoo.ConfigBase):
        sample_rate: int = 24000
        hop: int = 320
        dim: int = 64
        codebook_size: int = 1024

    class Small(zoo.AudioTokenizer):
        config_class = Cfg

        def __init__(self, config):
            super().__init__(config)
            self.proj = torch.nn.Linear(config.hop, config.dim)
            self.codebook = torch.nn.Parameter(torch.randn(config.codebook_size, config.dim))
            self.out = torch.nn.Linear(config.dim, config.hop)

        @property
        def spec(self):
            c = self.config
            return zoo.TokenizerSpec.discrete_spec("audio", c.codebook_size, 1, c.sample_rate / c.hop, "tokens/s")

        def _encode(self, wav, lengths=None):
            n = wav.shape[-1] // self.config.hop
            z = self.proj(wav[:, : n * self.config.hop].reshape(wav.shape[0], n, -1))
            return zoo.Tokens(torch.cdist(z, self.codebook[None]).argmin(-1))

        def _decode(self, tokens):
            return self.out(self.codebook[tokens.ids]).flatten(1)

    tok = Small(Cfg()).eval()
    rows = []
    for batch in (1, 8, 32):
        wav = torch.randn(batch, 24000) * 0.3
        tokens = tok.encode(wav)

        def raw_encode():
            with torch.inference_mode():
                tok._encode(wav)

        def raw_decode():
            with torch.inference_mode():
                tok._decode(tokens)

        enc, enc_raw = _timeit(lambda: tok.encode(wav), repeat), _timeit(raw_encode, repeat)
        dec, dec_raw = _timeit(lambda: tok.decode(tokens), repeat), _timeit(raw_decode, repeat)
        rows.append((batch, f"{enc:.2f}", f"{enc_raw:.2f}", f"{enc - enc_raw:+.2f}", f"{dec:.2f}", f"{dec_raw:.2f}",
                     f"{dec - dec_raw:+.2f}"))
    _table("contract: 1 s of 24 kHz audio per item, ms (median)",
           ("batch", "encode", "_encode", "overhead", "decode", "_decode", "overhead"), rows)


def bench_tokens(repeat: int):
    from zoo import Tokens

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for shape in ((1, 1, 750), (32, 1, 750), (64, 8, 1500)):
            t = Tokens(torch.randint(0, 4096, shape), torch.full((shape[0],), shape[-1]), {"model": "bench"})
            for suffix in (".npz", ".safetensors"):
                path = Path(d) / f"t{suffix}"
                ms = _timeit(lambda: Tokens.load(t.save(path)), repeat)
                rows.append((str(list(shape)), suffix, f"{ms:.2f}", f"{path.stat().st_size / 1024:.1f}"))
    _table("tokens: save + load round trip", ("ids shape", "format", "ms (median)", "file KiB"), rows)


def bench_hub(repeat: int):
    from zoo import hub_configs_schema as S
    from zoo.hub import sha256_file

    rows = []
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "w.bin"
        f.write_bytes(torch.randn(16 * 2 ** 20 // 4).numpy().tobytes())  # 16 MiB
        ms = _timeit(lambda: sha256_file(f), max(3, repeat // 4))
        rows.append(("sha256 of a 16 MiB file", f"{ms:.1f} ms", f"{16 / (ms / 1000):.0f} MiB/s"))
    n = len(S.load_all_entries())
    names = [e.name for e in S.load_all_entries()]
    target = names[-1] if names else "none"

    def cold():
        S._load_dir.cache_clear()
        S.get_entry(target)

    rows.append((f"get_entry, cold ({n} YAMLs parsed)", f"{_timeit(cold, repeat):.1f} ms", ""))
    rows.append((f"get_entry, warm ({n} YAMLs stat-ed)", f"{_timeit(lambda: S.get_entry(target), repeat):.2f} ms", ""))
    _table("hub and registry", ("operation", "time (median)", "throughput"), rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--section", choices=["contract", "tokens", "hub", "all"], default="all")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeat}")
    if args.section in ("contract", "all"):
        bench_contract(args.repeat)
    if args.section in ("tokens", "all"):
        bench_tokens(args.repeat)
    if args.section in ("hub", "all"):
        bench_hub(args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
