"""Image reconstruction metrics.

Inputs are ``[B, 3, H, W]`` (or ``[B, 1, H, W]``) floats in ``[0, 1]``; each function returns a float64 tensor
``[B]`` with one value per image (so a benchmark averages per image, not over pooled pixels).

- ``psnr``: 10 log10(1 / MSE) with data range 1, per image.
- ``ssim``: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, data range 1,
  computed per channel on the valid region (no padding), averaged over channels and positions.
- ``ms_ssim``: five scales with the weights of Wang et al. 2003 (0.0448, 0.2856, 0.3001, 0.2363, 0.1333),
  2x2 average pooling between scales; contrast-structure terms at scales 1-4 and the full SSIM at scale 5,
  negative terms clamped to 0 (the ``pytorch_msssim``/``piq`` convention). Needs images of at least 161 px per
  side for the 11-pixel window at the coarsest scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import check_pair

_MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _images(ref, est):
    ref, est = check_pair(ref, est, ndim=(4,), shape_hint="[B, C, H, W] images in [0, 1]")
    for name, x in (("reference", ref), ("estimate", est)):
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"{name} images must lie in [0, 1], got min {lo:.4g}, max {hi:.4g}")
    return ref.double(), est.double()


def psnr(ref, est) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (data range 1); identical images give +inf."""
    ref, est = _images(ref, est)
    mse = (ref - est).pow(2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(1.0 / mse)


def _gauss_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor):
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_x, mu_y = _filter(x, g), _filter(y, g)
    sxx = _filter(x * x, g) - mu_x ** 2
    syy = _filter(y * y, g) - mu_y ** 2
    sxy = _filter(x * y, g) - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    return (lum * cs).mean(dim=(2, 3)), cs.mean(dim=(2, 3))  # [B, C] each


def ssim(ref, est) -> torch.Tensor:
    """Structural similarity per image (1 for identical images)."""
    ref, est = _images(ref, est)
    if min(ref.shape[-2:]) < 11:
        raise ValueError(f"ssim needs images of at least 11x11 pixels, got {tuple(ref.shape[-2:])}")
    s, _ = _ssim_terms(ref, est, _gauss_window())
    return s.mean(dim=1)


def ms_ssim(ref, est) -> torch.Tensor:
    """Multi-scale SSIM per image (1 for identical images)."""
    ref, est = _images(ref, est)
    need = 11 * 2 ** (len(_MS_WEIGHTS) - 1)
    if min(ref.shape[-2:]) <= need - 16:  # 161 px: the coarsest scale must still hold the 11-px window
        raise ValueError(f"ms_ssim needs images of at least {need - 15}x{need - 15} pixels, got {tuple(ref.shape[-2:])}")
    g = _gauss_window()
    weights = torch.tensor(_MS_WEIGHTS, dtype=torch.float64)
    values = []
    x, y = ref, est
    for level in range(len(_MS_WEIGHTS)):
        s, cs = _ssim_terms(x, y, g)
        values.append((s if level == len(_MS_WEIGHTS) - 1 else cs).clamp_min(0))
        if level < len(_MS_WEIGHTS) - 1:
            x = F.avg_pool2d(x, 2, ceil_mode=False)
            y = F.avg_pool2d(y, 2, ceil_mode=False)
    stack = torch.stack(values, dim=0)  # [levels, B, C]
    out = torch.prod(stack ** weights.view(-1, 1, 1), dim=0)
    return out.mean(dim=1)


_LPIPS_BACKBONES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
_LPIPS_CACHE = {}


def lpips_backbone_path(net: str = "alex"):
    """Where torchvision looks for the LPIPS backbone weights (``$TORCH_HOME/hub/checkpoints/<file>``)."""
    from pathlib import Path

    import torch.hub

    if net not in _LPIPS_BACKBONES:
        raise ValueError(f"net must be one of {sorted(_LPIPS_BACKBONES)}, got {net!r}")
    return Path(torch.hub.get_dir()) / "checkpoints" / _LPIPS_BACKBONES[net]


def lpips(ref, est, net: str = "alex") -> torch.Tensor:
    """LPIPS v0.1 (Zhang et al. 2018) via the ``lpips`` package, per image (0 for identical images).

    The linear heads ship inside the ``lpips`` wheel; the ImageNet backbone comes from torchvision's weights
    file, which must already sit in the torch hub cache (no download is attempted): otherwise
    :class:`MetricUnavailable` names the file and the folder to put it in.
    """
    from .base import MetricUnavailable, require_module

    ref, est = _images(ref, est)
    path = lpips_backbone_path(net)
    if not path.is_file():
        raise MetricUnavailable("lpips", f"the torchvision weights file {path.name!r}",
                                f"put it in {path.parent} (the torch hub cache; set TORCH_HOME to move it)")
    lib = require_module("lpips", "lpips")
    key = (net, str(path))
    if key not in _LPIPS_CACHE:
        model = lib.LPIPS(net=net, verbose=False).eval()
        _LPIPS_CACHE.clear()
        _LPIPS_CACHE[key] = model
    model = _LPIPS_CACHE[key]
    with torch.no_grad():
        val = model(ref.float() * 2 - 1, est.float() * 2 - 1)
    return val.reshape(-1).double()
