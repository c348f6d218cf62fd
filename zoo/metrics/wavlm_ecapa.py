"""Speaker similarity with WavLM-Large + ECAPA-TDNN, the speaker-verification model most codec papers report.

What it is
----------
The model is the one of microsoft/UniSpeech ``downstreams/speaker_verification`` built for ``wavlm_large``
(``ECAPA_TDNN_SMALL(feat_dim=1024, feat_type='wavlm_large')``): a WavLM-Large encoder (Chen et al. 2022; 7-layer
conv feature extractor with layer norms, convolutional positional embedding, 24 pre-norm Transformer layers with a
gated, bucketed relative position bias) whose 25 hidden states (the input of each of the 24 layers and the final
layer-normed output) are mixed by a softmax over 25 learned ``feature_weight`` values, instance-normalised over
time, and fed to an ECAPA-TDNN head (512 channels, three SE-Res2 blocks with dilations 2/3/4 and scale 8, a
1536-channel aggregation, attentive statistics pooling, batch norm and a linear layer to a 256-d embedding).
This module is our own plain-torch implementation of that model, written from the original code's structure.
Checked against the original code (UniSpeech ``ecapa_tdnn.py`` around s3prl's WavLM) with random weights in the
full 24-layer Large configuration on a 4 s speech clip: embeddings agree to 1.2e-7 (max abs, norm about 1.8), the
weighted, instance-normed hidden states to 1.4e-5; the test suite keeps a tiny-upstream anchor from that code.

Conventions
-----------
``wavlm_ecapa_embedding(audio, sample_rate, weights=None)`` takes mono waveforms ``[B, T]`` (or ``[T]`` /
``[B, 1, T]``), any float dtype and scale, resamples them to 16 kHz with :func:`zoo.signal.resample` (torchaudio's
windowed-sinc filter, the same as the ``torchaudio.transforms.Resample`` the original ``verification.py`` uses),
and returns ``[B, 256]`` float64 embeddings on the CPU. Each item is normalised to zero mean and unit variance over
its whole length first (WavLM-Large was pre-trained with ``normalize=True``; the s3prl WavLM wrapper the original
code loads applies ``layer_norm`` over the waveform), so the input's gain does not matter. The network runs in
float32 on the input's device, one forward for the whole batch (all items have the same length, so no padding).
Items must be at least 400 samples (25 ms) long at 16 kHz: one frame of the conv feature extractor.

``speaker_similarity_wavlm(ref, est, sample_rate, weights=None)`` is the cosine similarity of the two embeddings
of each pair, ``[B]`` float64 in ``[-1, 1]`` (1 = same voice; higher is better), as ``F.cosine_similarity`` in
the original ``verification.py``. Papers usually report the mean over a test set ("SIM" / "SIM-o").

Weights
-------
One file: ``wavlm_large_finetune.pth``, the "WavLM large, Fix pre-train: No" row of the table in
https://github.com/microsoft/UniSpeech/tree/main/downstreams/speaker_verification (a Google Drive link; about
1.3 GB). Put it at ``~/.cache/tokenzoo/metrics/wavlm_large_finetune.pth``, or point the environment variable
``TOKENZOO_WAVLM_ECAPA_WEIGHTS`` (or the ``weights=`` argument) at it. The original code saves
``{"model": ECAPA_TDNN.state_dict(), ...}`` and loads ``state["model"]``; since the s3prl WavLM wrapper is the
``feature_extract`` submodule of that model, the fine-tuned file holds the whole network: 488 upstream tensors under
``feature_extract.model.*``, ``feature_weight`` and 221 head tensors (710 in all), plus
``loss_calculator.projection.weight``, the AAM-softmax classifier used only in training, which is dropped here.
The WavLM-Large pre-trained file (``WavLM-Large.pt``, microsoft/unilm WavLM release) is therefore **not** needed:
the original code only reads it to build the network and its config, whose values are fixed here
(:class:`WavLMECAPAConfig`, defaults = WavLM-Large). Every other key must match exactly (missing, unexpected and
mis-shaped keys are named). The file is read with ``torch.load(weights_only=True)``; if it holds numpy scalars
(e.g. a saved score), only numpy's scalar/dtype reconstructors are admitted in addition; nothing else (no
pickled code or arbitrary classes) is ever unpickled. A flat state dict with the same keys (no ``"model"``
wrapper) is accepted too. Loaded models are cached per file and device.

The key names, shapes and the file's layout above come from the original code (UniSpeech ``ecapa_tdnn.py`` /
``verification.py``, s3prl ``upstream/wavlm/expert.py`` at the commit the UniSpeech README pins, unilm
``wavlm/WavLM.py``); the real file was not available when this was written, so its exact contents (the 710 + 1
keys) are taken from that code and from third-party reports, not checked on the file itself.
"""

