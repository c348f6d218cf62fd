"""Shared pieces of the metric functions: results that can be unavailable, version records, input checks."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from ..validation import check_tensor


class MetricUnavailable(RuntimeError):
    """A metric cannot run here: a package or a weights file is missing.

    ``needs`` names the exact file or package, and ``where`` says where to put it. Benchmarks report such a
    metric as unavailable instead of failing or writing NaN.
    """

    def __init__(self, metric: str, needs: str, where: str = ""):
        self.metric, self.needs, self.where = metric, needs, where
        msg = f"metric {metric!r} is unavailable: it needs {needs}"
        if where:
            msg += f" ({where})"
        super().__init__(msg)


@dataclass
class Availability:
    name: str
    available: bool
    needs: str = ""
    where: str = ""
    versions: Dict[str, str] = field(default_factory=dict)


def package_version(name: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - a missing distribution just has no version
        return None


def require_module(metric: str, module: str, package: Optional[str] = None):
    """Import ``module`` or raise :class:`MetricUnavailable` naming the PyPI package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MetricUnavailable(metric, f"the PyPI package {package or module!r}",
                                f"pip install {package or module}") from exc


def require_file(metric: str, path: Optional[Path], filename: str, where: str) -> Path:
    if path is None or not Path(path).is_file():
        raise MetricUnavailable(metric, f"the weights file {filename!r}", where)
    return Path(path)


def check_pair(ref, est, *, ndim: Sequence[int], name_ref: str = "reference", name_est: str = "estimate",
               shape_hint: str = "") -> tuple:
    """Validate a reference/estimate pair of the same shape; returns float32 (or float64) tensors."""
    ref = check_tensor(name_ref, ref, ndim=ndim, floating=True, shape_hint=shape_hint)
    est = check_tensor(name_est, est, ndim=ndim, floating=True, shape_hint=shape_hint)
    if ref.shape != est.shape:
        raise ValueError(f"{name_ref} and {name_est} must have the same shape, got {tuple(ref.shape)} "
                         f"and {tuple(est.shape)}")
    dtype = torch.float64 if torch.float64 in (ref.dtype, est.dtype) else torch.float32
    return ref.to(dtype), est.to(dtype)
