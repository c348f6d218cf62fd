"""FlexTok: images -> ordered 1D FSQ tokens -> images through a rectified-flow decoder.

Pipeline (arXiv 2502.13967): a KL VAE (diffusers ``AutoencoderKL``, f8) turns a 256x256 image into a scaled latent
grid; the encoder (a ViT over 2x2 latent patches followed by ``n`` register tokens, prefix-causal mask) writes the
registers, a linear head maps them to FSQ space ([8, 8, 8, 5, 5, 5], 64000 codes); the decoder is a velocity
model over noisy VAE latents conditioned on the (nested-dropout masked) registers, sampled with Euler steps of
the rectified flow and classifier-free / adaptive projected guidance; the VAE decodes the result.

The encoder and decoder are *data-dict pipelines*: each module reads and writes named entries of a dict and runs
in the order the config lists it, exactly like the release's ``SequentialModuleDictWrapper``. Unlike the
reference, every entry is an ordinary batch ``[B, ...]`` (no sequence packing, no padding to 128): images never
attend to each other, so per-image results are those of the packed reference, and attention runs through
``F.scaled_dot_product_attention`` with a dense boolean mask built from the packer's ``mask_mode``.

Parameter names mirror the release's ``state_dict`` (``encoder.module_dict.<name>.*``, ``vae.vae.*`` ...), so
the converter only strips wrapper prefixes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from zoo.quantizers import FSQ
from zoo.registry import register_family
from zoo.tokenizer import ImageTokenizer, TokenizerSpec
from zoo.tokens import Tokens
from zoo.validation import check_choice, check_tensor, describe

from .config import FUNCTION_TARGETS, MODULE_TARGETS, FlexTokConfig, FlexTokVAEConfig

__all__ = ["FlexTok", "FlexTokVAE", "build_module", "build_2d_sincos_posemb", "timestep_embedding", "patchify", "unpatchify",
           "apg_guidance", "cfg_guidance"]

# ============================================================================================== helpers


def _kwargs(spec: Dict[str, Any], where: str, used: Dict[str, Any], ignored: Sequence[str] = ()) -> Dict[str, Any]:
    """Pick the module arguments of ``spec``: ``used`` maps name -> default (``...`` = required); ``ignored`` are
    training-only arguments that do not change inference. Anything else is an error naming the argument."""
    spec = {k: v for k, v in spec.items() if k not in ("name", "_target_")}
    unknown = sorted(set(spec) - set(used) - set(ignored))
    if unknown:
        raise ValueError(f"{where}: unsupported argument(s) {unknown} for this module "
                         f"(supported: {sorted(set(used) | set(ignored))})")
    out = {}
    for key, default in used.items():
        if key in spec:
            out[key] = spec[key]
        elif default is ...:
            raise ValueError(f"{where}: required argument {key!r} is missing")
        else:
            out[key] = default
    return out


def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{where}: {msg}")


def _int_list(value, where: str, name: str, n: Optional[int] = None) -> List[int]:
    ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                  for v in value) and len(value) > 0
    if ok and n is not None:
        ok = len(value) == n
    _need(ok, where, f"{name} must be a list of {n or 'some'} positive ints, got {value!r}")
    return [int(v) for v in value]


def _get(d: Dict[str, Any], key: str, where: str):
    if key not in d:
        raise KeyError(f"{where}: the data entry {key!r} was not produced by any earlier module "
                       f"(available: {sorted(d)}); check the module order of the config")
    return d[key]


def layer_norm32(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Non-affine LayerNorm over the last axis computed in float32 (the reference's ``Fp32LayerNorm``)."""
    return F.layer_norm(x.float(), (x.shape[-1],), None, None, eps).type_as(x)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1.0 + scale) + shift


