"""What a recipe needs so that N processes train the same model as one process with the same global batch.

Two things break that equivalence when a recipe draws noise itself and runs its loss on the unwrapped model
(``ctx.unwrap()``, as the diffusion / flow recipes do, because they call pieces of the model rather than its
``forward``):

- randomness: a generator seeded per step gives every process the same numbers, so the two halves of a batch
  split over two processes would get identical noise where one process gives them different noise. Draw the
  per-item quantities (noise, timesteps, masks of an item) from :func:`item_generators` instead: one generator
  per item seeded by ``(seed, step, dataset index)``, so an item's draws do not depend on the process holding it
  nor on its place in the batch. Per-batch decisions (e.g. "drop the condition for this batch") stay on a
  per-step generator, which every process and a single process draw identically.
- gradients: without a ``forward`` through the DDP wrapper, DDP's gradient hooks are never armed and every
  process would step on its own half-batch gradient. :func:`average_gradients` all-reduces them.
"""

from __future__ import annotations

from typing import Callable, List, Sequence

import torch

__all__ = ["item_generators", "per_item", "average_gradients", "step_generator"]

_MIX = 1_000_003  # a prime: (seed, step, index) -> one 64-bit seed without collisions at realistic sizes


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of one training step: identical on every process (for per-batch decisions)."""
    return torch.Generator().manual_seed(int(seed) * _MIX + int(step))


def item_generators(seed: int, step: int, index: torch.Tensor) -> List[torch.Generator]:
    """One CPU generator per item of a training batch, seeded by ``(seed, step, dataset index)``.

    ``index``: the dataset indices of the batch (``batch["index"]`` from :class:`zoo.train.FolderDataset`). The
    same item at the same step gets the same numbers whichever process holds it, and a resumed run redraws them.
    """
    if not isinstance(index, torch.Tensor) or index.dtype.is_floating_point:
        raise TypeError(f"index must be an integer tensor of dataset indices (batch['index']), got "
                        f"{index.dtype if isinstance(index, torch.Tensor) else type(index).__name__}")
    return [torch.Generator().manual_seed((int(seed) * _MIX + int(step)) * _MIX + int(i))
            for i in index.reshape(-1).tolist()]


def per_item(generators: Sequence[torch.Generator], draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
    """``torch.stack([draw(g) for g in generators])``: a batch of per-item draws."""
    if len(generators) == 0:
        raise ValueError("per_item needs at least one generator")
    return torch.stack([draw(g) for g in generators])


def average_gradients(ctx, name: str = "model") -> None:
    """Average the gradients of module ``name`` over the processes (a no-op with one process).

    Call it after ``ctx.backward`` and before ``ctx.optimizer_step`` in a recipe whose loss does not run through
    the DDP-wrapped module. One flat all-reduce, only when gradients are due to sync (the last micro-step of an
    accumulation). Parameters without a gradient take part as zeros (the same on every process, so the average
    is consistent); a gradient DDP had already averaged is left unchanged by a second average.
    """
    acc = ctx.accelerator
    if acc.num_processes == 1 or not acc.sync_gradients:
        return
    import torch.distributed as dist

    params = [p for p in ctx.unwrap(name).parameters() if p.requires_grad]
    if not params:
        return
    had_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.uint8)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    flags = had_grad.to(flat.device)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    flat /= acc.num_processes
    start = 0
    for p, got in zip(params, flags.tolist()):
        n = p.numel()
        # a parameter no process computed a gradient for stays without one (the optimiser then skips it)
        p.grad = flat[start:start + n].view_as(p).clone() if got else None
        start += n
