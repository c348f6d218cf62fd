"""Training data: folders (or webdataset tar shards) of audio, images, video and EEG, read robustly.

Each dataset returns fixed-size examples so batches stack: audio crops of ``segment_samples`` samples, images
cropped/resized to ``image_size`` (optionally flipped), video clips of ``frames`` consecutive frames (random
temporal crop) cropped/resized like images to ``image_size`` (float ``[3, frames, S, S]`` in [0, 1]), EEG windows
of ``window_samples`` samples. Randomness
(crop positions, flips) comes from a generator seeded by ``(seed, epoch, index)``, so an example is the same
whichever worker reads it and whether or not the run was resumed.

A file that cannot be read, or is too short, is logged once, counted, and skipped: ``__getitem__`` returns
``None`` and :func:`collate_skip` drops it and reports the count in the batch (``batch["skipped"]``). So is an
example whose shape differs from the rest of its batch (an EEG file with another channel count, say), unless the
recipe trains on single channels (``split_channels``): then every channel of every window is one example, and
windows with any number of channels share a batch. A long run never ends because of one bad file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch

from .. import io as zio
from ..tokenize import Source, _read_source, list_sources

log = logging.getLogger("tokenzoo.train")


@dataclass
class DataConfig:
    modality: str
    sample_rate: Optional[int] = None  # audio: target rate
    segment_samples: Optional[int] = None  # audio crop length
    image_size: Optional[int] = None
    random_flip: bool = True
    sfreq: Optional[float] = None  # EEG: target rate (resampled when the file differs)
    window_samples: Optional[int] = None  # EEG window length
    frames: Optional[int] = None  # video: frames per clip (spatial size: image_size)
    seed: int = 0
    labels: bool = False  # EEG: every example also carries its integer class ``label`` (the .npz ``label`` key)
    # audio: whole utterances with their transcript (``<file>.txt`` beside each audio file) instead of random crops;
    # ``segment_samples`` is then the longest utterance kept (longer files are skipped and counted: cropping would
    # cut the text's alignment). Utterances differ in length: batches of one (use grad_accum for larger batches).
    transcripts: bool = False
    # EEG: every channel of a window is one example (``x`` ``[sum of channels, 1, window]``, ``index`` and ``label``
    # repeated per channel), so files with different channel counts share a batch (recipes that train on single
    # channels, as TFM-Tokenizer does)
    split_channels: bool = False


class FolderDataset(torch.utils.data.Dataset):
    """Examples of one modality from folders and/or tar shards (see the module docstring)."""

    def __init__(self, data, config: DataConfig, sources: Optional[List[Source]] = None):
        self.config = config
        if config.modality not in zio.EXTENSIONS:
            raise ValueError(f"modality must be one of {sorted(zio.EXTENSIONS)}, got {config.modality!r}")
        for name in ("sample_rate", "segment_samples", "image_size", "window_samples", "frames"):
            v = getattr(config, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"DataConfig.{name} must be a positive int, got {v!r}")
        if config.sfreq is not None and (isinstance(config.sfreq, bool) or not isinstance(config.sfreq, (int, float))
                                         or not config.sfreq > 0):
            raise ValueError(f"DataConfig.sfreq must be a number > 0, got {config.sfreq!r}")
        if config.modality == "audio" and not (config.sample_rate and config.segment_samples):
            raise ValueError("audio training data needs sample_rate and segment_samples")
        if config.modality == "image" and not config.image_size:
            raise ValueError("image training data needs image_size")
        if config.modality == "video" and not (config.frames and config.image_size):
            raise ValueError("video training data needs frames and image_size")
        if config.modality == "eeg" and not config.window_samples:
            raise ValueError("EEG training data needs window_samples")
        if config.transcripts and config.modality != "audio":
            raise ValueError(f"transcripts are supported for audio, not {config.modality!r}")
        if config.labels and config.modality != "eeg":
            raise ValueError(f"labelled training data is supported for EEG windows, not {config.modality!r}")
        if config.split_channels and config.modality != "eeg":
            raise ValueError(f"split_channels is supported for EEG windows, not {config.modality!r}")
        self.sources = sources if sources is not None else list_sources(data, config.modality)
        if not self.sources:
            raise ValueError(f"no {config.modality} files under {data}")
        self.epoch = 0
        self._warned = set()

    def __len__(self) -> int:
        return len(self.sources)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.config.seed * 1_000_003 + self.epoch) * 1_000_003 + index)

    def __getitem__(self, index: int):
        src = self.sources[index]
        try:
            return {**self._example(src, self._generator(index)), "index": index, "source": src.name}
        except Exception as exc:  # noqa: BLE001 - bad files are skipped, never fatal
            if src.name not in self._warned:
                log.warning("skipping unreadable training file %s: %s", src.name, exc)
                self._warned.add(src.name)
            return None

    def _example(self, src: Source, g: torch.Generator) -> Dict[str, Any]:
        if self.config.transcripts:
            return self._utterance(src)
        if self.config.labels:
            x, label = self._tensor(src, g, with_label=True)
            return {"x": x, "label": label}
        return {"x": self._tensor(src, g)}

    def _utterance(self, src: Source) -> Dict[str, Any]:
        if src.tar_path is not None:
            raise ValueError("transcripts are read from <file>.txt beside the audio file: not supported in tar shards")
        text_file = Path(src.path).with_suffix(".txt")
        if not text_file.is_file():
            raise ValueError(f"no transcript {text_file.name}")
        text = text_file.read_text(encoding="utf-8").strip()
        if not text:
            raise ValueError(f"empty transcript {text_file.name}")
        wav = _read_source(src, "audio", self.config.sample_rate).data[0]
        if wav.shape[-1] > self.config.segment_samples:
            raise ValueError(f"{wav.shape[-1]} samples, longer than the {self.config.segment_samples}-sample limit "
                             "(a crop would no longer match the transcript)")
        return {"x": wav[None], "text": text}

    def _tensor(self, src: Source, g: torch.Generator, with_label: bool = False):
        c = self.config
        if c.modality == "audio":
            wav = _read_source(src, "audio", c.sample_rate).data[0]
            n = c.segment_samples
            if wav.shape[-1] < n:
                raise ValueError(f"{wav.shape[-1]} samples, shorter than the {n}-sample training segment")
            start = int(torch.randint(0, wav.shape[-1] - n + 1, (1,), generator=g))
            return wav[start: start + n][None]  # [1, n]
        if c.modality == "image":
            img = _read_source(src, "image", None).data
            size = c.image_size
            h, w = img.shape[-2:]
            short = min(h, w)
            top = int(torch.randint(0, h - short + 1, (1,), generator=g))
            left = int(torch.randint(0, w - short + 1, (1,), generator=g))
            img = img[:, top: top + short, left: left + short]
            if short != size:
                img = zio.center_crop_resize(img, (size, size))
            if c.random_flip and bool(torch.rand((), generator=g) < 0.5):
                img = img.flip(-1)
            return img.float() / 255.0
        if c.modality == "video":
            vid = _read_source(src, "video", None).data  # uint8 [3, F, H, W]
            n = c.frames
            if vid.shape[1] < n:
                raise ValueError(f"{vid.shape[1]} frames, shorter than the {n}-frame training clip")
            start = int(torch.randint(0, vid.shape[1] - n + 1, (1,), generator=g))
            vid = vid[:, start: start + n]
            size = c.image_size
            h, w = vid.shape[-2:]
            short = min(h, w)
            top = int(torch.randint(0, h - short + 1, (1,), generator=g))
            left = int(torch.randint(0, w - short + 1, (1,), generator=g))
            vid = vid[..., top: top + short, left: left + short]
            if short != size:  # the same crop and resampler on every frame
                vid = torch.stack([zio.center_crop_resize(vid[:, i], (size, size)) for i in range(n)], dim=1)
            if c.random_flip and bool(torch.rand((), generator=g) < 0.5):
                vid = vid.flip(-1)
            return vid.float() / 255.0
        if c.modality == "eeg":
            loaded = _read_source(src, "eeg", None)
            x = loaded.data
            if c.sfreq is not None and loaded.rate != c.sfreq:
                from ..signal import resample

                x = resample(x, loaded.rate, c.sfreq)
            n = c.window_samples
            if x.shape[-1] < n:
                raise ValueError(f"{x.shape[-1]} samples, shorter than the {n}-sample window")
            start = int(torch.randint(0, x.shape[-1] - n + 1, (1,), generator=g))
            if with_label:
                label = loaded.extra.get("label")
                if label is None:
                    raise ValueError("no integer 'label' in the file (labelled training data)")
                if int(label) < 0:
                    raise ValueError(f"label {label} is negative")
                return x[:, start: start + n], int(label)
            return x[:, start: start + n]
        raise ValueError(f"unsupported modality {c.modality!r}")


_warned_shapes: set = set()


def collate_skip(batch: Sequence[Optional[Dict[str, Any]]], split_channels: bool = False) -> Dict[str, Any]:
    """Stack the good examples; ``skipped`` counts the dropped ones.

    Dropped: unreadable files (``None``) and, unless ``split_channels``, examples whose ``x`` shape differs from
    the batch's most common one (ties: the earliest in the batch), each logged once with the reason.
    ``split_channels`` (EEG): every channel of every window becomes one example ``[1, T]``; ``index`` and
    ``label`` are repeated per channel.
    """
    good = [b for b in batch if b is not None]
    out: Dict[str, Any] = {"skipped": len(batch) - len(good)}
    if not good:
        return out
    if "text" in good[0] and len({b["x"].shape for b in good}) > 1:
        raise ValueError("utterances of different lengths cannot share a batch: use batch_size 1 (and grad_accum)")
    if split_channels:
        lengths = {b["x"].shape[-1] for b in good}
        if len(lengths) > 1 or any(b["x"].ndim != 2 for b in good):
            raise ValueError(f"split_channels needs [channels, samples] windows of one length, got shapes "
                             f"{sorted({tuple(b['x'].shape) for b in good})}")
        out["x"] = torch.cat([b["x"][:, None] for b in good])
        reps = torch.tensor([b["x"].shape[0] for b in good])
        out["index"] = torch.tensor([b["index"] for b in good]).repeat_interleave(reps)
        if "label" in good[0]:
            out["label"] = torch.tensor([b["label"] for b in good], dtype=torch.long).repeat_interleave(reps)
        return out
    shapes = [tuple(b["x"].shape) for b in good]
    keep_shape = max(dict.fromkeys(shapes), key=shapes.count)  # most common; ties: the first seen
    odd = [b for b in good if tuple(b["x"].shape) != keep_shape]
    if odd:
        for b in odd:
            name = b.get("source", f"example {b['index']}")
            if name not in _warned_shapes:
                _warned_shapes.add(name)
                log.warning("skipping training example %s: shape %s differs from the %s of the rest of its batch",
                            name, tuple(b["x"].shape), keep_shape)
        good = [b for b in good if tuple(b["x"].shape) == keep_shape]
        out["skipped"] += len(odd)
    out["x"] = torch.stack([b["x"] for b in good])
    if "text" in good[0]:
        out["text"] = [b["text"] for b in good]
    out["index"] = torch.tensor([b["index"] for b in good])
    if "label" in good[0]:
        out["label"] = torch.tensor([b["label"] for b in good], dtype=torch.long)
    return out


def split_holdout(sources: List[Source], holdout: int, seed: int = 0):
    """Deterministic train / held-out split of the file list (``holdout`` files kept out of training)."""
    if holdout <= 0:
        return sources, []
    if holdout >= len(sources):
        raise ValueError(f"holdout {holdout} leaves no training files (only {len(sources)} files)")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(sources), generator=g).tolist()
    held = sorted(perm[:holdout])
    train = sorted(perm[holdout:])
    return [sources[i] for i in train], [sources[i] for i in held]
