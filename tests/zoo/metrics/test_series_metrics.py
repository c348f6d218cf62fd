import numpy as np
import pytest
import torch

from zoo import metrics as M


@pytest.fixture
def eeg(shared_data):
    folder = shared_data("eeg")
    xs, labels = [], []
    for i in range(6):
        with np.load(folder / f"tuev_tfm_sample_{i}.npz", allow_pickle=False) as d:
            xs.append(d["signal"].astype(np.float64))
            labels.append(int(d["label"]))
            sfreq = float(d["sfreq"])
    return torch.from_numpy(np.stack(xs)), labels, sfreq


def test_series_metrics_ideal_and_ranking(eeg):
    x, _, sf = eeg
    g = torch.Generator().manual_seed(0)
    mild = x + 0.05 * x.std() * torch.randn(x.shape, generator=g, dtype=x.dtype)
    strong = x + 1.0 * x.std() * torch.randn(x.shape, generator=g, dtype=x.dtype)
    assert torch.allclose(M.spectrogram_distance(x, x, sf), torch.zeros(6, dtype=torch.float64))
    assert torch.allclose(M.channel_correlation(x, x), torch.ones(6, dtype=torch.float64))
    assert torch.allclose(M.band_power_error(x, x, sf), torch.zeros(6, 5, dtype=torch.float64))
    assert (M.spectrogram_distance(x, mild, sf) < M.spectrogram_distance(x, strong, sf)).all()
    assert (M.channel_correlation(x, mild) > M.channel_correlation(x, strong)).all()
    assert (M.band_power_error(x, mild, sf).mean(1) < M.band_power_error(x, strong, sf).mean(1)).all()


def test_band_powers_of_a_pure_sine():
    sf, t = 200.0, torch.arange(2000) / 200.0
    x = torch.sin(2 * np.pi * 10.0 * t)[None, None].double()
    p = M.band_powers(x, sf)[0, 0]
    assert int(p.argmax()) == 2  # 10 Hz is alpha
    assert float(p[2]) == pytest.approx(0.5, rel=0.05)  # power of a unit sine


def test_kappa_and_balanced_accuracy_match_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 4, 200))
    assert M.balanced_accuracy(y, p) == pytest.approx(balanced_accuracy_score(y, p), abs=1e-12)
    assert M.cohen_kappa(y, p) == pytest.approx(cohen_kappa_score(y, p), abs=1e-12)
    assert M.cohen_kappa(y, y) == pytest.approx(1.0)


def test_linear_probe_separates_token_histograms():
    rng = np.random.default_rng(1)
    n, k = 120, 16
    labels = rng.integers(0, 2, n)
    ids = np.where(labels[:, None] == 0, rng.integers(0, 8, (n, 20)), rng.integers(8, 16, (n, 20)))
    h = M.token_histograms(torch.from_numpy(ids), k)
    assert torch.allclose(h.sum(1), torch.ones(n, dtype=torch.float64))
    res = M.linear_probe(h[:80], labels[:80], h[80:], labels[80:])
    assert res["balanced_accuracy"] > 0.95 and res["cohen_kappa"] > 0.9
    shuffled = M.linear_probe(h[:80], rng.permutation(labels[:80]), h[80:], labels[80:])
    assert shuffled["balanced_accuracy"] < res["balanced_accuracy"]


def test_series_metric_errors():
    with pytest.raises(ValueError, match="sfreq"):
        M.spectrogram_distance(torch.zeros(1, 1, 400), torch.zeros(1, 1, 400), 0)
    with pytest.raises(ValueError, match="at least 200 samples"):
        M.spectrogram_distance(torch.zeros(1, 1, 100), torch.zeros(1, 1, 100), 200)
    with pytest.raises(ValueError, match="outside"):
        M.token_histograms(torch.tensor([[0, 5]]), 4)
