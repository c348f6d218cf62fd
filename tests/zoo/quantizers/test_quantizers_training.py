"""Training behaviour of VQ: EMA updates, k-means init, dead-code expiry, masks, eval/encode purity."""

import pytest
import torch

from zoo.quantizers import VQ


def _ema_reference(embed_avg, cluster_size, x, ids, decay, eps):
    """One EMA step written out (EnCodec / TFM form): counts and sums, decay, Laplace-smoothed normalisation."""
    K = embed_avg.shape[0]
    onehot = torch.nn.functional.one_hot(ids, K).double()
    cs = decay * cluster_size.double() + (1 - decay) * onehot.sum(0)
    ea = decay * embed_avg.double() + (1 - decay) * onehot.t() @ x.double()
    n = cs.sum()
    smoothed = (cs + eps) / (n + K * eps) * n
    return ea / smoothed[:, None], cs, ea


def test_ema_update_matches_formula_and_moves_codes_toward_data():
    torch.manual_seed(0)
    q = VQ(dim=3, codebook_size=6, decay=0.9, eps=1e-5)
    q.load_codebook(torch.randn(6, 3), cluster_size=torch.rand(6) + 0.5)
    embed0 = q.embed.clone()
    ea0, cs0 = q.codebook.embed_avg[0].clone(), q.codebook.cluster_size[0].clone()
    x = torch.randn(40, 3)
    ids = q.eval().encode(x)
    q.train()
    out = q(x)
    assert torch.equal(out.ids, ids)                          # ids come from the pre-update codebook
    ref_embed, ref_cs, ref_ea = _ema_reference(ea0, cs0, x, ids, 0.9, 1e-5)
    assert torch.allclose(q.embed.double(), ref_embed, atol=1e-5)
    assert torch.allclose(q.codebook.cluster_size[0].double(), ref_cs, atol=1e-6)
    # codes that were used move toward the mean of their assigned vectors
    for c in ids.unique():
        mean = x[ids == c].mean(0)
        assert (q.embed[c] - mean).norm() < (embed0[c] - mean).norm()
    # encode never updates
    before = q.embed.clone()
    q.encode(x)
    assert torch.equal(q.embed, before)
    q.eval()
    q(x)
    assert torch.equal(q.embed, before)


def test_masked_vectors_do_not_touch_the_codebook():
    torch.manual_seed(1)
    a, b = VQ(dim=4, codebook_size=8, decay=0.8), VQ(dim=4, codebook_size=8, decay=0.8)
    init = torch.randn(8, 4)
    a.load_codebook(init)
    b.load_codebook(init)
    z = torch.randn(2, 6, 4)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 3:] = False
    out_a = a.train()(z, mask=mask)
    out_b = b.train()(z[mask])                                # only the real vectors
    assert torch.allclose(a.embed, b.embed, atol=1e-6)
    assert torch.allclose(a.codebook.cluster_size, b.codebook.cluster_size, atol=1e-6)
    assert torch.allclose(out_a.losses["commitment"], out_b.losses["commitment"], atol=1e-6)
    assert torch.equal(out_a.stats.counts, out_b.stats.counts)


def test_kmeans_init_runs_once_and_is_recorded():
    torch.manual_seed(2)
    centers = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
    data = (centers[:, None, :] + 0.05 * torch.randn(4, 50, 2)).reshape(-1, 2)
    q = VQ(dim=2, codebook_size=4, kmeans_init=True, kmeans_iters=10, decay=0.99)
    assert not q.initted and not bool(q.state_dict()["codebook.initted"])
    with pytest.raises(RuntimeError, match="not initialised"):
        q.eval().encode(data)
    q.train()
    q(data[torch.randperm(200)])
    assert q.initted and bool(q.state_dict()["codebook.initted"])
    # Lloyd fixed point: every code is the mean of the vectors it is nearest to, and the fit beats one code
    ids = q.eval().encode(data)
    for c in ids.unique():
        assert (q.embed[c] - data[ids == c].mean(0)).abs().max() < 0.05
    inertia = ((data - q.decode(ids)) ** 2).sum(1).mean()
    assert inertia < 0.5 * ((data - data.mean(0)) ** 2).sum(1).mean()
    q.train()
    # a second training step is an EMA step, not another k-means
    embed1 = q.embed.clone()
    shifted = data + 1.0
    q(shifted)
    assert (q.embed - embed1).abs().max() < 0.05               # decay 0.99 -> a small move
    # the recorded state carries over: a fresh k-means quantizer loading it does not re-initialise
    fresh = VQ(dim=2, codebook_size=4, kmeans_init=True)
    fresh.load_state_dict(q.state_dict())
    assert fresh.initted
    assert torch.equal(fresh.eval().encode(data), q.eval().encode(data))


