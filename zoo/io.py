"""Reading and writing the files each modality uses (shared by the CLI, the benchmark and training data).

- audio: anything soundfile reads (wav, flac, ogg); multichannel is mixed down to mono by averaging; resampled
  with soxr (VHQ) to the requested rate.
- images: anything Pillow reads; converted to RGB; returned as uint8 ``[3, H, W]``.
- video: ``.npz`` with ``frames`` uint8 ``[F, H, W, 3]`` (and optionally ``fps``); returned as uint8
  ``[3, F, H, W]``.
- EEG / series: ``.npz`` with ``signal`` ``[C, T]``, ``sfreq`` and optionally ``ch_names``; ``.edf``/``.bdf``
  when the optional ``pyedflib`` package is installed.

Every reader raises ``ValueError`` naming the file when it cannot be read or has the wrong form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

PathLike = Union[str, Path]

EXTENSIONS: Dict[str, Tuple[str, ...]] = {
    "audio": (".wav", ".flac", ".ogg"),
    "image": (".png", ".jpg", ".jpeg", ".bmp", ".webp"),
    "video": (".npz",),
    "eeg": (".npz", ".edf", ".bdf"),
}


@dataclass
class Loaded:
    """One decoded file: ``data`` (tensor) plus facts about how it was read."""

    path: Path
    data: torch.Tensor
    rate: Optional[float] = None  # sample rate / sfreq / fps
    notes: List[str] = field(default_factory=list)
    extra: Dict[str, object] = field(default_factory=dict)


def _exists(path: PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"cannot read {path}: no such file")
    return path


def list_files(folder: PathLike, modality: str, recursive: bool = True) -> List[Path]:
    """Files of ``modality`` under ``folder``, sorted by path (deterministic order)."""
    if modality not in EXTENSIONS:
        raise ValueError(f"modality must be one of {sorted(EXTENSIONS)}, got {modality!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"data folder {folder} does not exist or is not a folder")
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in EXTENSIONS[modality])


# ------------------------------------------------------------------------------------------ audio

def load_audio(path: PathLike, sample_rate: Optional[int] = None) -> Loaded:
    """-> float32 ``[1, T]`` mono at ``sample_rate`` (the file's rate when None)."""
    import soundfile as sf

    path = _exists(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises its own error type for unreadable files
        raise ValueError(f"cannot read audio file {path}: {exc}") from exc
    if data.size == 0:
        raise ValueError(f"audio file {path} is empty")
    notes = []
    if data.shape[1] > 1:
        notes.append(f"mixed {data.shape[1]} channels down to mono (mean)")
    mono = data.mean(axis=1)
    if sample_rate is not None and int(sample_rate) != int(sr):
        import soxr

        mono = soxr.resample(mono, sr, int(sample_rate), quality="VHQ").astype(np.float32)
        notes.append(f"resampled {sr} Hz -> {int(sample_rate)} Hz (soxr VHQ)")
        sr = int(sample_rate)
    return Loaded(path, torch.from_numpy(np.ascontiguousarray(mono))[None], float(sr), notes)


def save_audio(path: PathLike, wav: torch.Tensor, sample_rate: int) -> Path:
    import soundfile as sf

    wav = torch.as_tensor(wav).detach().float().cpu()
    if wav.ndim == 2 and wav.shape[0] == 1:
        wav = wav[0]
    if wav.ndim != 1:
        raise ValueError(f"save_audio expects mono [T] or [1, T], got shape {tuple(wav.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav.clamp(-1, 1).numpy(), int(sample_rate), subtype="PCM_16")
    return path


# ------------------------------------------------------------------------------------------ images

def load_image(path: PathLike) -> Loaded:
    """-> uint8 ``[3, H, W]`` RGB."""
    from PIL import Image, UnidentifiedImageError

    path = _exists(path)
    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image file {path}: {exc}") from exc
    notes = [] if mode == "RGB" else [f"converted {mode} to RGB"]
    return Loaded(path, torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous(), None, notes)


def to_uint8_image(img: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` float in [0, 1] (or uint8) -> uint8 ``[H, W, 3]``."""
    img = torch.as_tensor(img).detach().cpu()
    if img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"expected an image [3, H, W], got shape {tuple(img.shape)}")
    if img.dtype != torch.uint8:
        img = (img.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return img.permute(1, 2, 0).numpy()


def save_image(path: PathLike, img: torch.Tensor) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8_image(img)).save(path)
    return path


def center_crop_resize(img: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resize the shorter side to fit ``size`` (bicubic, antialiased) and centre-crop; uint8 in, uint8 out."""
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    arr = to_uint8_image(img)
    im = Image.fromarray(arr)
    scale = max(h / im.height, w / im.width)
    nh, nw = max(h, round(im.height * scale)), max(w, round(im.width * scale))
    im = im.resize((nw, nh), Image.BICUBIC, reducing_gap=None)
    top, left = (nh - h) // 2, (nw - w) // 2
    im = im.crop((left, top, left + w, top + h))
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).contiguous()


# ------------------------------------------------------------------------------------------ video

def load_video(path: PathLike) -> Loaded:
    """``.npz`` with ``frames`` uint8 ``[F, H, W, 3]`` -> uint8 ``[3, F, H, W]``."""
    path = _exists(path)
    try:
        with np.load(path, allow_pickle=False) as d:
            if "frames" not in d.files:
                raise ValueError(f"video file {path} has no 'frames' array (found {sorted(d.files)})")
            frames = np.array(d["frames"])
            fps = float(d["fps"]) if "fps" in d.files else None
    except (OSError, EOFError) as exc:
        raise ValueError(f"cannot read video file {path}: {exc}") from exc
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] == 0:
        raise ValueError(f"video file {path}: 'frames' must be uint8 [F, H, W, 3] with F > 0, got "
                         f"{frames.dtype} {frames.shape}")
    return Loaded(path, torch.from_numpy(frames).permute(3, 0, 1, 2).contiguous(), fps, [])


def save_video(path: PathLike, video: torch.Tensor, fps: Optional[float] = None) -> Path:
    video = torch.as_tensor(video).detach().cpu()
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"save_video expects [3, F, H, W], got shape {tuple(video.shape)}")
    if video.dtype != torch.uint8:
        video = (video.float().clamp(0, 1) * 255).round().to(torch.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"frames": video.permute(1, 2, 3, 0).numpy()}
    if fps is not None:
        arrays["fps"] = np.asarray(float(fps))
    np.savez(path, **arrays)
    return path


# ------------------------------------------------------------------------------------------ EEG / series

def load_series(path: PathLike) -> Loaded:
    """-> float32 ``[C, T]``, with ``rate`` = sfreq and ``extra['ch_names']`` when known."""
    path = _exists(path)
    suffix = path.suffix.lower()
    if suffix in (".edf", ".bdf"):
        try:
            import pyedflib
        except ImportError as exc:
            raise ValueError(f"reading {path} needs the optional package pyedflib (pip install pyedflib)") from exc
        try:
            with pyedflib.EdfReader(str(path)) as f:
                rates = {f.getSampleFrequency(i) for i in range(f.signals_in_file)}
                if len(rates) != 1:
                    raise ValueError(f"{path}: channels have different sampling rates {sorted(rates)}")
                sig = np.stack([f.readSignal(i) for i in range(f.signals_in_file)]).astype(np.float32)
                names = list(f.getSignalLabels())
        except OSError as exc:
            raise ValueError(f"cannot read EDF file {path}: {exc}") from exc
        return Loaded(path, torch.from_numpy(sig), float(rates.pop()), [], {"ch_names": names})
    try:
        with np.load(path, allow_pickle=False) as d:
            missing = [k for k in ("signal", "sfreq") if k not in d.files]
            if missing:
                raise ValueError(f"series file {path} lacks {missing} (found {sorted(d.files)})")
            sig = np.array(d["signal"], dtype=np.float32)
            sfreq = float(d["sfreq"])
            names = [str(c) for c in d["ch_names"]] if "ch_names" in d.files else None
            label = int(d["label"]) if "label" in d.files and np.ndim(d["label"]) == 0 else None
    except (OSError, EOFError) as exc:
        raise ValueError(f"cannot read series file {path}: {exc}") from exc
    if sig.ndim == 1:
        sig = sig[None]
    if sig.ndim != 2 or sig.size == 0:
        raise ValueError(f"series file {path}: 'signal' must be [C, T], got shape {sig.shape}")
    extra = {"ch_names": names}
    if label is not None:
        extra["label"] = label
    return Loaded(path, torch.from_numpy(sig), sfreq, [], extra)


def save_series(path: PathLike, signal: torch.Tensor, sfreq: float, ch_names: Optional[Sequence[str]] = None) -> Path:
    signal = torch.as_tensor(signal).detach().float().cpu()
    if signal.ndim != 2:
        raise ValueError(f"save_series expects [C, T], got shape {tuple(signal.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"signal": signal.numpy(), "sfreq": np.asarray(float(sfreq))}
    if ch_names is not None:
        arrays["ch_names"] = np.asarray([str(c) for c in ch_names])
    np.savez(path, **arrays)
    return path


def load_item(path: PathLike, modality: str, rate: Optional[float] = None) -> Loaded:
    """Read one file of ``modality`` (audio is resampled to ``rate`` when given)."""
    if modality == "audio":
        return load_audio(path, None if rate is None else int(rate))
    if modality == "image":
        return load_image(path)
    if modality == "video":
        return load_video(path)
    if modality == "eeg":
        return load_series(path)
    raise ValueError(f"modality must be one of {sorted(EXTENSIONS)}, got {modality!r}")
