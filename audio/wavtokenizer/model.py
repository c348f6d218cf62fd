"""WavTokenizer: 24 kHz mono audio <-> one stream of tokens from a single 4096-entry codebook.

``wav [B, T] -> SEANet encoder (convs + LSTM) -> latent [B, D, N] -> VQ ids [B, 1, N]`` with
``N = ceil(T / hop)``; ``ids -> codebook rows [B, D, N] -> Vocos backbone (pos_net with GroupNorm over time and
full attention, ConvNeXt blocks with adaptive LayerNorm selected by bandwidth_id) -> ISTFT head -> [B, 1, N * hop]``.

Batching: the backbone's GroupNorm and attention, and the encoder's reflect padding at the end of an item, make an
item's result depend on everything in it, so a padded batch is not equivalent to separate items. Every item is
therefore run on its own (its own valid length), which makes a batch give exactly what one-at-a-time calls give.

Long inputs: ``chunk_seconds=`` encodes / decodes in windows of that length, each with ``context_seconds`` of
real signal (or tokens) on both sides that is computed and discarded, so memory is bounded by the window size.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from audio.vocos import ISTFTHead, VocosBackbone, as_condition_id
from zoo.quantizers import VQ, VQConfig
from zoo.registry import register_family
from zoo.tokenizer import AudioTokenizer, TokenizerSpec, as_tokens
from zoo.tokens import Tokens
from zoo.validation import check_ids, check_tensor

from .config import WavTokenizerConfig

__all__ = ["WavTokenizer", "SEANetEncoder", "SConv1d", "SEANetResnetBlock", "SLSTM"]


# ---------------------------------------------------------------------------------------------- SEANet encoder

def _extra_right_padding(length: int, kernel: int, stride: int, total: int) -> int:
    """Samples of extra right padding so that the last conv window is complete (EnCodec's rule).

    frames = ceil((L - k + total) / stride) + 1; the padded input must hold (frames - 1) * stride + k - total
    samples besides the ``total`` symmetric padding.
    """
    num = length - kernel + total
    frames = -((-num) // stride) + 1
    ideal = (frames - 1) * stride + (kernel - total)
    return ideal - length


def _pad_reflect(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect padding that also works when the input is not longer than the padding (EnCodec's ``pad1d``):
    zero-extend on the right first, reflect, then drop the extension."""
    length = x.shape[-1]
    extension = 0
    if length <= max(left, right):
        extension = max(left, right) - length + 1
        x = F.pad(x, (0, extension))
    y = F.pad(x, (left, right), mode="reflect")
    return y[..., :y.shape[-1] - extension] if extension else y


class SConv1d(nn.Module):
    """Weight-normed Conv1d with EnCodec's non-causal "same" padding: ``k_eff - stride`` samples of reflect
    padding split ``left = total - total // 2``, ``right = total // 2``, plus extra right padding to fill the
    last window, so the output has ``ceil(L / stride)`` frames.

    The weight norm is a ``torch.nn.utils.parametrizations.weight_norm`` over dim 0 (``g`` =
    ``conv.parametrizations.weight.original0``, ``v`` = ``...original1``), the same computation as the original's
    ``weight_g``/``weight_v`` hook.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = parametrizations.weight_norm(
            nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation), name="weight", dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = (self.conv.kernel_size[0] - 1) * self.conv.dilation[0] + 1
        stride = self.conv.stride[0]
        total = k - stride
        extra = _extra_right_padding(x.shape[-1], k, stride, total)
        right = total // 2
        x = _pad_reflect(x, total - right, right + extra)
        return self.conv(x)


class SEANetResnetBlock(nn.Module):
    """``shortcut(x) + conv_1(ELU(conv_k(ELU(x))))`` with hidden width ``dim // compress``."""

    def __init__(self, dim: int, kernel_size: int = 3, dilation: int = 1, compress: int = 2,
                 true_skip: bool = False):
        super().__init__()
        hidden = dim // compress
        self.block = nn.Sequential(nn.ELU(alpha=1.0), SConv1d(dim, hidden, kernel_size, dilation=dilation),
                                   nn.ELU(alpha=1.0), SConv1d(hidden, dim, 1))
        self.shortcut = nn.Identity() if true_skip else SConv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class SLSTM(nn.Module):
    """Unidirectional LSTM over time on ``[B, C, T]`` with a skip connection."""

    def __init__(self, dim: int, num_layers: int = 2):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x.permute(2, 0, 1))
        return y.permute(1, 2, 0) + x


