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


def test_probe_folds_follow_the_stated_split_rule():
    labels = [1, 0, 1, 0, 1, 0, 2]
    names = ["e", "b", "a", "f", "c", "d", "g"]
    folds, k = M.probe_folds(labels, names)
    assert k == 3  # min(5, smallest class with >= 2 items)
    # class 1 sorted by name: a (2), c (4), e (0) -> folds 0, 1, 2; class 0: b (1), d (5), f (3)
    assert folds.tolist() == [2, 0, 0, 2, 1, 1, -1]  # class 2 has a single item: left out
    assert M.probe_folds([0] * 9 + [1] * 9)[1] == 5
    with pytest.raises(ValueError, match="at least 2 classes"):
        M.probe_folds([0, 0, 1])
    with pytest.raises(ValueError, match="names"):
        M.probe_folds([0, 0, 1, 1], ["a"])
    with pytest.raises(ValueError, match="max_folds"):
        M.probe_folds([0, 0, 1, 1], max_folds=1)


def test_linear_probe_cv_equals_fold_by_fold_fits(eeg):
    x, labels, _ = eeg
    rng = np.random.default_rng(2)
    feats = torch.from_numpy(rng.random((len(labels), 12)))
    names = [f"item{i}" for i in range(len(labels))]
    res = M.linear_probe_cv(feats, labels, names)
    folds, k = M.probe_folds(labels, names)
    pred = np.zeros(len(labels), dtype=int)
    for f in range(k):
        tr, te = folds != f, folds == f
        pred[te] = M.linear_probe_predict(feats[torch.from_numpy(tr)], np.asarray(labels)[tr], feats[torch.from_numpy(te)])
    assert res["predictions"] == pred.tolist() and res["folds"] == k == 3 and res["n"] == 6
    assert res["balanced_accuracy"] == pytest.approx(M.balanced_accuracy(labels, pred))
    assert res["cohen_kappa"] == pytest.approx(M.cohen_kappa(labels, pred))
    # separable features are classified perfectly out of fold
    sep = torch.tensor([[float(v == labels[0]), float(v != labels[0])] for v in labels], dtype=torch.float64)
    sep = sep + 0.01 * torch.from_numpy(rng.random(sep.shape))
    perfect = M.linear_probe_cv(sep, labels, names)
    assert perfect["balanced_accuracy"] == 1.0 and perfect["cohen_kappa"] == 1.0
    with pytest.raises(ValueError, match="labels must be"):
        M.linear_probe_cv(feats, labels[:3])