def patchify(x: torch.Tensor, patch_sizes: Sequence[int], flatten: bool = False) -> torch.Tensor:
    """``[B, s1, .., sN, C] -> [B, s1/p1, .., sN/pN, p1*..*pN*C]``; the patch features are ordered
    (p1, .., pN, C) -- channel fastest, like einops ``(p1 p2 c)`` -- NOT Conv2d's (C, p1, p2)."""
    b, *spatial, c = x.shape
    n = len(spatial)
    if len(patch_sizes) != n:
        raise ValueError(f"patch sizes {list(patch_sizes)} do not match {n} spatial axes of shape {tuple(x.shape)}")
    for s, p in zip(spatial, patch_sizes):
        if s % p:
            raise ValueError(f"spatial size {s} is not divisible by the patch size {p} (shape {tuple(x.shape)})")
    grid = [s // p for s, p in zip(spatial, patch_sizes)]
    shape = [b]
    for g, p in zip(grid, patch_sizes):
        shape += [g, p]
    x = x.reshape(*shape, c)
    # axes: 0=b, then (g_i at 1+2i, p_i at 2+2i), channel last
    perm = [0] + [1 + 2 * i for i in range(n)] + [2 + 2 * i for i in range(n)] + [1 + 2 * n]
    x = x.permute(*perm).reshape(b, *grid, -1)
    return x.reshape(b, -1, x.shape[-1]) if flatten else x


def unpatchify(x: torch.Tensor, patch_sizes: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`patchify` (unflattened): ``[B, n1, .., nN, p1*..*pN*C] -> [B, n1*p1, .., nN*pN, C]``."""
    b, *grid, f = x.shape
    n = len(grid)
    if len(patch_sizes) != n:
        raise ValueError(f"patch sizes {list(patch_sizes)} do not match {n} grid axes of shape {tuple(x.shape)}")
    c = f // math.prod(patch_sizes)
    x = x.reshape(b, *grid, *patch_sizes, c)
    perm = [0]
    for i in range(n):
        perm += [1 + i, 1 + n + i]
    perm += [1 + 2 * n]
    x = x.permute(*perm)
    return x.reshape(b, *[g * p for g, p in zip(grid, patch_sizes)], c)


def build_2d_sincos_posemb(h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """The reference's 2D sin-cos table ``[1, dim, h, w]`` (MoCo-v3 style), bit for bit, including its quirk.

    The table is computed over a (w, h) meshgrid in ``indexing="ij"`` order and then read back as (h, w): for a
    square grid the first ``dim/2`` channels (labelled "w": sin then cos) therefore vary along the ROW axis h and
    the last ``dim/2`` along the column axis w; for non-square grids the values are scrambled by that reshape.
    """
    if dim % 4:
        raise ValueError(f"2D sin-cos position embeddings need dim divisible by 4, got {dim}")
    gw, gh = torch.meshgrid(torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32),
                            indexing="ij")
    quarter = dim // 4
    omega = 1.0 / (temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    a = gw.reshape(-1)[:, None] * omega[None]
    b = gh.reshape(-1)[:, None] * omega[None]
    table = torch.cat([torch.sin(a), torch.cos(a), torch.sin(b), torch.cos(b)], dim=1)  # [(w h), dim]
    return table.reshape(h, w, dim).permute(2, 0, 1).unsqueeze(0).contiguous()


def timestep_embedding(t: torch.Tensor, dim: int, max_timestep: float = 1.0, max_period: float = 256.0) -> torch.Tensor:
    """Sinusoidal embedding of ``t`` ``[B]``: ``[cos, sin]`` (cos first) of ``t * (1000 / max_timestep) *
    exp(-ln(max_period) * j / half)``; FlexTok uses ``max_period = 256`` (not DiT's 10000)."""
    half = dim // 2
    freqs = (1000.0 / max_timestep) * torch.exp(
        -math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half).to(t.device)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


# ============================================================================================== modules


class DictModule(nn.Module):
    """A module of the data-dict pipeline: ``forward(d) -> d``."""

    def forward(self, d: Dict[str, Any]) -> Dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


class PerSampleOp(DictModule):
    """Channels-first <-> channels-last moves (the only per-sample functions a release uses)."""

    def __init__(self, spec, where):
        super().__init__()
        a = _kwargs(spec, where, {"read_key": ..., "write_key": ..., "per_sample_op": ...})
        op = a["per_sample_op"]
        _need(isinstance(op, dict) and op.get("_target_") in FUNCTION_TARGETS and op.get("_partial_") is True
              and set(op) <= {"_target_", "_partial_"}, where,
              f"per_sample_op must be {{_target_: one of {sorted(FUNCTION_TARGETS)}, _partial_: true}}, got {op!r}")
        self.read_key, self.write_key = a["read_key"], a["write_key"]
        self.op = FUNCTION_TARGETS[op["_target_"]]
        self.where = where

    def forward(self, d):
        x = _get(d, self.read_key, self.where)
        if self.op == "channels_first_to_last":
            x = x.movedim(1, -1)
        else:
            x = x.movedim(-1, 1)
        d[self.write_key] = x
        return d


class DictKeyFilter(DictModule):
    def __init__(self, spec, where):
        super().__init__()
        a = _kwargs(spec, where, {"allowed_keys": None, "blocked_keys": None})
        _need(a["allowed_keys"] is None or a["blocked_keys"] is None, where,
              "only one of allowed_keys / blocked_keys may be given")
        self.allowed, self.blocked = a["allowed_keys"], a["blocked_keys"]

    def forward(self, d):
        if self.allowed is not None:
            return {k: d[k] for k in self.allowed if k in d}
        if self.blocked is not None:
            return {k: v for k, v in d.items() if k not in self.blocked}
        return d


class PatchEmbedder(DictModule):
    """``[B, s1, .., sN, C]`` -> patches ``[B, n1, .., nN, dim]`` (Linear over (p1 .. pN C)-ordered features)."""

    def __init__(self, spec, where):
        super().__init__()
        a = _kwargs(spec, where, {"input_tensor_list_read_key": ..., "patches_list_write_key": ...,
                                  "n_patches_write_key": ..., "patch_sizes": ..., "channels_in": ..., "dim": None,
                                  "flatten_patches": True}, ignored=("weight_init_style",))
        self.read_key, self.write_key = a["input_tensor_list_read_key"], a["patches_list_write_key"]
        self.n_key = a["n_patches_write_key"]
        self.patch_sizes = _int_list(a["patch_sizes"], where, "patch_sizes")
        self.channels_in = int(a["channels_in"])
        self.flatten = bool(a["flatten_patches"])
        self.where = where
        if a["dim"] is not None:
            self.patch_proj = nn.Linear(self.channels_in * math.prod(self.patch_sizes), int(a["dim"]), bias=True)
            self.dim = int(a["dim"])
        else:
            self.patch_proj = nn.Identity()
            self.dim = self.channels_in * math.prod(self.patch_sizes)

    def forward(self, d):
        x = _get(d, self.read_key, self.where)
        if x.shape[-1] != self.channels_in:
            raise ValueError(f"{self.where}: expected {self.channels_in} channels on the last axis, got shape "
                             f"{tuple(x.shape)}")
        p = patchify(x, self.patch_sizes, flatten=self.flatten)
        d[self.write_key] = self.patch_proj(p)
        d[self.n_key] = [s // q for s, q in zip(x.shape[1:-1], self.patch_sizes)]
        return d


class PositionalEmbeddingAdder(DictModule):
    """Adds a position table ``[1, D, n1, .., nN]`` (stored ``posembs``) to channels-last ``[B, n1, .., nN, D]``.

    ``sincos`` (2D, fixed, stored), ``learnable_sum`` / ``learnable_prod`` (``posembs`` ``[N_dims, 1, D, max]``,
    combined over axes); ``absolute`` crops the top-left corner, ``interpolate`` resizes bilinearly (2D)."""

    def __init__(self, spec, where):
        super().__init__()
        a = _kwargs(spec, where, {"read_key": ..., "write_key": ..., "dim": ..., "max_sizes": ...,
                                  "posemb_type": "sincos", "posemb_scaling": "absolute", "posemb_write_key": None})
        self.read_key, self.write_key, self.posemb_key = a["read_key"], a["write_key"], a["posemb_write_key"]
        self.dim = int(a["dim"])
        self.max_sizes = _int_list(a["max_sizes"], where, "max_sizes")
        self.kind, self.scaling = a["posemb_type"], a["posemb_scaling"]
        self.where = where
        _need(self.scaling in ("absolute", "interpolate"), where,
              f"posemb_scaling must be 'absolute' or 'interpolate', got {self.scaling!r}")
        if self.kind in ("learnable_sum", "learnable_prod"):
            _need(len(set(self.max_sizes)) == 1 and len(self.max_sizes) in (1, 2), where,
                  f"learnable position tables need 1 or 2 equal max_sizes, got {self.max_sizes}")
            self.posembs = nn.Parameter(torch.zeros(len(self.max_sizes), 1, self.dim, self.max_sizes[0]))
            nn.init.trunc_normal_(self.posembs, std=0.02)
        elif self.kind == "sincos":
            _need(len(self.max_sizes) == 2, where, "sincos position tables are 2D only")
            self.posembs = nn.Parameter(build_2d_sincos_posemb(*self.max_sizes, self.dim), requires_grad=False)
        else:
            raise ValueError(f"{where}: posemb_type {self.kind!r} is not supported "
                             "(sincos, learnable_sum, learnable_prod)")
        _need(self.scaling == "absolute" or len(self.max_sizes) == 2, where,
              "posemb_scaling 'interpolate' needs a 2D table")

    def table(self, shape: Sequence[int]) -> torch.Tensor:
        """``[1, D, *shape]`` for a grid of ``shape`` (channels first)."""
        if len(shape) != len(self.max_sizes):
            raise ValueError(f"{self.where}: a {len(self.max_sizes)}D position table cannot cover a grid of shape "
                             f"{list(shape)}")
        if self.kind == "sincos":
            pe = self.posembs
        elif len(self.max_sizes) == 1:
            pe = self.posembs[0]
        else:
            ph, pw = self.posembs[0], self.posembs[1]
            pe = ph.unsqueeze(-1) * pw.unsqueeze(-2) if self.kind == "learnable_prod" else \
                ph.unsqueeze(-1) + pw.unsqueeze(-2)
        if self.scaling == "absolute":
            if any(s > m for s, m in zip(shape, self.max_sizes)):
                raise ValueError(f"{self.where}: grid {list(shape)} exceeds the position table {self.max_sizes}; "
                                 "the input is larger than the model supports")
            return pe[(slice(None), slice(None)) + tuple(slice(None, s) for s in shape)]
        return F.interpolate(pe, list(shape), mode="bilinear", align_corners=True)

    def forward(self, d):
        x = _get(d, self.read_key, self.where)
        pe = self.table(list(x.shape[1:-1])).movedim(1, -1)
        d[self.write_key] = x + pe
        if self.posemb_key is not None:
            d[self.posemb_key] = pe
        return d


class Registers1D(DictModule):
    """Learned register tokens ``[n, D]``, repeated over the batch (``nested``: the first ``n_eval``;
    ``avg_pool``: adaptive average pooling of all ``n_max`` down to ``n_eval``)."""

    def __init__(self, spec, where):
        super().__init__()
        a = _kwargs(spec, where, {"input_tensor_list_read_key": ..., "register_sizes_read_write_key": ...,
                                  "registers_write_key": ..., "dim": ..., "n_max": ..., "n_eval": None,
                                  "ordering_mode": "nested", "extra_registers_write_key": None,
                                  "extra_registers_dim": None},
                    ignored=("n_min", "size_sampling_mode"))
        self.read_key, self.sizes_key = a["input_tensor_list_read_key"], a["register_sizes_read_write_key"]
        self.write_key, self.extra_key = a["registers_write_key"], a["extra_registers_write_key"]
        self.n_max = int(a["n_max"])
        self.n_eval = int(a["n_eval"] or a["n_max"])
        _need(1 <= self.n_eval <= self.n_max, where, f"n_eval {self.n_eval} must lie in [1, n_max={self.n_max}]")
        self.ordering = a["ordering_mode"]
        _need(self.ordering in ("nested", "avg_pool"), where,
              f"ordering_mode must be 'nested' or 'avg_pool', got {self.ordering!r}")
        self.where = where
        self.registers = nn.Parameter(torch.zeros(self.n_max, int(a["dim"])))
        nn.init.trunc_normal_(self.registers, std=0.02)
        if self.extra_key is not None:
            _need(a["extra_registers_dim"] is not None, where, "extra_registers_dim is required with "
                                                               "extra_registers_write_key")
            self.extra_registers = nn.Parameter(torch.zeros(self.n_max, int(a["extra_registers_dim"])))
            nn.init.trunc_normal_(self.extra_registers, std=0.02)

    def _select(self, regs: torch.Tensor, n: int, batch: int) -> torch.Tensor:
        if self.ordering == "nested":
            r = regs[:n]
        else:
            r = F.adaptive_avg_pool1d(regs.T, n).T
        return r.unsqueeze(0).expand(batch, -1, -1)

    def forward(self, d):
        batch = _get(d, self.read_key, self.where).shape[0]
        d[self.sizes_key] = [self.n_eval] * batch
        d[self.write_key] = self._select(self.registers, self.n_eval, batch)
        if self.extra_key is not None:
            d[self.extra_key] = self._select(self.extra_registers, self.n_eval, batch)
        return d


class _EmbPacking:
    """How a per-image embedding ``[B, k*X]`` becomes per-token ``[B, N, X]`` for a packed sequence (the
    reference's ``emb_packing_fn``): one embedding for the whole sequence, or (``per_subseq``) chunk ``j`` for
    the ``j``-th sub-sequence (e.g. patches, then registers)."""

    def __init__(self, lengths: List[int], per_subseq: bool):
        self.lengths, self.per_subseq = list(lengths), per_subseq

    def segments(self, emb: torch.Tensor) -> List[Tuple[int, int, torch.Tensor]]:
        """``[(start, end, emb_j [B, 1, X])]``: the same modulation as :meth:`__call__` without materialising it
        per token (identical values; each segment broadcasts one row)."""
        b, total = emb.shape
        if not self.per_subseq:
            return [(0, sum(self.lengths), emb[:, None, :])]
        k = len(self.lengths)
        if total % k:
            raise ValueError(f"per-sub-sequence embedding of width {total} cannot be split over {k} sub-sequences")
        chunks = emb.view(b, k, total // k)
        out, start = [], 0
        for j, n in enumerate(self.lengths):
            out.append((start, start + n, chunks[:, j:j + 1, :]))
            start += n
        return out

    def __call__(self, emb: torch.Tensor) -> torch.Tensor:
        b, total = emb.shape
        n = sum(self.lengths)
        if not self.per_subseq:
            return emb[:, None, :].expand(b, n, total)
        k = len(self.lengths)
        if total % k:
            raise ValueError(f"per-sub-sequence embedding of width {total} cannot be split over {k} sub-sequences")
        chunks = emb.view(b, k, total // k)
        reps = torch.tensor(self.lengths, device=emb.device)
        return chunks.repeat_interleave(reps, dim=1)


class BlockWiseSequencePacker(DictModule):
    """Concatenates the entries ``input_list_read_keys`` (each ``[B, *grid_i, D]``) into ``[B, N, D]`` and writes
    the attention mask of ``mask_mode``: ``full`` (None = attend everywhere), ``causal``, or ``causal_last``
    (prefix-LM: every token sees all tokens before the last sub-sequence; the last one is causal). Images are
    separate batch rows, so the reference's block-diagonal structure and its padding to a multiple of 128 (fully
    masked rows) have no counterpart here."""

    def __init__(self, spec, where):
        super().__init__()
        a = _kwargs(spec, where, {"input_list_read_keys": ..., "packed_seq_write_key": ...,
                                  "block_mask_write_key": ..., "inner_packed_shapes_write_key": ...,
                                  "outer_packed_shapes_write_key": ..., "mask_mode": "full",
                                  "emb_packing_fn_write_key": None, "per_subseq_embs": False,
                                  "max_seq_len": None, "pad_to_multiple": None},
                    ignored=("compile_block_mask", "return_materialized_mask"))
        keys = a["input_list_read_keys"]
        _need(isinstance(keys, (list, tuple)) and len(keys) > 0 and all(isinstance(k, str) for k in keys), where,
              f"input_list_read_keys must be a non-empty list of names, got {keys!r}")
        _need(a["max_seq_len"] is None or a["pad_to_multiple"] is None, where,
              "only one of max_seq_len / pad_to_multiple may be given")
        self.keys = list(keys)
        self.seq_key, self.mask_key = a["packed_seq_write_key"], a["block_mask_write_key"]
        self.inner_key, self.outer_key = a["inner_packed_shapes_write_key"], a["outer_packed_shapes_write_key"]
        self.mode = a["mask_mode"]
        _need(self.mode in ("full", "causal", "causal_last"), where,
              f"mask_mode must be full, causal or causal_last, got {self.mode!r}")
        self.emb_key, self.per_subseq = a["emb_packing_fn_write_key"], bool(a["per_subseq_embs"])
        self.max_seq_len, self.pad_to_multiple = a["max_seq_len"], a["pad_to_multiple"]
        self.where = where
        self._mask_cache: Dict[Tuple, torch.Tensor] = {}

    def reference_padded_length(self, lengths: Sequence[int]) -> int:
        """Length of the reference's packed sequence for one image: padded to ``pad_to_multiple`` (flex_attention
        needs multiples of 128) or to ``max_seq_len``. This implementation never pads (padding rows are fully
        masked in the reference and change nothing)."""
        n = sum(lengths)
        if self.pad_to_multiple:
            return int(self.pad_to_multiple) * math.ceil(n / int(self.pad_to_multiple))
        return int(self.max_seq_len) if self.max_seq_len is not None else n

    def mask(self, lengths: Sequence[int], device) -> Optional[torch.Tensor]:
        if self.mode == "full":
            return None
        key = (tuple(lengths), str(device))
        m = self._mask_cache.get(key)
        if m is None:
            n = sum(lengths)
            q = torch.arange(n, device=device)[:, None]
            k = torch.arange(n, device=device)[None, :]
            m = k <= q
            if self.mode == "causal_last":
                m = m | (k < n - lengths[-1])
            self._mask_cache[key] = m
        return m

    def forward(self, d):
        parts = [_get(d, k, self.where) for k in self.keys]
        b, dim = parts[0].shape[0], parts[0].shape[-1]
        for k, p in zip(self.keys, parts):
            if p.shape[0] != b or p.shape[-1] != dim:
                raise ValueError(f"{self.where}: cannot pack {k!r} of shape {tuple(p.shape)} with "
                                 f"{self.keys[0]!r} of shape {tuple(parts[0].shape)}")
        shapes = [list(p.shape[1:-1]) for p in parts]
        flat = [p.reshape(b, -1, dim) for p in parts]
        lengths = [f.shape[1] for f in flat]
        if self.max_seq_len is not None and sum(lengths) > int(self.max_seq_len):
            raise ValueError(f"{self.where}: sequence of {sum(lengths)} tokens exceeds max_seq_len {self.max_seq_len}")
        d[self.seq_key] = torch.cat(flat, dim=1)
        d[self.mask_key] = self.mask(lengths, flat[0].device)
        d[self.inner_key] = shapes
        d[self.outer_key] = lengths
        if self.emb_key is not None:
            d[self.emb_key] = _EmbPacking(lengths, self.per_subseq)
        return d


class SequenceUnpacker(DictModule):
    """Splits ``[B, N, D]`` back into the packer's sub-sequences with their grid shapes."""

    def __init__(self, spec, where):
        super().__init__()
        a = _kwargs(spec, where, {"packed_seq_read_key": ..., "inner_seq_write_keys": ...,
                                  "inner_packed_shapes_read_key": ..., "outer_packed_shapes_read_key": ...})
        self.read_key, self.write_keys = a["packed_seq_read_key"], list(a["inner_seq_write_keys"])
        self.inner_key, self.outer_key = a["inner_packed_shapes_read_key"], a["outer_packed_shapes_read_key"]
        self.where = where

    def forward(self, d):
        x = _get(d, self.read_key, self.where)
        shapes, lengths = _get(d, self.inner_key, self.where), _get(d, self.outer_key, self.where)
        if len(self.write_keys) > len(shapes):
            raise ValueError(f"{self.where}: {len(self.write_keys)} outputs but only {len(shapes)} packed sequences")
        pieces = torch.split(x[:, :sum(lengths)], lengths, dim=1)
        for key, piece, shape in zip(self.write_keys, pieces, shapes):
            d[key] = piece.reshape(x.shape[0], *shape, x.shape[-1])
        return d


class Attention(nn.Module):
    """Multi-head self-attention: bias-free ``wq/wk/wv/proj`` (by default), non-affine fp32 LayerNorm on q and k
    per head (QK-norm), softmax scale ``8 / head_dim`` (muP; equals 1/sqrt(head_dim) only for 64)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, proj_bias: bool, qk_norm: bool):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.wq = nn.Linear(dim, dim, bias=qkv_bias)
        self.wk = nn.Linear(dim, dim, bias=qkv_bias)
        self.wv = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.qk_norm = qk_norm
        self.scale = 8.0 / self.head_dim

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.wq(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        if self.qk_norm:
            q, k = layer_norm32(q), layer_norm32(k)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.proj(o.transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    """SwiGLU ``fc2(silu(fc1 x) * fc3 x)`` with hidden ``int(2 * hidden / 3)`` (gated), or ``fc2(silu(fc1 x))``."""

    def __init__(self, dim: int, hidden: int, gated: bool, bias: bool):
        super().__init__()
        self.gated = gated
        if gated:
            hidden = int(2 * hidden / 3)
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        if gated:
            self.fc3 = nn.Linear(dim, hidden, bias=bias)

    def forward(self, x):
        h = F.silu(self.fc1(x))
        if self.gated:
            h = h * self.fc3(x)
        return self.fc2(h)


class Block(nn.Module):
    """Pre-norm block ``x += attn(LN x); x += mlp(LN x)``; with adaLN-zero the modulation ``[B, N, 6D]`` is
    chunked in the order gate_msa, gate_mlp, shift_msa, scale_msa, shift_mlp, scale_mlp (not DiT's)."""

    def __init__(self, dim, num_heads, mlp_hidden, gated, qkv_bias, proj_bias, mlp_bias, qk_norm,
                 adaLN_expansion: Optional[int]):
        super().__init__()
        self.attn = Attention(dim, num_heads, qkv_bias, proj_bias, qk_norm)
        self.mlp = Mlp(dim, mlp_hidden, gated, mlp_bias)
        if adaLN_expansion is not None:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, adaLN_expansion * 6 * dim, bias=True))

    def forward(self, x, mask, ada=None):
        """``ada``: None, a per-token modulation ``[B, N, 6D]``, or segments ``[(start, end, [B, 1, 6D])]``
        covering the sequence (the same values, broadcast instead of repeated per token)."""
        if ada is None:
            x = x + self.attn(layer_norm32(x), mask)
            return x + self.mlp(layer_norm32(x))
        if isinstance(ada, torch.Tensor):
            ada = [(0, x.shape[1], ada)]
        parts = [(a, b, m.chunk(6, dim=-1)) for a, b, m in ada]  # gate_msa, gate_mlp, shift/scale msa, mlp

        def modulated(h, i_shift, i_scale):
            return _cat_segments([modulate(h[:, a:b], c[i_shift], c[i_scale]) for a, b, c in parts])

        def gated(h, i_gate):
            return _cat_segments([c[i_gate] * h[:, a:b] for a, b, c in parts])

        x = x + gated(self.attn(modulated(layer_norm32(x), 2, 3), mask), 0)
        return x + gated(self.mlp(modulated(layer_norm32(x), 4, 5)), 1)


def _cat_segments(pieces: List[torch.Tensor]) -> torch.Tensor:
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)


class FlexTransformer(DictModule):
    """A stack of :class:`Block` (no final norm). With ``adaLN_emb_read_key`` each block is adaLN-zero modulated by
    the embedding ``[B, D]`` spread over the tokens by the packer's embedding-packing rule."""

    def __init__(self, spec, where):
        super().__init__()
        a = _kwargs(spec, where, {
            "input_seq_read_key": ..., "output_seq_write_key": ..., "dim": 768, "depth": 12, "head_dim": 64,
            "mlp_ratio": 4.0, "qkv_bias": False, "proj_bias": False, "mlp_bias": False, "gated_mlp": True,
            "qk_norm": True, "block_mask_read_key": None, "score_mod_read_key": None, "adaLN_emb_read_key": None,
            "adaLN_packing_fn_read_key": None, "adaLN_expansion": 1, "rope_forward_read_key": None,
            "intermediate_layer_write_key": None, "intermediate_layers": []},
            ignored=("drop", "drop_path_rate", "use_act_checkpoint", "weight_init_style", "zero_init_query_proj"))
        _need(a["score_mod_read_key"] is None, where, "score_mod functions are not supported")
        _need(a["rope_forward_read_key"] is None, where, "RoPE is not supported (no release uses it)")
        dim, head_dim = int(a["dim"]), int(a["head_dim"])
        _need(dim % head_dim == 0, where, f"dim {dim} is not divisible by head_dim {head_dim}")
        self.read_key, self.write_key = a["input_seq_read_key"], a["output_seq_write_key"]
        self.mask_key = a["block_mask_read_key"]
        self.ada_key, self.ada_pack_key = a["adaLN_emb_read_key"], a["adaLN_packing_fn_read_key"]
        _need(self.ada_key is None or self.ada_pack_key is not None, where,
              "adaLN_emb_read_key needs adaLN_packing_fn_read_key (the reference cannot run without it)")
        self.inter_key = a["intermediate_layer_write_key"]
        self.inter_layers = [int(i) for i in (a["intermediate_layers"] or [])]
        self.dim = dim
        self.where = where
        expansion = int(a["adaLN_expansion"]) if self.ada_key is not None else None
        self.blocks = nn.ModuleList([
            Block(dim, dim // head_dim, int(dim * float(a["mlp_ratio"])), bool(a["gated_mlp"]), bool(a["qkv_bias"]),
                  bool(a["proj_bias"]), bool(a["mlp_bias"]), bool(a["qk_norm"]), expansion)
            for _ in range(int(a["depth"]))])

    def forward(self, d):
        x = _get(d, self.read_key, self.where)
        mask = d.get(self.mask_key) if self.mask_key is not None else None
        if mask is not None and mask.device != x.device:
            mask = mask.to(x.device)
        emb = pack = None
        if self.ada_key is not None:
            emb, pack = _get(d, self.ada_key, self.where), _get(d, self.ada_pack_key, self.where)
        inter = []
        for i, blk in enumerate(self.blocks):
            ada = None if emb is None else pack.segments(blk.adaLN_modulation(emb))
            x = blk(x, mask, ada)
            if i in self.inter_layers:
                inter.append(x)
        d[self.write_key] = x
        if self.inter_key is not None:
            d[self.inter_key] = inter[0] if len(inter) == 1 else inter
        return d


class LinearHead(DictModule):
    """Non-affine fp32 LayerNorm -> (optional adaLN: SiLU -> Linear(D, 2D), chunks shift, scale) -> Linear."""

    patch_sizes: Optional[List[int]] = None

    def __init__(self, spec, where, to_patches: bool = False):
        super().__init__()
        used = {"read_key": ..., "write_key": ..., "dim": ..., "use_mup_readout": False,
                "dtype_override": None, "adaLN_emb_read_key": None, "adaLN_packing_fn_read_key": None,
                "adaLN_bias": True, "proj_bias": True}
        used.update({"channels_out": ..., "patch_sizes": ...} if to_patches else {"dim_out": ...})
        a = _kwargs(spec, where, used, ignored=("weight_init_style",))
        _need(not a["use_mup_readout"], where, "use_mup_readout=True (MuReadout) is not supported: it cannot run "
                                               "without muP base shapes, which a release never sets")
        _need(a["dtype_override"] in (None, "fp32", "float32"), where,
              f"dtype_override {a['dtype_override']!r}: only float32 inference is implemented")
        _need(a["adaLN_packing_fn_read_key"] is None, where,
              "adaLN_packing_fn_read_key on a head is not supported (heads modulate per image)")
        self.read_key, self.write_key = a["read_key"], a["write_key"]
        self.ada_key = a["adaLN_emb_read_key"]
        dim = int(a["dim"])
        if to_patches:
            self.patch_sizes = _int_list(a["patch_sizes"], where, "patch_sizes")
            out = int(a["channels_out"]) * math.prod(self.patch_sizes)
        else:
            out = int(a["dim_out"])
        if self.ada_key is not None:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim, bias=bool(a["adaLN_bias"])))
        self.proj = nn.Linear(dim, out, bias=bool(a["proj_bias"]))
        self.where = where

    def forward(self, d):
        x = _get(d, self.read_key, self.where)
        shape = x.shape
        h = layer_norm32(x.reshape(shape[0], -1, shape[-1]))
        if self.ada_key is not None:
            emb = _get(d, self.ada_key, self.where)
            shift, scale = self.adaLN_modulation(emb)[:, None, :].chunk(2, dim=-1)
            h = modulate(h, shift, scale)
        y = self.proj(h).reshape(*shape[:-1], -1)
        if self.patch_sizes is not None:
            y = unpatchify(y, self.patch_sizes)
        d[self.write_key] = y
        return d


class ToPatchesLinearHead(LinearHead):
    def __init__(self, spec, where):
        super().__init__(spec, where, to_patches=True)


class LinearLayer(DictModule):
    def __init__(self, spec, where):
        super().__init__()
        a = _kwargs(spec, where, {"read_key": ..., "write_key": ..., "dim_in": ..., "dim": ...,
                                  "dtype_override": None, "proj_bias": True}, ignored=("weight_init_style",))
        _need(a["dtype_override"] in (None, "fp32", "float32"), where,
              f"dtype_override {a['dtype_override']!r}: only float32 inference is implemented")
        self.read_key, self.write_key = a["read_key"], a["write_key"]
        self.proj = nn.Linear(int(a["dim_in"]), int(a["dim"]), bias=bool(a["proj_bias"]))
        self.where = where

    def forward(self, d):
        d[self.write_key] = self.proj(_get(d, self.read_key, self.where))
        return d


class MaskedNestedDropout(DictModule):
    """At inference, positions ``>= keep_k[i]`` of item ``i`` become the learned mask token (``keep_k`` is read
    from ``eval_keep_k_read_key``; absent = keep everything)."""

    def __init__(self, spec, where):
        super().__init__()
        a = _kwargs(spec, where, {"read_write_key": ..., "dim": ..., "eval_keep_k_read_key": "eval_keep_k"},
                    ignored=("train_keep_k_write_key", "size_sampling_mode"))
        self.key, self.keep_key = a["read_write_key"], a["eval_keep_k_read_key"]
        self.dropout_mask_token = nn.Parameter(torch.zeros(int(a["dim"])))
        nn.init.trunc_normal_(self.dropout_mask_token, std=0.02)
        self.where = where

    def forward(self, d):
        if self.keep_key is None or self.keep_key not in d:
            return d
        x = _get(d, self.key, self.where)
        keep = torch.as_tensor(d[self.keep_key], device=x.device).reshape(-1)
        if keep.shape[0] != x.shape[0]:
            raise ValueError(f"{self.where}: {keep.shape[0]} keep_k values for a batch of {x.shape[0]}")
        pos = torch.arange(x.shape[1], device=x.device)
        drop = pos[None, :] >= keep[:, None]
        d[self.key] = torch.where(drop[:, :, None], self.dropout_mask_token.to(x.dtype), x)
        return d


class _NullCond(DictModule):
    """Null condition for guidance: items flagged in ``eval_drop_flag_read_key`` get all their tokens replaced."""

    def _flags(self, d, x):
        if self.flag_key is None or self.flag_key not in d:
            return None
        flags = torch.as_tensor(d[self.flag_key], device=x.device, dtype=torch.bool).reshape(-1)
        if flags.shape[0] != x.shape[0]:
            raise ValueError(f"{self.where}: {flags.shape[0]} null-condition flags for a batch of {x.shape[0]}")
        return flags


class LearnedNullCond(_NullCond):
    def __init__(self, spec, where):
        super().__init__()
        a = _kwargs(spec, where, {"read_write_key": ..., "dim": ..., "eval_drop_flag_read_key": "eval_dropout_mask",
                                  "replace_with_single_token": False}, ignored=("dropout_prob",))
        self.key, self.flag_key = a["read_write_key"], a["eval_drop_flag_read_key"]
        self.single = bool(a["replace_with_single_token"])
        self.nullcond = nn.Parameter(torch.zeros(int(a["dim"])))
        nn.init.trunc_normal_(self.nullcond, std=0.02)
        self.where = where

    def forward(self, d):
        x = _get(d, self.key, self.where)
        flags = self._flags(d, x)
        if flags is None or not bool(flags.any()):
            return d
        if self.single:
            if not bool(flags.all()):
                raise ValueError(f"{self.where}: replace_with_single_token changes the sequence length; flag "
                                 "either all or none of the items of one call")
            d[self.key] = self.nullcond.to(x.dtype).expand(x.shape[0], 1, -1)
        else:
            d[self.key] = torch.where(flags[:, None, None], self.nullcond.to(x.dtype), x)
        return d


class ZeroNullCond(_NullCond):
    def __init__(self, spec, where):
        super().__init__()
        a = _kwargs(spec, where, {"read_write_key": ..., "eval_drop_flag_read_key": "eval_dropout_mask"},
                    ignored=("dropout_prob",))
        self.key, self.flag_key = a["read_write_key"], a["eval_drop_flag_read_key"]
        self.where = where

    def forward(self, d):
        x = _get(d, self.key, self.where)
        flags = self._flags(d, x)
        if flags is not None and bool(flags.any()):
            d[self.key] = torch.where(flags[:, None, None], torch.zeros((), dtype=x.dtype, device=x.device), x)
        return d


class TimestepEmbedder(DictModule):
    """``t [B]`` in ``[0, max_timestep]`` -> sinusoidal features (see :func:`timestep_embedding`) -> MLP."""

    def __init__(self, spec, where):
        super().__init__()
        a = _kwargs(spec, where, {"timesteps_read_key": ..., "time_embedding_write_key": ..., "dim": ...,
                                  "frequency_embedding_size": 256, "max_timestep": 1000.0, "temb_as_tokens": False},
                    ignored=("weight_init_style",))
        _need(not a["temb_as_tokens"], where, "temb_as_tokens=True is not supported")
        self.read_key, self.write_key = a["timesteps_read_key"], a["time_embedding_write_key"]
        self.freq = int(a["frequency_embedding_size"])
        self.max_timestep = float(a["max_timestep"])
        dim = int(a["dim"])
        self.mlp = nn.Sequential(nn.Linear(self.freq, dim, bias=True), nn.SiLU(), nn.Linear(dim, dim, bias=True))
        self.where = where

    def forward(self, d):
        t = _get(d, self.read_key, self.where)
        if bool((t > self.max_timestep).any()):
            raise ValueError(f"{self.where}: timesteps must be <= max_timestep={self.max_timestep}")
        d[self.write_key] = self.mlp(timestep_embedding(t, self.freq, self.max_timestep))
        return d


_BUILDERS: Dict[str, Callable[[Dict[str, Any], str], DictModule]] = {
    "PerSampleOp": PerSampleOp, "DictKeyFilter": DictKeyFilter, "PatchEmbedder": PatchEmbedder,
    "PositionalEmbeddingAdder": PositionalEmbeddingAdder, "Registers1D": Registers1D,
    "BlockWiseSequencePacker": BlockWiseSequencePacker, "FlexTransformer": FlexTransformer,
    "SequenceUnpacker": SequenceUnpacker, "LinearHead": LinearHead, "ToPatchesLinearHead": ToPatchesLinearHead,
    "LinearLayer": LinearLayer, "MaskedNestedDropout": MaskedNestedDropout, "LearnedNullCond": LearnedNullCond,
    "ZeroNullCond": ZeroNullCond, "TimestepEmbedder": TimestepEmbedder,
}
assert set(_BUILDERS) == set(MODULE_TARGETS.values())


def build_module(spec: Dict[str, Any], where: str) -> DictModule:
    """Dispatch one config entry on its ``_target_`` (allow-listed; nothing is imported)."""
    target = spec.get("_target_")
    if target not in MODULE_TARGETS:
        raise ValueError(f"{where}: _target_ {target!r} is not an allowed FlexTok module "
                         f"(allowed: {sorted(MODULE_TARGETS)})")
    return _BUILDERS[MODULE_TARGETS[target]](spec, where)


class Sequential(nn.Module):
    """The release's ``SequentialModuleDictWrapper``: runs ``module_dict`` in insertion (= config) order."""

    def __init__(self, modules: List[Dict[str, Any]], where: str):
        super().__init__()
        self.module_dict = nn.ModuleDict()
        for spec in modules:
            self.module_dict[spec["name"]] = build_module(spec, f"{where}.{spec['name']}")

    def forward(self, d: Dict[str, Any]) -> Dict[str, Any]:
        for module in self.module_dict.values():
            d = module(d)
        return d

    def of_type(self, cls) -> List[Tuple[str, nn.Module]]:
        return [(n, m) for n, m in self.module_dict.items() if type(m) is cls]


class VAE(nn.Module):
    """The release's ``StableDiffusionVAE``: diffusers ``AutoencoderKL`` under ``.vae``; latents are the
    posterior MODE times ``scaling_factor`` (scaled after taking the mode); decoding divides it back out."""

    def __init__(self, autoencoder_config: Dict[str, Any], scaling_factor: float):
        super().__init__()
        from diffusers import AutoencoderKL

        cfg = {k: v for k, v in autoencoder_config.items() if not k.startswith("_")}
        try:
            self.vae = AutoencoderKL.from_config(cfg)
        except Exception as exc:  # diffusers raises assorted errors for malformed configs
            raise ValueError(f"cannot build the AutoencoderKL from its config: {exc}") from exc
        self.vae.eval()
        self.scaling_factor = float(scaling_factor)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.vae.config.down_block_types) - 1)

    def posterior(self, images: torch.Tensor):
        return self.vae.encode(images).latent_dist

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.posterior(images).mode() * self.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents / self.scaling_factor).sample