class SEANetEncoder(nn.Module):
    """EnCodec's SEANet encoder as WavTokenizer builds it: ``[B, 1, L] -> [B, dimension, ceil(L / hop)]``.

    ``model`` is a Sequential whose indices match the original state dict (ELUs occupy their own indices):
    conv(k7) -> per stage [residual blocks, ELU, strided conv(k = 2 * stride)] -> LSTM -> ELU -> conv(k7).
    """

    def __init__(self, config: WavTokenizerConfig):
        super().__init__()
        c = config
        layers: List[nn.Module] = [SConv1d(1, c.n_filters, c.kernel_size)]
        width = c.n_filters
        for stride in c.encoder_strides:
            for j in range(c.n_residual_layers):
                layers.append(SEANetResnetBlock(width, c.residual_kernel_size, c.dilation_base ** j, c.compress,
                                                c.true_skip))
            layers += [nn.ELU(alpha=1.0), SConv1d(width, width * 2, 2 * stride, stride)]
            width *= 2
        if c.lstm_layers:
            layers.append(SLSTM(width, c.lstm_layers))
        layers += [nn.ELU(alpha=1.0), SConv1d(width, c.dimension, c.last_kernel_size)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# ---------------------------------------------------------------------------------------------- tokenizer

def _check_seconds(name: str, value, allow_zero: bool = False) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} seconds, got {value}")
    return float(value)


