"""Parity of CDT with the reference implementation (ali-vilab/CDT) on ../shared/parity/cdt.

Every output listed in the fixtures' MANIFEST.md is reproduced through ``zoo.load_official`` within the stated
tolerances (max abs error): encoder 1e-4; decoder fed with the reference latent: 1-step / intermediates 2e-4,
multi-step 1e-3; end to end 1e-3 (1 step) / 3e-3 (multi-step); schedule indices and U-Net time inputs exact,
alphas 1e-6 relative.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from safetensors.torch import load_file

import zoo

MODELS = ("base", "small")
ENC_TOL = 1e-4
DEC1_TOL = 2e-4
DECN_TOL = 1e-3
E2E1_TOL = 1e-3
E2EN_TOL = 3e-3


@lru_cache(maxsize=None)
def _load(folder: str, name: str):
    tok = zoo.load_official("cdt", f"{folder}/cdt_tiny_{name}.ckpt", f"{folder}/cdt_tiny_{name}.config.json")
    inputs = load_file(f"{folder}/inputs.safetensors")
    outputs = load_file(f"{folder}/outputs_tiny_{name}.safetensors")
    return tok, inputs, outputs


@pytest.fixture(params=MODELS)
def case(request, parity):
    folder = parity("cdt")
    return (request.param,) + _load(str(folder), request.param)


def maxdiff(a, b):
    assert a.shape == b.shape, f"shape {tuple(a.shape)} vs reference {tuple(b.shape)}"
    return (a.float() - b.float()).abs().max().item()


def x_init(tok, inputs, key):
    # the reference draws sample_gamma * randn over 4T' frames and drops the first 3 (the fixture saved the draw)
    return tok.config.sample_gamma * inputs[key][:, :, 3:]


def test_loaded_config_follows_code_path(case):
    name, tok, _, _ = case
    assert tok.config.pad_mode == ("zeros" if name == "base" else "replicate")
    assert tok.config.new_upsample is (name == "base")
    assert (tok.config.enc_frames, tok.config.dec_frames, tok.config.sample_steps) == (4.0, 1.0, 1)
    assert tok.spec.discrete is False


def test_encoder(case):
    name, tok, inputs, ref = case
    for prefix, key in (("vid", "video"), ("img", "image")):
        feats = []
        hook = tok.net.autoencoder.quant_conv.register_forward_pre_hook(lambda m, a: feats.append(a[0].clone()))
        try:
            moments = tok.encode_moments(inputs[key], value_range=(-1, 1))
        finally:
            hook.remove()
        assert len(feats) == 1  # one chunk at this resolution with the release's enc_frames
        assert maxdiff(feats[0], ref[f"{prefix}.enc_features"]) <= ENC_TOL
        assert maxdiff(moments, ref[f"{prefix}.moments"]) <= ENC_TOL
        mean, logvar = tok.posterior(moments)
        assert maxdiff(mean, ref[f"{prefix}.latent"]) <= ENC_TOL
        if prefix == "vid":
            assert maxdiff(logvar, ref["vid.logvar_clamped"]) <= ENC_TOL
        latent = tok.encode_latents(inputs[key], value_range=(-1, 1))
        assert torch.equal(latent, mean)


def test_encoder_unit_range_input(case):
    _, tok, inputs, ref = case
    unit = (inputs["video"] + 1) / 2  # the zoo's [0, 1] convention; mapped back as 2x - 1
    assert maxdiff(tok.encode_latents(unit), ref["vid.latent"]) <= ENC_TOL


def test_encoder_chunked(case):
    _, tok, inputs, ref = case
    # the reference's chunking with enc_frames=0.0054931640625 at 24x40: pixel chunks [1, 4, 4, 4, 4]
    assert tok.net.encode_chunk_frames(24, 40) == 4368  # release rule: one chunk here
    calls = []
    hook = tok.net.autoencoder.quant_conv.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[2]))
    try:
        moments = tok.encode_moments(inputs["video"], value_range=(-1, 1), chunk_frames=4)
    finally:
        hook.remove()
    assert calls == [1, 1, 1, 1, 1]
    assert maxdiff(moments, ref["vid.moments_chunked"]) <= ENC_TOL
    assert maxdiff(moments[:, : tok.config.latent_dim], ref["vid.latent_chunked"]) <= ENC_TOL


def test_encoder_chunk_rule_from_enc_frames(case):
    _, tok, inputs, ref = case
    from dataclasses import replace

    from video.cdt import CDTTokenizer

    cfg = replace(tok.config, enc_frames=0.0054931640625)
    other = CDTTokenizer(cfg)
    other.load_state_dict(tok.state_dict())
    assert other.net.encode_chunk_frames(24, 40) == 4
    lat = other.encode_latents(inputs["video"], value_range=(-1, 1))
    assert maxdiff(lat, ref["vid.latent_chunked"]) <= ENC_TOL


def test_schedule(case):
    _, tok, _, ref = case
    for steps in (1, 4):
        sched = tok.net.schedule(steps, "cpu")
        assert torch.equal(sched.index, ref[f"sched_steps{steps}.index"])
        for key in ("alphas_cumprod", "alphas_cumprod_prev"):
            want = ref[f"sched_steps{steps}.{key}"]
            got = getattr(sched, key)
            assert ((got - want).abs() / want.abs()).max().item() <= 1e-6


def _capture_unet(tok):
    calls = []

    def hook(module, args, output):
        calls.append((args[0].clone(), args[1].clone(), output.clone()))

    return calls, tok.net.unet.register_forward_hook(hook)


@pytest.mark.parametrize("steps", [1, 4])
def test_video_decode_one_chunk(case, steps):
    _, tok, inputs, ref = case
    calls, hook = _capture_unet(tok)
    try:
        y = tok.decode_latents(ref["vid.latent"], num_steps=steps, noise=x_init(tok, inputs, "noise_video_raw"),
                               value_range=(-1, 1))
    finally:
        hook.remove()
    tol = DEC1_TOL if steps == 1 else DECN_TOL
    assert maxdiff(y, ref[f"vid.recon_steps{steps}_full"]) <= tol
    t_inputs = torch.cat([c[1].reshape(-1) for c in calls])
    assert torch.equal(t_inputs, ref[f"vid.unet_t_steps{steps}"])


@pytest.mark.parametrize("steps", [1, 4])
def test_video_decode_chunked(case, steps):
    name, tok, inputs, ref = case
    noise = x_init(tok, inputs, "noise_video_raw")
    # reference chunking with dec_frames=0.002288818359375 at 3x5 latents: latent chunks [2, 2, 1]
    assert tok.net.decode_chunk_latents(3, 5) == 1092
    y = tok.decode_latents(ref["vid.latent"], num_steps=steps, noise=noise, value_range=(-1, 1), chunk_latents=2,
                           reference_chunking=True)
    tol = DEC1_TOL if steps == 1 else DECN_TOL
    assert maxdiff(y, ref[f"vid.recon_steps{steps}_chunked"]) <= tol
    consistent = tok.decode_latents(ref["vid.latent"], num_steps=steps, noise=noise, value_range=(-1, 1),
                                    chunk_latents=2)
    # the default mode streams every causal layer: chunked == one chunk up to float noise
    assert maxdiff(consistent, ref[f"vid.recon_steps{steps}_full"]) <= tol
    if name == "small":  # the small layout has no uncached block: both modes are the reference's chunked output
        assert maxdiff(consistent, ref[f"vid.recon_steps{steps}_chunked"]) <= tol
    else:  # base: the reference's chunked output differs from its one-chunk output after the first chunk
        first = 1 + 4 * (2 - 1)
        assert maxdiff(y[:, :, :first], ref[f"vid.recon_steps{steps}_full"][:, :, :first]) <= tol
        assert maxdiff(ref[f"vid.recon_steps{steps}_chunked"], ref[f"vid.recon_steps{steps}_full"]) > 0.1


def test_video_decode_chunk_rule_from_dec_frames(case):
    _, tok, inputs, ref = case
    from dataclasses import replace

    from video.cdt import CDTTokenizer

    other = CDTTokenizer(replace(tok.config, dec_frames=0.002288818359375))
    other.load_state_dict(tok.state_dict())
    assert other.net.decode_chunk_latents(3, 5) == 2
    y = other.decode_latents(ref["vid.latent"], noise=x_init(tok, inputs, "noise_video_raw"), value_range=(-1, 1),
                             reference_chunking=True)
    assert maxdiff(y, ref["vid.recon_steps1_chunked"]) <= DEC1_TOL


def test_image_intermediates(case):
    _, tok, inputs, ref = case
    context = tok.net.autoencoder.decode_context(ref["img.latent"])
    assert len(context) == 4
    for i, c in enumerate(context):
        assert maxdiff(c, ref[f"img.context{i}"]) <= DEC1_TOL
    t = tok.net.schedule(1, "cpu").time_input(0, 1)
    assert maxdiff(tok.net.unet.time_mlp(t), ref["img.time_emb_steps1"]) <= DEC1_TOL
    noise = x_init(tok, inputs, "noise_image_raw")
    for steps in (1, 4):
        calls, hook = _capture_unet(tok)
        try:
            y = tok.decode_latents(ref["img.latent"], num_steps=steps, noise=noise, value_range=(-1, 1))
        finally:
            hook.remove()
        tol = DEC1_TOL if steps == 1 else DECN_TOL
        assert maxdiff(y, ref[f"img.recon_steps{steps}"]) <= tol
        assert len(calls) == steps
        assert maxdiff(torch.stack([c[0] for c in calls]), ref[f"img.unet_x_steps{steps}"]) <= tol
        assert maxdiff(torch.stack([c[2] for c in calls]), ref[f"img.unet_out_steps{steps}"]) <= tol
        assert torch.equal(torch.cat([c[1].reshape(-1) for c in calls]), ref[f"img.unet_t_steps{steps}"])


def test_image_as_4d_batch(case):
    _, tok, inputs, ref = case
    image = inputs["image"][:, :, 0]  # [1, 3, H, W]
    assert maxdiff(tok.encode_latents(image, value_range=(-1, 1)), ref["img.latent"]) <= ENC_TOL


@pytest.mark.parametrize("steps", [1, 4])
def test_end_to_end(case, steps):
    _, tok, inputs, ref = case
    tol = E2E1_TOL if steps == 1 else E2EN_TOL
    lat = tok.encode_latents(inputs["video"], value_range=(-1, 1))
    y = tok.decode_latents(lat, num_steps=steps, noise=x_init(tok, inputs, "noise_video_raw"), value_range=(-1, 1))
    assert maxdiff(y, ref[f"vid.recon_steps{steps}_full"]) <= tol
    lat = tok.encode_latents(inputs["image"], value_range=(-1, 1))
    y = tok.decode_latents(lat, num_steps=steps, noise=x_init(tok, inputs, "noise_image_raw"), value_range=(-1, 1))
    assert maxdiff(y, ref[f"img.recon_steps{steps}"]) <= tol


def test_every_checkpoint_tensor_is_used(case, parity):
    name, tok, _, _ = case
    from video.cdt.convert import convert_state_dict, read_checkpoint

    raw = read_checkpoint(parity("cdt") / f"cdt_tiny_{name}.ckpt")
    converted = convert_state_dict(raw)
    own = tok.net.state_dict()
    assert set(converted) == set(own) and len(raw) == len(own)
    for k, v in converted.items():
        assert torch.equal(own[k], v), k
