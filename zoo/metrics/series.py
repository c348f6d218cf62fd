"""EEG / time-series reconstruction metrics and token-based linear probes.

Signals are ``[B, C, T]`` float at ``sfreq`` Hz; per-item results are float64 ``[B]`` (averaged over channels)
unless stated.

- ``spectrogram_distance``: L1 between log10 STFT magnitudes (Hann window of 1 s, hop 0.5 s, clamped at 1e-8).
- ``band_power_error``: relative error of Welch band power (Hann, 2 s segments, 50 % overlap) per canonical band,
  delta 1-4, theta 4-8, alpha 8-13, beta 13-30, gamma 30-45 Hz (capped below Nyquist), returned ``[B, 5]``.
- ``channel_correlation``: Pearson r per channel, averaged over channels.
- ``linear_probe``: a ridge-regularised multinomial logistic regression on token histograms (bag of tokens),
  reporting balanced accuracy and Cohen's kappa on held-out items.
- ``linear_probe_cv``: the same probe scored by stratified k-fold cross-validation over one labelled set (the
  split rule is :data:`PROBE_SPLIT_RULE`): every item is predicted once, by a probe that never saw it, and balanced
  accuracy and Cohen's kappa are computed over all out-of-fold predictions.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ..validation import check_tensor
from .base import check_pair

BANDS: Tuple[Tuple[str, float, float], ...] = (
    ("delta", 1.0, 4.0), ("theta", 4.0, 8.0), ("alpha", 8.0, 13.0), ("beta", 13.0, 30.0), ("gamma", 30.0, 45.0))


def _signals(ref, est):
    return check_pair(ref, est, ndim=(3,), shape_hint="[B, C, T] signals")


def _check_sfreq(sfreq) -> float:
    if isinstance(sfreq, bool) or not isinstance(sfreq, (int, float)) or sfreq <= 0:
        raise ValueError(f"sfreq must be a positive number of Hz, got {sfreq!r}")
    return float(sfreq)


def spectrogram_distance(ref, est, sfreq: float) -> torch.Tensor:
    ref, est = _signals(ref, est)
    sfreq = _check_sfreq(sfreq)
    win = max(2, int(round(sfreq)))
    hop = max(1, win // 2)
    if ref.shape[-1] < win:
        raise ValueError(f"signals need at least {win} samples (1 s at {sfreq:g} Hz), got {ref.shape[-1]}")
    window = torch.hann_window(win, dtype=torch.float64)

    def logspec(x):
        b, c, t = x.shape
        s = torch.stft(x.reshape(b * c, t).double(), win, hop, win, window=window, center=False,
                       return_complex=True).abs()
        return torch.log10(s.clamp_min(1e-8)).reshape(b, c, *s.shape[-2:])

    return (logspec(ref) - logspec(est)).abs().mean(dim=(1, 2, 3))


def band_powers(x: torch.Tensor, sfreq: float) -> torch.Tensor:
    """Welch band power per band: ``[B, C, 5]`` (bands in :data:`BANDS`)."""
    from scipy.integrate import trapezoid as _trapezoid
    from scipy.signal import welch

    x = check_tensor("x", x, ndim=(3,), floating=True, shape_hint="[B, C, T] signals")
    sfreq = _check_sfreq(sfreq)
    nper = min(x.shape[-1], int(round(2 * sfreq)))
    f, p = welch(x.double().cpu().numpy(), fs=sfreq, window="hann", nperseg=nper, noverlap=nper // 2, axis=-1)
    out = []
    for _, lo, hi in BANDS:
        hi = min(hi, sfreq / 2)
        sel = (f >= lo) & (f < hi)
        out.append(_trapezoid(p[..., sel], f[sel], axis=-1) if sel.sum() > 1 else np.zeros(p.shape[:-1]))
    return torch.from_numpy(np.stack(out, axis=-1))


def band_power_error(ref, est, sfreq: float) -> torch.Tensor:
    """|P_est - P_ref| / P_ref per band, averaged over channels: ``[B, 5]`` (0 is perfect)."""
    ref, est = _signals(ref, est)
    pr, pe = band_powers(ref, sfreq), band_powers(est, sfreq)
    return ((pe - pr).abs() / pr.clamp_min(1e-20)).mean(dim=1)


def channel_correlation(ref, est) -> torch.Tensor:
    ref, est = _signals(ref, est)
    r = ref.double() - ref.double().mean(-1, keepdim=True)
    e = est.double() - est.double().mean(-1, keepdim=True)
    num = (r * e).sum(-1)
    den = torch.sqrt(r.pow(2).sum(-1) * e.pow(2).sum(-1)).clamp_min(1e-20)
    return (num / den).mean(dim=1)


def balanced_accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(f"y_true and y_pred must be non-empty 1-D arrays of equal length, got {y_true.shape} and {y_pred.shape}")
    recalls = [float(np.mean(y_pred[y_true == c] == c)) for c in np.unique(y_true)]
    return float(np.mean(recalls))


def cohen_kappa(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(f"y_true and y_pred must be non-empty 1-D arrays of equal length, got {y_true.shape} and {y_pred.shape}")
    labels = np.union1d(y_true, y_pred)
    index = {c: i for i, c in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)))
    for t, p in zip(y_true, y_pred):
        m[index[t], index[p]] += 1
    n = m.sum()
    po = np.trace(m) / n
    pe = float((m.sum(0) * m.sum(1)).sum()) / n ** 2
    return float((po - pe) / (1 - pe)) if pe < 1 else 1.0


def token_histograms(ids: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Normalised bag-of-tokens features ``[B, codebook_size]`` from ids ``[B, ...]``."""
    from ..validation import check_ids

    ids = check_ids("ids", ids, codebook_size)
    flat = ids.reshape(ids.shape[0], -1)
    h = torch.zeros(flat.shape[0], codebook_size, dtype=torch.float64)
    h.scatter_add_(1, flat.cpu(), torch.ones_like(flat, dtype=torch.float64).cpu())
    return h / h.sum(1, keepdim=True)


