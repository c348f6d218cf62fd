"""Linear prediction in NumPy float64: frequency-warped Burg, LiPCoT's three feature spaces and their inverses.

Conventions (those of TurboLPC, which LiPCoT uses): ``a = [a1 .. ap]`` are the coefficients of the error filter
``A(z) = 1 + a1 z^-1 + ... + ap z^-p`` (in the warped domain when a warp factor is used) and ``E`` is the final
prediction-error power (sigma^2). Windows are the ROWS of the ``[n_windows, n_samples]`` arrays here.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from scipy.signal import lfilter, tf2zpk, zpk2tf

__all__ = ["warped_burg", "lpc_features", "features_to_ar", "unwarp", "ar_psd_db", "method_num_features",
           "METHODS"]

#: LiPCoT's ``method`` numbers: 1 = poles (radius, frequency), 2 = LPC coefficients, 3 = weighted cepstrum
METHODS = {1: "poles", 2: "lpc", 3: "cepstrum"}

# windows per block of the Burg recursion (keeps the working arrays in cache; results do not depend on it)
_BURG_BLOCK = 32


def method_num_features(method: int, order: int) -> int:
    return 2 * order + 1 if method == 1 else order + 1


def warped_burg(windows: np.ndarray, order: int, warp: Optional[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Frequency-warped Burg LPC of every row of ``windows`` ``[n, N]`` -> ``(a [n, order], E [n])``.

    Per stage the backward error goes through the first-order all-pass ``(z^-1 - warp) / (1 - warp z^-1)``
    (run for all windows at once with ``lfilter``), the forward error is shifted by one sample, the reflection
    coefficient is Burg's ``-2 <f, b> / (<f, f> + <b, b>)``, and ``E`` shrinks by ``1 - k^2``. ``warp=None`` or 0
    is the ordinary Burg method. Coefficients come from the step-up recursion on the reflection coefficients.
    """
    x = np.asarray(windows, dtype=np.float64)
    n, length = x.shape
    lam = 0.0 if warp is None else float(warp)
    energy = np.einsum("ij,ij->i", x, x) / length
    refl = np.zeros((order, n))
    # windows are independent: run them in cache-sized blocks, updating preallocated buffers in place
    for s in range(0, n, _BURG_BLOCK):
        xb = x[s:s + _BURG_BLOCK]
        f, b, tmp = xb.copy(), xb.copy(), np.empty_like(xb)
        for m in range(order):
            size = length - m - 1
            # y[i] = b[i] - lam * (b[i+1] - y[i-1]) for i = 0 .. size-1, with y[-1] = 0
            y = lfilter([-lam, 1.0], [1.0, -lam], b[:, 1:size + 1], axis=1, zi=b[:, :1])[0]
            fs = f[:, 1:size + 1]
            k = -2.0 * np.einsum("ij,ij->i", fs, y) / (np.einsum("ij,ij->i", fs, fs) + np.einsum("ij,ij->i", y, y))
            refl[m, s:s + _BURG_BLOCK] = k
            kc = k[:, None]
            np.multiply(fs, kc, out=b[:, :size])  # b <- y + k * f[1:]
            b[:, :size] += y
            np.multiply(y, kc, out=tmp[:, :size])  # f <- f[1:] + k * y
            tmp[:, :size] += fs
            f, tmp = tmp, f
    energy = energy.copy()
    for m in range(order):
        energy = (1.0 - refl[m] * refl[m]) * energy
    a = np.ones((1, n))
    for m in range(order):
        aa = np.concatenate([a, np.zeros((1, n))], axis=0)
        a = aa + refl[m] * aa[::-1]
    return a[1:].T.copy(), energy


def _roots_batch(a: np.ndarray) -> np.ndarray:
    """Roots of ``1 + a1 z^-1 + ...`` for every row (what ``np.roots`` / ``tf2zpk`` return, in their order)."""
    n, p = a.shape
    if np.all(a[:, -1] != 0):
        comp = np.zeros((n, p, p))
        comp[:, 0, :] = -a
        if p > 1:
            comp[:, np.arange(1, p), np.arange(p - 1)] = 1.0
        return np.linalg.eigvals(comp)
    return np.stack([np.roots(np.concatenate([[1.0], row])).astype(complex) for row in a])


