"""Each kind against an explicit brute-force reference, round trips, gradients and error messages."""


import pytest
import torch
import torch.nn.functional as F

from zoo.quantizers import BSQ, FSQ, VQ, BSQConfig, FSQConfig, QuantizerOutput, VQConfig


def _brute_vq(x, embed):
    """Nearest code by explicit loops over codes (squared euclidean in float64)."""
    x = x.detach().double().reshape(-1, x.shape[-1])
    embed = embed.detach()
    best = []
    for v in x:
        d = [float(((v - e.double()) ** 2).sum()) for e in embed]
        best.append(min(range(len(d)), key=lambda i: d[i]))
    return torch.tensor(best)


def test_vq_matches_brute_force_argmin():
    torch.manual_seed(0)
    q = VQ(dim=6, codebook_size=23).eval()
    z = torch.randn(3, 7, 6)
    ids = q.encode(z)
    assert ids.shape == (3, 7) and ids.dtype == torch.int64
    assert torch.equal(ids.reshape(-1), _brute_vq(z, q.embed))


def test_vq_l2_normalized_and_cosine_match_brute_force():
    torch.manual_seed(1)
    z = torch.randn(4, 5, 8) * 3
    for kwargs in (dict(l2_normalize=True), dict(distance="cosine")):
        q = VQ(dim=8, codebook_size=17, **kwargs).eval()
        e = F.normalize(q.embed.double(), dim=-1)
        ref = _brute_vq(F.normalize(z.double(), dim=-1), e)
        assert torch.equal(q.encode(z).reshape(-1), ref)
        assert torch.allclose(q.decode(q.encode(z)).double(), e[q.encode(z)], atol=1e-6)