PROBE_MAX_FOLDS = 5
PROBE_SPLIT_RULE = (
    "stratified k-fold cross-validation over the labelled items: classes with fewer than 2 items are left out; "
    "k = min(5, the size of the smallest remaining class); within each class the items, sorted by name, are dealt "
    "to folds 0, 1, ..., k-1 in turn; each item is predicted by a probe fitted on the other k-1 folds "
    "(features standardised with the training folds' mean and std), and balanced accuracy and Cohen's kappa are "
    "computed over all out-of-fold predictions")


def _probe_inputs(train_x, train_y, test_x):
    train_x = check_tensor("train_x", train_x, ndim=(2,), floating=True)
    test_x = check_tensor("test_x", test_x, ndim=(2,), floating=True)
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train_x and test_x must have the same feature size, got {train_x.shape[1]} and {test_x.shape[1]}")
    ytr = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    if ytr.ndim != 1 or ytr.shape[0] != train_x.shape[0]:
        raise ValueError(f"train_y has {ytr.shape[0] if ytr.ndim else 0} labels for {train_x.shape[0]} items")
    return train_x, ytr, test_x


def linear_probe_predict(train_x: torch.Tensor, train_y: Sequence[int], test_x: torch.Tensor, *, l2: float = 1e-3,
                         steps: int = 300, seed: int = 0) -> np.ndarray:
    """Labels predicted for ``test_x`` by a multinomial logistic regression (full-batch L-BFGS, L2 penalty ``l2``
    on the weights) fitted on ``train_x``/``train_y``; features are standardised with the training mean and std."""
    train_x, ytr, test_x = _probe_inputs(train_x, train_y, test_x)
    classes = torch.unique(ytr)
    remap = {int(c): i for i, c in enumerate(classes)}
    ytr_i = torch.tensor([remap[int(c)] for c in ytr])
    g = torch.Generator().manual_seed(seed)
    mean, std = train_x.double().mean(0), train_x.double().std(0).nan_to_num(0.0).clamp_min(1e-8)
    xtr, xte = (train_x.double() - mean) / std, (test_x.double() - mean) / std
    w = (0.01 * torch.randn(xtr.shape[1], len(classes), generator=g, dtype=torch.float64)).requires_grad_()
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xtr @ w + b, ytr_i) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        pred = (xte @ w + b).argmax(1)
    return classes[pred].numpy()