@register_family("wavtokenizer")
class WavTokenizer(AudioTokenizer):
    """WavTokenizer (Ji et al., ICLR 2025). See the module docstring and docs/models/wavtokenizer.md.

    ``encode(wav [B, T] or [B, 1, T] at 24 kHz, lengths=None, bandwidth_id=0, chunk_seconds=None,
    context_seconds=1.0) -> Tokens`` with ids ``[B, 1, N]``, ``N = ceil(T / hop)`` (``lengths`` in tokens when
    sample ``lengths`` were given). ``decode(tokens, bandwidth_id=0, chunk_seconds=None, context_seconds=1.0)
    -> [B, 1, N * hop]`` float32 (zeros past an item's ``lengths[i] * hop``).
    """

    config_class = WavTokenizerConfig

    def __init__(self, config: WavTokenizerConfig):
        super().__init__(config)
        c = config
        self.encoder = SEANetEncoder(c)
        self.quantizer = VQ(VQConfig(dim=c.dimension, codebook_size=c.codebook_size, distance="euclidean",
                                     ema=True, decay=c.vq_decay, eps=c.vq_eps, kmeans_init=True,
                                     kmeans_iters=c.vq_kmeans_iters,
                                     threshold_ema_dead_code=c.vq_threshold_ema_dead_code,
                                     commitment_weight=c.vq_commitment_weight))
        # dropout 0.1 inside pos_net as in the original (active only in training mode)
        self.backbone = VocosBackbone(c.dimension, c.backbone_dim, c.intermediate_dim, c.num_layers,
                                      adanorm_num_embeddings=c.adanorm_num_embeddings, pos_net=True,
                                      pos_net_groups=c.pos_net_groups, dropout=0.1)
        self.head = ISTFTHead(c.backbone_dim, c.n_fft, c.hop_length, padding=c.padding)

    # ------------------------------------------------------------------ facts
    @property
    def spec(self) -> TokenizerSpec:
        return TokenizerSpec.discrete_spec("audio", self.config.codebook_size, 1, self.config.frame_rate,
                                           "tokens/s")

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def num_bandwidths(self) -> int:
        return self.config.adanorm_num_embeddings

    def _dtype(self) -> torch.dtype:
        return self.encoder.model[0].conv.bias.dtype

    # ------------------------------------------------------------------ argument checks
    def _bandwidth(self, bandwidth_id, batch: int) -> torch.Tensor:
        cond = as_condition_id(bandwidth_id, self.num_bandwidths, self.device)
        if cond.numel() not in (1, batch):
            raise ValueError(f"bandwidth_id must hold one id or one per item ({batch}), got {cond.numel()}")
        return cond

    def _chunk_frames(self, chunk_seconds, context_seconds) -> Tuple[Optional[int], int]:
        chunk = _check_seconds("chunk_seconds", chunk_seconds)
        context = _check_seconds("context_seconds", context_seconds, allow_zero=True)
        if chunk is None:
            return None, 0
        rate = self.config.frame_rate
        return max(1, round(chunk * rate)), int(round((context or 0.0) * rate))

    def check_tokens(self, tokens: Tokens) -> Tokens:
        check_ids("tokens.ids", tokens.ids, self.config.codebook_size, num_codebooks=1, codebook_axis=1,
                  ndim=(3,), shape_hint="[B, 1, N] WavTokenizer ids (one codebook)")
        return tokens

    # ------------------------------------------------------------------ encoder side
    def _latent_segment(self, x: torch.Tensor) -> torch.Tensor:
        """``x [L]`` (one item) -> pre-quantisation latent ``[D, ceil(L / hop)]``."""
        return self.encoder(x.to(self._dtype())[None, None])[0]

    def _latent_item(self, x: torch.Tensor, chunk: Optional[int], context: int) -> torch.Tensor:
        hop = self.hop_length
        length = x.shape[-1]
        if chunk is None or length <= chunk * hop:
            return self._latent_segment(x)
        parts = []
        for start in range(0, length, chunk * hop):
            a = max(0, start - context * hop)
            b = min(length, start + (chunk + context) * hop)
            z = self._latent_segment(x[a:b])
            first = (start - a) // hop
            n = -(-min(chunk * hop, length - start) // hop)
            parts.append(z[:, first:first + n])
        return torch.cat(parts, dim=1)

    def _latents(self, wav: torch.Tensor, lengths: Optional[torch.Tensor], chunk_seconds, context_seconds
                 ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        chunk, context = self._chunk_frames(chunk_seconds, context_seconds)
        n_samples = lengths if lengths is not None else torch.full((wav.shape[0],), wav.shape[-1])
        latents = [self._latent_item(wav[i, :int(n)], chunk, context) for i, n in enumerate(n_samples.tolist())]
        frames = torch.tensor([z.shape[-1] for z in latents], dtype=torch.long)
        return latents, frames

    def _encode(self, wav: torch.Tensor, lengths: Optional[torch.Tensor] = None, bandwidth_id=0,
                chunk_seconds: Optional[float] = None, context_seconds: float = 1.0) -> Tokens:
        # bandwidth_id only conditions the decoder; it is checked here so a bad value fails early
        self._bandwidth(bandwidth_id, wav.shape[0])
        latents, frames = self._latents(wav, lengths, chunk_seconds, context_seconds)
        ids = torch.zeros(wav.shape[0], 1, int(frames.max()), dtype=torch.long, device=wav.device)
        for i, z in enumerate(latents):
            ids[i, 0, :z.shape[-1]] = self.quantizer.encode(z.t().float())
        return Tokens(ids, frames if lengths is not None else None)

    def encode_latents(self, wav, lengths=None, chunk_seconds: Optional[float] = None,
                       context_seconds: float = 1.0) -> torch.Tensor:
        """Pre-quantisation latents ``[B, D, N]`` of ``wav`` (zeros past an item's own ``ceil(length / hop)``)."""
        wav, kwargs = self.prepare_input(wav, lengths=lengths)
        out_device = wav.device
        with torch.inference_mode():
            latents, frames = self._latents(wav.to(self.device), kwargs.get("lengths"), chunk_seconds,
                                            context_seconds)
            out = latents[0].new_zeros(len(latents), self.config.dimension, int(frames.max()))
            for i, z in enumerate(latents):
                out[i, :, :z.shape[-1]] = z
        return out.to(out_device)

    # ------------------------------------------------------------------ decoder side
    def codes_to_features(self, tokens) -> torch.Tensor:
        """Codebook rows of ``tokens`` (Tokens or ids ``[B, 1, N]``) -> ``[B, D, N]`` float32 (the original's
        ``codes_to_features``, the embedding a language model over these tokens would use)."""
        tokens = self.check_tokens(as_tokens(tokens))
        with torch.inference_mode():
            feats = self.quantizer.decode(tokens.ids[:, 0].to(self.device))  # [B, N, D]
        return feats.transpose(1, 2).to(tokens.device)

    def _decode_segment(self, features: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``features [D, N]`` (one item) -> waveform ``[N * hop]``."""
        return self.head(self.backbone(features[None].to(self._dtype()), cond))[0]

    def _decode_item(self, features: torch.Tensor, cond: torch.Tensor, chunk: Optional[int], context: int):
        n = features.shape[-1]
        if chunk is None or n <= chunk:
            return self._decode_segment(features, cond)
        hop = self.hop_length
        parts = []
        for start in range(0, n, chunk):
            a, b = max(0, start - context), min(n, start + chunk + context)
            y = self._decode_segment(features[:, a:b], cond)
            first = (start - a) * hop
            parts.append(y[first:first + min(chunk, n - start) * hop])
        return torch.cat(parts)

    def _decode_features(self, feats: List[torch.Tensor], bandwidth_id, chunk_seconds, context_seconds
                         ) -> torch.Tensor:
        cond = self._bandwidth(bandwidth_id, len(feats))
        chunk, context = self._chunk_frames(chunk_seconds, context_seconds)
        hop = self.hop_length
        out = torch.zeros(len(feats), 1, max(f.shape[-1] for f in feats) * hop, device=self.device)
        for i, f in enumerate(feats):
            c = cond if cond.numel() == 1 else cond[i:i + 1]
            y = self._decode_item(f, c, chunk, context)
            out[i, 0, :y.shape[-1]] = y.float()
        return out

    def _decode(self, tokens: Tokens, bandwidth_id=0, chunk_seconds: Optional[float] = None,
                context_seconds: float = 1.0) -> torch.Tensor:
        n = tokens.item_lengths().tolist()
        feats = []
        for i, ni in enumerate(n):
            if ni < 1:
                raise ValueError(f"tokens.lengths[{i}] is {ni}: every item needs at least one token")
            feats.append(self.quantizer.decode(tokens.ids[i, 0, :ni]).t())  # [D, ni]
        return self._decode_features(feats, bandwidth_id, chunk_seconds, context_seconds)

    def decode_features(self, features, bandwidth_id=0, lengths=None, chunk_seconds: Optional[float] = None,
                        context_seconds: float = 1.0) -> torch.Tensor:
        """Waveform ``[B, 1, N * hop]`` from features ``[B, D, N]`` (codebook rows or encoder latents);
        ``lengths`` (frames per item) decodes each item's valid part only."""
        features = check_tensor("features", features, ndim=(3,), floating=True,
                                shape_hint=f"[B, {self.config.dimension}, N]")
        if features.shape[1] != self.config.dimension:
            raise ValueError(f"features must have {self.config.dimension} channels ([B, D, N]), got shape "
                             f"{tuple(features.shape)}")
        if lengths is None:
            n = [features.shape[-1]] * features.shape[0]
        else:
            from zoo.validation import check_lengths
            n = check_lengths("lengths", lengths, features.shape[0], features.shape[-1]).tolist()
        out_device = features.device
        with torch.inference_mode():
            f = features.to(self.device)
            y = self._decode_features([f[i, :, :ni] for i, ni in enumerate(n)], bandwidth_id, chunk_seconds,
                                      context_seconds)
        return y.to(out_device)

    # ------------------------------------------------------------------ training
    def forward(self, wav: torch.Tensor, bandwidth_id=0, quantize: bool = True):
        """Training path on an equal-length batch: ``wav [B, 1, T]`` (or ``[B, T]``) -> ``(y_hat [B, 1, N * hop],
        QuantizerOutput)`` with the straight-through quantizer (EMA / k-means / dead-code updates in training
        mode; ``losses["commitment"]``). ``quantize=False`` bypasses the quantizer (a plain autoencoder, used to
        warm up the encoder before the codebook is initialised): the output then has no ids (``ids`` is empty),
        no losses and no stats, and the codebook is left untouched."""
        if not isinstance(wav, torch.Tensor) or wav.ndim not in (2, 3) or (wav.ndim == 3 and wav.shape[1] != 1):
            raise ValueError(f"forward expects wav [B, 1, T] or [B, T], got "
                             f"{tuple(wav.shape) if isinstance(wav, torch.Tensor) else type(wav).__name__}")
        x = wav if wav.ndim == 3 else wav[:, None]
        cond = self._bandwidth(bandwidth_id, x.shape[0])
        z = self.encoder(x.to(self._dtype())).transpose(1, 2)  # [B, N, D]
        if quantize:
            q = self.quantizer(z)
        else:
            from zoo.quantizers.base import QuantizerOutput

            q = QuantizerOutput(z, torch.zeros(0, dtype=torch.long, device=z.device), {}, None)
        y = self.head(self.backbone(q.quantized.transpose(1, 2), cond))
        return y[:, None], q

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_official(cls, *paths, **kwargs) -> "WavTokenizer":
        """The release's own files: the Lightning ``.ckpt`` and (optionally) the training YAML, any order."""
        from .convert import load_official_wavtokenizer

        return load_official_wavtokenizer(*paths, **kwargs)
