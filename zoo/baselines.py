"""Trivial codecs: the bar a learned tokenizer has to clear at the same bitrate.

Each is a real tokenizer of the contract (ids in, signal out), so ``zoo.bench.run`` scores it with exactly the
metric code it uses for the learned models. They have no weights, only parameters:

- ``baseline-audio``: resample to ``rate`` Hz and code every sample with ``bits``-bit mu-law (G.711's companding
  law, mu = 255); decoding expands and resamples back. ``rate`` tokens/s, codebook ``2**bits``.
- ``baseline-image``: ``thumb x thumb`` thumbnail (area averaging), each RGB value uniformly quantised to ``bits``
  bits; decoding upsamples bicubically to ``image_size``. ``3 thumb^2`` tokens/image.
- ``baseline-video``: the same thumbnail on every ``frame_stride``-th frame (and the last); decoding upsamples
  each and interpolates linearly between them in time. Tokens per frame are stated for a clip of
  ``clip_frames`` frames.
- ``baseline-series``: per channel, resample to ``rate`` Hz and quantise uniformly to ``bits`` bits over
  ``[-clip, clip]``; decoding interpolates back to ``sfreq``.

:func:`matched_baseline` picks the baseline of a tokenizer's modality with the largest bitrate that does not
exceed the tokenizer's, with a fixed rule per modality (no search over the evaluation data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from .config import ConfigBase
from .registry import register_family
from .signal import resample
from .tokenizer import AudioTokenizer, ImageTokenizer, SeriesTokenizer, TokenizerSpec, VideoTokenizer
from .tokens import Tokens

MU = 255.0  # G.711 mu-law


def _check_int(name: str, value, low: int, high: Optional[int] = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an int {span}, got {value!r}")


def _check_pos(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _mu_encode(x: torch.Tensor, levels: int) -> torch.Tensor:
    y = torch.sign(x) * torch.log1p(MU * x.abs().clamp(max=1.0)) / math.log1p(MU)
    return ((y + 1) / 2 * (levels - 1)).round().long().clamp(0, levels - 1)


def _mu_decode(ids: torch.Tensor, levels: int) -> torch.Tensor:
    y = ids.float() / (levels - 1) * 2 - 1
    return torch.sign(y) * ((1 + MU) ** y.abs() - 1) / MU


def _uniform(x: torch.Tensor, levels: int) -> torch.Tensor:
    return (x.clamp(0, 1) * (levels - 1)).round().long()


# ------------------------------------------------------------------------------------------------ audio
@dataclass
class AudioBaselineConfig(ConfigBase):
    sample_rate: int = 24000
    rate: int = 84
    bits: int = 8

    def __post_init__(self):
        _check_int("sample_rate", self.sample_rate, 1)
        _check_int("rate", self.rate, 1, self.sample_rate)
        _check_int("bits", self.bits, 1, 16)


@register_family("baseline-audio")
class AudioBaseline(AudioTokenizer):
    """Resample + mu-law PCM at a low rate (see the module docstring)."""

    config_class = AudioBaselineConfig

    @property
    def spec(self) -> TokenizerSpec:
        return TokenizerSpec.discrete_spec("audio", 2 ** self.config.bits, 1, self.config.rate, "tokens/s")

    def _encode(self, wav: torch.Tensor, lengths=None) -> Tokens:
        c = self.config
        low = resample(wav.float(), c.sample_rate, c.rate)
        out_len = None if lengths is None else torch.ceil(lengths.double() * c.rate / c.sample_rate).long()
        return Tokens(_mu_encode(low, 2 ** c.bits)[:, None], out_len)

    def _decode(self, tokens: Tokens) -> torch.Tensor:
        c = self.config
        return resample(_mu_decode(tokens.ids[:, 0], 2 ** c.bits), c.rate, c.sample_rate)[:, None]


# ------------------------------------------------------------------------------------------------ image
@dataclass
class ImageBaselineConfig(ConfigBase):
    image_size: int = 64
    thumb: int = 5
    bits: int = 8

    def __post_init__(self):
        _check_int("image_size", self.image_size, 1)
        _check_int("thumb", self.thumb, 1, self.image_size)
        _check_int("bits", self.bits, 1, 16)


def _thumb(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x.float(), size)


def _upsample(small: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    return F.interpolate(small, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


@register_family("baseline-image")
class ImageBaseline(ImageTokenizer):
    """Quantised thumbnail, bicubic upsampling (see the module docstring)."""

    config_class = ImageBaselineConfig

    @property
    def spec(self) -> TokenizerSpec:
        c = self.config
        return TokenizerSpec.discrete_spec("image", 2 ** c.bits, 1, 3 * c.thumb ** 2, "tokens/image")

    def _encode(self, images: torch.Tensor) -> Tokens:
        c = self.config
        return Tokens(_uniform(_thumb(images, c.thumb), 2 ** c.bits).flatten(1))

    def _decode(self, tokens: Tokens) -> torch.Tensor:
        c = self.config
        small = tokens.ids.float().reshape(-1, 3, c.thumb, c.thumb) / (2 ** c.bits - 1)
        return _upsample(small, (c.image_size, c.image_size))


# ------------------------------------------------------------------------------------------------ video
@dataclass
class VideoBaselineConfig(ConfigBase):
    image_size: int = 32
    thumb: int = 6
    bits: int = 8
    frame_stride: int = 4
    clip_frames: int = 17  # the clip length tokens/frame is stated for

    def __post_init__(self):
        _check_int("image_size", self.image_size, 1)
        _check_int("thumb", self.thumb, 1, self.image_size)
        _check_int("bits", self.bits, 1, 16)
        _check_int("frame_stride", self.frame_stride, 1)
        _check_int("clip_frames", self.clip_frames, 1)


def _key_frames(n: int, stride: int):
    keys = list(range(0, n, stride))
    if keys[-1] != n - 1:
        keys.append(n - 1)
    return keys


@register_family("baseline-video")
class VideoBaseline(VideoTokenizer):
    """Quantised thumbnails of key frames, bicubic + linear-in-time interpolation (see the module docstring).
    Ids ``[B, n_keys * 3 * thumb^2]``; the number of frames is stored in the tokens' metadata."""

    config_class = VideoBaselineConfig

    def tokens_per_clip(self, frames: int) -> int:
        return len(_key_frames(frames, self.config.frame_stride)) * 3 * self.config.thumb ** 2

    @property
    def spec(self) -> TokenizerSpec:
        c = self.config
        return TokenizerSpec.discrete_spec("video", 2 ** c.bits, 1, self.tokens_per_clip(c.clip_frames) / c.clip_frames,
                                           "tokens/frame")

    def _encode(self, video: torch.Tensor) -> Tokens:
        c = self.config
        b, _, n, h, w = video.shape
        keys = _key_frames(n, c.frame_stride)
        small = torch.stack([_thumb(video[:, :, k], c.thumb) for k in keys], dim=1)  # [B, K, 3, t, t]
        return Tokens(_uniform(small, 2 ** c.bits).flatten(1), None, {"frames": str(n), "height": str(h),
                                                                        "width": str(w)})

    def _decode(self, tokens: Tokens) -> torch.Tensor:
        c = self.config
        n = int(tokens.metadata.get("frames", c.clip_frames))
        h = int(tokens.metadata.get("height", c.image_size))
        w = int(tokens.metadata.get("width", c.image_size))
        keys = _key_frames(n, c.frame_stride)
        small = tokens.ids.float().reshape(-1, len(keys), 3, c.thumb, c.thumb) / (2 ** c.bits - 1)
        up = torch.stack([_upsample(small[:, i], (h, w)) for i in range(len(keys))], dim=2)  # [B, 3, K, H, W]
        frames = []
        for i in range(n):
            hi = next(j for j, k in enumerate(keys) if k >= i)
            lo = hi if keys[hi] == i else hi - 1
            t = 0.0 if lo == hi else (i - keys[lo]) / (keys[hi] - keys[lo])
            frames.append((1 - t) * up[:, :, lo] + t * up[:, :, hi])
        return torch.stack(frames, dim=2)