def linear_probe(train_x: torch.Tensor, train_y: Sequence[int], test_x: torch.Tensor, test_y: Sequence[int],
                 *, l2: float = 1e-3, steps: int = 300, seed: int = 0) -> Dict[str, float]:
    """Fit a multinomial logistic regression (full-batch L-BFGS) and score the held-out set."""
    pred_labels = linear_probe_predict(train_x, train_y, test_x, l2=l2, steps=steps, seed=seed)
    return {"balanced_accuracy": balanced_accuracy(np.asarray(test_y), pred_labels),
            "cohen_kappa": cohen_kappa(np.asarray(test_y), pred_labels)}


def probe_folds(labels: Sequence[int], names: Optional[Sequence[str]] = None,
                max_folds: int = PROBE_MAX_FOLDS) -> Tuple[np.ndarray, int]:
    """Fold of every item under :data:`PROBE_SPLIT_RULE` (-1: left out, its class has fewer than 2 items), and k.

    Raises ``ValueError`` when fewer than 2 classes have at least 2 items."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {y.shape}")
    if isinstance(max_folds, bool) or not isinstance(max_folds, int) or max_folds < 2:
        raise ValueError(f"max_folds must be an int >= 2, got {max_folds!r}")
    names = [str(i) for i in range(y.size)] if names is None else [str(n) for n in names]
    if len(names) != y.size:
        raise ValueError(f"got {len(names)} names for {y.size} labels")
    classes, counts = np.unique(y, return_counts=True)
    kept = classes[counts >= 2]
    if kept.size < 2:
        found = ", ".join(f"{c}: {n}" for c, n in zip(classes.tolist(), counts.tolist()))
        raise ValueError(f"a probe needs at least 2 classes with 2 or more items each; got {{{found}}}")
    k = int(min(max_folds, counts[counts >= 2].min()))
    folds = np.full(y.size, -1, dtype=np.int64)
    for c in kept:
        members = sorted(np.flatnonzero(y == c).tolist(), key=lambda i: (names[i], i))
        for j, i in enumerate(members):
            folds[i] = j % k
    return folds, k


def linear_probe_cv(features: torch.Tensor, labels: Sequence[int], names: Optional[Sequence[str]] = None, *,
                    max_folds: int = PROBE_MAX_FOLDS, l2: float = 1e-3, steps: int = 300,
                    seed: int = 0) -> Dict[str, Any]:
    """Cross-validated linear probe over one labelled set (split rule: :data:`PROBE_SPLIT_RULE`).

    ``features`` ``[N, D]`` (e.g. :func:`token_histograms`), integer ``labels`` ``[N]``, ``names`` (the sort key of
    the fold assignment; default the item index). Returns ``balanced_accuracy``, ``cohen_kappa``, ``n`` (items
    scored), ``folds`` (k), ``classes`` (label -> items scored), ``left_out`` (items of classes too small) and
    ``predictions`` (label per item, ``None`` for left-out items)."""
    x = check_tensor("features", features, ndim=(2,), floating=True, shape_hint="[N, D] features")
    y = np.asarray(labels)
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels must be [N] = [{x.shape[0]}], got shape {y.shape}")
    folds, k = probe_folds(y, names, max_folds)
    pred = np.full(y.size, -1, dtype=np.int64)
    for f in range(k):
        train, test = (folds >= 0) & (folds != f), folds == f
        pred[test] = linear_probe_predict(x[torch.from_numpy(train)], y[train], x[torch.from_numpy(test)], l2=l2,
                                          steps=steps, seed=seed)
    scored = folds >= 0
    classes, counts = np.unique(y[scored], return_counts=True)
    return {"balanced_accuracy": balanced_accuracy(y[scored], pred[scored]),
            "cohen_kappa": cohen_kappa(y[scored], pred[scored]), "n": int(scored.sum()), "folds": k,
            "classes": {int(c): int(n) for c, n in zip(classes, counts)}, "left_out": int((~scored).sum()),
            "predictions": [int(p) if s else None for p, s in zip(pred, scored)]}
