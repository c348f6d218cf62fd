"""Parity with the reference apple/ml-flextok on ../shared/parity/flextok (see its MANIFEST.md).

Tolerances are the MANIFEST's (max-abs); token ids must be exact.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import zoo
from image.flextok.model import BlockWiseSequencePacker, PositionalEmbeddingAdder

KS = (1, 4, 16, 32)
STEPS, GUIDANCE, SEED = 6, 7.5, 7


@pytest.fixture(scope="module")
def fx(fx_model_or_skip):
    from pathlib import Path
    import os

    shared = Path(os.environ.get("TOKENZOO_SHARED", Path(__file__).resolve().parents[3].parent / "shared"))
    return fx_model_or_skip, load_file(str(shared / "parity" / "flextok" / "fixture.safetensors"))


def maxdiff(a, b):
    return (a.float() - b.float()).abs().max().item()


def test_loaded_config_follows_the_release(fx):
    model, _ = fx
    # module order is the JSON file order, not alphabetical
    assert list(model.decoder.module_dict)[:4] == ["dec_from_latents", "dec_registers_posemb_module",
                                                   "dec_nested_dropout", "dec_latent_dropout"]
    assert model.n_tokens == 32 and model.spec.codebook_size == 64000
    assert model.vae.scaling_factor == pytest.approx(0.7311)


def test_vae(fx):
    model, d = fx
    with torch.inference_mode():
        post = model.vae.posterior(d["input_image"])
        assert maxdiff(post.mean, d["vae_posterior_mean"]) <= 1e-4
        assert maxdiff(post.logvar, d["vae_posterior_logvar"]) <= 1e-4
        assert maxdiff(model.encode_latents(d["input_image"]), d["vae_latents"]) <= 1e-4
        assert maxdiff(model.decode_latents(d["vae_latents"]), d["vae_recon"]) <= 1e-4


def test_encoder_intermediates_and_tokens(fx):
    model, d = fx
    with torch.inference_mode():
        data = {"vae_latents": d["vae_latents"]}
        for name, module in model.encoder.module_dict.items():
            data = module(data)
            if isinstance(module, PositionalEmbeddingAdder):
                assert maxdiff(data[module.write_key], d["enc_patches_posemb"]) <= 1e-5
            if isinstance(module, BlockWiseSequencePacker):
                # the reference pads its packed sequence to a multiple of 128 (fully masked rows we do not need)
                assert module.reference_padded_length(data[module.outer_key]) == int(d["enc_packed_len"])
        assert maxdiff(data["enc_patches"], d["enc_patches_out"]) <= 1e-4
        assert maxdiff(data["enc_registers"], d["enc_registers_out"]) <= 1e-4
        out = model.encoder_forward(d["vae_latents"])
    assert maxdiff(out["enc_registers_latents"], d["enc_latents_prequant"]) <= 1e-4
    assert maxdiff(out["enc_registers_quants"], d["enc_quants"]) <= 1e-6
    assert torch.equal(out["tokens"], d["tokens"])


def test_public_encode_gives_exact_tokens(fx):
    model, d = fx
    tokens = model.encode(d["input_image"])
    assert tokens.ids.dtype == torch.int64 and tokens.ids.shape == (1, 32)
    assert torch.equal(tokens.ids, d["tokens"])
    assert torch.equal(model.encode(d["input_image_uint8"]).ids, d["tokens"])  # uint8 path: same pixels
    assert torch.equal(model.encode(d["input_image"], num_tokens=4).ids, d["tokens"][:, :4])


def test_fsq_probe(fx):
    model, d = fx
    assert maxdiff(model.regularizer.decode(d["fsq_probe_ids"]), d["fsq_probe_codes"]) <= 1e-6


def test_noise_is_drawn_like_the_reference(fx):
    model, d = fx
    noise = model.make_noise(1, torch.Generator().manual_seed(SEED))
    assert torch.equal(noise, d["flow_noise"])


@pytest.mark.parametrize("k", KS)
def test_decoder_single_pass(fx, k):
    model, d = fx
    with torch.inference_mode():
        codes = model.token_codes(d["tokens"][:, :k])
        keep, t = torch.tensor([k]), torch.ones(1)
        v_c = model.velocity(d["flow_noise"], t, codes, keep)
        v_u = model.velocity(d["flow_noise"], t, codes, keep, torch.tensor([True]))
    assert maxdiff(v_c, d[f"dec_v_cond_t1_k{k}"]) <= 1e-4
    assert maxdiff(v_u, d[f"dec_v_uncond_t1_k{k}"]) <= 1e-4


@pytest.mark.parametrize("k", KS)
def test_decode_latents_and_images(fx, k):
    model, d = fx
    ids = d["tokens"][:, :k]
    with torch.inference_mode():
        lat = model.sample_latents(model.token_codes(ids), torch.tensor([k]), d["flow_noise"], STEPS, GUIDANCE, "apg")
    assert maxdiff(lat, d[f"dec_latents_k{k}"]) <= 2e-4
    img = model.decode(ids, num_steps=STEPS, guidance_scale=GUIDANCE, guidance="apg",
                       generator=torch.Generator().manual_seed(SEED))
    assert img.shape == (1, 3, 256, 256) and img.dtype == torch.float32
    assert maxdiff(img, d[f"recon_k{k}"]) <= 5e-4
    if k == KS[-1]:  # explicit noise reproduces the generator path bit for bit
        img2 = model.decode(ids, num_steps=STEPS, guidance_scale=GUIDANCE, noise=d["flow_noise"])
        assert torch.equal(img, img2)


def test_decode_without_guidance(fx):
    model, d = fx
    with torch.inference_mode():
        lat = model.sample_latents(model.token_codes(d["tokens"]), torch.tensor([32]), d["flow_noise"], STEPS, 1.0)
    assert maxdiff(lat, d["dec_latents_nocfg_k32"]) <= 2e-4


def test_batched_decode_with_mixed_lengths_matches_single(fx):
    """Per-item prefix lengths in one batch; noise drawn per image in batch order as the reference does."""
    model, d = fx
    ids = d["tokens"].repeat(2, 1)
    tokens = zoo.Tokens(ids, lengths=torch.tensor([4, 32]))
    gen = torch.Generator().manual_seed(SEED)
    img = model.decode(tokens, num_steps=STEPS, guidance_scale=GUIDANCE, generator=gen)
    assert maxdiff(img[:1], d["recon_k4"]) <= 5e-4  # first image uses the first noise draw (seed 7)
    noise = model.make_noise(2, torch.Generator().manual_seed(SEED))
    single = model.decode(d["tokens"], num_steps=STEPS, guidance_scale=GUIDANCE, noise=noise[1:])
    # items never interact; batched GEMMs round differently from single ones (measured ~2e-6 on the latents)
    assert maxdiff(img[1:], single) <= 5e-5


def test_files_real_images(fx, shared_data, tmp_path):
    """encode_file on real images of the data corpus (PNG -> uint8 -> [-1, 1]); the fixture image file gives the
    fixture's tokens; a non-square original is resized and centre-cropped to 256 with a note."""
    model, d = fx
    folder = shared_data("image")
    tokens = model.encode_file(folder / "256" / "imagenet_val_00008636.png")
    assert torch.equal(tokens.ids, d["tokens"])
    other = model.encode_file(folder / "original" / "coffee.png")
    assert other.ids.shape == (1, 32) and "centre-cropped" in other.metadata.get("notes", "")
    img = model.decode(other.ids[:, :8], num_steps=2, generator=torch.Generator().manual_seed(0))
    out = model.write_file(img, tmp_path / "coffee_k8.png")
    assert out.is_file()