# ------------------------------------------------------------------------------------------------ series
@dataclass
class SeriesBaselineConfig(ConfigBase):
    sfreq: float = 200.0
    rate: float = 2.0
    bits: int = 8
    clip: float = 4.0

    def __post_init__(self):
        _check_pos("sfreq", self.sfreq)
        _check_pos("rate", self.rate)
        if self.rate > self.sfreq:
            raise ValueError(f"rate ({self.rate}) must not exceed sfreq ({self.sfreq})")
        _check_int("bits", self.bits, 1, 16)
        _check_pos("clip", self.clip)


@register_family("baseline-series")
class SeriesBaseline(SeriesTokenizer):
    """Per-channel decimation + uniform quantisation over ``[-clip, clip]`` (see the module docstring)."""

    config_class = SeriesBaselineConfig

    @property
    def spec(self) -> TokenizerSpec:
        return TokenizerSpec.discrete_spec("eeg", 2 ** self.config.bits, 1, self.config.rate, "tokens/s")

    def _n_low(self, n: int) -> int:
        return max(1, int(math.ceil(n * self.config.rate / self.config.sfreq)))

    def _encode(self, x: torch.Tensor, lengths=None) -> Tokens:
        c = self.config
        low = F.interpolate(x.float(), size=self._n_low(x.shape[-1]), mode="area")
        ids = _uniform((low / c.clip + 1) / 2, 2 ** c.bits)
        out_len = None if lengths is None else torch.ceil(lengths.double() * c.rate / c.sfreq).long()
        return Tokens(ids, out_len, {"samples": str(x.shape[-1])})

    def _decode(self, tokens: Tokens) -> torch.Tensor:
        c = self.config
        low = (tokens.ids.float() / (2 ** c.bits - 1) * 2 - 1) * c.clip
        n = int(tokens.metadata.get("samples", round(low.shape[-1] * c.sfreq / c.rate)))
        return F.interpolate(low, size=n, mode="linear", align_corners=False)