from __future__ import annotations

import math
import os
import pickle
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..validation import check_tensor
from .base import MetricUnavailable

METRIC = "speaker_sim_wavlm"
SAMPLE_RATE = 16000  # WavLM and the UniSpeech SV model work at 16 kHz (verification.py resamples to it)
WEIGHTS_FILE = "wavlm_large_finetune.pth"
WEIGHTS_ENV = "TOKENZOO_WAVLM_ECAPA_WEIGHTS"
WEIGHTS_SOURCE = ("the 'WavLM large' row with 'Fix pre-train: No' (Google Drive link) in the README of "
                  "https://github.com/microsoft/UniSpeech/tree/main/downstreams/speaker_verification")
# training-only keys of the released file: the AAM-softmax speaker classifier
TRAINING_ONLY_PREFIXES = ("loss_calculator.",)
_MIN_SAMPLES = 400  # receptive field of the conv feature extractor at 16 kHz (kernel 10 stride 5, then 6 more)


def default_weights_path() -> Path:
    """``$TOKENZOO_WAVLM_ECAPA_WEIGHTS`` if set, else ``~/.cache/tokenzoo/metrics/wavlm_large_finetune.pth``."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "tokenzoo" / "metrics" / WEIGHTS_FILE


# ------------------------------------------------------------------------------------------------- config

@dataclass(frozen=True)
class WavLMECAPAConfig:
    """Hyperparameters; the defaults are WavLM-Large (the ``cfg`` of ``WavLM-Large.pt``) + ECAPA_TDNN_SMALL."""

    # WavLM feature extractor: (channels, kernel, stride) per conv layer, no conv bias, layer norm in every block
    conv_layers: Tuple[Tuple[int, int, int], ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
    conv_bias: bool = False
    # WavLM Transformer encoder (Large: 1024 wide, 4096 FFN, 16 heads, 24 layers, pre-norm)
    embed_dim: int = 1024
    ffn_dim: int = 4096
    num_heads: int = 16
    num_layers: int = 24
    layer_norm_first: bool = True
    conv_pos: int = 128  # kernel of the convolutional positional embedding
    conv_pos_groups: int = 16
    num_buckets: int = 320  # relative position buckets (shared bias table in layer 0)
    max_distance: int = 800  # WavLM-Large / Base+ use 800 (the WavLMConfig class default of 1280 is overridden)
    normalize: bool = True  # zero-mean unit-variance waveform before the network (Large was trained this way)
    # ECAPA-TDNN head as ECAPA_TDNN_SMALL builds it
    channels: int = 512
    emb_dim: int = 256
    agg_channels: int = 1536  # the head's aggregation conv width (hard-coded in the original)
    res2_scale: int = 8
    se_bottleneck: int = 128
    attention_channels: int = 128

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("int",) and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{f.name} must be a positive int, got {v!r}")
        if not self.conv_layers or any(len(c) != 3 for c in self.conv_layers):
            raise ValueError(f"conv_layers must be (channels, kernel, stride) triples, got {self.conv_layers!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.embed_dim % self.conv_pos_groups:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by conv_pos_groups {self.conv_pos_groups}")
        if self.channels % self.res2_scale:
            raise ValueError(f"channels {self.channels} is not divisible by res2_scale {self.res2_scale}")
        if self.num_buckets < 4 or self.max_distance <= self.num_buckets // 4:
            raise ValueError("num_buckets must be >= 4 and max_distance > num_buckets // 4")

    @property
    def num_hidden_states(self) -> int:
        return self.num_layers + 1


# ------------------------------------------------------------------------------------------------- WavLM

class _ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of ``[B, C, T]``; the norm is child ``"1"`` as in the release's key names."""

    def __init__(self, dim: int):
        super().__init__()
        self.add_module("1", nn.LayerNorm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, "1")(x.transpose(1, 2)).transpose(1, 2)


