"""GAN discriminators for waveform codecs and vocoders (shared by the WavTokenizer and TaDiCodec-vocoder recipes).

Every discriminator takes a waveform ``[B, 1, T]`` (and, for the conditional ones, an optional ``cond`` id
``[B]``, e.g. WavTokenizer's bandwidth id) and returns ``(logits, features)``: one logit tensor per
sub-discriminator and, for each, the list of its intermediate feature maps (for feature matching).

Architectures (facts from the WavTokenizer / Vocos / descript-audio-codec code, see
../shared/research/wavtokenizer.md section 6.3):

- :class:`MultiPeriodDiscriminator`: periods 2, 3, 5, 7, 11; per period 2-D convs with kernel (5, 1),
  stride (3, 1) four times then (1, 1), channels 1-32-128-512-1024-1024, LeakyReLU 0.1, a (3, 1) output conv;
  weight norm; the waveform is reflect-padded to a multiple of the period and folded to ``[T / p, p]``.
- :class:`MultiResolutionDiscriminator`: magnitude STFTs (n_fft, hop) = (1024, 256), (2048, 512), (512, 128),
  rectangular window, centred; five 64-channel convs (7,5)/(2,2), (5,3)/(2,1), (5,3)/(2,2), (3,3)/(2,1),
  (3,3)/(2,2) and a (3,3) output conv.
- :class:`MultiBandSTFTDiscriminator` (DAC's multi-band complex STFT discriminator): windows 2048, 1024, 512,
  hop window/4, real and imaginary parts as two channels, frequency bins split into five bands
  (0-0.1-0.25-0.5-0.75-1); per band 32-channel convs (3,9) with strides (1,1),(1,2),(1,2),(1,2) then (3,3);
  bands concatenated along frequency before a (3,3) output conv.
- :class:`DACDiscriminator`: five period discriminators plus the three multi-band STFT ones; the input is made
  zero-mean and peak-normalised to 0.8 first.

Conditional variants add ``sum_c emb[cond]_c * h_c`` (a learned per-channel embedding of ``cond`` applied to
the last hidden map) to the logits, as WavTokenizer does for its bandwidth id.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

Output = Tuple[List[torch.Tensor], List[List[torch.Tensor]]]

_LRELU = 0.1


def _check_wave(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[1] != 1:
        raise ValueError(f"discriminators take waveforms [B, 1, T], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    return x


def _run_all(discriminators: nn.ModuleList, x: torch.Tensor, cond: Optional[torch.Tensor]) -> Output:
    """Each sub-discriminator on ``x``: (list of logits, list of feature-map lists)."""
    logits, feats = [], []
    for d in discriminators:
        l, f = d(x, cond)
        logits.append(l)
        feats.append(f)
    return logits, feats


def _check_sizes(name: str, values, allow_empty: bool = False) -> None:
    """Discriminator sizes must be a sequence of positive ints (a bare int or a float is a config mistake)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or (not allow_empty and not len(values)) \
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name} must be a {'' if allow_empty else 'non-empty '}list of positive ints, got {values!r}")


class _Conditioner(nn.Module):
    """Adds ``<emb[cond], h>`` over channels to the logits (WavTokenizer's bandwidth conditioning)."""

    def __init__(self, num_embeddings: Optional[int], channels: int):
        super().__init__()
        self.emb = nn.Embedding(num_embeddings, channels) if num_embeddings else None

    def forward(self, logits: torch.Tensor, h: torch.Tensor, cond: Optional[torch.Tensor]) -> torch.Tensor:
        if self.emb is None or cond is None:
            return logits
        e = self.emb(cond.to(h.device).long()).view(h.shape[0], h.shape[1], *([1] * (h.ndim - 2)))
        return logits + (e * h).sum(dim=1, keepdim=True)


def _conv_stack(disc: nn.Module, h: torch.Tensor, cond: Optional[torch.Tensor]):
    """``disc.convs`` with leaky ReLU, then ``disc.conv_post`` through the conditioner: (flat logits, features)."""
    feats = []
    for conv in disc.convs:
        h = F.leaky_relu(conv(h), _LRELU)
        feats.append(h)
    logits = disc.cond(disc.conv_post(h), h, cond)
    feats.append(logits)
    return logits.flatten(1), feats


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: Sequence[int] = (32, 128, 512, 1024, 1024),
                 num_embeddings: Optional[int] = None):
        super().__init__()
        self.period = int(period)
        chans = [1, *channels]
        self.convs = nn.ModuleList()
        for i in range(len(channels)):
            stride = (3, 1) if i < len(channels) - 1 else (1, 1)
            self.convs.append(weight_norm(nn.Conv2d(chans[i], chans[i + 1], (5, 1), stride, padding=(2, 0))))
        self.conv_post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), padding=(1, 0)))
        self.cond = _Conditioner(num_embeddings, chans[-1])

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor] = None):
        b, c, t = x.shape
        if t % self.period:
            pad = self.period - t % self.period
            x = F.pad(x, (0, pad), mode="reflect" if pad < t else "constant")
            t = x.shape[-1]
        h = x.view(b, c, t // self.period, self.period)
        return _conv_stack(self, h, cond)


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), num_embeddings: Optional[int] = None,
                 channels: Sequence[int] = (32, 128, 512, 1024, 1024)):
        super().__init__()
        _check_sizes("periods", periods)
        _check_sizes("channels", channels)
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels=tuple(channels),
                                                                num_embeddings=num_embeddings) for p in periods)

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor] = None) -> Output:
        return _run_all(self.discriminators, _check_wave(x), cond)