def lpc_features(a: np.ndarray, energy: np.ndarray, method: int, sfreq: float) -> np.ndarray:
    """LiPCoT latent features of AR models ``a [n, p]``, ``E [n]``.

    method 2: ``[a1 .. ap, log10 E]``; method 3: cepstrum ``c0 = ln E, c_n = -a_n - sum_m (1 - m/n) a_m c_{n-m}``
    weighted by ``sqrt([1, 1, 2, .., p])``; method 1: poles of ``1/A(z)`` sorted (stable) by ``|frequency|``:
    ``[-2 log10(1 - |p|) .., sfreq * angle / 2pi .., log10 E]``.
    """
    a = np.asarray(a, dtype=np.float64)
    energy = np.asarray(energy, dtype=np.float64)
    n, p = a.shape
    if method == 2:
        return np.concatenate([a, np.log10(energy)[:, None]], axis=1)
    if method == 3:
        total = p + 1
        c = np.zeros((n, total))
        c[:, 0] = np.log(energy)
        c[:, 1] = -a[:, 0]
        for k in range(2, total):
            acc = np.zeros(n)
            for m in range(1, k):  # same summation order as the reference
                acc = acc + (1 - m / k) * a[:, m - 1] * c[:, k - m]
            c[:, k] = -a[:, k - 1] - acc
        weights = np.sqrt(np.insert(np.linspace(1, total - 1, total - 1), 0, 1))
        return weights * c
    if method == 1:
        poles = _roots_batch(a)
        freq = sfreq * np.abs(np.angle(poles)) / (2 * np.pi)
        order_idx = np.argsort(freq, axis=1, kind="stable")
        poles = np.take_along_axis(poles, order_idx, axis=1)
        radius = -2 * np.log10(1 - np.abs(poles))
        angle = sfreq * np.angle(poles) / (2 * np.pi)
        return np.concatenate([radius, angle, np.log10(energy)[:, None]], axis=1)
    raise ValueError(f"method must be one of {sorted(METHODS)} ({METHODS}), got {method!r}")


def _cep_to_ar(c: np.ndarray, order: int) -> np.ndarray:
    a = np.zeros(order)
    a[0] = -c[1]
    for i in range(2, order + 1):
        acc = 0.0
        for m in range(1, i):
            acc = acc + (1 - m / i) * c[i - m] * a[m - 1]
        a[i - 1] = -c[i] - acc
    return a


def features_to_ar(feature: np.ndarray, method: int, order: int, sfreq: float) -> Tuple[np.ndarray, float]:
    """Inverse of :func:`lpc_features` for one feature vector (unscaled) -> ``(a [order], E)``.

    For method 1 ``a`` is complex when the centre's poles are not conjugate pairs (take ``a.real`` to report it).
    """
    feature = np.asarray(feature, dtype=np.float64)
    if method == 2:
        return feature[:-1].copy(), float(10 ** feature[-1])
    if method == 3:
        total = feature.shape[0]
        energy = float(np.exp(feature[0]))
        c = feature / np.sqrt(np.insert(np.linspace(1, total - 1, total - 1), 0, 1))
        return _cep_to_ar(c, order), energy
    if method == 1:
        radius = 1 - 10 ** (feature[:order] / -2)
        angle = 2 * np.pi * feature[order:2 * order] / sfreq
        poles = radius * np.exp(1j * angle)
        # the centre's poles need not come in conjugate pairs: A(z) may be complex. It is returned as is (the
        # reference keeps it complex for unwarping and reports its real part)
        _, den = zpk2tf(np.zeros(order), poles, 1)
        return np.asarray(den)[1:].copy(), float(10 ** feature[-1])
    raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")


def unwarp(a: np.ndarray, warp: Optional[float]) -> np.ndarray:
    """Warped-domain coefficients -> ordinary ones (poles ``p -> (p + warp) / (1 + warp p)``), as TurboLPC.

    ``a`` may be complex (method-1 centres); the real part of the unwarped polynomial is returned.
    """
    a = np.asarray(a)
    if not warp:
        return np.real(a).astype(np.float64)
    den = np.insert(a, 0, 1.0)
    num = np.zeros_like(den)
    num[0] = 1.0
    z, p, k = tf2zpk(num, den)
    p_new = (p + warp) / (1 + warp * p)
    _, den_new = zpk2tf(z, p_new, k)
    den_new = np.asarray(den_new)
    if np.iscomplexobj(den_new):
        den_new = den_new.real
    return den_new[1:].copy()


def ar_psd_db(a: np.ndarray, energy: float, n_points: int, sfreq: float) -> Tuple[np.ndarray, np.ndarray]:
    """``20 log10(|1 / A(e^jw)| sqrt(E))`` on ``n_points`` frequencies in ``[0, sfreq/2)`` -> (freqs, dB)."""
    from scipy.signal import freqz

    den = np.insert(np.asarray(a, dtype=np.float64), 0, 1.0)
    num = np.zeros_like(den)
    num[0] = 1.0
    w, h = freqz(num, den, worN=n_points, fs=sfreq)
    return w, 20 * np.log10(np.abs(h) * np.sqrt(energy))