class ConvFeatureExtractor(nn.Module):
    """Waveform ``[B, T]`` -> ``[B, C, frames]``: each block is conv -> (dropout) -> channel LayerNorm -> GELU.

    Children of block ``i`` are ``0`` (conv), ``1`` (dropout, no weights), ``2`` (norm), ``3`` (GELU), matching
    the release's ``feature_extractor.conv_layers.{i}.0.weight`` / ``.2.1.weight`` keys.
    """

    def __init__(self, cfg: WavLMECAPAConfig):
        super().__init__()
        blocks, c_in = [], 1
        for c_out, k, s in cfg.conv_layers:
            blocks.append(nn.Sequential(nn.Conv1d(c_in, c_out, k, stride=s, bias=cfg.conv_bias), nn.Dropout(0.0),
                                        _ChannelLayerNorm(c_out), nn.GELU()))
            c_in = c_out
        self.conv_layers = nn.ModuleList(blocks)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav[:, None]
        for block in self.conv_layers:
            x = block(x)
        return x


class WeightNormConv1d(nn.Module):
    """Grouped conv whose weight is ``weight_g * weight_v / ||weight_v||`` with the norm taken over all axes but
    the kernel axis (``torch.nn.utils.weight_norm(..., dim=2)``), stored as ``weight_g``/``weight_v``/``bias``."""

    def __init__(self, channels: int, kernel: int, groups: int):
        super().__init__()
        self.padding, self.groups = kernel // 2, groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.randn(channels, channels // groups, kernel) * 0.02)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.weight_v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
        weight = self.weight_v * (self.weight_g / norm)
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


def relative_position_buckets(length: int, num_buckets: int, max_distance: int,
                              device=None) -> torch.Tensor:
    """``[length, length]`` bucket ids of key position minus query position (T5-style, bidirectional).

    Half the buckets hold positive offsets; in each half the first quarter of ``num_buckets`` are exact distances,
    the rest grow logarithmically up to ``max_distance`` and saturate at the last bucket.
    """
    pos = torch.arange(length, dtype=torch.long, device=device)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    exact = half // 2
    out = (rel > 0).long() * half
    dist = rel.abs()
    # float32 as in the original, so bucket boundaries fall where they fall there; clamp avoids log(0)
    far = exact + (torch.log(dist.clamp(min=1).float() / exact) / math.log(max_distance / exact)
                   * (half - exact)).long()
    far = far.clamp(max=half - 1)
    return out + torch.where(dist < exact, dist, far)


class GatedRelPosSelfAttention(nn.Module):
    """Multi-head self-attention plus a relative position bias scaled by a per-head, per-query gate.

    The bias ``[H, T, T]`` comes from a bucket embedding that only layer 0 owns and passes on. The gate of head
    ``h`` at query ``t`` is computed from that head's slice of the attention *input*: ``grep_linear`` (head_dim
    -> 8) summed in two groups of 4 and squashed, ``a, b``; gate = ``a * (b * grep_a[h] - 1) + 2``.
    """

    def __init__(self, cfg: WavLMECAPAConfig, has_bias_table: bool):
        super().__init__()
        d, h = cfg.embed_dim, cfg.num_heads
        self.num_heads, self.head_dim = h, d // h
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.grep_linear = nn.Linear(self.head_dim, 8)
        self.grep_a = nn.Parameter(torch.ones(1, h, 1, 1))
        if has_bias_table:
            self.relative_attention_bias = nn.Embedding(cfg.num_buckets, h)

    def position_bias(self, length: int) -> torch.Tensor:
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance,
                                            device=self.relative_attention_bias.weight.device)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)  # [H, T, T]

    def forward(self, x: torch.Tensor, bias: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        if bias is None:
            bias = self.position_bias(t)
        heads = x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, T, dh]
        gate_a, gate_b = torch.sigmoid(self.grep_linear(heads).view(b, self.num_heads, t, 2, 4).sum(-1)).chunk(2, -1)
        gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0  # [B, H, T, 1]
        q, k, v = (proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=gate * bias[None])  # scale 1/sqrt(head_dim)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d)), bias