# ------------------------------------------------------------------------------------------------ matching
def matched_baseline(tok, *, frames: Optional[int] = None, tokens_per_clip: Optional[int] = None,
                     bits: int = 8) -> Tuple[Any, Dict[str, Any]]:
    """The baseline of ``tok``'s modality at the largest bitrate not above ``tok.spec.bitrate``.

    Rule (fixed, not tuned on data): ``bits``-bit values (8 = the usual PCM / 24-bit colour depth); audio and
    series lower the rate, images and video the thumbnail side. Video: ``tok``'s bits per frame are taken for a
    clip of ``frames`` frames: ``tokens_per_clip`` (the ids one such clip gives, e.g. counted from an encode at the
    evaluation size, since a convolutional video tokenizer's token count depends on the frame size), key frames
    every 4 frames. Returns ``(baseline, params)``.
    """
    _check_int("bits", bits, 1, 16)
    spec = tok.spec
    if not spec.discrete:
        raise ValueError(f"{type(tok).__name__} is continuous: there is no bitrate to match")
    m = tok.modality
    if m == "audio":
        rate = int(spec.bitrate // bits)
        if rate < 1:
            raise ValueError(f"bitrate {spec.bitrate} is below one {bits}-bit sample per second")
        cfg = AudioBaselineConfig(sample_rate=int(tok.sample_rate), rate=rate, bits=bits)
        return AudioBaseline(cfg).eval(), cfg.to_dict()
    if m == "image":
        size = tok.expected_size()
        if size is None or size[0] != size[1]:
            raise ValueError("image baselines need a tokenizer with a fixed square image_size")
        thumb = int(math.isqrt(int(spec.bitrate // (3 * bits))))
        if thumb < 1:
            raise ValueError(f"{spec.bitrate} bits/image is below one {bits}-bit RGB pixel")
        cfg = ImageBaselineConfig(image_size=size[0], thumb=thumb, bits=bits)
        return ImageBaseline(cfg).eval(), cfg.to_dict()
    if m == "video":
        if frames is None:
            raise ValueError("video baselines need frames= (the clip length the bitrate is compared on)")
        _check_int("frames", frames, 1)
        n_ids = tokens_per_clip
        if n_ids is None:
            raise ValueError("video baselines need tokens_per_clip= (the ids the tokenizer gives for one clip)")
        _check_int("tokens_per_clip", n_ids, 1)
        per_clip = n_ids * math.log2(spec.codebook_size) * spec.num_codebooks
        n_keys = len(_key_frames(frames, 4))
        thumb = int(math.isqrt(int(per_clip // (n_keys * 3 * bits))))
        size = int(getattr(tok.config, "image_size", 0) or 32)
        cfg = VideoBaselineConfig(image_size=size, thumb=max(1, thumb), bits=bits, frame_stride=4, clip_frames=frames)
        base = VideoBaseline(cfg).eval()
        if thumb < 1:
            raise ValueError(f"{per_clip:.0f} bits per {frames}-frame clip is below one pixel per key frame")
        return base, {**cfg.to_dict(), "bits_per_clip": base.tokens_per_clip(frames) * bits,
                      "model_bits_per_clip": per_clip}
    if m == "eeg":
        rate = spec.bitrate / bits
        cfg = SeriesBaselineConfig(sfreq=float(tok.sfreq), rate=float(rate), bits=bits)
        return SeriesBaseline(cfg).eval(), cfg.to_dict()
    raise ValueError(f"no baseline for modality {m!r}")


def feature_domain_scores(tok, base, files) -> Dict[str, Any]:
    """Score a waveform baseline against a series tokenizer whose decoder returns features (TFM: |STFT|, LiPCoT:
    AR coefficients): ``tok.reconstruction_reference`` of the baseline's reconstruction against that of the
    input, with the benchmark's ``feature_l1`` (mean absolute difference) and ``feature_corr`` (Pearson
    correlation over all values), averaged over ``files``."""
    from . import bench

    if not hasattr(tok, "reconstruction_reference"):
        raise ValueError(f"{type(tok).__name__} has no reconstruction_reference: score it with zoo.bench directly")
    l1, corr = [], []
    for path in files:
        loaded = bench.zio.load_item(path, "eeg", None)
        x, kw, _ = bench._prepare(base, loaded, "eeg")
        y = base.decode(base.encode(x, **kw))
        ref = tok.reconstruction_reference(x, **kw).double()
        got = tok.reconstruction_reference(y.reshape(x.shape).float(), **kw).double()
        l1.append(float((ref - got).abs().mean()))
        corr.append(float(torch.corrcoef(torch.stack([ref.reshape(-1), got.reshape(-1)]))[0, 1]))
    if not l1:
        raise ValueError("feature_domain_scores needs at least one file")
    return {"spec": base.spec.to_dict(), "metrics": {"feature_l1": sum(l1) / len(l1),
                                                     "feature_corr": sum(corr) / len(corr)}}
