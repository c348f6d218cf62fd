"""Property tests over random shapes and configurations (small, fast), and the config-driven factory."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.quantizers import (BSQ, FSQ, KINDS, VQ, ResidualVQ, VQConfig, build_quantizer, nearest_code,
                            quantizer_spec)

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
lead_shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


@SETTINGS
@given(lead=lead_shapes, dim=st.integers(1, 6), k=st.integers(1, 40), seed=st.integers(0, 2 ** 16),
       metric=st.sampled_from(["euclidean", "cosine"]))
def test_vq_ids_are_the_exact_float64_argmin_when_unambiguous(lead, dim, k, seed, metric):
    g = torch.Generator().manual_seed(seed)
    q = VQ(dim=dim, codebook_size=k, distance=metric).eval()
    q.load_codebook(torch.randn(k, dim, generator=g))
    z = torch.randn(*lead, dim, generator=g)
    ids = q.encode(z)
    assert ids.shape == lead
    x = z.reshape(-1, dim).double()
    e = q.embed.double()
    if metric == "cosine":
        x, e = torch.nn.functional.normalize(x, dim=-1), torch.nn.functional.normalize(e, dim=-1)
        score = -(x @ e.t())
    else:
        score = ((x[:, None] - e[None]) ** 2).sum(-1)
    best = score.min(dim=1).values
    chosen = score.gather(1, ids.reshape(-1, 1))[:, 0]
    # the chosen code is optimal up to float32 rounding of the distance
    assert torch.all(chosen - best <= 1e-5 * (1 + best.abs()))
    with torch.no_grad():
        assert torch.equal(q(z).quantized, q.decode(ids))


@SETTINGS
@given(levels=st.lists(st.integers(3, 9), min_size=1, max_size=4), lead=lead_shapes, seed=st.integers(0, 2 ** 16))
def test_fsq_ids_in_range_and_decode_inverts(levels, lead, seed):
    g = torch.Generator().manual_seed(seed)
    q = FSQ(levels=levels).eval()
    z = torch.randn(*lead, len(levels), generator=g) * 3
    out = q(z)
    assert out.ids.shape == lead
    assert int(out.ids.min()) >= 0 and int(out.ids.max()) < q.codebook_size
    assert torch.equal(q.codes_to_ids(out.quantized), out.ids)
    assert torch.equal(q.decode(out.ids), out.quantized)


@SETTINGS
@given(bits=st.integers(1, 10), lead=lead_shapes, seed=st.integers(0, 2 ** 16))
def test_bsq_round_trip(bits, lead, seed):
    g = torch.Generator().manual_seed(seed)
    q = BSQ(bits=bits).eval()
    ids = torch.randint(0, 2 ** bits, lead, generator=g)
    assert torch.equal(q.encode(q.decode(ids)), ids)
    assert torch.equal(q.bits_to_ids(q.ids_to_bits(ids)), ids)


def test_nearest_code_blocks_agree_with_one_block(monkeypatch):
    import zoo.quantizers.vq as vq_mod

    torch.manual_seed(0)
    x, e = torch.randn(300, 8), torch.randn(50, 8)
    whole = nearest_code(x, e)
    monkeypatch.setattr(vq_mod, "_DIST_BLOCK_ELEMENTS", 50 * 7)   # 7 rows per block
    assert torch.equal(nearest_code(x, e), whole)


@pytest.mark.parametrize("kind,config", [
    ("vq", {"dim": 4, "codebook_size": 8, "l2_normalize": True}),
    ("fsq", {"levels": [5, 3]}),
    ("bsq", {"bits": 5}),
    ("residual_vq", {"vq": {"dim": 4, "codebook_size": 8}, "num_quantizers": 2}),
    ("residual_fsq", {"levels": [5, 3], "num_quantizers": 2}),
])
def test_factory_round_trips_through_plain_dicts(kind, config):
    q = build_quantizer(kind, config)
    assert isinstance(q, KINDS[kind][0])
    spec = quantizer_spec(q)
    again = build_quantizer(**spec)
    assert quantizer_spec(again) == spec
    z = torch.randn(3, q.dim)
    again.load_state_dict(q.state_dict())
    assert torch.equal(again.eval().encode(z), q.eval().encode(z))


def test_factory_errors():
    with pytest.raises(ValueError, match="unknown quantizer kind"):
        build_quantizer("pq", {})
    with pytest.raises(TypeError, match="needs a VQConfig"):
        build_quantizer("vq", [1, 2])
    with pytest.raises(ValueError, match="unknown config keys"):
        build_quantizer("fsq", {"level": [5]})
    with pytest.raises(TypeError, match="not a zoo quantizer"):
        quantizer_spec(torch.nn.Linear(2, 2))
    assert isinstance(build_quantizer("residual_vq", {"vq": VQConfig(dim=3, codebook_size=4).to_dict()}),
                      ResidualVQ)
