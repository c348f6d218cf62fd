import pytest
import soundfile as sf
import torch

from zoo import metrics as M


@pytest.fixture
def speech(shared_data):
    wav, sr = sf.read(shared_data("audio/speech") / "en_real_arctic_a0007.wav", dtype="float32")
    assert sr == 24000
    return torch.from_numpy(wav)[None], sr


def _noisy(x, snr_db, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.randn(x.shape, generator=g)
    n = n * x.pow(2).mean().sqrt() / n.pow(2).mean().sqrt() * 10 ** (-snr_db / 20)
    return x + n


def test_si_sdr_matches_formula_and_ranks(speech):
    x, _ = speech
    noisy = _noisy(x, 20)
    val = M.si_sdr(x, noisy)
    r = x.double()[0] - x.double()[0].mean()
    e = noisy.double()[0] - noisy.double()[0].mean()
    t = (e @ r) / (r @ r) * r
    expected = 10 * torch.log10((t @ t) / ((e - t) @ (e - t)))
    assert torch.allclose(val[0], expected, atol=1e-6)
    assert abs(float(val[0]) - 20.0) < 0.5
    assert float(M.si_sdr(x, x)[0]) > 100
    assert float(M.si_sdr(x, _noisy(x, 5))[0]) < float(val[0])
    # scale invariance
    assert torch.allclose(M.si_sdr(x, 0.3 * noisy), val, atol=1e-6)


def test_spectral_distances_ideal_and_ranking(speech):
    x, sr = speech
    assert float(M.multi_resolution_stft_distance(x, x)[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(M.mel_distance(x, x, sr)[0]) == pytest.approx(0.0, abs=1e-7)
    mild, strong = _noisy(x, 30), _noisy(x, 5)
    assert M.multi_resolution_stft_distance(x, mild)[0] < M.multi_resolution_stft_distance(x, strong)[0]
    assert M.mel_distance(x, mild, sr)[0] < M.mel_distance(x, strong, sr)[0]


def test_pesq_and_stoi_equal_the_packages(speech):
    import pesq as pesq_lib
    import pystoi
    import soxr

    x, sr = speech
    y = _noisy(x, 15)
    ref16 = soxr.resample(x[0].double().numpy(), sr, 16000, quality="VHQ")
    deg16 = soxr.resample(y[0].double().numpy(), sr, 16000, quality="VHQ")
    assert float(M.pesq(x, y, sr)[0]) == pytest.approx(pesq_lib.pesq(16000, ref16, deg16, "wb"), abs=1e-9)
    assert float(M.stoi(x, y, sr)[0]) == pytest.approx(pystoi.stoi(x[0].double().numpy(), y[0].double().numpy(), sr), abs=1e-12)
    assert float(M.pesq(x, x, sr)[0]) > 4.4
    assert float(M.stoi(x, x, sr)[0]) == pytest.approx(1.0, abs=1e-6)
    assert M.pesq(x, _noisy(x, 5), sr)[0] < M.pesq(x, y, sr)[0]
    assert M.estoi(x, _noisy(x, 0), sr)[0] < M.estoi(x, y, sr)[0]


def test_delay_estimation_and_alignment(speech):
    x, sr = speech
    lag = 37
    delayed = torch.cat([torch.zeros(1, lag), x[:, :-lag]], dim=1)
    assert int(M.estimate_delay(x, delayed, 200)[0]) == lag
    early = torch.cat([x[:, lag:], torch.zeros(1, lag)], dim=1)
    assert int(M.estimate_delay(x, early, 200)[0]) == -lag
    r, e = M.align(x, delayed, 200)
    assert r.shape == e.shape == (1, x.shape[1] - lag)
    assert torch.equal(r, e)


def test_audio_metric_errors():
    with pytest.raises(ValueError, match="same shape"):
        M.si_sdr(torch.zeros(1, 10), torch.zeros(1, 11))
    with pytest.raises(TypeError, match="floating"):
        M.si_sdr(torch.zeros(1, 10, dtype=torch.long), torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        M.si_sdr(torch.full((1, 10), float("nan")), torch.zeros(1, 10))
    with pytest.raises(ValueError, match="sample_rate"):
        M.mel_distance(torch.zeros(1, 4000), torch.zeros(1, 4000), -1)
    with pytest.raises(ValueError, match="mode"):
        M.pesq(torch.zeros(1, 4000), torch.zeros(1, 4000), 16000, mode="xx")
    with pytest.raises(ValueError, match="PESQ could not score"):
        M.pesq(torch.zeros(1, 16000), torch.zeros(1, 16000), 16000)


def test_pesq_narrow_band_and_estoi_equal_the_packages(speech):
    """On a real clip: narrow-band PESQ (resampled to 8 kHz with soxr VHQ) and ESTOI equal the wrapped packages."""
    import pesq as pesq_lib
    import pystoi
    import soxr

    x, sr = speech
    y = _noisy(x, 10, seed=3)
    ref8 = soxr.resample(x[0].double().numpy(), sr, 8000, quality="VHQ")
    deg8 = soxr.resample(y[0].double().numpy(), sr, 8000, quality="VHQ")
    nb = float(M.pesq(x, y, sr, mode="nb")[0])
    assert nb == pytest.approx(pesq_lib.pesq(8000, ref8, deg8, "nb"), abs=1e-9)
    assert 1.0 <= nb < 4.0
    # resampling is part of the convention: the package on the 24 kHz signal is not what we compute
    ref16 = soxr.resample(x[0].double().numpy(), sr, 16000, quality="VHQ")
    deg16 = soxr.resample(y[0].double().numpy(), sr, 16000, quality="VHQ")
    assert nb != pytest.approx(pesq_lib.pesq(16000, ref16, deg16, "nb"), abs=1e-6)
    want = pystoi.stoi(x[0].double().numpy(), y[0].double().numpy(), sr, extended=True)
    assert float(M.estoi(x, y, sr)[0]) == pytest.approx(want, abs=1e-12)
    assert float(M.estoi(x, y, sr)[0]) != pytest.approx(float(M.stoi(x, y, sr)[0]), abs=1e-6)
    assert float(M.pesq(x, x, sr, mode="nb")[0]) > 4.0
    assert float(M.estoi(x, x, sr)[0]) == pytest.approx(1.0, abs=1e-6)
