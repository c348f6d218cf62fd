"""Run the reconstruction benchmark (zoo.bench) on every family's parity-fixture model over ../shared/data.

The fixture models are small checkpoints with random weights written in each release's official format (see
../shared/parity/*/MANIFEST.md), so the metrics show the pipeline working end to end, not the quality of
the released models (those need the Hub). Each model is loaded with zoo.load_official, saved with
save_pretrained into OUT/models/, and benchmarked with zoo.bench.run, one report per modality:

    python benchmarks/bench_fixtures.py --out /tmp/tokenzoo-bench [--families wavtokenizer tfm ...] [--limit N]

which is the same as ``tokenzoo bench OUT/models/<name> --data ../shared/data/<modality> --out OUT/<modality>``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TOKENZOO_SHARED", REPO.parent / "shared"))
P = SHARED / "parity"
D = SHARED / "data"

# name -> (family, load_official arguments, data folder, modality report)
FIXTURES = {
    "wavtokenizer-fixture": ("wavtokenizer", [P / "wavtokenizer" / "WavTokenizer_tiny_320_24k_128.ckpt",
                                              P / "wavtokenizer" / "wavtokenizer_tiny_frame75_nq1_code128_dim32.yaml"],
                             D / "audio" / "speech", "audio"),
    "tadicodec-fixture": ("tadicodec", [P / "tadicodec" / "ckpt"], D / "audio" / "speech", "audio"),
    "titok-fixture-vq": ("titok", [P / "titok" / "single_stage_vq"], D / "image" / "256", "image"),
    "flextok-fixture": ("flextok", [P / "flextok" / "flextok_model"], D / "image" / "256", "image"),
    "cdt-fixture-small": ("cdt", [P / "cdt" / "cdt_tiny_small.ckpt", P / "cdt" / "cdt_tiny_small.config.json"],
                          D / "video", "video"),
    "tfm-fixture": ("tfm", [P / "tfm" / "tfm_tokenizer_last.pth"], D / "eeg", "eeg"),
    "lipcot-pd-eeg": ("lipcot", [P / "lipcot" / "lipcot_model.joblib"], D / "eeg", "eeg"),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--families", nargs="*", help="model names from the table (default: all)")
    ap.add_argument("--limit", type=int)
    args = ap.parse_args(argv)
    import zoo
    from zoo import bench

    out = Path(args.out)
    names = args.families or list(FIXTURES)
    groups = {}
    for name in names:
        family, files, data, modality = FIXTURES[name]
        folder = out / "models" / name
        if not (folder / "config.json").is_file():
            zoo.load_official(family, *files).save_pretrained(folder)
        groups.setdefault((modality, data), []).append(str(folder))
    for (modality, data), models in groups.items():
        extra = {"transcripts": REPO / "benchmarks" / "data" / "speech_transcripts.tsv"} if modality == "audio" else {}
        res = bench.run(models, data, out=out / modality, limit=args.limit, **extra)
        print(bench.markdown_table(res))
        print(f"report: {out / modality / 'report.html'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