class ResolutionDiscriminator(nn.Module):
    def __init__(self, n_fft: int, hop: int, channels: int = 64, num_embeddings: Optional[int] = None):
        super().__init__()
        self.n_fft, self.hop = int(n_fft), int(hop)
        spec = [((7, 5), (2, 2), (3, 2)), ((5, 3), (2, 1), (2, 1)), ((5, 3), (2, 2), (2, 1)),
                ((3, 3), (2, 1), (1, 1)), ((3, 3), (2, 2), (1, 1))]
        self.convs = nn.ModuleList()
        cin = 1
        for k, s, p in spec:
            self.convs.append(weight_norm(nn.Conv2d(cin, channels, k, s, padding=p)))
            cin = channels
        self.conv_post = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))
        self.cond = _Conditioner(num_embeddings, channels)

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor] = None):
        window = torch.ones(self.n_fft, device=x.device, dtype=x.dtype)  # rectangular window
        mag = torch.stft(x[:, 0], self.n_fft, self.hop, self.n_fft, window=window, center=True,
                         return_complex=True).abs()
        h = mag[:, None]
        return _conv_stack(self, h, cond)


class MultiResolutionDiscriminator(nn.Module):
    def __init__(self, resolutions: Sequence[Tuple[int, int]] = ((1024, 256), (2048, 512), (512, 128)),
                 num_embeddings: Optional[int] = None):
        super().__init__()
        self.discriminators = nn.ModuleList(ResolutionDiscriminator(n, h, num_embeddings=num_embeddings)
                                            for n, h in resolutions)

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor] = None) -> Output:
        return _run_all(self.discriminators, _check_wave(x), cond)


class BandSTFTDiscriminator(nn.Module):
    BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))

    def __init__(self, window: int, channels: int = 32):
        super().__init__()
        self.window = int(window)
        n_bins = self.window // 2 + 1
        self.bands = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in self.BANDS]

        def stack():
            return nn.ModuleList([
                weight_norm(nn.Conv2d(2, channels, (3, 9), (1, 1), padding=(1, 4))),
                weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(channels, channels, (3, 3), (1, 1), padding=(1, 1))),
            ])

        self.band_convs = nn.ModuleList(stack() for _ in self.bands)
        self.conv_post = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor] = None):  # unconditional: cond is ignored
        window = torch.ones(self.window, device=x.device, dtype=x.dtype)
        spec = torch.stft(x[:, 0], self.window, self.window // 4, self.window, window=window, center=True,
                          return_complex=True)
        # [B, 2, time, freq]: real/imaginary channels, frequency last so bands cut the last axis
        h_all = torch.view_as_real(spec).permute(0, 3, 2, 1)
        feats, outs = [], []
        for (lo, hi), convs in zip(self.bands, self.band_convs):
            h = h_all[..., lo:hi]
            for i, conv in enumerate(convs):
                h = F.leaky_relu(conv(h), _LRELU)
                if i > 0:
                    feats.append(h)
            outs.append(h)
        h = torch.cat(outs, dim=-1)
        logits = self.conv_post(h)
        feats.append(logits)
        return logits.flatten(1), feats


class DACDiscriminator(nn.Module):
    """descript-audio-codec's discriminator: period + multi-band complex STFT sub-discriminators."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), windows: Sequence[int] = (2048, 1024, 512),
                 period_channels: Sequence[int] = (32, 128, 512, 1024, 1024), band_channels: int = 32):
        super().__init__()
        _check_sizes("periods", periods, allow_empty=True)
        _check_sizes("windows", windows, allow_empty=True)
        _check_sizes("period_channels", period_channels)
        _check_sizes("band_channels", [band_channels])
        self.discriminators = nn.ModuleList(
            [PeriodDiscriminator(p, channels=tuple(period_channels)) for p in periods]
            + [BandSTFTDiscriminator(w, channels=band_channels) for w in windows])
        if not len(self.discriminators):
            raise ValueError("DACDiscriminator needs at least one period or window")

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor] = None) -> Output:
        x = _check_wave(x)
        x = x - x.mean(dim=-1, keepdim=True)
        x = 0.8 * x / (x.abs().amax(dim=-1, keepdim=True) + 1e-9)
        return _run_all(self.discriminators, x, None)
