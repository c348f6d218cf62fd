"""TaDiCodec's flow-matching sampler: Euler steps at midpoint times with classifier-free guidance and rescale.

With ``n`` steps of size ``h = 1/n`` the times are ``t_i = (i + 0.5) h`` and ``x <- x + h v(x, t_i)``, starting
from Gaussian noise ``x_0`` (the only randomness). When guidance is on (``guidance_scale > 0``) the velocity is

    g = u + s (v - u)                                   (u: unconditional, v: conditional prediction)
    v <- r * g * std(v) / std(g) + (1 - r) * g          (skipped when std(g) <= 1e-6 or r == 0)

with unbiased standard deviations. ``rescale_mode="batch"`` takes them over the whole batch tensor, exactly as
the reference does (so the items of a batch influence each other); ``"item"`` takes them per item, over that
item's valid frames (batched output == one item at a time). Both agree for a batch of one.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

__all__ = ["midpoint_times", "cfg_rescale", "sample_euler_cfg", "RESCALE_MODES"]

RESCALE_MODES = ("item", "batch")

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def midpoint_times(num_steps: int):
    """The reference's times ``(i + 0.5) / num_steps`` as Python floats, and the step ``1 / num_steps``."""
    h = 1.0 / num_steps
    return [(0 + (i + 0.5) * h) for i in range(num_steps)], h


def _std(x: torch.Tensor, mask: Optional[torch.Tensor], per_item: bool) -> torch.Tensor:
    if not per_item:
        return x.std() if mask is None else x[mask].std()
    if mask is None:
        return x.reshape(x.shape[0], -1).std(dim=1).reshape(-1, *([1] * (x.ndim - 1)))
    out = torch.stack([x[b][mask[b]].std() for b in range(x.shape[0])])
    return out.reshape(-1, *([1] * (x.ndim - 1)))


def cfg_rescale(v_cond: torch.Tensor, v_uncond: torch.Tensor, guidance_scale: float, rescale: float,
                mode: str = "item", mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Guided velocity with the std rescale (see the module docstring); ``mask`` [B, T] marks valid frames."""
    g = v_uncond + guidance_scale * (v_cond - v_uncond)
    if rescale <= 0:
        return g
    m = None if mask is None else mask[..., None].expand_as(g)
    if mode == "batch":
        v_std = _std(v_cond, m, per_item=False)
        g_std = _std(g, m, per_item=False)
        if g_std > 1e-6:
            return rescale * (g * (v_std / g_std)) + (1 - rescale) * g
        return g
    v_std = _std(v_cond, m, per_item=True)
    g_std = _std(g, m, per_item=True)
    ok = g_std > 1e-6
    rescaled = rescale * (g * (v_std / torch.where(ok, g_std, torch.ones_like(g_std)))) + (1 - rescale) * g
    return torch.where(ok, rescaled, g)


def sample_euler_cfg(velocity: VelocityFn, noise: torch.Tensor, num_steps: int,
                     uncond_velocity: Optional[VelocityFn] = None, guidance_scale: float = 2.0,
                     rescale: float = 0.75, rescale_mode: str = "item", mask: Optional[torch.Tensor] = None,
                     callback: Optional[Callable[..., None]] = None) -> torch.Tensor:
    """Integrate ``dx/dt = v(x, t)`` from ``noise`` at ``t=0`` to ``t=1`` with ``num_steps`` midpoint Euler steps.

    ``velocity(x, t)`` / ``uncond_velocity(x, t)`` map the target-region sample ``x [B, T, C]`` and the times
    ``t [B]`` to velocities of the same shape. Guidance is used when ``uncond_velocity`` is given and
    ``guidance_scale > 0``. ``callback(step=i, t=t, x=x, v_cond=v, v_uncond=u, v=v_final)`` sees every step.
    """
    if rescale_mode not in RESCALE_MODES:
        raise ValueError(f"rescale_mode must be one of {list(RESCALE_MODES)}, got {rescale_mode!r}")
    times, h = midpoint_times(num_steps)
    x = noise
    for i, ti in enumerate(times):
        t = ti * torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        v = velocity(x, t)
        u = None
        out = v
        if uncond_velocity is not None and guidance_scale > 0:
            u = uncond_velocity(x, t)
            out = cfg_rescale(v, u, guidance_scale, rescale, rescale_mode, mask)
        if callback is not None:
            callback(step=i, t=t, x=x, v_cond=v, v_uncond=u, v=out)
        x = x + out * h
    return x