# ============================================================================================== guidance


def cfg_guidance(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance ``v_u + g (v_c - v_u)``."""
    return v_uncond + scale * (v_cond - v_uncond)


def apg_guidance(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float, running: Optional[torch.Tensor],
                 momentum: float = -0.5, norm_threshold: float = 2.5, eta: float = 0.0
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Adaptive projected guidance (arXiv 2410.02416) as FlexTok runs it, per image over (C, H, W).

    ``diff = v_c - v_u`` accumulated with momentum (``running = diff + momentum * running``), rescaled to an L2
    norm of at most ``norm_threshold``, split (in float64) into its parts parallel and orthogonal to ``v_c``;
    ``v = v_c + (g - 1) (diff_orth + eta diff_par)``. Returns ``(v, running)``.
    """
    diff = v_cond - v_uncond
    running = diff if running is None else diff + momentum * running
    diff = running
    dims = tuple(range(1, diff.ndim))
    if norm_threshold > 0:
        norm = diff.norm(p=2, dim=dims, keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(diff), norm_threshold / norm)
    v0, v1 = diff.double(), F.normalize(v_cond.double(), dim=dims)
    par = (v0 * v1).sum(dim=dims, keepdim=True) * v1
    orth = v0 - par
    update = orth.to(diff.dtype) + eta * par.to(diff.dtype)
    return v_cond + (scale - 1) * update, running


# ============================================================================================== tokenizer


@register_family("flextok")
class FlexTok(ImageTokenizer):
    """FlexTok tokenizer (see the module docstring).

    Images are ``[B, 3, H, W]`` in ``[-1, 1]`` (uint8 ``[0, 255]`` accepted), ``H = W = config.image_size``.
    ``encode`` -> ``Tokens`` ``[B, n]`` int64 ids in ``[0, 64000)``, ordered coarse to fine: any prefix
    ``ids[:, :k]`` is a valid shorter description (``num_tokens=k``). ``decode`` samples the rectified flow
    (``num_steps`` Euler steps, guidance ``"apg"`` or ``"cfg"`` with ``guidance_scale``) from ``noise`` or from
    ``generator`` (drawn image by image in batch order, as the reference) and returns images in ``[-1, 1]``
    (not clamped). ``Tokens.lengths`` gives per-item prefix lengths.
    """

    config_class = FlexTokConfig
    value_range = (-1.0, 1.0)

    def __init__(self, config: FlexTokConfig):
        super().__init__(config)
        if config.scaling_factor is None:
            raise ValueError("FlexTok config has no VAE scaling factor")
        # encoder/decoder first: a config error surfaces before the (large) VAE is built
        encoder = Sequential(config.encoder, "encoder")
        decoder = Sequential(config.decoder, "decoder")
        self.vae = VAE(config.autoencoder, config.scaling_factor)
        self.encoder, self.decoder = encoder, decoder
        reg = config.regularizer
        self.regularizer = FSQ(levels=config.levels)
        self.keys = {
            "images": config.vae.get("images_read_key", "rgb"),
            "latents": config.vae.get("vae_latents_write_key", "vae_latents"),
            "enc_latents": reg.get("latents_read_key", "enc_registers_latents"),
            "quants": reg.get("quants_write_key", "enc_registers_quants"),
            "tokens": reg.get("tokens_write_key", "tokens"),
            "dec_quants": config.pipeline.get("latents_read_key") or reg.get("quants_write_key"),
            "timesteps": config.pipeline.get("timesteps_read_key") or "timesteps",
            "noised": config.pipeline.get("noised_images_read_key") or "vae_latents_noised",
            "reconst": config.pipeline.get("reconst_write_key") or "vae_latents_reconst",
            # MinRFPipeline sets this key itself for the unconditional pass (flow_matching/pipelines.py)
            "null_flag": "eval_dropout_mask",
        }
        regs = self.encoder.of_type(Registers1D)
        if len(regs) != 1:
            raise ValueError(f"the encoder must hold exactly one Registers1D module, found {len(regs)}")
        self.n_max, self.n_tokens = regs[0][1].n_max, regs[0][1].n_eval
        nested = self.decoder.of_type(MaskedNestedDropout)
        if len(nested) != 1:
            raise ValueError(f"the decoder must hold exactly one MaskedNestedDropout module, found {len(nested)}")
        self.keys["keep_k"] = nested[0][1].keep_key or "eval_keep_k"
        self._single_null = any(m.single for _, m in self.decoder.of_type(LearnedNullCond))
        self.latent_channels = int(config.pipeline.get("out_channels") or config.latent_channels)
        if self.latent_channels != config.latent_channels:
            raise ValueError(f"pipeline.out_channels {self.latent_channels} != VAE latent channels "
                             f"{config.latent_channels}")
        if config.image_size % self.vae.downsample:
            raise ValueError(f"image_size {config.image_size} is not a multiple of the VAE factor {self.vae.downsample}")
        self.eval()

    # ------------------------------------------------------------------ facts
    @property
    def spec(self) -> TokenizerSpec:
        return TokenizerSpec.discrete_spec("image", self.config.codebook_size, 1, self.n_tokens, "tokens/image")

    @property
    def latent_size(self) -> int:
        return self.config.image_size // self.vae.downsample

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()  # frozen, as in the release
        return self

    # ------------------------------------------------------------------ validation
    def prepare_input(self, images, num_tokens=None, chunk_size=None, **kwargs):
        # the base class checks rank, finiteness, the [-1, 1] range (uint8 is mapped onto it), 3 channels and
        # the image size (``config.image_size``)
        images, kwargs = super().prepare_input(images, **kwargs)
        if num_tokens is not None:
            kwargs["num_tokens"] = self._check_k("num_tokens", num_tokens)
        if chunk_size is not None:
            kwargs["chunk_size"] = self._check_chunk(chunk_size)
        return images, kwargs

    def _check_k(self, name, k) -> int:
        if isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f"{name} must be an int, got {type(k).__name__}")
        if not 1 <= k <= self.n_tokens:
            raise ValueError(f"{name} must lie in [1, {self.n_tokens}], got {k}")
        return k

    @staticmethod
    def _check_chunk(chunk_size) -> int:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise TypeError(f"chunk_size must be an int, got {type(chunk_size).__name__}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return chunk_size

    def check_tokens(self, tokens: Tokens) -> Tokens:
        ids = tokens.ids
        if ids.ndim != 2:
            raise ValueError(f"tokens.ids must be [B, k] (one row of up to {self.n_max} ids per image), got shape "
                             f"{tuple(ids.shape)}")
        if ids.shape[1] > self.n_max:
            raise ValueError(f"tokens.ids has {ids.shape[1]} ids per image; this model reads at most {self.n_max}")
        return super().check_tokens(tokens)

    # ------------------------------------------------------------------ encoder side
    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled VAE latents ``[B, C, h, w]`` (posterior mode x scaling factor) of images in [-1, 1]."""
        return self.vae.encode(images)

    def encoder_forward(self, latents: torch.Tensor) -> Dict[str, Any]:
        """Run the encoder pipeline and the FSQ on scaled latents; returns the whole data dict (with the
        pre-quantisation latents, the codes and the ``tokens`` ids ``[B, n]``)."""
        d = self.encoder({self.keys["latents"]: latents})
        z = _get(d, self.keys["enc_latents"], "regularizer")
        ids = self.regularizer.encode(z)
        d[self.keys["tokens"]] = ids
        d[self.keys["quants"]] = self.regularizer.decode(ids).to(z.dtype)
        return d

    def _encode(self, images: torch.Tensor, num_tokens: Optional[int] = None,
                chunk_size: Optional[int] = None) -> Tokens:
        # One image at a time: images never interact, but batched convolutions and GEMMs round differently
        # with the batch size (~1e-6), which could flip an FSQ rounding; per-image passes make an image's tokens
        # independent of its batch. ``chunk_size`` is accepted for symmetry with decode (memory is per image).
        ids = [self.encoder_forward(self.encode_latents(images[i:i + 1]))[self.keys["tokens"]]
               for i in range(images.shape[0])]
        ids = torch.cat(ids, dim=0)
        if num_tokens is not None:
            ids = ids[:, :num_tokens]
        return Tokens(ids.long().contiguous())

    # ------------------------------------------------------------------ decoder side
    def token_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """FSQ codes ``[B, n_max, dim]`` of ids ``[B, k]`` padded with id 0 to ``n_max`` (the padded positions are
        replaced by the mask token in the decoder, so the pad id never matters)."""
        if ids.shape[1] < self.n_max:
            ids = torch.cat([ids, ids.new_zeros(ids.shape[0], self.n_max - ids.shape[1])], dim=1)
        return self.regularizer.decode(ids)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, codes: torch.Tensor, keep_k: torch.Tensor,
                 null: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One decoder pass: predicted velocity ``[B, C, h, w]`` at noisy latents ``x`` and times ``t`` ``[B]``;
        ``keep_k`` ``[B]`` = number of kept registers per item; ``null`` ``[B]`` bool flags the unconditional
        (null-condition) items."""
        d = {self.keys["dec_quants"]: codes, self.keys["keep_k"]: keep_k, self.keys["timesteps"]: t,
             self.keys["noised"]: x}
        if null is not None:
            d[self.keys["null_flag"]] = null
        d = self.decoder(d)
        return _get(d, self.keys["reconst"], "decoder output")

    def _guided_velocity(self, x, t, codes, keep_k, scale, guidance, running):
        b = x.shape[0]
        if scale == 1.0:
            return self.velocity(x, t, codes, keep_k), running
        if self._single_null:
            v_c = self.velocity(x, t, codes, keep_k)
            v_u = self.velocity(x, t, codes, keep_k, torch.ones(b, dtype=torch.bool, device=x.device))
        else:  # conditional and unconditional items in one pass
            null = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(x.device)
            v = self.velocity(torch.cat([x, x]), torch.cat([t, t]), torch.cat([codes, codes]),
                              torch.cat([keep_k, keep_k]), null)
            v_c, v_u = v[:b], v[b:]
        if guidance == "cfg":
            return cfg_guidance(v_c, v_u, scale), running
        return apg_guidance(v_c, v_u, scale, running)

    def sample_latents(self, codes: torch.Tensor, keep_k: torch.Tensor, noise: torch.Tensor, num_steps: int,
                       guidance_scale: Union[float, Callable[[float], float]] = 7.5, guidance: str = "apg",
                       verbose: bool = False) -> torch.Tensor:
        """Euler sampling of the rectified flow from ``noise`` (t = 1) to the scaled VAE latent (t = 0):
        for ``i = T .. 1``: ``t = i / T``, ``x <- x - v(x, t) / T``, ``v`` guided when the scale is not 1."""
        x = noise
        dt = 1.0 / num_steps
        running = None
        steps = range(num_steps, 0, -1)
        if verbose:
            from tqdm.auto import tqdm
            steps = tqdm(steps, total=num_steps, desc="flextok decode")
        for i in steps:
            t = i / num_steps
            scale = float(guidance_scale(t)) if callable(guidance_scale) else float(guidance_scale)
            tt = torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)
            v, running = self._guided_velocity(x, tt, codes, keep_k, scale, guidance, running)
            x = x - dt * v
        return x

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (unclamped) from scaled VAE latents."""
        return self.vae.decode(latents)

    def make_noise(self, batch: int, generator: Optional[torch.Generator] = None,
                   latent_size: Optional[int] = None) -> torch.Tensor:
        """Initial noise ``[B, C, h, w]`` drawn image by image in batch order, as the reference pipeline does
        (``torch.randn((1, C, h, w), generator=...)`` per image), on the generator's device."""
        s = latent_size or self.latent_size
        device = generator.device if generator is not None else self.device
        return torch.cat([torch.randn((1, self.latent_channels, s, s), generator=generator, device=device)
                          for _ in range(batch)], dim=0)

    def decode(self, tokens, num_steps: int = 20, guidance_scale: Union[float, Callable] = 7.5,
               guidance: str = "apg", noise: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None, chunk_size: Optional[int] = None,
               verbose: bool = False) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [-1, 1] (not clamped) from ``tokens`` (``Tokens`` or ids ``[B, k]``, k <= n;
        ``Tokens.lengths`` = per-item number of tokens to use).

        num_steps: Euler steps (README: 20). guidance_scale: float or ``f(t)``; 1 disables guidance.
        guidance: ``"apg"`` (README default) or ``"cfg"``. noise: ``[B, C, h, w]`` initial latent noise; else
        drawn from ``generator`` (or the global RNG) image by image in batch order. chunk_size: images per
        forward pass (bounded memory; the result does not depend on it beyond float rounding)."""
        if isinstance(num_steps, bool) or not isinstance(num_steps, int):
            raise TypeError(f"num_steps must be an int, got {type(num_steps).__name__}")
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if not callable(guidance_scale):
            if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
                raise TypeError(f"guidance_scale must be a number or a callable of t, got {describe(guidance_scale)}")
            if not math.isfinite(guidance_scale):
                raise ValueError(f"guidance_scale must be finite, got {guidance_scale}")
        check_choice("guidance", guidance, ("apg", "cfg"))
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {describe(generator)}")
        if chunk_size is not None:
            self._check_chunk(chunk_size)
        return super().decode(tokens, num_steps=num_steps, guidance_scale=guidance_scale, guidance=guidance,
                              noise=noise, generator=generator, chunk_size=chunk_size, verbose=verbose)

    def _decode(self, tokens: Tokens, num_steps=20, guidance_scale=7.5, guidance="apg", noise=None,
                generator=None, chunk_size=None, verbose=False) -> torch.Tensor:
        ids = tokens.ids
        b = ids.shape[0]
        keep_k = tokens.item_lengths().to(ids.device)
        shape = (b, self.latent_channels, self.latent_size, self.latent_size)
        if noise is None:
            noise = self.make_noise(b, generator)
        else:
            noise = check_tensor("noise", noise, ndim=(4,), floating=True, shape_hint=f"{list(shape)}")
            if tuple(noise.shape) != shape:
                raise ValueError(f"noise must have shape {list(shape)} (batch, latent channels, latent grid), got "
                                 f"{list(noise.shape)}")
        noise = noise.to(self.device, torch.float32)
        codes = self.token_codes(ids)
        out = []
        step = chunk_size or b
        for s in range(0, b, step):
            sl = slice(s, s + step)
            lat = self.sample_latents(codes[sl], keep_k[sl], noise[sl], num_steps, guidance_scale, guidance, verbose)
            # the VAE decoder image by image: its batched convolutions round differently per batch size (~4e-5)
            out.extend(self.decode_latents(lat[i:i + 1]) for i in range(lat.shape[0]))
        return torch.cat(out, dim=0)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_config(cls, config):
        # a saved stand-alone VAE (FlexTokVAE) is stored under this family too: dispatch on its marker
        if isinstance(config, dict) and config.get("component") == "vae":
            return FlexTokVAE.from_config(FlexTokVAEConfig.from_dict(config))
        if isinstance(config, FlexTokVAEConfig):
            return FlexTokVAE(config)
        return super().from_config(config)

    @classmethod
    def from_official(cls, *paths, **kwargs) -> "ImageTokenizer":
        """The release's own files: its folder, or ``config.json`` and/or ``model.safetensors`` (see convert.py).
        A diffusers VAE release (``config.json`` + ``diffusion_pytorch_model.safetensors``, the flextok_vae_c*
        repos) loads as a :class:`FlexTokVAE`."""
        from .convert import load_official_flextok

        return load_official_flextok(*paths, **kwargs)


class FlexTokVAE(ImageTokenizer):
    """A FlexTok VAE alone (flextok_vae_c4/c8/c16): a continuous image tokenizer, images in [-1, 1] <->
    scaled latents ``[B, C, H/8, W/8]`` (posterior mode x scaling factor). It has no discrete tokens: use
    :meth:`encode_latents` / :meth:`decode_latents`."""

    config_class = FlexTokVAEConfig
    value_range = (-1.0, 1.0)
    family = "flextok"

    def __init__(self, config: FlexTokVAEConfig):
        super().__init__(config)
        sf = config.scaling_factor or config.autoencoder.get("scaling_factor")
        self.vae = VAE(config.autoencoder, 1.0)
        self.vae.scaling_factor = float(sf if sf is not None else self.vae.vae.config.scaling_factor)
        self.eval()

    def config_dict(self):
        out = super().config_dict()
        out["family"] = "flextok"
        return out

    def expected_size(self):
        return None  # any size divisible by the VAE factor (checked in prepare_input)

    def prepare_input(self, images, **kwargs):
        images, kwargs = super().prepare_input(images, **kwargs)
        f = self.vae.downsample
        if images.shape[-2] % f or images.shape[-1] % f:
            raise ValueError(f"image height and width must be multiples of {f} (the VAE factor), got "
                             f"{images.shape[-2]}x{images.shape[-1]}")
        return images, kwargs

    @property
    def spec(self) -> TokenizerSpec:
        n = (self.config.image_size // self.vae.downsample) ** 2
        c = int(self.config.autoencoder["latent_channels"])
        return TokenizerSpec(modality="image", codebook_size=0, num_codebooks=1, token_rate=float(n),
                             token_rate_unit="latents/image", bitrate=float(n * c * 32),
                             bitrate_unit="bits/image (float32 latents)", discrete=False, latent_channels=c)

    def encode(self, *args, **kwargs):
        raise TypeError("a FlexTok VAE is continuous: it has no discrete tokens; use encode_latents(images) / "
                        "decode_latents(latents), or load a FlexTok tokenizer release")

    def decode(self, *args, **kwargs):
        raise TypeError("a FlexTok VAE is continuous: it has no discrete tokens; use decode_latents(latents)")

    def _encode(self, x, **kwargs):  # pragma: no cover - encode() refuses first
        raise TypeError("use encode_latents")

    def _decode(self, tokens, **kwargs):  # pragma: no cover
        raise TypeError("use decode_latents")

    def encode_latents(self, images) -> torch.Tensor:
        """Scaled latents ``[B, C, H/8, W/8]`` of images ``[B, 3, H, W]`` in [-1, 1] (uint8 accepted)."""
        images, _ = self.prepare_input(images)
        with torch.inference_mode():
            lat = torch.cat([self.vae.encode(images[i:i + 1].to(self.device)) for i in range(images.shape[0])])
        return lat.to(images.device)

    def decode_latents(self, latents) -> torch.Tensor:
        """Images in [-1, 1] (not clamped) from scaled latents ``[B, C, h, w]``."""
        c = int(self.config.autoencoder["latent_channels"])
        latents = check_tensor("latents", latents, ndim=(4,), floating=True, shape_hint=f"[B, {c}, h, w]")
        if latents.shape[1] != c:
            raise ValueError(f"latents must have {c} channels on axis 1, got shape {tuple(latents.shape)}")
        with torch.inference_mode():
            out = torch.cat([self.vae.decode(latents[i:i + 1].to(self.device, torch.float32))
                             for i in range(latents.shape[0])])
        return out.to(latents.device)
