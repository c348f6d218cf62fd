import numpy as np
import pytest
import torch
from PIL import Image

from zoo import metrics as M


@pytest.fixture
def images(shared_data):
    folder = shared_data("image/256")
    arrs = [np.asarray(Image.open(folder / n).convert("RGB"), dtype=np.float64) / 255.0
            for n in ("astronaut.png", "chelsea_cat.png", "coffee.png")]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


def _blur(x, k):
    w = torch.ones(3, 1, k, k, dtype=x.dtype) / (k * k)
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x, [k // 2] * 4, mode="replicate"), w, groups=3)


def test_psnr_ssim_match_scikit_image(images):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    est = _blur(images, 3).clamp(0, 1)
    p, s = M.psnr(images, est), M.ssim(images, est)
    for i in range(images.shape[0]):
        a = images[i].permute(1, 2, 0).numpy()
        b = est[i].permute(1, 2, 0).numpy()
        assert float(p[i]) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-9)
        ref = structural_similarity(a, b, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
        assert float(s[i]) == pytest.approx(ref, abs=1e-6)


def test_ms_ssim_matches_pytorch_msssim(images):
    from pytorch_msssim import ms_ssim as ref_ms_ssim

    est = _blur(images, 5).clamp(0, 1)
    ours = M.ms_ssim(images, est)
    ref = ref_ms_ssim(images.float(), est.float(), data_range=1.0, size_average=False)
    assert torch.allclose(ours.float(), ref, atol=1e-5)


def test_image_metrics_ideal_and_ranking(images):
    assert torch.isinf(M.psnr(images, images)).all()
    assert torch.allclose(M.ssim(images, images), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(M.ms_ssim(images, images), torch.ones(3, dtype=torch.float64))
    mild, strong = _blur(images, 3).clamp(0, 1), _blur(images, 9).clamp(0, 1)
    for fn in (M.psnr, M.ssim, M.ms_ssim):
        assert (fn(images, mild) > fn(images, strong)).all()


def test_image_metric_errors(images):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.psnr(images * 255, images * 255)
    with pytest.raises(ValueError, match="dimensions"):
        M.psnr(images[0], images[0])
    with pytest.raises(ValueError, match="at least 161"):
        M.ms_ssim(images[..., :128, :128], images[..., :128, :128])


def test_lpips_unavailable_names_the_file(images, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(M.MetricUnavailable, match="alexnet-owt-7be5be79.pth") as info:
        M.lpips(images, images)
    assert str(tmp_path) in str(info.value)


@pytest.mark.slow
def test_lpips_runs_with_a_backbone_file_in_the_hub_cache(images, tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = M.lpips_backbone_path("alex")
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), path)  # stand-in weights: pipeline check only
    x = images[:2].float()
    assert torch.allclose(M.lpips(x, x), torch.zeros(2, dtype=torch.float64), atol=1e-6)
    assert (M.lpips(x, _blur(images[:2], 9).clamp(0, 1).float()) > 0).all()