class EncoderLayer(nn.Module):
    """Transformer layer (GELU FFN); pre-norm when ``layer_norm_first`` (WavLM-Large), post-norm otherwise."""

    def __init__(self, cfg: WavLMECAPAConfig, has_bias_table: bool):
        super().__init__()
        self.layer_norm_first = cfg.layer_norm_first
        self.self_attn = GatedRelPosSelfAttention(cfg, has_bias_table)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        self.final_layer_norm = nn.LayerNorm(cfg.embed_dim)

    def forward(self, x: torch.Tensor, bias: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.layer_norm_first:
            a, bias = self.self_attn(self.self_attn_layer_norm(x), bias)
            x = x + a
            return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x)))), bias
        a, bias = self.self_attn(x, bias)
        x = self.self_attn_layer_norm(x + a)
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x)))), bias


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: WavLMECAPAConfig):
        super().__init__()
        self.layer_norm_first = cfg.layer_norm_first
        self.pos_conv = nn.ModuleList([WeightNormConv1d(cfg.embed_dim, cfg.conv_pos, cfg.conv_pos_groups)])
        self.trim = 1 if cfg.conv_pos % 2 == 0 else 0  # an even kernel with padding k//2 gives one extra frame
        self.layers = nn.ModuleList([EncoderLayer(cfg, has_bias_table=(i == 0)) for i in range(cfg.num_layers)])
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``[B, T, D]`` -> the ``num_layers + 1`` hidden states the s3prl wrapper reports: the input of every
        layer, then the encoder's output (layer-normed when pre-norm)."""
        pos = self.pos_conv[0](x.transpose(1, 2))
        if self.trim:
            pos = pos[..., :-self.trim]
        x = x + F.gelu(pos).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        states, bias = [], None
        for layer in self.layers:
            states.append(x)
            x, bias = layer(x, bias)
        states.append(self.layer_norm(x) if self.layer_norm_first else x)
        return states


class WavLM(nn.Module):
    """WavLM (inference path, no masking): waveform ``[B, T]`` at 16 kHz -> list of ``[B, frames, D]``."""

    def __init__(self, cfg: WavLMECAPAConfig):
        super().__init__()
        conv_dim = cfg.conv_layers[-1][0]
        self.feature_extractor = ConvFeatureExtractor(cfg)
        self.layer_norm = nn.LayerNorm(conv_dim)
        self.post_extract_proj = nn.Linear(conv_dim, cfg.embed_dim) if conv_dim != cfg.embed_dim else None
        self.mask_emb = nn.Parameter(torch.zeros(cfg.embed_dim))  # pre-training only; kept for the key set
        self.encoder = TransformerEncoder(cfg)

    def forward(self, wav: torch.Tensor) -> List[torch.Tensor]:
        x = self.layer_norm(self.feature_extractor(wav).transpose(1, 2))
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return self.encoder(x)


class _Upstream(nn.Module):
    """Holds WavLM as ``model``, so keys read ``feature_extract.model.*`` like the s3prl wrapper's."""

    def __init__(self, cfg: WavLMECAPAConfig):
        super().__init__()
        self.model = WavLM(cfg)


# ------------------------------------------------------------------------------------------------- ECAPA head