def test_dead_codes_are_replaced_by_batch_vectors():
    torch.manual_seed(3)
    q = VQ(dim=3, codebook_size=6, threshold_ema_dead_code=1.0, decay=0.5)
    embed = torch.randn(6, 3)
    embed[4:] = 100.0                                         # never chosen
    q.load_codebook(embed, cluster_size=torch.tensor([5.0, 5.0, 5.0, 5.0, 0.0, 0.0]))
    x = torch.randn(30, 3)
    q.train()(x)
    for c in (4, 5):
        assert (q.embed[c] < 50).all()                       # replaced ...
        assert ((x - q.embed[c]).abs().max(dim=1).values < 1e-6).any()  # ... by one of the batch vectors
        assert float(q.codebook.cluster_size[0, c]) == pytest.approx(1.0)  # reset to the threshold
    q2 = VQ(dim=3, codebook_size=6, threshold_ema_dead_code=0.0, decay=0.5)
    q2.load_codebook(embed, cluster_size=torch.tensor([5.0, 5.0, 5.0, 5.0, 0.0, 0.0]))
    q2.train()(x)
    assert (q2.embed[4:] > 10).all()                          # expiry disabled: not replaced by data


def test_commitment_loss_value_and_weight():
    torch.manual_seed(4)
    q = VQ(dim=4, codebook_size=5, commitment_weight=0.25).eval()
    z = torch.randn(7, 4)
    out = q(z)
    expect = 0.25 * ((z - q.decode(out.ids)) ** 2).mean()
    assert torch.allclose(out.losses["commitment"], expect)
    assert torch.allclose(out.loss, expect)
    none = VQ(dim=4, codebook_size=5, commitment_weight=0.0).eval()(z)
    assert none.losses == {} and float(none.loss) == 0.0


def test_fully_masked_batch_changes_nothing():
    torch.manual_seed(5)
    q = VQ(dim=3, codebook_size=4, decay=0.5)
    q.load_codebook(torch.randn(4, 3))
    before = {k: v.clone() for k, v in q.state_dict().items()}
    out = q.train()(torch.randn(2, 5, 3), mask=torch.zeros(2, 5, dtype=torch.bool))
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())
    assert int(out.stats.total) == 0 and float(out.losses["commitment"]) == 0.0
    km = VQ(dim=3, codebook_size=4, kmeans_init=True).train()
    km(torch.randn(6, 3), mask=torch.zeros(6, dtype=torch.bool))
    assert not km.initted                                       # waits for real data
    km(torch.randn(6, 3), mask=torch.tensor([True, True, True, True, False, False]))
    assert km.initted


def test_dead_code_replacements_come_from_unmasked_vectors_only():
    torch.manual_seed(6)
    q = VQ(dim=2, codebook_size=4, threshold_ema_dead_code=1.0, decay=0.5)
    q.load_codebook(torch.tensor([[0.0, 0.0], [1.0, 1.0], [50.0, 50.0], [60.0, 60.0]]),
                    cluster_size=torch.tensor([5.0, 5.0, 0.0, 0.0]))
    real = torch.randn(8, 2) * 0.1
    pad = torch.full((8, 2), -7.0)
    z = torch.stack([torch.cat([real[:4], pad[:4]]), torch.cat([real[4:], pad[4:]])])  # [2, 8, 2]
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, :4] = True
    q.train()(z, mask=mask)
    for c in (2, 3):
        assert ((real - q.embed[c]).abs().max(dim=1).values < 1e-6).any()


def test_bsq_losses_follow_mask_and_match_explicit_entropy():
    from zoo.quantizers import BSQ

    torch.manual_seed(7)
    bits, inv_t = 4, 3.0
    q = BSQ(bits=bits, entropy_loss_weight=0.5, diversity_gamma=1.5, inv_temperature=inv_t,
            commitment_weight=0.25).train()
    z = torch.randn(2, 6, bits)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 2:] = False
    masked = q(z, mask=mask).losses
    real = q(z[mask]).losses
    for k in ("entropy", "commitment"):
        assert torch.allclose(masked[k], real[k])
    # explicit: soft assignment over all 2**bits unit codes at inv_temperature, entropies in nats
    x = torch.nn.functional.normalize(z[mask], dim=-1)
    codes = q.decode(torch.arange(2 ** bits))
    p = (2 * inv_t * x @ codes.t()).softmax(-1)
    h = lambda t: -(t * t.clamp(min=1e-5).log()).sum(-1)
    expect = 0.5 * (h(p).mean() - 1.5 * h(p.mean(0)))
    assert torch.allclose(masked["entropy"], expect, atol=1e-5)
    commit = 0.25 * ((x - q.decode(q.encode(z[mask]))) ** 2).mean()
    assert torch.allclose(masked["commitment"], commit, atol=1e-6)
    assert q.eval()(z).losses == {}                             # inference computes no losses
