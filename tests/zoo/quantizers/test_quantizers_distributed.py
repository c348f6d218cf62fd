"""Two CPU processes (gloo): k-means init, EMA statistics and codebook usage are synchronised."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zoo.quantizers import StatsAccumulator, VQ


def _data(rank):
    g = torch.Generator().manual_seed(1000 + rank)
    return torch.randn(24 + 8 * rank, 3, generator=g) + 2.0 * rank   # different sizes and distributions


def _init_codebook():
    return torch.randn(5, 3, generator=torch.Generator().manual_seed(7))


def _worker(rank, world, init_file, out_dir):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    early = VQ(dim=3, codebook_size=5, decay=0.9)            # built before the process group exists
    early.load_codebook(_init_codebook())
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(rank)                               # local RNGs differ on purpose
        x = _data(rank)
        km = VQ(dim=3, codebook_size=4, kmeans_init=True, kmeans_iters=4)
        km.train()(x)
        ema = VQ(dim=3, codebook_size=5, decay=0.9)
        ema.load_codebook(_init_codebook())
        ema.train()(x)
        early.train()(x)
        dead = VQ(dim=3, codebook_size=5, decay=0.9, threshold_ema_dead_code=1.0)
        far = _init_codebook()
        far[3:] = 100.0                                       # never used: replaced by synchronised samples
        dead.load_codebook(far, cluster_size=torch.tensor([4.0, 4.0, 4.0, 0.0, 0.0]))
        dead.train()(x)
        acc = StatsAccumulator(5)
        acc.update(ema.eval().encode(x))
        local = acc.compute().counts.clone()
        acc.all_reduce()
        torch.save({"km_embed": km.embed.clone(), "km_initted": km.initted, "km_sync": km.codebook.use_ddp,
                    "ema_embed": ema.embed.clone(), "early_embed": early.embed.clone(),
                    "dead_embed": dead.embed.clone(), "ema_cs": ema.codebook.cluster_size.clone(),
                    "local_counts": local, "counts": acc.compute().counts},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # ~6 s on an idle 2-core machine (two interpreter start-ups), more when the CPU is shared
def test_two_process_gloo_sync(tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    init_file = tmp_path / "pg_init"
    mp.spawn(_worker, args=(2, str(init_file), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # k-means: both processes end with the same codebook, built from both processes' data
    assert r0["km_sync"] and r0["km_initted"] and r1["km_initted"]
    assert torch.equal(r0["km_embed"], r1["km_embed"])
    # EMA: identical on both ranks and equal to one process updating on the union of the data
    assert torch.equal(r0["ema_embed"], r1["ema_embed"])
    assert torch.equal(r0["early_embed"], r0["ema_embed"]) and torch.equal(r1["early_embed"], r0["ema_embed"])
    single = VQ(dim=3, codebook_size=5, decay=0.9)
    single.load_codebook(_init_codebook())
    single.train()(torch.cat([_data(0), _data(1)]))
    assert torch.allclose(r0["ema_embed"], single.embed, atol=1e-5)
    assert torch.allclose(r0["ema_cs"], single.codebook.cluster_size, atol=1e-5)
    # dead-code replacement draws the same vectors on both ranks, from either rank's data
    assert torch.equal(r0["dead_embed"], r1["dead_embed"])
    union = torch.cat([_data(0), _data(1)])
    for c in (3, 4):
        assert (r0["dead_embed"][c] < 50).all()
        assert ((union - r0["dead_embed"][c]).abs().max(dim=1).values < 1e-6).any()
    # statistics: all_reduce sums the local histograms
    assert torch.equal(r0["counts"], r0["local_counts"] + r1["local_counts"])
    assert torch.equal(r0["counts"], r1["counts"])
