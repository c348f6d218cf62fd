"""cdt-fsq: the discrete CDT (FSQ on the posterior mean), warm-started from the tiny converted CDT fixtures."""

from __future__ import annotations

import math
from functools import lru_cache

import pytest
import torch

import zoo
from video.cdt import CDTConfig, CDTFSQConfig, CDTFSQTokenizer, CDTTokenizer
from zoo import Tokens


@lru_cache(maxsize=None)
def _pair(folder: str, name: str):
    cdt = CDTTokenizer.from_official(f"{folder}/cdt_tiny_{name}.ckpt", f"{folder}/cdt_tiny_{name}.config.json")
    return cdt, CDTFSQTokenizer.from_cdt(cdt)


@pytest.fixture(params=["base", "small"])
def pair(request, parity):
    return _pair(str(parity("cdt")), request.param)


def clip(f=9, h=24, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, f, h, w, generator=g)


def test_registered_and_spec():
    assert zoo.get_family("cdt-fsq") is CDTFSQTokenizer
    tok = CDTFSQTokenizer(CDTFSQConfig.variant("base", context_dim=4, latent_dim=3, out_channels=5, unet_dim=4))
    spec = tok.spec
    assert spec.discrete and spec.codebook_size == 64000 and spec.num_codebooks == 1
    assert spec.token_rate == 32 * 32 / 4  # 256x256 frames: 32x32 positions per latent frame, 4 frames each
    assert spec.bitrate == pytest.approx(256 * math.log2(64000))
    small = CDTFSQTokenizer(CDTFSQConfig.variant("base", context_dim=4, latent_dim=3, out_channels=5, unet_dim=4,
                                                 levels=[5, 5, 5]))
    assert small.spec.codebook_size == 125


def test_config_validation():
    with pytest.raises(ValueError, match="levels"):
        CDTFSQConfig(levels=[8, 1])
    with pytest.raises(ValueError, match="levels"):
        CDTFSQConfig(levels=[])
    with pytest.raises(TypeError, match="CDTConfig"):
        CDTFSQConfig.from_cdt_config({"latent_dim": 16})
    with pytest.raises(TypeError, match="CDTTokenizer"):
        CDTFSQTokenizer.from_cdt("cdt_base.ckpt")


def test_from_cdt_keeps_every_cdt_weight_and_the_continuous_path(pair):
    cdt, fsq = pair
    ref = cdt.net.state_dict()
    got = fsq.net.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    x = clip()
    assert torch.equal(fsq.encode_latents(x), cdt.encode_latents(x))
    assert fsq.config.levels == [8, 8, 8, 5, 5, 5]
    assert fsq.config.latent_dim == cdt.config.latent_dim


def test_encode_tokens_and_decode_through_the_diffusion_decoder(pair):
    cdt, fsq = pair
    x = clip()
    tok = fsq.encode(x)
    assert isinstance(tok, Tokens) and tok.ids.shape == (1, 3, 3, 5)  # 1 + (9-1)/4 latent frames, 24/8, 40/8
    assert int(tok.ids.min()) >= 0 and int(tok.ids.max()) < 64000
    # ids are the FSQ of the projected posterior mean
    mean = cdt.encode_latents(x)
    assert torch.equal(tok.ids, fsq.quantizer.encode(mean.movedim(1, -1)))
    noise = 0.8 * torch.randn(1, 3, 9, 24, 40, generator=torch.Generator().manual_seed(1))
    y = fsq.decode(tok, noise=noise)
    assert y.shape == x.shape
    # decode = the CDT diffusion decoder on the de-quantized latent
    z = fsq.ids_to_latents(tok.ids)
    assert torch.allclose(y, cdt.decode_latents(z, noise=noise), atol=1e-6)
    assert torch.equal(fsq.decode(tok.ids, noise=noise), y)  # a raw id tensor is accepted
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(fsq.decode(tok, generator=g()), fsq.decode(tok, generator=g()))


def test_validation_errors(pair):
    _, fsq = pair
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        fsq.encode(clip(f=8))
    with pytest.raises(ValueError, match="multiples of 8"):
        fsq.encode(clip(h=20))
    with pytest.raises(ValueError):
        fsq.encode(torch.rand(1, 3, 24, 40))  # not a video
    with pytest.raises(ValueError, match="\\[B, T', H', W'\\]"):
        fsq.decode(torch.zeros(1, 3, 5, dtype=torch.long))
    with pytest.raises(ValueError):
        fsq.decode(torch.full((1, 1, 3, 5), 64000))  # out of the codebook
    with pytest.raises(TypeError, match="unexpected keyword"):
        fsq.decode(torch.zeros(1, 1, 3, 5, dtype=torch.long), steps=2)
    with pytest.raises(ValueError, match="mean must have"):
        fsq.quantize(torch.zeros(1, fsq.config.latent_dim + 1, 1, 3, 5))


def test_save_load_round_trip(pair, tmp_path):
    _, fsq = pair
    fsq.save_pretrained(tmp_path / "m")
    back = zoo.from_pretrained(tmp_path / "m")
    assert isinstance(back, CDTFSQTokenizer) and back.config.levels == fsq.config.levels
    assert back.config.pad_mode == fsq.config.pad_mode and back.config.new_upsample == fsq.config.new_upsample
    x = clip(seed=2)
    tok = fsq.encode(x)
    assert torch.equal(back.encode(x).ids, tok.ids)
    noise = 0.8 * torch.randn(1, 3, 9, 24, 40, generator=torch.Generator().manual_seed(5))
    assert torch.equal(back.decode(tok, noise=noise), fsq.decode(tok, noise=noise))


def test_projection_init_is_orthonormal():
    for latent, levels in ((16, [8, 8, 8, 5, 5, 5]), (4, [8, 8, 8, 5, 5, 5]), (4, [5, 5, 5])):
        tok = CDTFSQTokenizer(CDTFSQConfig.variant("base", context_dim=4, latent_dim=latent, out_channels=5,
                                                   unet_dim=4, levels=levels))
        tok.init_projections(0)
        w = tok.quantizer.fsq.project_in.weight  # [n, L]
        small = min(w.shape)
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        assert torch.allclose(gram, torch.eye(small), atol=1e-5)
        assert torch.equal(tok.quantizer.fsq.project_out.weight, w.T)