class Conv1dReluBn(nn.Module):
    """conv -> ReLU -> batch norm (this order, as in the original head)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, padding: int = 0, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=padding, dilation=dilation)
        self.bn = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class Res2Conv1dReluBn(nn.Module):
    """Res2Net block: ``scale`` channel groups; groups 0..scale-2 pass through conv/ReLU/BN, each fed the sum of
    its own group and the previous group's output; the last group is passed through unchanged."""

    def __init__(self, channels: int, kernel: int, padding: int, dilation: int, scale: int):
        super().__init__()
        self.width = channels // scale
        n = scale - 1 if scale > 1 else 1
        self.convs = nn.ModuleList([nn.Conv1d(self.width, self.width, kernel, padding=padding, dilation=dilation)
                                    for _ in range(n)])
        self.bns = nn.ModuleList([nn.BatchNorm1d(self.width) for _ in range(n)])
        self.passthrough = scale > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.width, dim=1)
        outs, prev = [], None
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            prev = parts[i] if prev is None else prev + parts[i]
            prev = bn(F.relu(conv(prev)))
            outs.append(prev)
        if self.passthrough:
            outs.append(parts[len(self.convs)])
        return torch.cat(outs, dim=1)


class SE_Connect(nn.Module):  # noqa: N801 - the release's key names
    """Squeeze-excitation over channels from the time mean."""

    def __init__(self, channels: int, bottleneck: int):
        super().__init__()
        self.linear1 = nn.Linear(channels, bottleneck)
        self.linear2 = nn.Linear(bottleneck, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(dim=2)))))
        return x * s[:, :, None]


