"""Input checks shared by every tokenizer.

Each helper raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape, range or
content) with a message that names the argument, what was given and what was expected, so that a bad input
never surfaces as a stack trace from deep inside a layer.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def describe(x) -> str:
    """A short description of a value for error messages."""
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__}"


def check_tensor(name: str, x, *, ndim: Optional[Iterable[int]] = None, floating: bool = False,
                 finite: bool = True, non_empty: bool = True, shape_hint: str = "") -> torch.Tensor:
    """Check that ``x`` is a tensor of an allowed rank, optionally floating point, finite and non-empty."""
    hint = f" (expected {shape_hint})" if shape_hint else ""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor{hint}, got {describe(x)}")
    if ndim is not None:
        allowed = tuple(ndim)
        if x.ndim not in allowed:
            ranks = " or ".join(str(r) for r in allowed)
            raise ValueError(f"{name} must have {ranks} dimensions{hint}, got shape {tuple(x.shape)}")
    if floating and x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating point tensor{hint}, got dtype {x.dtype}")
    if non_empty and x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}){hint}")
    if finite and x.is_floating_point():
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            n_nan = int(torch.isnan(x).sum())
            n_inf = int(bad.sum()) - n_nan
            first = tuple(int(i) for i in bad.nonzero()[0].tolist())
            raise ValueError(f"{name} contains {n_nan} NaN and {n_inf} Inf values (first at index {first})")
    return x


def check_ids(name: str, ids, codebook_size: int, *, num_codebooks: Optional[int] = None,
              codebook_axis: Optional[int] = None, ndim: Optional[Iterable[int]] = None,
              shape_hint: str = "") -> torch.Tensor:
    """Check integer token ids: integer dtype, in ``[0, codebook_size)``, and the number of codebooks."""
    hint = f" (expected {shape_hint})" if shape_hint else ""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer ids{hint}, got {describe(ids)}")
    if ids.dtype not in _INT_DTYPES:
        raise TypeError(f"{name} must have an integer dtype, got {ids.dtype}")
    if ndim is not None:
        allowed = tuple(ndim)
        if ids.ndim not in allowed:
            ranks = " or ".join(str(r) for r in allowed)
            raise ValueError(f"{name} must have {ranks} dimensions{hint}, got shape {tuple(ids.shape)}")
    if ids.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(ids.shape)}){hint}")
    if num_codebooks is not None and codebook_axis is not None:
        got = ids.shape[codebook_axis]
        if got != num_codebooks:
            raise ValueError(f"{name} has {got} codebooks along axis {codebook_axis}, "
                             f"this tokenizer uses {num_codebooks}{hint}")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= codebook_size:
        bad = ((ids < 0) | (ids >= codebook_size)).nonzero()[0].tolist()
        raise ValueError(f"{name} holds ids outside [0, {codebook_size}): min {lo}, max {hi} "
                         f"(first offending index {tuple(bad)})")
    return ids


def check_choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def check_positive_int(name: str, value, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return value


def check_lengths(name: str, lengths, batch: int, maximum: int) -> torch.Tensor:
    """Per-item valid lengths: integers, shape ``[batch]``, each in ``[1, maximum]``; returns int64."""
    lengths = torch.as_tensor(lengths)
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {lengths.dtype}")
    if lengths.ndim != 1 or lengths.shape[0] != batch:
        raise ValueError(f"{name} must have shape [{batch}] (one per item), got {tuple(lengths.shape)}")
    if int(lengths.min()) < 1 or int(lengths.max()) > maximum:
        raise ValueError(f"{name} must lie in [1, {maximum}] (the padded length), got "
                         f"min {int(lengths.min())}, max {int(lengths.max())}")
    return lengths.long()
