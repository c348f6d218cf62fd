"""Frechet Video Distance (FVD, Unterthiner et al. 2018) with a user-supplied I3D TorchScript.

Convention
----------
``fvd(reference, reconstruction)`` is a *set-level* metric (one value for the set; the set size is returned in
``n``). Videos are ``[N, 3, T, H, W]`` floats in ``[0, 1]``. Each frame is resized to 224x224 (bilinear,
``align_corners=False``, antialias off) and scaled to ``[-1, 1]``; the clip is passed to the Kinetics-400 I3D
TorchScript ``i3d_torchscript.pt`` (the StyleGAN-V port of the TF-Hub I3D used by the original FVD) as
``net(x, rescale=False, resize=False, return_features=True)``, giving 400-d logits-layer features, the
convention of the widely used ``fvd-comparison`` code. The Frechet distance is
:func:`zoo.metrics.fid.frechet_distance`. Values differ between I3D ports (e.g. TATS' ``i3d_pretrained_400.pt``)
and depend strongly on N and T: report both.

No PyPI package ships I3D weights: without the file, :class:`~zoo.metrics.base.MetricUnavailable` names it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..validation import check_tensor
from .fid import (FeatureExtractor, FrechetResult, _check_batch_size, _features, _file_ident,
                  frechet_distance_features, load_torchscript, resolve_file)

I3D_TORCHSCRIPT = "i3d_torchscript.pt"
I3D_SIZE = 224  # I3D's Kinetics input resolution


def _i3d_input(x: torch.Tensor) -> torch.Tensor:
    n, c, t, h, w = x.shape
    x = x.detach().float().cpu().clamp(0, 1)
    if (h, w) != (I3D_SIZE, I3D_SIZE):
        frames = x.transpose(1, 2).reshape(n * t, c, h, w)
        frames = F.interpolate(frames, size=(I3D_SIZE, I3D_SIZE), mode="bilinear", align_corners=False)
        x = frames.reshape(n, t, c, I3D_SIZE, I3D_SIZE).transpose(1, 2)
    return (x * 2 - 1).contiguous()


def resolve_i3d(extractor=None) -> FeatureExtractor:
    """The FVD feature network: ``fn`` takes videos ``[B, 3, T, H, W]`` in ``[0, 1]`` (resized and scaled here)."""
    how = "the StyleGAN-V Kinetics-400 I3D"
    if extractor is not None and callable(extractor) and not isinstance(extractor, (str, Path)):
        net, ident = extractor, f"callable:{type(extractor).__qualname__}"
    else:
        path = resolve_file("fvd", extractor, (I3D_TORCHSCRIPT,), how)
        net, ident = load_torchscript("fvd", path, I3D_TORCHSCRIPT, how), _file_ident(path)
    return FeatureExtractor(lambda v: net(_i3d_input(v), rescale=False, resize=False, return_features=True), ident)


def i3d_features(videos, extractor=None, batch_size: int = 8) -> torch.Tensor:
    """I3D features ``[N, D]`` (float64) of videos ``[N, 3, T, H, W]`` in ``[0, 1]``."""
    x = check_tensor("videos", videos, ndim=(5,), floating=True, shape_hint="[N, 3, T, H, W] in [0, 1]")
    if x.shape[1] != 3:
        raise ValueError(f"videos must have 3 (RGB) channels on axis 1, got shape {tuple(x.shape)}")
    return _features(resolve_i3d(extractor).fn, x, _check_batch_size(batch_size))


def fvd(reference, reconstruction, extractor=None, batch_size: int = 8) -> FrechetResult:
    """FVD between a set of original videos and their reconstructions (both ``[N, 3, T, H, W]``)."""
    ref = check_tensor("reference", reference, ndim=(5,), floating=True, shape_hint="[N, 3, T, H, W]")
    rec = check_tensor("reconstruction", reconstruction, ndim=(5,), floating=True, shape_hint="[N, 3, T, H, W]")
    if ref.shape[0] != rec.shape[0]:
        raise ValueError(f"reference and reconstruction must hold the same number of videos, got {ref.shape[0]} "
                         f"and {rec.shape[0]}")
    if ref.shape[0] < 2:
        raise ValueError("FVD needs at least 2 videos per set (and hundreds for a meaningful value)")
    return frechet_distance_features(i3d_features(ref, extractor, batch_size),
                                     i3d_features(rec, extractor, batch_size))
