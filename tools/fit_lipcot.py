"""Fit the bundled LiPCoT vocabulary (``tokenzoo/lipcot-tuev-16``) on the training EEG windows.

LiPCoT has no gradient training: its vocabulary is a K-means clustering of per-window LPC features
(``LiPCoT.fit``, scikit-learn). This cuts every training file into consecutive windows, fits, and writes a
``save_pretrained`` folder plus a ``training.json`` in the layout ``tokenzoo train`` writes, so that
``tools/package_bundled.py lipcot-tuev-16 --run DIR`` packages it like the trained models.

    python tools/fit_lipcot.py --data /tmp/bundled_data/eeg/train --out runs/lipcot-tuev-16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

# fixed settings of the bundled model (window 0.5 s at 200 Hz = 100 samples; order 8 keeps the LPC fit
# well-posed on 100 samples; 16 words: the training set has only 50 windows)
SETTINGS = {"order": 8, "warp": 0.2, "vocab_size": 16, "seed": 42, "method": 2, "sfreq": 200.0,
            "window_seconds": 0.5, "n_init": 10, "max_iter": 500}


def windows_from(folder: Path, sfreq: float, seconds: float):
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise ValueError(f"no .npz EEG files in {folder}")
    win = int(round(sfreq * seconds))
    rows = []
    for f in files:
        with np.load(f, allow_pickle=False) as d:
            if float(d["sfreq"]) != sfreq:
                raise ValueError(f"{f}: sfreq {float(d['sfreq'])} Hz, the bundled model works at {sfreq} Hz")
            x = np.asarray(d["signal"], dtype=np.float64)
        for ch in x:
            n = ch.shape[0] // win
            rows.append(ch[: n * win].reshape(n, win))
    return [str(f) for f in files], np.concatenate(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    from eeg.lipcot import LiPCoT

    t0 = time.perf_counter()
    files, w = windows_from(a.data, SETTINGS["sfreq"], SETTINGS["window_seconds"])
    model = LiPCoT.fit(w, **SETTINGS)
    model.save_pretrained(a.out)
    training = {"recipe": "LiPCoT.fit", "train": {"max_steps": None, "batch_size": None, "seed": SETTINGS["seed"],
                                                  "windows": int(w.shape[0]), **SETTINGS},
                "train_files": files, "seconds": time.perf_counter() - t0, "notes": ["K-means fit, no gradient steps"]}
    (a.out / "training.json").write_text(json.dumps(training, indent=2))
    (a.out / "train.yaml").write_text("# LiPCoT.fit settings (tools/fit_lipcot.py SETTINGS)\n" +
                                      "".join(f"{k}: {v}\n" for k, v in SETTINGS.items()))
    print(f"fitted {SETTINGS['vocab_size']} words on {w.shape[0]} windows from {len(files)} files -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