def test_vq_first_index_on_ties():
    q = VQ(dim=2, codebook_size=4).eval()
    q.load_codebook(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    assert q.encode(z).tolist() == [0, 1, 0]


def test_vq_projection_layout_and_round_trip():
    torch.manual_seed(2)
    q = VQ(dim=12, codebook_size=9, codebook_dim=4).eval()
    z = torch.randn(2, 3, 5, 12)                               # [B, H, W, D]
    with torch.no_grad():
        out = q(z)
    assert isinstance(out, QuantizerOutput)
    assert out.quantized.shape == z.shape and out.ids.shape == (2, 3, 5)
    with torch.no_grad():
        assert torch.equal(q.decode(out.ids), out.quantized)   # exact codes when no gradient is needed
    st = q(z).quantized                                        # projections are trainable: straight-through value
    assert st.requires_grad and torch.allclose(st, out.quantized, atol=1e-6)
    h = F.linear(z, q.project_in.weight, q.project_in.bias)
    assert torch.equal(out.ids.reshape(-1), _brute_vq(h, q.embed))
    ids = torch.randint(0, 9, (4, 6))
    assert torch.equal(q.encode(q.decode(ids)), q.encode(q.decode(q.encode(q.decode(ids)))))


def test_vq_encode_decode_identity_on_codes():
    torch.manual_seed(3)
    q = VQ(dim=5, codebook_size=32).eval()
    ids = torch.randperm(32).reshape(4, 8)
    assert torch.equal(q.encode(q.decode(ids)), ids)


def _brute_fsq(z, levels):
    """FSQ reference written out per channel (float64 bound, explicit digit expansion, first channel LSB)."""
    out_ids, out_codes = [], []
    for v in z.reshape(-1, len(levels)).double():
        idx, mult, codes = 0, 1, []
        for x, L in zip(v.tolist(), levels):
            half_l = (L - 1) * (1 + 1e-3) / 2
            offset = 0.5 if L % 2 == 0 else 0.0
            shift = torch.atanh(torch.tensor(offset / half_l, dtype=torch.float64)).item()
            b = torch.tanh(torch.tensor(x + shift, dtype=torch.float64)).item() * half_l - offset
            k = round(b)
            codes.append(k / (L // 2))
            idx += (k + L // 2) * mult
            mult *= L
        out_ids.append(idx)
        out_codes.append(codes)
    return torch.tensor(out_ids), torch.tensor(out_codes, dtype=torch.float64)


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [7, 5, 3], [4, 4]])
def test_fsq_matches_brute_force(levels):
    torch.manual_seed(4)
    q = FSQ(levels=levels).eval()
    z = torch.randn(3, 11, len(levels)) * 2
    out = q(z)
    ref_ids, ref_codes = _brute_fsq(z, levels)
    assert torch.equal(out.ids.reshape(-1), ref_ids)
    assert torch.allclose(out.quantized.reshape(-1, len(levels)).double(), ref_codes, atol=1e-6)
    assert torch.equal(q.decode(out.ids), out.quantized)
    all_ids = torch.arange(q.codebook_size)
    # grid codes are not fixed points of the tanh bound, so the inverse of decode is codes_to_ids, not encode
    assert torch.equal(q.codes_to_ids(q.decode(all_ids)), all_ids)
    assert len(torch.unique(q.decode(all_ids), dim=0)) == q.codebook_size


def test_bsq_matches_brute_force_msb_first():
    torch.manual_seed(5)
    bits = 6
    q = BSQ(bits=bits).eval()
    z = torch.randn(4, 9, bits)
    z[0, 0, 2] = 0.0                                           # exact zero -> 0 bit
    ids = q.encode(z)
    ref = []
    for v in z.reshape(-1, bits):
        ref.append(sum((1 << (bits - 1 - k)) for k in range(bits) if v[k] > 0))
    assert torch.equal(ids.reshape(-1), torch.tensor(ref))
    codes = q.decode(ids)
    expect = torch.where(z > 0, 1.0, -1.0) / bits ** 0.5
    assert torch.allclose(codes, expect, atol=1e-7)
    all_ids = torch.arange(2 ** bits)
    assert torch.equal(q.encode(q.decode(all_ids)), all_ids)
    lfq = BSQ(bits=bits, spherical=False).eval()
    assert torch.equal(lfq.decode(ids), torch.where(z > 0, 1.0, -1.0))


@pytest.mark.parametrize("make", [
    lambda: VQ(dim=4, codebook_size=8),
    lambda: VQ(dim=4, codebook_size=8, ema=False, l2_normalize=True),
    lambda: FSQ(levels=[5, 5, 3, 3]),
    lambda: BSQ(bits=4),
    lambda: BSQ(bits=4, dim=6, entropy_loss_weight=0.0),
])
def test_straight_through_gradient_reaches_input(make):
    torch.manual_seed(6)
    q = make().train()
    z = torch.randn(2, 5, q.dim, requires_grad=True)
    out = q(z)
    (out.quantized * torch.arange(q.dim, dtype=torch.float32)).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_vq_straight_through_is_identity_gradient():
    q = VQ(dim=3, codebook_size=5).eval()
    z = torch.randn(4, 3, requires_grad=True)
    q(z).quantized.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_learned_codebook_gets_gradient_from_codebook_loss():
    torch.manual_seed(7)
    q = VQ(dim=4, codebook_size=6, ema=False, commitment_weight=0.25).train()
    out = q(torch.randn(10, 4))
    assert set(out.losses) == {"commitment", "codebook"}
    out.loss.backward()
    assert q.codebook.embed.grad is not None and q.codebook.embed.grad.abs().sum() > 0


def test_low_precision_inputs_give_float32_ids_and_keep_dtype():
    torch.manual_seed(8)
    for q in (VQ(dim=8, codebook_size=64).eval(), FSQ(levels=[8, 5, 5, 5]).eval(), BSQ(bits=8).eval()):
        z = torch.randn(5, 7, q.dim)
        for dtype in (torch.float16, torch.bfloat16):
            zl = z.to(dtype)
            # ids of a low-precision input equal the float32 ids of the same (upcast) values
            assert torch.equal(q.encode(zl), q.encode(zl.float()))
            assert q(zl).quantized.dtype == dtype


def test_errors_name_the_problem():
    q = VQ(dim=4, codebook_size=8).eval()
    with pytest.raises(ValueError, match=r"5 channels.*dim=4"):
        q.encode(torch.randn(2, 5))
    with pytest.raises(TypeError, match="floating point"):
        q.encode(torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        q.encode([[0.0] * 4])
    with pytest.raises(ValueError, match="NaN"):
        q.encode(torch.full((2, 4), float("nan")))
    with pytest.raises(ValueError, match=r"outside \[0, 8\).*max 8"):
        q.decode(torch.tensor([1, 8]))
    with pytest.raises(ValueError, match=r"outside \[0, 8\).*min -1"):
        q.decode(torch.tensor([-1, 2]))
    with pytest.raises(TypeError, match="integer dtype"):
        q.decode(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="empty"):
        q.decode(torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="mask has shape"):
        q(torch.randn(2, 3, 4), mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="torch.bool"):
        q(torch.randn(2, 3, 4), mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"embed has shape \(3, 4\), expected \(8, 4\)"):
        q.load_codebook(torch.randn(3, 4))
    with pytest.raises(ValueError, match="distance"):
        VQConfig(distance="manhattan")
    with pytest.raises(ValueError, match="levels"):
        FSQConfig(levels=[])
    with pytest.raises(ValueError, match="bits"):
        BSQConfig(bits=40)
    with pytest.raises(ValueError, match="not found"):
        VQ.from_encodec_state({"x.embed": torch.zeros(2, 2)}, "y.")


def test_configs_round_trip_through_dicts():
    for cfg in (VQConfig(dim=3, codebook_size=5, l2_normalize=True), FSQConfig(levels=[5, 3]), BSQConfig(bits=3)):
        assert type(cfg).from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown config keys"):
        VQConfig.from_dict({"dim": 3, "codebookk_size": 5})


def test_low_precision_model_keeps_quantizer_float32_and_decode_dtype():
    torch.manual_seed(9)
    q = VQ(dim=6, codebook_size=16, codebook_dim=3).eval()
    z = torch.randn(4, 6)
    ids = q.encode(z)
    before = {k: v.clone() for k, v in q.state_dict().items()}
    model = torch.nn.Sequential(q).to(torch.bfloat16)
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())   # not rounded through bf16
    q.half().double()
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())
    assert all(t.dtype == torch.float32 for t in list(q.parameters()) + list(q.buffers()) if t.is_floating_point())
    assert torch.equal(q.encode(z), ids)
    assert q.decode(ids, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert q.decode(ids).dtype == torch.float32
    with pytest.raises(TypeError, match="floating torch.dtype"):
        q.decode(ids, dtype=torch.long)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(model[0](z).ids, ids)


def test_distance_forms_follow_the_originals_summation_order():
    from zoo.quantizers import nearest_code

    # codes at exactly equal true distance from x (coordinate permutations / reflections of one offset): only
    # float32 rounding decides, and it depends on the summation order
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 4, generator=g) * 20 - 10
    d = torch.randn(300, 4, generator=g)
    e = torch.cat([x + d, x + d[:, [1, 0, 3, 2]], x - d, x + d.flip(1)])      # 1200 codes
    x2, e2, cross = x.pow(2).sum(1, keepdim=True), e.pow(2).sum(1), 2 * (x @ e.t())
    encodec = -((x.pow(2).sum(1, keepdim=True) - 2 * x @ e.t()) + e.t().pow(2).sum(0, keepdim=True))
    titok = (x2 + e2) - cross
    cross_first, norms_first = nearest_code(x, e, form="cross_first"), nearest_code(x, e, form="norms_first")
    assert torch.equal(cross_first, encodec.max(dim=-1).indices)
    assert torch.equal(norms_first, titok.argmin(dim=1))
    assert (cross_first != norms_first).any()                  # the order matters on such ties
    maskgit = torch.addmm(x.pow(2).sum(1, keepdim=True) + e.t().pow(2).sum(0, keepdim=True), x, e.t(), alpha=-2.0)
    assert torch.equal(nearest_code(x, e, form="addmm"), maskgit.argmin(dim=1))
    with pytest.raises(ValueError, match="form must be one of"):
        nearest_code(x, e, form="sqrt")
    with pytest.raises(ValueError, match="distance_form"):
        VQConfig(distance_form="other")
    assert VQ.from_embedding_state({"embedding.weight": e}).config.distance_form == "norms_first"


def test_all_codes_and_bits_per_token():
    from zoo.quantizers import ResidualVQ

    q = VQ(dim=3, codebook_size=8, l2_normalize=True).eval()
    assert torch.allclose(q.all_codes(), F.normalize(q.embed, dim=-1))
    assert q.bits_per_token == 3.0
    f = FSQ(levels=[8, 8, 8, 5, 5, 5])
    assert f.all_codes().shape == (64000, 6) and abs(f.bits_per_token - 15.965784284662087) < 1e-12
    assert torch.equal(f.codes_to_ids(f.all_codes()), torch.arange(64000))
    assert BSQ(bits=14).bits_per_token == 14.0
    r = ResidualVQ(vq=VQConfig(dim=3, codebook_size=16), num_quantizers=4)
    assert r.bits_per_token == 16.0
    with pytest.raises(ValueError, match="decode per level"):
        r.all_codes()
