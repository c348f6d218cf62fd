"""Parity: each original's stored codebook, loaded through the core's mapping helpers, reproduces the
original's ids on the fixture latents exactly (and for fp16/bf16 inputs too)."""

import json

import numpy as np
import pytest
import safetensors.torch as st
import torch

from zoo.quantizers import BSQ, FSQ, VQ

LOW = (torch.float16, torch.bfloat16)


def _check_ids(q, z, ref):
    ids = q.encode(z)
    assert ids.dtype == torch.int64
    assert ids.shape == ref.shape
    assert torch.equal(ids, ref)
    for dtype in LOW:
        assert torch.equal(q.encode(z.to(dtype)), ref), f"ids change for {dtype} input"
        with torch.autocast("cpu", dtype=torch.bfloat16):     # distances stay float32 under autocast
            assert torch.equal(q(z).ids, ref)
        # a model cast to low precision keeps its quantizer (codebook) in float32
        torch.nn.Sequential(q).to(dtype)
        assert torch.equal(q.encode(z), ref)
        q.float()
    return ids


def test_wavtokenizer_encodec_ema_codebook(parity):
    root = parity("wavtokenizer")
    ckpt = torch.load(root / "WavTokenizer_tiny_320_24k_128.ckpt", map_location="cpu", weights_only=True)
    prefix = "feature_extractor.encodec.quantizer.vq.layers.0._codebook."
    q = VQ.from_encodec_state(ckpt["state_dict"], prefix).eval()
    assert q.initted and q.codebook_size == 128 and q.dim == 32
    inter = st.load_file(str(root / "intermediates.safetensors"))
    out = st.load_file(str(root / "outputs.safetensors"))
    z = inter["enc_out"].transpose(1, 2)                      # (B, D, T) -> channel-last (B, T, D)
    ids = _check_ids(q, z, out["codes"][0])                   # reference codes are (n_q, B, T)
    assert torch.equal(q.decode(ids).transpose(1, 2), out["features"])
    # the EMA buffers are carried, not recomputed
    sd = ckpt["state_dict"]
    assert torch.equal(q.codebook.embed_avg[0], sd[prefix + "embed_avg"])
    assert torch.equal(q.codebook.cluster_size[0], sd[prefix + "cluster_size"])


@pytest.mark.parametrize("variant,l2", [("two_stage", True), ("single_stage_vq", False)])
def test_titok_embedding_codebook(parity, variant, l2):
    root = parity("titok")
    state = st.load_file(str(root / variant / "model.safetensors"))
    ref = st.load_file(str(root / f"{variant}_outputs.safetensors"))
    q = VQ.from_embedding_state(state, "quantize.", l2_normalize=l2).eval()
    z = ref["z_pre_quant"].permute(0, 2, 3, 1)                # (B, D, 1, K) -> (B, 1, K, D)
    ids = _check_ids(q, z, ref["tokens"])
    assert (q.decode(ids).permute(0, 3, 1, 2) - ref["z_from_tokens"]).abs().max() <= 1e-6
    out = q(z)
    assert (out.quantized.permute(0, 3, 1, 2) - ref["z_quantized"]).abs().max() <= 1e-4


def test_tfm_ema_embedding_codebook(parity):
    root = parity("tfm")
    state = torch.load(root / "tfm_tokenizer_last.pth", map_location="cpu", weights_only=True)
    ref = np.load(root / "reference_outputs.npz")
    q = VQ.from_ema_embedding_state(state, "quantizer.").eval()
    assert not q.config.normalized                            # unnormalised codebook, euclidean
    z = torch.from_numpy(ref["quant_in"])                     # (B*C, T, E), already l2-normalised
    tokens = torch.from_numpy(ref["tokens"])                  # (B, C, T)
    ids = _check_ids(q, z, tokens.reshape(z.shape[:2]))
    assert (q.decode(ids) - torch.from_numpy(ref["quant_lookup"])).abs().max() <= 1e-4
    assert torch.equal(q.codebook.embed_avg[0], state["quantizer.ema_w"])


