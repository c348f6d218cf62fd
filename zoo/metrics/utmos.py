"""No-reference speech naturalness: UTMOS22 "strong" learner (Saeki et al., VoiceMOS Challenge 2022).

Convention
----------
``utmos(audio, sample_rate, weights=None)`` takes mono waveforms ``[B, T]`` (or ``[T]`` / ``[B, 1, T]``), float,
finite, at ``sample_rate`` Hz, resamples them to the model's 16 kHz with :func:`zoo.signal.resample`
(torchaudio's windowed-sinc filter with its default settings, the resampler the reference implementation calls),
and returns a ``[B]`` float64 tensor on the CPU: the predicted mean opinion score of naturalness, nominally on the
1-5 scale (higher is better; values are *not* clipped and can fall slightly outside it). The score is the
utterance mean of the frame-level predictions, mapped by ``2 * s + 3``, for the one data-domain and judge
embedding stored in the released weights (the "main track, mean listener" condition that the reference
implementation always uses). The network itself runs in float32; items of a batch have the same length, so no
padding is involved and a batch gives the values of its items scored one by one (up to float32 rounding).
Inputs shorter than 400 samples at 16 kHz (25 ms, one frame of the convolutional front-end) are refused. UTMOS has
no reference: for a codec, compare the score of the reconstruction with that of the original.

Architecture (no phoneme encoder): a wav2vec 2.0 BASE-style SSL network (7-layer convolutional feature encoder,
512 channels, then a 12-layer post-LN transformer with 768 features, 12 heads, 3072 FFN and a 128-tap grouped
convolutional position embedding), the 768-d frame features concatenated with a 128-d domain and a 128-d judge
embedding, a one-layer bidirectional LSTM (512 per direction), and a two-layer projection (2048 hidden, ReLU) to
one score per frame. Parameter names are those of the released state dict, so it loads strictly.

Weights
-------
Not bundled: the file ``utmos22_strong_step7459_v1.pt`` (MIT; Saruwatari & Koyama lab, converted by tarepan) from
https://github.com/tarepan/SpeechMOS/releases/download/v1.0.0/utmos22_strong_step7459_v1.pt . ``weights`` may be
that file's path or an already built :class:`UTMOS22Strong`; when ``None``, the path in the environment variable
``TOKENZOO_UTMOS_WEIGHTS`` is used, else ``~/.cache/tokenzoo/metrics/utmos22_strong_step7459_v1.pt``. Without it
:class:`~zoo.metrics.base.MetricUnavailable` names the file, the URL and where to put it. The file is read with
``torch.load(weights_only=True)`` (no pickled code runs) and loaded strictly; the last model loaded is cached, keyed
by the file's resolved path, size and modification time, and the device.

This is a re-implementation in plain torch, checked against tarepan/SpeechMOS v1.2.0
(``speechmos/utmos22/strong/model.py``) with random weights saved in the release's format.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..validation import check_tensor
from .base import MetricUnavailable
from .wavlm_ecapa import WeightNormConv1d  # the same positional convolution as WavLM's

UTMOS_SAMPLE_RATE = 16000  # the reference model resamples every input to 16 kHz before the SSL network
UTMOS_FILENAME = "utmos22_strong_step7459_v1.pt"
UTMOS_URL = "https://github.com/tarepan/SpeechMOS/releases/download/v1.0.0/" + UTMOS_FILENAME
UTMOS_ENV_VAR = "TOKENZOO_UTMOS_WEIGHTS"


def default_utmos_path() -> Path:
    """``~/.cache/tokenzoo/metrics/utmos22_strong_step7459_v1.pt`` (the default place of the weights file)."""
    return Path.home() / ".cache" / "tokenzoo" / "metrics" / UTMOS_FILENAME


@dataclass(frozen=True)
class UTMOSConfig:
    """Sizes of the network; the defaults are the released UTMOS22 strong learner (wav2vec 2.0 BASE SSL).

    Sources: SpeechMOS ``fairseq_alt.Wav2Vec2Model`` (conv layers ``[(512, 10, 5)] + [(512, 3, 2)] * 4 +
    [(512, 2, 2)] * 2``, 768 features, 12 layers, 12 heads, FFN 3072, position conv kernel 128 in 16 groups) and
    ``strong/model.py`` (domain and judge embeddings 128, BLSTM hidden 512, projection hidden 2048).
    """

    conv_channels: int = 512
    conv_layers: Tuple[Tuple[int, int], ...] = ((10, 5),) + ((3, 2),) * 4 + ((2, 2),) * 2  # (kernel, stride)
    dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    pos_kernel: int = 128
    pos_groups: int = 16
    domain_dim: int = 128
    judge_dim: int = 128
    rnn_hidden: int = 512
    proj_hidden: int = 2048

    def __post_init__(self):
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if self.pos_kernel % 2:
            raise ValueError(f"pos_kernel must be even (one trailing frame is dropped), got {self.pos_kernel}")
        if self.dim % self.pos_groups:
            raise ValueError(f"dim ({self.dim}) must be divisible by pos_groups ({self.pos_groups})")

    @property
    def min_samples(self) -> int:
        """Shortest input (16 kHz samples) that gives at least one frame."""
        n = 1
        for kernel, stride in reversed(self.conv_layers):
            n = (n - 1) * stride + kernel
        return n


# ------------------------------------------------------------------------------------------------ the network

class _FeatureEncoder(nn.Module):
    """Waveform ``[B, T]`` -> features ``[B, C, frames]``: strided convolutions without bias, each followed by
    GELU; the first also by a per-channel GroupNorm. Each block is a Sequential whose slot 1 is an empty no-op so
    that the norm's parameters sit at index 2, as in the release's keys (``conv_layers.0.2.weight``)."""

    def __init__(self, cfg: UTMOSConfig):
        super().__init__()
        blocks = []
        c_in = 1
        for i, (kernel, stride) in enumerate(cfg.conv_layers):
            conv = nn.Conv1d(c_in, cfg.conv_channels, kernel, stride=stride, bias=False)
            if i == 0:
                blocks.append(nn.Sequential(conv, nn.Identity(),
                                            nn.GroupNorm(cfg.conv_channels, cfg.conv_channels), nn.GELU()))
            else:
                blocks.append(nn.Sequential(conv, nn.Identity(), nn.GELU()))
            c_in = cfg.conv_channels
        self.conv_layers = nn.ModuleList(blocks)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        h = wave[:, None, :]
        for block in self.conv_layers:
            h = block(h)
        return h


class _SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (scaled dot product, no mask)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, D] -> [B, N, D]
        b, n, d = x.shape
        heads = [p(x).reshape(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)
                 for p in (self.q_proj, self.k_proj, self.v_proj)]
        att = F.scaled_dot_product_attention(*heads)  # softmax(q k^T / sqrt(head_dim)) v
        return self.out_proj(att.transpose(1, 2).reshape(b, n, d))


class _EncoderLayer(nn.Module):
    """Post-LN transformer block: LN(x + attn(x)), then LN(x + fc2(gelu(fc1(x))))."""

    def __init__(self, cfg: UTMOSConfig):
        super().__init__()
        self.self_attn = _SelfAttention(cfg.dim, cfg.num_heads)
        self.fc1 = nn.Linear(cfg.dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.dim)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.dim)
        self.final_layer_norm = nn.LayerNorm(cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.self_attn_layer_norm(x + self.self_attn(x))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class _ContextEncoder(nn.Module):
    """Convolutional position embedding (added), LayerNorm, then the transformer layers. ``[B, N, D]`` in and out.

    The reference pads the sequence to an even length and masks the padded key; because a masked key never
    reaches a real position and every other operation is per position, running unpadded gives the same values.
    """

    def __init__(self, cfg: UTMOSConfig):
        super().__init__()
        self.pos_conv = nn.Sequential(WeightNormConv1d(cfg.dim, cfg.pos_kernel, cfg.pos_groups))
        self.layer_norm = nn.LayerNorm(cfg.dim)
        self.layers = nn.ModuleList(_EncoderLayer(cfg) for _ in range(cfg.num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.pos_conv(x.transpose(1, 2))[:, :, :-1]  # even kernel, padding k/2: one extra frame at the end
        x = self.layer_norm(x + F.gelu(pos).transpose(1, 2))
        for layer in self.layers:
            x = layer(x)
        return x


class _SSLModel(nn.Module):
    """wav2vec 2.0 BASE-style feature network: ``[B, T]`` at 16 kHz -> ``[B, frames, dim]`` (50 frames/s)."""

    def __init__(self, cfg: UTMOSConfig):
        super().__init__()
        self.feature_extractor = _FeatureEncoder(cfg)
        self.layer_norm = nn.LayerNorm(cfg.conv_channels)
        self.post_extract_proj = nn.Linear(cfg.conv_channels, cfg.dim)
        self.encoder = _ContextEncoder(cfg)
        # unused at inference (pre-training mask embedding); kept because the release's state dict holds it
        self.mask_emb = nn.Parameter(torch.zeros(cfg.dim))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        h = self.feature_extractor(wave).transpose(1, 2)
        return self.encoder(self.post_extract_proj(self.layer_norm(h)))


class UTMOS22Strong(nn.Module):
    """UTMOS22 strong learner without the phoneme encoder: ``forward(wave [B, T] at 16 kHz) -> [B]`` MOS (float32).

    Build with :func:`load_utmos` to get the released weights; a bare instance has random weights.
    """

    def __init__(self, config: Optional[UTMOSConfig] = None):
        super().__init__()
        cfg = config or UTMOSConfig()
        self.config = cfg
        self.wav2vec2 = _SSLModel(cfg)
        # one learned condition each (the release keeps a single row): fixed, not trained further
        self.domain_emb = nn.Parameter(torch.zeros(1, cfg.domain_dim), requires_grad=False)
        self.judge_emb = nn.Parameter(torch.zeros(1, cfg.judge_dim), requires_grad=False)
        self.blstm = nn.LSTM(cfg.dim + cfg.domain_dim + cfg.judge_dim, cfg.rnn_hidden, batch_first=True,
                             bidirectional=True)
        self.projection = nn.Sequential(nn.Linear(2 * cfg.rnn_hidden, cfg.proj_hidden), nn.ReLU(),
                                        nn.Linear(cfg.proj_hidden, 1))
        self.eval()

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        feats = self.wav2vec2(wave)
        b, n, _ = feats.shape
        cond = torch.cat([self.domain_emb, self.judge_emb], dim=1)[:, None, :].expand(b, n, -1)
        h, _ = self.blstm(torch.cat([feats, cond.to(feats.dtype)], dim=2))
        frame_scores = self.projection(h)[..., 0]  # [B, frames]
        return frame_scores.mean(dim=1) * 2 + 3  # the reference's mapping of the mean to the MOS scale


# ------------------------------------------------------------------------------------------------ loading

_MODEL_CACHE: Dict[tuple, UTMOS22Strong] = {}


def _unavailable(where: str) -> MetricUnavailable:
    return MetricUnavailable("utmos", f"the weights file {UTMOS_FILENAME!r} ({UTMOS_URL})", where)


def utmos_weights_path(weights: Union[str, Path, None] = None) -> Path:
    """The weights file to use: ``weights``, else ``$TOKENZOO_UTMOS_WEIGHTS``, else the default cache path.

    Raises :class:`MetricUnavailable` naming the file, its URL and where to put it when that file does not exist.
    """
    hint = (f"download it and put it at {default_utmos_path()}, or set {UTMOS_ENV_VAR} to its path, "
            f"or pass weights=PATH")
    if weights is not None:
        if not isinstance(weights, (str, Path)):
            raise TypeError(f"weights must be a path, a UTMOS22Strong or None, got {type(weights).__name__}")
        path = Path(weights).expanduser()
        if not path.is_file():
            raise _unavailable(f"no such file: {path}; {hint}")
        return path
    env = os.environ.get(UTMOS_ENV_VAR, "")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise _unavailable(f"{UTMOS_ENV_VAR}={env} is not a file; {hint}")
        return path
    path = default_utmos_path()
    if not path.is_file():
        raise _unavailable(f"not found at {path}; {hint}")
    return path


def utmos_weights_ident(weights=None) -> str:
    """A short identity of the weights ``utmos`` would use (file path, size, mtime; a module's id; or
    ``"missing"``), for result caches that must not reuse a score computed without, or with other, weights."""
    if isinstance(weights, UTMOS22Strong):
        return f"module:{id(weights)}"
    try:
        path = utmos_weights_path(weights)
    except MetricUnavailable:
        return "missing"
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def read_utmos_state(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """The state dict in ``path``, read with ``weights_only=True``; a ``{"state_dict": ...}`` or
    ``{"model": ...}`` wrapper is unwrapped. Raises ``ValueError`` for a file that holds anything else."""
    path = Path(path)
    try:
        # mmap (zip-format files only) avoids reading ~400 MB up front; load_state_dict copies the tensors anyway
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # UnpicklingError for pickled code, RuntimeError/EOFError for a damaged file
        raise ValueError(f"cannot read {path} as a UTMOS state dict with torch.load(weights_only=True) "
                         f"(pickled code is never run): {type(exc).__name__}: {exc}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a state dict (name -> tensor)")
    bad = sorted(str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor))
    if bad:
        raise ValueError(f"{path} is not a state dict: entries that are not tensors: {bad[:10]}")
    return obj


def load_utmos(weights: Union[str, Path, None] = None, device: Union[str, torch.device, None] = None,
               config: Optional[UTMOSConfig] = None) -> UTMOS22Strong:
    """The UTMOS22 strong model with the weights in ``weights`` (resolved by :func:`utmos_weights_path`), loaded
    strictly (every missing, unexpected or mis-shaped key is named), in eval mode. Cached (the last one only)."""
    from ..registry import load_state_strict

    path = utmos_weights_path(weights)
    dev = torch.device(device if device is not None else "cpu")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, str(dev), config)
    model = _MODEL_CACHE.get(key)
    if model is None:
        _MODEL_CACHE.clear()  # one ~400 MB model at a time
        state = read_utmos_state(path)
        model = UTMOS22Strong(config)
        load_state_strict(model, state, source=str(path))
        model = model.to(dev).eval()
        _MODEL_CACHE[key] = model
    return model


# ------------------------------------------------------------------------------------------------ the metric

def _mono_batch(audio) -> torch.Tensor:
    if isinstance(audio, torch.Tensor) and audio.ndim == 1:
        audio = audio[None]
    if isinstance(audio, torch.Tensor) and audio.ndim == 3 and audio.shape[1] == 1:
        audio = audio[:, 0]
    return check_tensor("audio", audio, ndim=(2,), floating=True, shape_hint="[B, T] or [T] mono waveforms")


def utmos(audio, sample_rate, weights: Union[str, Path, UTMOS22Strong, None] = None, *,
          device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """UTMOS22 strong predicted naturalness MOS (about 1-5, higher is better) per item: ``[B]`` float64 on the CPU.

    ``audio`` is ``[B, T]``, ``[T]`` or ``[B, 1, T]`` float at ``sample_rate`` Hz; see the module docstring for the
    convention and for how ``weights`` is found. ``device`` runs the network there (default: the CPU, or the
    device of a given model).
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or not sample_rate > 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate!r}")
    x = _mono_batch(audio).detach()
    if isinstance(weights, UTMOS22Strong):
        model = weights
        if device is not None:
            model = model.to(device)
    else:
        model = load_utmos(weights, device)
    from ..signal import resample

    x = resample(x.to("cpu", torch.float32), sample_rate, UTMOS_SAMPLE_RATE)
    need = model.config.min_samples
    if x.shape[-1] < need:
        raise ValueError(f"audio is too short for UTMOS: {x.shape[-1]} samples at 16 kHz after resampling, "
                         f"need at least {need} ({need / UTMOS_SAMPLE_RATE * 1000:.0f} ms)")
    dev = next(model.parameters()).device
    with torch.inference_mode():
        score = model(x.to(dev))
    return score.detach().to("cpu", torch.float64)
