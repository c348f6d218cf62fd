"""audio.features: filterbanks, framing variants, differentiability, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audio.features import MelSpectrogram, mel_filterbank, num_frames


@pytest.mark.parametrize("scale, norm", [("slaney", "slaney"), ("htk", None), ("htk", "slaney")])
def test_filterbank_matches_librosa(scale, norm):
    import librosa

    fb = mel_filterbank(24000, 1920, 128, 0, 12000, scale=scale, norm=norm)
    ref = librosa.filters.mel(sr=24000, n_fft=1920, n_mels=128, fmin=0, fmax=12000, htk=scale == "htk", norm=norm)
    assert fb.shape == (128, 961) and fb.dtype == torch.float32
    assert np.array_equal(fb.numpy(), ref.astype(np.float32))


@pytest.mark.parametrize("length", [3840, 3841, 4319, 24000, 24479])
def test_frame_counts(length):
    x = torch.randn(2, length)
    same = MelSpectrogram()
    assert same(x).shape == (2, 128, length // 480) == (2, 128, same.num_frames(length))
    center = MelSpectrogram(padding="center")
    assert center(x).shape[-1] == length // 480 + 1 == num_frames(length, 1920, 480, "center")


def test_matches_torchaudio_for_a_centred_htk_magnitude_mel():
    """WavTokenizer-style settings (centred frames, HTK mels without norm, magnitude) agree with torchaudio."""
    import torchaudio

    x = torch.randn(1, 12000, generator=torch.Generator().manual_seed(0))
    ours = MelSpectrogram(n_fft=1024, hop_length=256, n_mels=100, mel_scale="htk", mel_norm=None, padding="center",
                          magnitude_eps=0.0, log=None)(x)
    ref = torchaudio.transforms.MelSpectrogram(sample_rate=24000, n_fft=1024, hop_length=256, n_mels=100,
                                               center=True, power=1, mel_scale="htk", norm=None)(x)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_normalisation_layout_and_gradient():
    x = torch.randn(1, 9600, requires_grad=True)
    plain = MelSpectrogram(channels_last=True)
    norm = MelSpectrogram(channels_last=True, mean=-4.92, std=math.sqrt(8.14))
    a, b = plain(x), norm(x)
    assert a.shape == (1, 20, 128)
    assert torch.allclose(b, (a + 4.92) / math.sqrt(8.14))
    b.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert MelSpectrogram(power=2, log="log10")(x.detach()[None]).shape == (1, 128, 20)


def test_errors():
    with pytest.raises(ValueError, match="padding"):
        MelSpectrogram(padding="valid")
    with pytest.raises(ValueError, match="power"):
        MelSpectrogram(power=3)
    with pytest.raises(ValueError, match="mean and std"):
        MelSpectrogram(mean=1.0)
    with pytest.raises(ValueError, match="fmin < fmax"):
        mel_filterbank(24000, 1920, 128, fmin=100, fmax=50)
    with pytest.raises(ValueError, match="n_mels"):
        mel_filterbank(24000, 1920, 0)
    m = MelSpectrogram()
    with pytest.raises(ValueError, match="at least 721"):
        m(torch.zeros(1, 500))
    with pytest.raises(TypeError, match="floating"):
        m(torch.zeros(1, 4000, dtype=torch.int16))
    with pytest.raises(ValueError, match="mono"):
        m(torch.zeros(1, 2, 4000))