def test_tadicodec_bsq(parity):
    root = parity("tadicodec")
    ref = st.load_file(str(root / "outputs.safetensors"))
    state = st.load_file(str(root / "ckpt" / "model.safetensors"))
    bits = state["bsq.basis"].numel()
    q = BSQ(bits=bits).eval()
    q.load_state_dict(BSQ.convert_bsq_state(state, "bsq."))
    ids = _check_ids(q, ref["latent_l2norm"], ref["indices"])
    assert torch.equal(q.ids_to_bits(ids), ref["bsq_bits"])
    assert torch.equal(q.bits_to_ids(ref["bsq_bits"]), ref["indices"])
    assert (q.decode(ids) - ref["vq_emb_from_indices"]).abs().max() <= 1e-7
    # the sign does not depend on the normalisation: the raw projection gives the same ids
    assert torch.equal(q.encode(ref["vq_in_linear_out"]), ref["indices"])


def test_flextok_fsq(parity):
    root = parity("flextok")
    ref = st.load_file(str(root / "fixture.safetensors"))
    levels = json.loads((root / "flextok_model" / "config.json").read_text())["regularizer"]["levels"]
    q = FSQ(levels=levels).eval()
    assert q.codebook_size == int(np.prod(levels))
    _check_ids(q, ref["enc_latents_prequant"], ref["tokens"])
    assert (q(ref["enc_latents_prequant"]).quantized - ref["enc_quants"]).abs().max() <= 1e-6
    assert (q.decode(ref["fsq_probe_ids"]) - ref["fsq_probe_codes"]).abs().max() <= 1e-6
    assert torch.equal(q.codes_to_ids(ref["fsq_probe_codes"]), ref["fsq_probe_ids"])


def test_load_state_from_and_convert_state_layouts(parity):
    from zoo.quantizers import ResidualVQ, VQConfig, convert_state, load_state_from

    root = parity("wavtokenizer")
    sd = torch.load(root / "WavTokenizer_tiny_320_24k_128.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    prefix = "feature_extractor.encodec.quantizer.vq.layers.{i}._codebook."
    out = st.load_file(str(root / "outputs.safetensors"))
    z = st.load_file(str(root / "intermediates.safetensors"))["enc_out"].transpose(1, 2)
    # the family's model holds a core VQ built from its config; the converter only calls load_state_from
    vq = load_state_from(VQ(dim=32, codebook_size=128), sd, "encodec", prefix.format(i=0)).eval()
    assert torch.equal(vq.encode(z), out["codes"][0])
    # the same release read as a one-level residual stack
    rvq = load_state_from(ResidualVQ(vq=VQConfig(dim=32, codebook_size=128), num_quantizers=1), sd, "encodec",
                          prefix).eval()
    assert torch.equal(rvq.encode(z)[..., 0], out["codes"][0])
    # convert_state gives keys that load strictly into the core module
    state = convert_state("encodec", sd, prefix, num_quantizers=1)
    fresh = ResidualVQ(vq=VQConfig(dim=32, codebook_size=128), num_quantizers=1)
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh.eval().encode(z), rvq.encode(z))
    with pytest.raises(ValueError, match=r"expects \(64, 32\)"):
        load_state_from(VQ(dim=32, codebook_size=64), sd, "encodec", prefix.format(i=0))
    with pytest.raises(ValueError, match="unknown quantizer state layout"):
        load_state_from(vq, sd, "vqgan")
    with pytest.raises(TypeError, match="BSQ"):
        load_state_from(vq, {}, "bsq")

    tadi = st.load_file(str(parity("tadicodec") / "ckpt" / "model.safetensors"))
    bsq = load_state_from(BSQ(bits=14), tadi, "bsq", "bsq.")
    assert torch.equal(bsq.lfq.mask, tadi["bsq.basis"])
    with pytest.raises(ValueError, match="MSB-first"):
        load_state_from(BSQ(bits=14), {"bsq.basis": tadi["bsq.basis"].flip(0)}, "bsq", "bsq.")


def test_titok_maskgit_vqgan_codebook(parity):
    root = parity("titok")
    state = torch.load(root / "maskgit_vqgan" / "maskgit-vqgan-fixture.bin", map_location="cpu", weights_only=True)
    ref = st.load_file(str(root / "maskgit_vqgan_outputs.safetensors"))
    q = VQ.from_embedding_state(state, "quantize.", distance_form="addmm").eval()
    z = ref["encoder_out"].permute(0, 2, 3, 1)                # (B, C, h, w) -> (B, h, w, C)
    ids = _check_ids(q, z, ref["codes"].reshape(z.shape[:3]))  # codes are row-major (B, h*w)
    assert torch.equal(q.decode(ids), state["quantize.embedding.weight"][ids])
