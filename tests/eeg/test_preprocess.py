"""Shared EEG helpers: the TFM STFT front-end, quantile scaling, FFT resampling, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import resample

from eeg.preprocess import check_series, num_frames, quantile_scale, resample_fft, stft_magnitude


def test_stft_matches_the_definition():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 730)).astype(np.float32)
    got = stft_magnitude(torch.from_numpy(x))
    n = np.arange(200)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / 200)  # periodic Hann
    frames = num_frames(730)
    assert got.shape == (2, 3, 100, frames) and frames == 6
    for t in range(frames):
        seg = x[..., t * 100:t * 100 + 200].astype(np.float64) * window
        ref = np.abs(np.fft.rfft(seg, axis=-1))[..., :100]
        assert np.abs(got[..., t].numpy() - ref).max() < 1e-4
    with pytest.raises(ValueError, match="at least 200"):
        stft_magnitude(torch.zeros(1, 199))


def test_quantile_scale_and_resample():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(2, 4, 1000)) * 50)
    y = quantile_scale(x)
    q = np.quantile(np.abs(y.numpy()), 0.95, axis=-1, method="linear")
    assert np.allclose(q, 1.0, atol=1e-6) and y.dtype == x.dtype
    r = resample_fft(x.float(), 250, 200)
    assert r.shape == (2, 4, 800) and r.dtype == torch.float32
    np.testing.assert_allclose(r.numpy(), resample(x.numpy(), 800, axis=-1), atol=1e-4)
    with pytest.raises(ValueError, match="sampling rate"):
        resample_fft(x, 0, 200)


def test_check_series_reports_nan_position():
    x = torch.zeros(2, 3, 400)
    x[1, 2, 250] = float("nan")
    with pytest.raises(ValueError, match=r"item 1, channel 2 \(O2\), at sample 250 \(t = 1.250 s\)"):
        check_series("x", x, sfreq=200, ch_names=["Fz", "Cz", "O2"])
    with pytest.raises(ValueError, match="3 dimensions"):
        check_series("x", torch.zeros(3, 4))
