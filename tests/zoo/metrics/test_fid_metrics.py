import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from zoo.metrics import MetricUnavailable, feature_statistics, frechet_distance, fvd, rfid
from zoo.metrics.fid import INCEPTION_TORCHSCRIPT
from zoo.metrics.video import I3D_TORCHSCRIPT


def _scipy_frechet(mu1, s1, mu2, s2):
    # the textbook formula with scipy's general matrix square root (as in the reference FID code bases)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_matches_scipy_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6))
    b = rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) * 0.5 + 0.3
    mu1, s1 = feature_statistics(torch.from_numpy(a))
    mu2, s2 = feature_statistics(torch.from_numpy(b))
    assert np.allclose(s1, np.cov(a, rowvar=False))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_scipy_frechet(mu1, s1, mu2, s2), rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    # two Gaussians differing only in the mean: the distance is the squared mean difference
    assert frechet_distance(mu1, s1, mu1 + 2.0, s1) == pytest.approx(4.0 * 6, abs=1e-8)


def test_frechet_distance_validates():
    with pytest.raises(ValueError, match="shapes disagree"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(TypeError, match="mu1"):
        frechet_distance([0.0], np.eye(1), np.zeros(1), np.eye(1))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.array([np.nan]), np.eye(1), np.zeros(1), np.eye(1))
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(torch.zeros(1, 4))


class _ToyInception(torch.nn.Module):
    """Stand-in for the TorchScript Inception: same call convention, fixed random conv features."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 5, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.1)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert float(x.max()) <= 255.0 and float(x.min()) >= 0.0
        return torch.relu(self.conv(x / 255.0)).mean((2, 3))


class _ToyI3D(torch.nn.Module):
    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        assert x.shape[-1] == 224 and x.shape[-2] == 224
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
        d = x[:, :, 1:] - x[:, :, :-1]
        feats = [x.mean((2, 3, 4)), x.std((2, 3, 4)), d.abs().mean((2, 3, 4)),
                 torch.nn.functional.avg_pool3d(x, (1, 56, 56)).flatten(1)]
        return torch.cat(feats, 1)


@pytest.fixture
def crops(shared_data):
    folder = shared_data("image/256")
    out = []
    for p in sorted(folder.glob("*.png")):
        im = torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
        for i in range(0, 192, 64):
            out.append(im[:, i:i + 64, i:i + 64])
    return torch.stack(out)


def _noisy(x, sigma, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


def test_rfid_unavailable_names_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MetricUnavailable, match=INCEPTION_TORCHSCRIPT):
        rfid(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    with pytest.raises(MetricUnavailable, match=INCEPTION_TORCHSCRIPT):
        rfid(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), extractor=tmp_path / "missing.pt")


def test_rfid_with_torchscript_file(crops, tmp_path, monkeypatch):
    path = tmp_path / INCEPTION_TORCHSCRIPT
    torch.jit.script(_ToyInception()).save(str(path))
    n = crops.shape[0]
    same = rfid(crops, crops.clone(), extractor=path)
    assert same.n == n and same.dim == 16
    assert float(same) == pytest.approx(0.0, abs=1e-9)
    mild = rfid(crops, _noisy(crops, 0.03), extractor=path)
    strong = rfid(crops, _noisy(crops, 0.3), extractor=path)
    assert 0 < float(mild) < float(strong)
    # found in the torch hub cache without an explicit path
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    path.rename(tmp_path / "hub" / "checkpoints" / INCEPTION_TORCHSCRIPT)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert float(rfid(crops, _noisy(crops, 0.3), batch_size=5)) == pytest.approx(float(strong), rel=1e-9)


def test_rfid_validates():
    with pytest.raises(ValueError, match="same number"):
        rfid(torch.rand(3, 3, 8, 8), torch.rand(2, 3, 8, 8), extractor=_ToyInception())
    with pytest.raises(ValueError, match="3 \\(RGB\\)"):
        rfid(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8), extractor=_ToyInception())
    with pytest.raises(TypeError, match="extractor"):
        rfid(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), extractor=3)
    with pytest.raises(ValueError, match="batch_size"):
        rfid(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), extractor=_ToyInception(), batch_size=0)


def test_fvd_unavailable_names_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MetricUnavailable, match=I3D_TORCHSCRIPT):
        fvd(torch.rand(2, 3, 4, 16, 16), torch.rand(2, 3, 4, 16, 16))


def test_fvd_with_torchscript_file(shared_data, tmp_path):
    data = np.load(shared_data("video") / "bikes_17f_128.npz")
    v = torch.from_numpy(data["frames"]).float().div(255).permute(3, 0, 1, 2)  # [T, H, W, 3] uint8 -> [3, T, H, W]
    v = v[:, :16, :64, :64]
    clips = torch.stack([v[:, i:i + 4] for i in range(0, 16, 2)][:6])  # 6 clips of 4 frames
    path = tmp_path / I3D_TORCHSCRIPT
    torch.jit.script(_ToyI3D()).save(str(path))
    same = fvd(clips, clips.clone(), extractor=path)
    # 6 clips, 201-d features: rank-deficient covariances, so identical sets give 0 up to rounding
    assert same.n == 6 and same.dim == 201 and float(same) == pytest.approx(0.0, abs=1e-5)
    mild = fvd(clips, _noisy(clips, 0.03), extractor=path)
    strong = fvd(clips, _noisy(clips, 0.3), extractor=path)
    assert 0 < float(mild) < float(strong)
    with pytest.raises(ValueError, match="3 \\(RGB\\)"):
        fvd(clips[:, :1], clips[:, :1], extractor=path)
