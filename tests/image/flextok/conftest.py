"""Small FlexTok configurations for fast unit tests (random weights)."""

from __future__ import annotations

import pytest
import torch

from image.flextok import FlexTok, FlexTokConfig, official_config

TINY_VAE = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [8, 8],
    "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 4,
    "sample_size": 16, "scaling_factor": 0.5,
}


def tiny_official(**kw):
    args = dict(enc_dim=32, enc_depth=2, dec_dim=32, dec_depth=2, head_dim=16, n_registers=8, latent_channels=4,
                patch_size=(2, 2), posemb_max=(4, 4), scaling_factor=0.8, hf_hub_path=None)
    args.update(kw)
    return official_config(**args)


def tiny_model(seed: int = 0, vae=None, **kw) -> FlexTok:
    torch.manual_seed(seed)
    vae_cfg = dict(TINY_VAE if vae is None else vae)
    vae_cfg["latent_channels"] = kw.get("latent_channels", 4)
    model = FlexTok(FlexTokConfig.from_official(tiny_official(**kw), vae_cfg))
    # give every parameter a non-trivial value (no zero-init adaLN), so each path is exercised
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("vae."):
                p.copy_(torch.randn_like(p) * (0.5 / max(1, p.shape[-1]) ** 0.5 if p.ndim > 1 else 0.1))
    return model.eval()


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def tiny_images(n: int, seed: int = 1, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, size, size), generator=g) * 2 - 1


@pytest.fixture
def make_tiny():
    """``make_tiny(seed=0, vae=None, **official_config_kwargs) -> FlexTok`` with random weights."""
    return tiny_model


@pytest.fixture
def make_images():
    """``make_images(n, seed=1, size=16) -> [n, 3, size, size]`` in [-1, 1]."""
    return tiny_images


@pytest.fixture
def tiny_official_config():
    """``tiny_official_config(**kw)`` -> a small config tree in the release layout."""
    return tiny_official


@pytest.fixture(scope="session")
def fx_model_or_skip():
    """The parity fixture model (skips when ../shared/parity/flextok is absent)."""
    import os
    from pathlib import Path

    import zoo

    shared = Path(os.environ.get("TOKENZOO_SHARED", Path(__file__).resolve().parents[3].parent / "shared"))
    root = shared / "parity" / "flextok" / "flextok_model"
    if not root.exists():
        pytest.skip(f"FlexTok parity fixtures not found at {root}")
    return zoo.load_official("flextok", root)