class SE_Res2Block(nn.Module):  # noqa: N801 - the release's key names
    """1x1 conv block -> dilated Res2 block -> 1x1 conv block -> SE, plus the input (same width: no shortcut conv)."""

    def __init__(self, channels: int, dilation: int, cfg: WavLMECAPAConfig):
        super().__init__()
        self.Conv1dReluBn1 = Conv1dReluBn(channels, channels)
        self.Res2Conv1dReluBn = Res2Conv1dReluBn(channels, 3, dilation, dilation, cfg.res2_scale)
        self.Conv1dReluBn2 = Conv1dReluBn(channels, channels)
        self.SE_Connect = SE_Connect(channels, cfg.se_bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.SE_Connect(self.Conv1dReluBn2(self.Res2Conv1dReluBn(self.Conv1dReluBn1(x))))


class AttentiveStatsPool(nn.Module):
    """Per-channel softmax attention over time (tanh hidden layer), then weighted mean and std, concatenated."""

    def __init__(self, dim: int, attention_channels: int):
        super().__init__()
        self.linear1 = nn.Conv1d(dim, attention_channels, 1)
        self.linear2 = nn.Conv1d(attention_channels, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.softmax(self.linear2(torch.tanh(self.linear1(x))), dim=2)
        mean = (alpha * x).sum(dim=2)
        var = (alpha * x * x).sum(dim=2) - mean * mean
        return torch.cat([mean, var.clamp(min=1e-9).sqrt()], dim=1)


class WavLMECAPA(nn.Module):
    """WavLM + layer-weighted ECAPA-TDNN speaker embedder; 16 kHz waveform ``[B, T]`` -> ``[B, emb_dim]``.

    Parameter names are those of the UniSpeech ``ECAPA_TDNN`` state dict (``feature_extract.model.*``,
    ``feature_weight``, ``layer1`` ... ``linear``).
    """

    def __init__(self, cfg: Optional[WavLMECAPAConfig] = None):
        super().__init__()
        cfg = WavLMECAPAConfig() if cfg is None else cfg
        if not isinstance(cfg, WavLMECAPAConfig):
            raise TypeError(f"cfg must be a WavLMECAPAConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        c = cfg.channels
        self.feature_extract = _Upstream(cfg)
        self.feature_weight = nn.Parameter(torch.zeros(cfg.num_hidden_states))
        self.instance_norm = nn.InstanceNorm1d(cfg.embed_dim)  # no affine, no running stats: no weights
        self.layer1 = Conv1dReluBn(cfg.embed_dim, c, kernel=5, padding=2)
        self.layer2 = SE_Res2Block(c, 2, cfg)
        self.layer3 = SE_Res2Block(c, 3, cfg)
        self.layer4 = SE_Res2Block(c, 4, cfg)
        self.conv = nn.Conv1d(3 * c, cfg.agg_channels, 1)
        self.pooling = AttentiveStatsPool(cfg.agg_channels, cfg.attention_channels)
        self.bn = nn.BatchNorm1d(2 * cfg.agg_channels)
        self.linear = nn.Linear(2 * cfg.agg_channels, cfg.emb_dim)

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> ``[B, D, frames]``: softmax-weighted sum of the hidden states, instance-normalised."""
        if self.cfg.normalize:
            wav = F.layer_norm(wav, wav.shape[-1:])
        states = torch.stack(self.feature_extract.model(wav), dim=0)  # [L+1, B, T, D]
        w = torch.softmax(self.feature_weight, dim=-1)
        x = (w[:, None, None, None] * states).sum(dim=0).transpose(1, 2) + 1e-6  # the original adds 1e-6 here
        return self.instance_norm(x)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = self.features(wav)
        out2 = self.layer2(self.layer1(x))
        out3 = self.layer3(out2)
        out4 = self.layer4(out3)
        out = F.relu(self.conv(torch.cat([out2, out3, out4], dim=1)))
        return self.linear(self.bn(self.pooling(out)))


# ------------------------------------------------------------------------------------------------- loading

def _numpy_safe_globals() -> list:
    """numpy's scalar and dtype reconstructors: the only extra classes admitted when a file stores numpy scalars."""
    import numpy as np

    out = [np.dtype]
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            out.append(getattr(__import__(mod, fromlist=["scalar"]), "scalar"))
            break
        except (ImportError, AttributeError):
            continue
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType", "Int32DType",
                                             "BoolDType") if hasattr(dtypes, n)]
    return out


def _read_checkpoint(path: Path):
    mmap = zipfile.is_zipfile(path)  # memory-map the 1.3 GB file where the format allows
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as first:
        try:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError:
            raise ValueError(f"{path} holds pickled objects that are not plain tensors/containers; tokenzoo "
                             f"never unpickles code (torch.load(weights_only=True) said: {first})") from None
    except Exception as exc:  # a damaged or non-torch file
        raise ValueError(f"cannot read {path} with torch.load(weights_only=True): {type(exc).__name__}: {exc}") \
            from exc


def extract_state_dict(ckpt, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The network's tensors from a loaded file: ``ckpt["model"]`` (the release's layout) or a flat state dict;
    training-only keys (``loss_calculator.*``) are dropped, floating tensors cast to float32."""
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{source}: expected a dict with a 'model' state dict (or a flat state dict), "
                         f"got {type(ckpt).__name__}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{source}: the state dict has non-tensor entries {bad[:5]}")
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()
            if not k.startswith(TRAINING_ONLY_PREFIXES)}


def load_wavlm_ecapa(path, cfg: Optional[WavLMECAPAConfig] = None) -> WavLMECAPA:
    """Build :class:`WavLMECAPA` (``cfg``, default WavLM-Large) from ``path`` with a strict key check, in eval mode.

    Raises ``ValueError`` naming missing, unexpected and mis-shaped keys, or refusing a file with pickled code.
    """
    from ..registry import state_mismatches

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such weights file: {path}")
    state = extract_state_dict(_read_checkpoint(path), str(path))
    with torch.device("meta"):
        model = WavLMECAPA(cfg)
    parts = state_mismatches(model.state_dict(), state)
    if parts:
        raise ValueError(f"{path} does not match WavLMECAPA: " + "; ".join(parts))
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def wavlm_ecapa_weights_ident(weights=None) -> str:
    """A short identity of the weights the metric would use (file path, size, mtime; a module's id; or
    ``"missing"``), for result caches that must not reuse a value computed without, or with other, weights."""
    if isinstance(weights, WavLMECAPA):
        return f"module:{id(weights)}"
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        return "invalid"
    path = Path(weights).expanduser() if weights is not None else default_weights_path()
    if not path.is_file():
        return "missing"
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


_CACHE: Dict[tuple, WavLMECAPA] = {}


def _resolve_model(weights, device: torch.device) -> WavLMECAPA:
    if isinstance(weights, WavLMECAPA):
        return weights.to(device).eval()
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be None, a path or a WavLMECAPA, got {type(weights).__name__}")
    path = Path(weights).expanduser() if weights is not None else default_weights_path()
    if not path.is_file():
        raise MetricUnavailable(
            METRIC, f"the weights file {WEIGHTS_FILE!r} (WavLM-Large + ECAPA-TDNN fine-tuned for speaker "
            "verification, microsoft/UniSpeech)",
            f"looked for {path}; get it from {WEIGHTS_SOURCE} and put it at "
            f"~/.cache/tokenzoo/metrics/{WEIGHTS_FILE}, or set {WEIGHTS_ENV} / pass weights= to its path")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    dev_key = key + (str(device),)
    if dev_key not in _CACHE:
        cpu = _CACHE.get(key + ("cpu",))
        if cpu is None:
            for k in [k for k in _CACHE if k[0] == key[0]]:  # a changed file replaces its older versions
                del _CACHE[k]
            cpu = _CACHE[key + ("cpu",)] = load_wavlm_ecapa(path)
        if dev_key not in _CACHE:
            import copy

            _CACHE[dev_key] = copy.deepcopy(cpu).to(device)
    return _CACHE[dev_key]


# ------------------------------------------------------------------------------------------------- metrics

def _check_rate(sample_rate) -> float:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or not sample_rate > 0 \
            or not math.isfinite(sample_rate):
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate!r}")
    return float(sample_rate)


def _mono(name: str, audio) -> torch.Tensor:
    if isinstance(audio, torch.Tensor) and audio.ndim == 1:
        audio = audio[None]
    if isinstance(audio, torch.Tensor) and audio.ndim == 3:
        if audio.shape[1] != 1:
            raise ValueError(f"{name} must be mono: [B, T], [T] or [B, 1, T], got shape {tuple(audio.shape)}")
        audio = audio[:, 0]
    return check_tensor(name, audio, ndim=(2,), floating=True, shape_hint="[B, T] mono waveforms, [T] or [B, 1, T]")


def _prepare(name: str, audio, sample_rate) -> torch.Tensor:
    sr = _check_rate(sample_rate)
    x = _mono(name, audio).detach()
    from ..signal import resample

    x = resample(x.float(), sr, SAMPLE_RATE).float()
    if x.shape[-1] < _MIN_SAMPLES:
        raise ValueError(f"{name} is too short: {x.shape[-1]} samples at 16 kHz, the model needs at least "
                         f"{_MIN_SAMPLES} (25 ms)")
    return x


def _embed(x: torch.Tensor, weights) -> torch.Tensor:
    model = _resolve_model(weights, x.device)
    with torch.inference_mode():
        return model(x).double().cpu()


def wavlm_ecapa_embedding(audio, sample_rate, weights=None) -> torch.Tensor:
    """``[B, 256]`` float64 WavLM-Large + ECAPA-TDNN speaker embeddings (not normalised), one per item.

    ``weights``: ``None`` (env var / cache, see the module docstring), a path, or a :class:`WavLMECAPA` (used as
    is: moved to the input's device and put in eval mode).
    Raises :class:`MetricUnavailable` naming the file when it is missing.
    """
    return _embed(_prepare("audio", audio, sample_rate), weights)


def speaker_similarity_wavlm(ref, est, sample_rate, weights=None) -> torch.Tensor:
    """``[B]`` float64 cosine similarity of the WavLM-ECAPA embeddings of each reference/estimate pair."""
    r = _prepare("reference", ref, sample_rate)
    e = _prepare("estimate", est, sample_rate)
    if r.shape[0] != e.shape[0]:
        raise ValueError(f"reference and estimate must hold the same number of items, got {r.shape[0]} and "
                         f"{e.shape[0]}")
    if r.shape[-1] == e.shape[-1]:
        emb = _embed(torch.cat([r, e.to(r.device)]), weights)
        a, b = emb[: r.shape[0]], emb[r.shape[0]:]
    else:  # lengths may differ (a codec's output can be a few samples longer): embed separately
        a, b = _embed(r, weights), _embed(e, weights)
    return F.cosine_similarity(a, b, dim=-1, eps=1e-8).clamp(-1.0, 1.0)
