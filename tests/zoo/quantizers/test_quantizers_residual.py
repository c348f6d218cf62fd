"""Residual kinds: explicit residual loops as the reference, partial decoding, dropout and errors."""

import pytest
import torch

from zoo.quantizers import ResidualFSQ, ResidualVQ, VQConfig


def _brute_rvq(z, layers):
    x = z.reshape(-1, z.shape[-1]).double()
    ids, total = [], torch.zeros_like(x)
    residual = x.clone()
    for layer in layers:
        e = layer.embed.double()
        d = ((residual[:, None, :] - e[None]) ** 2).sum(-1)
        i = d.argmin(dim=1)
        ids.append(i)
        total += e[i]
        residual -= e[i]
    return torch.stack(ids, -1).reshape(*z.shape[:-1], len(layers)), total.reshape(z.shape)


def test_residual_vq_matches_explicit_loop_and_round_trips():
    torch.manual_seed(0)
    q = ResidualVQ(vq=VQConfig(dim=5, codebook_size=12), num_quantizers=3).eval()
    z = torch.randn(2, 4, 5)
    out = q(z)
    ref_ids, ref_total = _brute_rvq(z, q.layers)
    assert out.ids.shape == (2, 4, 3) and q.num_codebooks == 3
    assert torch.equal(out.ids, ref_ids)
    assert torch.allclose(out.quantized.double(), ref_total, atol=1e-5)
    assert torch.equal(q.decode(out.ids), out.quantized)
    assert out.stats.counts.shape == (3, 12) and int(out.stats.counts.sum()) == 3 * 8
    # coarser reconstructions from the first levels only
    assert torch.allclose(q.decode(out.ids[..., :1]), q.layers[0].decode(out.ids[..., 0]))
    assert torch.equal(q.encode(z, num_levels=2), out.ids[..., :2])
    # more levels -> smaller error (on average)
    errs = [float((q.decode(out.ids[..., :n]) - z).pow(2).mean()) for n in (1, 2, 3)]
    assert errs[0] >= errs[1] >= errs[2]


def test_residual_vq_dropout_marks_dropped_levels_and_gradient_is_identity():
    torch.manual_seed(1)
    q = ResidualVQ(vq=VQConfig(dim=4, codebook_size=8), num_quantizers=4, quantize_dropout=True,
                   quantize_dropout_min_levels=2).train()
    seen = set()
    for _ in range(20):
        z = torch.randn(3, 4, requires_grad=True)
        out = q(z)
        kept = int((out.ids[0] >= 0).sum())
        assert 2 <= kept <= 4
        assert (out.ids[:, :kept] >= 0).all() and (out.ids[:, kept:] == -1).all()
        assert torch.equal(q.decode(out.ids), q.decode(out.ids[:, :kept]))   # -1 = skipped level
        seen.add(kept)
        out.quantized.sum().backward()
        assert torch.equal(z.grad, torch.ones_like(z))
        assert out.losses["commitment"].requires_grad
    assert len(seen) > 1
    q.eval()
    assert (q(torch.randn(3, 4)).ids >= 0).all()                 # no dropout at inference


def test_residual_vq_level_state_keys():
    q = ResidualVQ(vq=VQConfig(dim=4, codebook_size=8), num_quantizers=2)
    keys = set(q.state_dict())
    assert {"layers.0.codebook.embed", "layers.1.codebook.embed_avg", "layers.1.codebook.cluster_size",
            "layers.0.codebook.initted"} <= keys


def test_residual_fsq_round_trip_and_explicit_levels():
    torch.manual_seed(2)
    q = ResidualFSQ(levels=[5, 5, 3], num_quantizers=3).eval()
    assert q.codebook_size == 75 and q.num_codebooks == 3 and q.dim == 3
    z = torch.rand(2, 6, 3) * 2 - 1
    out = q(z)
    assert out.ids.shape == (2, 6, 3)
    assert torch.equal(q.decode(out.ids), out.quantized)
    # decode = sum over levels of the level's grid code scaled by (L - 1) ** -i
    levels = torch.tensor([5.0, 5.0, 3.0])
    expect = torch.zeros(2, 6, 3)
    for i in range(3):
        idx = out.ids[..., i]
        digits, base = [], 1
        for L in (5, 5, 3):
            digits.append((idx // base) % L)
            base *= L
        level_codes = torch.stack(digits, -1).float() * (2.0 / (levels - 1)) - 1.0   # symmetric FSQ grid
        expect += level_codes * levels ** -i
    assert torch.allclose(out.quantized, expect, atol=1e-6)
    errs = [float((q.decode(out.ids[..., :n]) - z).abs().mean()) for n in (1, 2, 3)]
    assert errs[0] > errs[2]


def test_residual_errors():
    q = ResidualVQ(vq=VQConfig(dim=4, codebook_size=8), num_quantizers=2).eval()
    with pytest.raises(ValueError, match=r"3 codebooks.*between 1 and 2"):
        q.decode(torch.zeros(5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"outside \[0, 8\)"):
        q.decode(torch.tensor([[0, 8]]))
    with pytest.raises(ValueError, match=r"outside \[0, 8\)"):
        q.decode(torch.tensor([[0, -2]]))
    with pytest.raises(TypeError, match="integer dtype"):
        q.decode(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="num_levels"):
        q.encode(torch.randn(3, 4), num_levels=3)
    with pytest.raises(ValueError, match="channels"):
        q.encode(torch.randn(3, 5))
    with pytest.raises(ValueError, match="exceeds num_quantizers"):
        ResidualFSQ(levels=[5, 5], num_quantizers=2, quantize_dropout_min_levels=3)
