"""Codebook statistics: exact figures, masks, batch-size independence, merging."""

import math

import pytest
import torch

from zoo.quantizers import VQ, CodebookStats, ResidualVQ, StatsAccumulator, VQConfig, histogram


def test_figures_on_a_known_histogram():
    ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])               # 4 of 8 codes, uniform
    s = CodebookStats.from_ids(ids, codebook_size=8)
    assert s.counts.tolist() == [[2, 2, 2, 2, 0, 0, 0, 0]]
    assert s.total.tolist() == [8]
    assert s.utilization.tolist() == [0.5]
    assert s.dead_codes.tolist() == [4]
    assert torch.allclose(s.entropy, torch.tensor([2.0], dtype=torch.float64))
    assert torch.allclose(s.perplexity, torch.tensor([4.0], dtype=torch.float64))
    skew = CodebookStats.from_ids(torch.tensor([5, 5, 5, 1]), 8)
    p = torch.tensor([0.25, 0.75], dtype=torch.float64)
    assert math.isclose(float(skew.entropy), float(-(p * p.log2()).sum()), rel_tol=1e-12)
    summ = s.summary()
    assert summ["utilization"] == 0.5 and summ["max_entropy_bits"] == 3.0 and summ["tokens"] == 8.0


def test_mask_excludes_padding_and_minus_one():
    ids = torch.tensor([[1, 2, 3], [4, 4, 7]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    s = CodebookStats.from_ids(ids, 8, mask=mask)
    assert s.counts[0].nonzero().flatten().tolist() == [1, 2, 4]
    assert int(s.total) == 3
    multi = torch.tensor([[0, -1], [1, 2]])                    # [N, num_codebooks], -1 = dropped level
    s2 = CodebookStats.from_ids(multi, 4, num_codebooks=2)
    assert s2.counts.tolist() == [[1, 1, 0, 0], [0, 0, 1, 0]]


def test_batch_size_independent_and_mergeable():
    torch.manual_seed(0)
    ids = torch.randint(0, 16, (12, 10))
    lengths = torch.randint(1, 11, (12,))
    mask = torch.arange(10)[None] < lengths[:, None]
    whole = CodebookStats.from_ids(ids, 16, mask=mask)
    for bs in (1, 5, 12):
        acc = StatsAccumulator(16)
        for start in range(0, 12, bs):
            acc.update(ids[start:start + bs], mask=mask[start:start + bs])
        got = acc.compute()
        assert torch.equal(got.counts, whole.counts)
        assert torch.equal(got.perplexity, whole.perplexity)
    a, b = StatsAccumulator(16), StatsAccumulator(16)
    a.update(ids[:7], mask=mask[:7])
    b.update(ids[7:], mask=mask[7:])
    assert torch.equal(a.merge(b).compute().counts, whole.counts)
    assert torch.equal((CodebookStats.from_ids(ids[:3], 16) + CodebookStats.from_ids(ids[3:], 16)).counts,
                       CodebookStats.from_ids(ids, 16).counts)
    state = a.state_dict()
    c = StatsAccumulator(16)
    c.load_state_dict(state)
    assert torch.equal(c.compute().counts, a.compute().counts)
    c.reset()
    assert int(c.compute().total) == 0
    assert float(c.compute().entropy) == 0.0


def test_quantizer_output_stats_follow_the_mask():
    torch.manual_seed(1)
    q = VQ(dim=4, codebook_size=8).eval()
    z = torch.randn(3, 5, 4)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[:, :2] = True
    out = q(z, mask=mask)
    assert torch.equal(out.stats.counts, histogram(out.ids[:, :2], 8))
    rq = ResidualVQ(vq=VQConfig(dim=4, codebook_size=8), num_quantizers=2).eval()
    rout = rq(z, mask=mask)
    assert torch.equal(rout.stats.counts, histogram(rout.ids[:, :2], 8, num_codebooks=2))


def test_stats_errors():
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        CodebookStats.from_ids(torch.tensor([4]), 4)
    with pytest.raises(TypeError, match="integer dtype"):
        CodebookStats.from_ids(torch.tensor([1.0]), 4)
    with pytest.raises(ValueError, match="codebook axis"):
        CodebookStats.from_ids(torch.tensor([[1, 2, 3]]), 4, num_codebooks=2)
    with pytest.raises(ValueError, match="mask has shape"):
        CodebookStats.from_ids(torch.tensor([1, 2]), 4, mask=torch.tensor([True]))
    with pytest.raises(ValueError, match="cannot merge"):
        CodebookStats.empty(4).merge(CodebookStats.empty(5))
    with pytest.raises(ValueError, match="mask applies to ids"):
        StatsAccumulator(4).update(CodebookStats.empty(4), mask=torch.tensor([True]))
