"""One focused test per exact-detail trap of the FlexTok research note (section 7)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from image.flextok.model import (Attention, Block, BlockWiseSequencePacker, LinearHead, apg_guidance,
                                 build_2d_sincos_posemb, cfg_guidance, patchify, timestep_embedding, unpatchify)


# ---------------------------------------------------------------------------------------------- patches
def test_patch_features_are_ph_pw_c_ordered():
    x = torch.arange(2 * 4 * 6 * 3, dtype=torch.float32).reshape(2, 4, 6, 3)  # [B, H, W, C]
    p = patchify(x, [2, 2])
    assert p.shape == (2, 2, 3, 12)
    # patch (0, 1): rows 0-1, cols 2-3; features run (ph, pw, c) with c fastest
    expected = torch.stack([x[0, ph, 2 + pw, c] for ph in range(2) for pw in range(2) for c in range(3)])
    assert torch.equal(p[0, 0, 1], expected)
    conv_order = torch.stack([x[0, ph, 2 + pw, c] for c in range(3) for ph in range(2) for pw in range(2)])
    assert not torch.equal(p[0, 0, 1], conv_order)  # NOT Conv2d's (c, ph, pw)
    assert torch.equal(unpatchify(p, [2, 2]), x)
    assert patchify(x, [2, 3], flatten=True).shape == (2, 4, 18)
    with pytest.raises(ValueError, match="not divisible"):
        patchify(x, [3, 2])


def test_patch_embedding_of_the_model_uses_the_same_order(make_tiny):
    model = make_tiny()
    emb = model.encoder.module_dict["enc_patch_emb"]
    x = torch.randn(1, 4, 4, 4)
    out = emb({"enc_vae_latents_bhwc": x})["enc_patches"]
    manual = torch.stack([x[0, 2 * i:2 * i + 2, 2 * j:2 * j + 2, :].reshape(-1) for i in range(2) for j in range(2)])
    ref = F.linear(manual, emb.patch_proj.weight, emb.patch_proj.bias).reshape(2, 2, -1)
    torch.testing.assert_close(out[0], ref, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------- attention
def test_attention_scale_is_8_over_head_dim_with_qk_layernorm():
    torch.manual_seed(0)
    attn = Attention(dim=64, num_heads=2, qkv_bias=False, proj_bias=False, qk_norm=True)  # head_dim 32
    assert attn.scale == 0.25 and attn.scale != 1 / math.sqrt(32)
    assert attn.wq.bias is None and attn.proj.bias is None
    x = torch.randn(1, 5, 64)
    q = F.layer_norm(attn.wq(x).view(1, 5, 2, 32).transpose(1, 2), (32,))
    k = F.layer_norm(attn.wk(x).view(1, 5, 2, 32).transpose(1, 2), (32,))
    v = attn.wv(x).view(1, 5, 2, 32).transpose(1, 2)
    w = torch.softmax(q @ k.transpose(-1, -2) * (8 / 32), dim=-1)
    ref = attn.proj((w @ v).transpose(1, 2).reshape(1, 5, 64))
    torch.testing.assert_close(attn(x, None), ref, rtol=0, atol=1e-5)
    w_std = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(32), dim=-1)
    assert (attn.proj((w_std @ v).transpose(1, 2).reshape(1, 5, 64)) - ref).abs().max() > 1e-3


def test_swiglu_hidden_width():
    blk = Block(1792, 28, int(1792 * 4.0), True, False, False, False, True, None)
    assert blk.mlp.fc1.weight.shape == (4778, 1792) and blk.mlp.fc3.weight.shape == (4778, 1792)
    assert blk.mlp.fc1.bias is None


# ---------------------------------------------------------------------------------------------- adaLN
def _ada(d, **chunks):
    order = ["gate_msa", "gate_mlp", "shift_msa", "scale_msa", "shift_mlp", "scale_mlp"]
    return torch.cat([chunks.get(n, torch.zeros(d)) for n in order])[None, None, :]


def test_adaln_chunk_order_gate_gate_shift_scale_shift_scale():
    torch.manual_seed(0)
    d = 32
    blk = Block(d, 2, 4 * d, True, False, False, False, True, adaLN_expansion=1)
    x = torch.randn(1, 3, d)
    ones = torch.ones(d)
    # both gates zero -> identity, whatever the shifts and scales
    ada = _ada(d, shift_msa=ones * 3, scale_msa=ones * 2, shift_mlp=ones, scale_mlp=ones)
    assert torch.equal(blk(x, None, ada), x)
    # gate_msa alone -> x + attn(LN(x)); a shift placed in the first chunk would be a gate instead
    ref = x + blk.attn(F.layer_norm(x, (d,)), None)
    torch.testing.assert_close(blk(x, None, _ada(d, gate_msa=ones)), ref, rtol=0, atol=1e-6)
    # shift/scale of the attention branch: LN(x) * (1 + scale) + shift
    ref = x + blk.attn(F.layer_norm(x, (d,)) * 3 + 0.5, None)
    got = blk(x, None, _ada(d, gate_msa=ones, scale_msa=ones * 2, shift_msa=ones * 0.5))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    # the MLP branch reads the last two chunks
    ref = x + blk.mlp(F.layer_norm(x, (d,)) * 0.5 - 1)
    got = blk(x, None, _ada(d, gate_mlp=ones, scale_mlp=-ones * 0.5, shift_mlp=-ones))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


def test_adaln_expansion_2_modulates_patches_and_registers_separately(make_tiny):
    model = make_tiny()
    tr = model.decoder.module_dict["dec_transformer"]
    assert tr.blocks[0].adaLN_modulation[1].weight.shape == (2 * 6 * 32, 32)
    packer = model.decoder.module_dict["dec_seq_packer"]
    data = packer({"dec_patches": torch.zeros(1, 2, 2, 5), "dec_quants": torch.zeros(1, 3, 5)})
    pack = data["dec_emb_packing_fn"]
    emb = torch.cat([torch.full((5,), 1.0), torch.full((5,), 2.0)])[None]
    per_token = pack(emb)
    assert per_token.shape == (1, 7, 5)
    assert torch.all(per_token[0, :4] == 1) and torch.all(per_token[0, 4:] == 2)  # 4 patches, then 3 registers


def test_head_adaln_chunks_are_shift_then_scale(make_tiny):
    model = make_tiny()
    head = model.decoder.module_dict["dec_to_patches"]
    assert isinstance(head, LinearHead)
    with torch.no_grad():
        head.adaLN_modulation[1].weight.zero_()
        head.adaLN_modulation[1].bias.copy_(torch.cat([torch.full((32,), 0.25), torch.full((32,), 1.0)]))
    x = torch.randn(1, 2, 2, 32)
    out = head({"dec_patches": x, "dec_temb": torch.randn(1, 32)})["dec_patches_out"]
    ref = head.proj(F.layer_norm(x, (32,)) * 2.0 + 0.25)
    torch.testing.assert_close(out, unpatchify(ref, [2, 2]), rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------- time
def test_timestep_embedding_max_period_256_cos_first():
    t = torch.tensor([0.5, 1.0])
    emb = timestep_embedding(t, 8, max_timestep=1.0)
    freqs = 1000.0 * torch.exp(-math.log(256) * torch.arange(4, dtype=torch.float32) / 4)
    args = t[:, None] * freqs[None]
    assert torch.equal(emb, torch.cat([torch.cos(args), torch.sin(args)], dim=-1))
    assert emb[0, 0] == torch.cos(torch.tensor(500.0))  # cos first, t scaled by 1000 / max_timestep
    dit = torch.exp(-math.log(10000) * torch.arange(4, dtype=torch.float32) / 4)
    assert not torch.allclose(freqs / 1000.0, dit)
    emb_1000 = timestep_embedding(t * 1000, 8, max_timestep=1000.0)
    torch.testing.assert_close(emb_1000, emb, rtol=0, atol=5e-4)


def test_timestep_embedder_rejects_t_above_max(make_tiny):
    model = make_tiny()
    te = model.decoder.module_dict["dec_time_embedder"]
    with pytest.raises(ValueError, match="max_timestep"):
        te({"timesteps": torch.tensor([1.5])})


# ---------------------------------------------------------------------------------------------- posembs
def test_2d_sincos_axes_are_swapped():
    pe = build_2d_sincos_posemb(4, 4, 16)  # [1, D, H, W]
    half = 8
    # the first half ("w" in the reference's labels) varies along the ROW axis h only
    assert torch.equal(pe[0, :half, :, 0:1].expand(-1, -1, 4), pe[0, :half])
    assert not torch.equal(pe[0, :half, 0:1, :].expand(-1, 4, -1), pe[0, :half])
    assert torch.equal(pe[0, half:, 0:1, :].expand(-1, 4, -1), pe[0, half:])
    # layout [sin_a, cos_a, sin_b, cos_b], temperature 10000, dim/4 frequencies
    omega = 1.0 / 10000 ** (torch.arange(4, dtype=torch.float32) / 4)
    assert torch.equal(pe[0, 0:4, 3, 1], torch.sin(3 * omega))
    assert torch.equal(pe[0, 4:8, 3, 1], torch.cos(3 * omega))
    assert torch.equal(pe[0, 8:12, 3, 1], torch.sin(1 * omega))


def test_sincos_table_matches_the_release(fx_model_or_skip):
    model = fx_model_or_skip
    for name in ("enc_posemb_module",):
        stored = model.encoder.module_dict[name].posembs
        torch.testing.assert_close(stored, build_2d_sincos_posemb(16, 16, stored.shape[1]), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------- masks
def test_encoder_mask_is_prefix_causal():
    packer = BlockWiseSequencePacker({"input_list_read_keys": ["a", "b"], "packed_seq_write_key": "s",
                                      "block_mask_write_key": "m", "inner_packed_shapes_write_key": "i",
                                      "outer_packed_shapes_write_key": "o", "mask_mode": "causal_last"}, "t")
    m = packer.mask([4, 3], "cpu")
    assert m[:4, :4].all() and not m[:4, 4:].any()  # patches see all patches and no register
    assert m[4:, :4].all()  # registers see all patches
    assert torch.equal(m[4:, 4:], torch.ones(3, 3, dtype=torch.bool).tril())  # causal among registers
    assert packer.reference_padded_length([4, 3]) == 7  # no pad_to_multiple given


def test_encoder_registers_do_not_see_later_registers(make_tiny):
    model = make_tiny()
    lat = torch.randn(1, 4, 8, 8)
    base = model.encoder({"vae_latents": lat})
    reg = model.encoder.module_dict["enc_register_module"]
    with torch.no_grad():
        old = reg.registers[5].clone()
        reg.registers[5] += 1.0
    try:
        changed = model.encoder({"vae_latents": lat})
    finally:
        with torch.no_grad():
            reg.registers[5].copy_(old)
    assert torch.equal(changed["enc_registers"][:, :5], base["enc_registers"][:, :5])
    assert torch.equal(changed["enc_patches"], base["enc_patches"])
    assert not torch.equal(changed["enc_registers"][:, 5:], base["enc_registers"][:, 5:])


# ---------------------------------------------------------------------------------------------- FSQ
def test_fsq_ids_are_little_endian_mixed_radix(make_tiny):
    model = make_tiny()
    q = model.regularizer
    codes = q.decode(torch.tensor([1, 8, 64, 512, 63999]))
    assert torch.equal(codes[0], torch.tensor([-0.75, -1, -1, -1, -1, -1]))  # first channel least significant
    assert torch.equal(codes[1], torch.tensor([-1, -0.75, -1, -1, -1, -1]))
    assert torch.equal(codes[3], torch.tensor([-1, -1, -1, -0.5, -1, -1]))
    assert torch.equal(codes[4], torch.tensor([0.75, 0.75, 0.75, 1, 1, 1]))  # even levels are asymmetric
    # bound with eps 1e-3 and offset 0.5 for even levels: tanh(z + atanh(0.5 / half_l)) * half_l - 0.5
    z = torch.tensor([[0.3, -2.0, 5.0, 0.2, -0.4, 9.0]])
    half = torch.tensor([8, 8, 8, 5, 5, 5]).sub(1).float() * 1.001 / 2
    off = torch.tensor([0.5, 0.5, 0.5, 0, 0, 0])
    ref = torch.round(torch.tanh(z + torch.atanh(off / half)) * half - off) / torch.tensor([4, 4, 4, 2, 2, 2])
    assert torch.equal(q.decode(q.encode(z)), ref)


def test_truncated_ids_are_padded_and_masked(make_tiny):
    model = make_tiny()
    ids = torch.tensor([[5, 900, 63999]])
    codes = model.token_codes(ids)
    assert codes.shape == (1, 8, 6)
    assert torch.equal(codes[:, 3:], model.regularizer.decode(torch.zeros(1, 5, dtype=torch.long)))
    x, t, keep = torch.randn(1, 4, 8, 8), torch.full((1,), 0.7), torch.tensor([3])
    other = codes.clone()
    other[:, 3:] = model.regularizer.decode(torch.full((1, 5), 12345))
    with torch.no_grad():
        assert torch.equal(model.velocity(x, t, codes, keep), model.velocity(x, t, other, keep))
        assert not torch.equal(model.velocity(x, t, codes, keep), model.velocity(x, t, other, torch.tensor([8])))


# ---------------------------------------------------------------------------------------------- conditioning
def test_mask_token_replaces_registers_after_the_posemb_and_null_cond_replaces_all(make_tiny):
    model = make_tiny()
    dec = model.decoder.module_dict
    codes = torch.randn(2, 8, 6)
    data = {"enc_registers_quants": codes, "eval_keep_k": torch.tensor([3, 8])}
    data = dec["dec_from_latents"](data)
    data = dec["dec_registers_posemb_module"](data)
    after_posemb = data["dec_quants"].clone()
    data = dec["dec_nested_dropout"](data)
    q = data["dec_quants"]
    token = dec["dec_nested_dropout"].dropout_mask_token
    assert torch.equal(q[0, 3:], token.expand(5, -1))  # no posemb added on top of the mask token
    assert torch.equal(q[0, :3], after_posemb[0, :3]) and torch.equal(q[1], after_posemb[1])
    data["eval_dropout_mask"] = torch.tensor([False, True])
    q2 = dec["dec_latent_dropout"](data)["dec_quants"]
    assert torch.equal(q2[1], dec["dec_latent_dropout"].nullcond.expand(8, -1))
    assert torch.equal(q2[0], q[0])


def test_zero_null_condition(make_tiny):
    model = make_tiny(nullcond="zero", adaLN_expansion=1)
    null = model.decoder.module_dict["dec_latent_dropout"]
    out = null({"dec_quants": torch.ones(2, 3, 32), "eval_dropout_mask": [True, False]})["dec_quants"]
    assert torch.equal(out[0], torch.zeros(3, 32)) and torch.equal(out[1], torch.ones(3, 32))
    assert not any("nullcond" in k for k in model.state_dict())


# ---------------------------------------------------------------------------------------------- sampler
def test_apg_matches_a_float64_reference():
    g = torch.Generator().manual_seed(0)
    vc, vu = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    v, running = apg_guidance(vc, vu, 7.5, None)
    v2, _ = apg_guidance(vc * 0.9, vu, 7.5, running)
    for i in range(2):
        diff = (vc[i] - vu[i]).double()
        diff2 = (vc[i] * 0.9 - vu[i]).double() - 0.5 * diff  # momentum -0.5
        for dd, c, out in ((diff, vc[i], v[i]), (diff2, vc[i] * 0.9, v2[i])):
            dd = dd * min(1.0, 2.5 / dd.norm().item())  # norm clipped at 2.5
            unit = c.double() / c.double().norm()
            orth = dd - (dd * unit).sum() * unit
            torch.testing.assert_close(out.double(), c.double() + 6.5 * orth, rtol=0, atol=1e-5)
    assert torch.equal(cfg_guidance(vc, vu, 3.0), vu + 3.0 * (vc - vu))


def test_euler_sampler_runs_from_t1_down_to_1_over_T(make_tiny):
    model = make_tiny()
    seen = []
    orig = model.velocity

    def spy(x, t, codes, keep, null=None):
        seen.append(float(t[0]))
        return torch.ones_like(x)

    model.velocity = spy
    try:
        noise = torch.zeros(1, 4, 8, 8)
        out = model.sample_latents(torch.zeros(1, 8, 6), torch.tensor([8]), noise, 4, 1.0)
    finally:
        model.velocity = orig
    assert seen == [1.0, 0.75, 0.5, 0.25]
    torch.testing.assert_close(out, torch.full_like(noise, -1.0))  # x <- x - v / T, four times


def test_noise_is_drawn_image_by_image(make_tiny):
    model = make_tiny()
    noise = model.make_noise(3, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    ref = torch.cat([torch.randn((1, 4, 8, 8), generator=g) for _ in range(3)])
    assert torch.equal(noise, ref)


# ---------------------------------------------------------------------------------------------- VAE scale
def test_flextok_scaling_factor_wins_over_the_vae_config(make_tiny):
    model = make_tiny(scaling_factor=0.8)  # the tiny VAE config says 0.5
    assert model.vae.scaling_factor == 0.8
    img = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        mode = model.vae.vae.encode(img).latent_dist.mode()
        assert torch.equal(model.encode_latents(img), mode * 0.8)
    model2 = make_tiny(scaling_factor=None)
    assert model2.vae.scaling_factor == 0.5


# ---------------------------------------------------------------------------------------------- order
def test_module_order_survives_save_pretrained(make_tiny, tmp_path):
    import zoo

    model = make_tiny()
    names = list(model.decoder.module_dict)
    assert names != sorted(names)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert [m["name"] for m in saved["config"]["decoder"]] == names
    again = zoo.from_pretrained(str(tmp_path))
    assert list(again.decoder.module_dict) == names
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(again.encode(x).ids, model.encode(x).ids)
