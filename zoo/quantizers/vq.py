"""Vector quantization (one codebook) on top of vector-quantize-pytorch's ``Codebook``.

The codebook state -- ``embed`` ``[1, K, D]``, ``embed_avg``, ``cluster_size`` ``[1, K]``, ``initted`` -- and
its training machinery (k-means initialisation, EMA updates with Laplace smoothing, dead-code expiry, and the
``torch.distributed`` synchronisation of all three) are the library's ``Codebook``. What this module adds is
the nearest-code search: the library ranks codes by ``-cdist`` (``sqrt(clamp(|x|^2 + |e|^2 - 2 x.e, 1e-8))``),
which merges near-ties below 1e-8 and rounds differently from the originals. Every original we reproduce
(EnCodec/WavTokenizer, TiTok, TFM-Tokenizer) ranks by the expanded squared distance
``|x|^2 - 2 x.e + |e|^2`` in float32, summed in its own order, and takes the first index on ties, so that is what
:func:`nearest_code` computes (in float32 whatever the input dtype); the ids are then handed to the library for
its EMA/expiry update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch.vector_quantize_pytorch import (Codebook, batched_sample_vectors, noop,
                                                           sample_vectors_distributed)

from ..config import ConfigBase
from ..validation import check_choice, check_positive_int
from .base import Quantizer, masked_mse

__all__ = ["VQ", "VQConfig"]

# rows of the distance matrix computed at once (bounds memory to ~64 MB of float32 for any codebook size)
_DIST_BLOCK_ELEMENTS = 1 << 24


def _normalize(t: torch.Tensor) -> torch.Tensor:
    # F.normalize with eps 1e-12 (torch's default), as TiTok's VectorQuantizer and TFM-Tokenizer use
    return F.normalize(t, p=2, dim=-1, eps=1e-12)


_FORMS = ("cross_first", "norms_first", "addmm")


def nearest_code(x: torch.Tensor, embed: torch.Tensor, metric: str = "euclidean",
                 form: str = "cross_first") -> torch.Tensor:
    """Index of the nearest row of ``embed`` ``[K, D]`` for every row of ``x`` ``[N, D]``, in float32.

    ``euclidean`` ranks by the expanded squared distance, summed in the original's order so that float32 rounding
    (and hence near-tie decisions) matches it bit for bit:

    - ``form="cross_first"``: ``(|x|^2 - 2 x.e) + |e|^2`` -- EnCodec/WavTokenizer ``EuclideanCodebook.quantize``
      and TFM-Tokenizer ``EMAVectorQuantizer.forward``;
    - ``form="norms_first"``: ``(|x|^2 + |e|^2) - 2 x.e`` -- TiTok ``VectorQuantizer.forward``;
    - ``form="addmm"``: ``torch.addmm(|x|^2 + |e|^2, x, e^T, alpha=-2)`` (the product accumulated onto the norms
      inside the matmul) -- MaskGIT-VQGAN ``VectorQuantizer.compute_distances`` (TiTok's pixel tokenizer).

    ``cosine`` ranks by ``x.e`` (inputs expected normalised). First index on ties (``argmin``/``argmax``).
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    if form not in _FORMS:
        raise ValueError(f"form must be one of {list(_FORMS)}, got {form!r}")
    x = x.float()
    embed = embed.float()
    n = x.shape[0]
    block = max(1, _DIST_BLOCK_ELEMENTS // max(1, embed.shape[0]))
    out = torch.empty(n, dtype=torch.long, device=x.device)
    e_t = embed.t()
    e2 = embed.pow(2).sum(dim=1)
    for start in range(0, n, block):
        xs = x[start:start + block]
        if metric == "cosine":
            out[start:start + block] = (xs @ e_t).argmax(dim=1)
            continue
        x2 = xs.pow(2).sum(dim=1, keepdim=True)
        if form == "addmm":
            d = torch.addmm(x2 + e2, xs, e_t, alpha=-2.0)
        else:
            cross = 2 * (xs @ e_t)
            d = (x2 - cross) + e2 if form == "cross_first" else (x2 + e2) - cross
        out[start:start + block] = d.argmin(dim=1)
    return out


@dataclass
class VQConfig(ConfigBase):
    """Configuration of :class:`VQ`.

    dim: channels of the input ``z`` (last axis).
    codebook_size: number of codes K.
    codebook_dim: channels of the codes; when it differs from ``dim`` a Linear ``project_in`` (dim ->
        codebook_dim) and ``project_out`` (codebook_dim -> dim) are added (low-dimensional codebook lookup).
    distance: ``"euclidean"`` (squared L2) or ``"cosine"`` (inputs and codes l2-normalised, max dot product).
    l2_normalize: l2-normalise inputs and codes before a euclidean search (TiTok ``use_l2_norm``); the stored
        codebook rows stay unnormalised and are normalised on lookup.
    distance_form: summation order of the expanded squared distance, ``"cross_first"`` (EnCodec/WavTokenizer,
        TFM), ``"norms_first"`` (TiTok) or ``"addmm"`` (MaskGIT-VQGAN); see :func:`nearest_code`. Only float32
        rounding differs, which decides exact ties.
    ema: update the codebook by exponential moving averages (EnCodec/WavTokenizer/TFM); otherwise the codebook
        is an ``nn.Parameter`` trained by the ``codebook`` loss (TiTok).
    decay, eps: EMA decay and Laplace-smoothing epsilon.
    kmeans_init, kmeans_iters: initialise the codebook by k-means on the first training batch.
    threshold_ema_dead_code: codes whose EMA cluster size falls below this are replaced by random batch vectors
        (0 disables expiry).
    commitment_weight: weight of ``mse(z, sg[q])``; codebook_weight: weight of ``mse(sg[z], q)`` (non-EMA only).
    sync: synchronise k-means init, EMA statistics and dead-code replacement across ``torch.distributed``
        processes; ``None`` = automatically whenever a process group with more than one process is initialised
        at the time of a training step (so a model built before ``init_process_group`` / ``Accelerator()`` still
        synchronises).
    """

    dim: int = 256
    codebook_size: int = 1024
    codebook_dim: Optional[int] = None
    distance: str = "euclidean"
    l2_normalize: bool = False
    distance_form: str = "cross_first"
    ema: bool = True
    decay: float = 0.99
    eps: float = 1e-5
    kmeans_init: bool = False
    kmeans_iters: int = 10
    threshold_ema_dead_code: float = 0.0
    commitment_weight: float = 1.0
    codebook_weight: float = 1.0
    sync: Optional[bool] = None

    def __post_init__(self):
        check_positive_int("VQConfig.dim", self.dim)
        check_positive_int("VQConfig.codebook_size", self.codebook_size)
        if self.codebook_dim is not None:
            check_positive_int("VQConfig.codebook_dim", self.codebook_dim)
        check_choice("VQConfig.distance", self.distance, ("euclidean", "cosine"))
        check_choice("VQConfig.distance_form", self.distance_form, _FORMS)
        check_positive_int("VQConfig.kmeans_iters", self.kmeans_iters, allow_zero=True)
        if not 0.0 <= float(self.decay) < 1.0:
            raise ValueError(f"VQConfig.decay must be in [0, 1), got {self.decay}")
        if not float(self.eps) > 0.0:
            raise ValueError(f"VQConfig.eps must be > 0, got {self.eps}")
        for name in ("threshold_ema_dead_code", "commitment_weight", "codebook_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"VQConfig.{name} must be a number >= 0, got {value!r}")

    @property
    def normalized(self) -> bool:
        return self.distance == "cosine" or self.l2_normalize

    @property
    def code_dim(self) -> int:
        return self.codebook_dim if self.codebook_dim is not None else self.dim


def _as_tensor(name: str, value, shape=None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    return value


def _get(state: Mapping[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    if key not in state:
        near = sorted(k for k in state if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1])[:5]
        raise ValueError(f"{source}: key {key!r} not found" + (f" (keys with that name: {near})" if near else ""))
    return state[key]


class VQ(Quantizer):
    """Single-codebook vector quantizer. ``z [..., dim] -> ids [...]``, ``ids -> codes [..., dim]``.

    Losses (``QuantizerOutput.losses``): ``commitment`` = ``commitment_weight * mse(x, sg[q])`` in codebook
    space; for a non-EMA codebook also ``codebook`` = ``codebook_weight * mse(sg[x], q)``. Both skip masked-out
    vectors.

    State-dict keys: ``codebook.embed`` ``[1, K, D]`` (buffer, or parameter when ``ema=False``),
    ``codebook.embed_avg`` ``[1, K, D]``, ``codebook.cluster_size`` ``[1, K]``, ``codebook.initted`` (bool), and
    ``project_in.*``/``project_out.*`` when ``codebook_dim != dim``. Map an original's buffers with
    :meth:`load_codebook` or the ``convert_*``/``from_*`` helpers.
    """

    def __init__(self, config: Optional[VQConfig] = None, **kwargs):
        super().__init__()
        if config is None:
            config = VQConfig(**kwargs)
        elif kwargs:
            raise ValueError(f"pass either a VQConfig or keyword arguments, not both (got {sorted(kwargs)})")
        if not isinstance(config, VQConfig):
            raise TypeError(f"config must be a VQConfig, got {type(config).__name__}")
        self.config = config
        self.codebook = Codebook(
            dim=config.code_dim,
            codebook_size=config.codebook_size,
            num_codebooks=1,
            kmeans_init=config.kmeans_init,
            kmeans_iters=config.kmeans_iters,
            sync_kmeans=True,
            decay=config.decay,
            eps=config.eps,
            threshold_ema_dead_code=config.threshold_ema_dead_code,
            use_ddp=self._want_sync(),
            learnable_codebook=not config.ema,
            ema_update=config.ema,
            use_cosine_sim=config.normalized,
        )
        if config.code_dim != config.dim:
            self.project_in = nn.Linear(config.dim, config.code_dim)
            self.project_out = nn.Linear(config.code_dim, config.dim)
        else:
            self.project_in = None
            self.project_out = None

    def _want_sync(self) -> bool:
        if self.config.sync is not None:
            return bool(self.config.sync)
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def _refresh_sync(self) -> None:
        # the library fixes its collective functions at construction; re-point them when the process-group state
        # changed since (same choice as the library's Codebook.__init__ makes for use_ddp / sync_kmeans)
        want = self._want_sync()
        cb = self.codebook
        if cb.use_ddp == want:
            return
        cb.use_ddp = want
        cb.sample_fn = sample_vectors_distributed if want else batched_sample_vectors
        cb.replace_sample_fn = sample_vectors_distributed if want else batched_sample_vectors
        cb.kmeans_all_reduce_fn = dist.all_reduce if want else noop
        cb.all_reduce_fn = dist.all_reduce if want else noop

    # ------------------------------------------------------------------ properties
    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def num_codebooks(self) -> int:
        return 1

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def initted(self) -> bool:
        """Whether the codebook holds trained/initialised codes (False until k-means init has run)."""
        return bool(self.codebook.initted)

    @property
    def embed(self) -> torch.Tensor:
        """The stored codebook rows ``[K, codebook_dim]`` (unnormalised for ``l2_normalize``)."""
        return self.codebook.embed[0]

    def codes(self) -> torch.Tensor:
        """The codes the search compares against, float32 ``[K, codebook_dim]`` (normalised if configured)."""
        e = self.codebook.embed[0]
        if self.config.ema:
            e = e.detach()  # EMA codebooks get no gradient; a learned one (Parameter) keeps its graph
        e = e.float()
        return _normalize(e) if self.config.normalized else e

    # ------------------------------------------------------------------ core
    def _project_in(self, x: torch.Tensor) -> torch.Tensor:
        if self.project_in is None:
            return x
        return F.linear(x, self.project_in.weight.float(), self.project_in.bias.float())

    def _project_out(self, q: torch.Tensor) -> torch.Tensor:
        if self.project_out is None:
            return q
        return F.linear(q, self.project_out.weight.float(), self.project_out.bias.float())

    def _quantize(self, x, mask, update):
        x = self._project_in(x)
        if self.config.normalized:
            x = _normalize(x)
        # a batch whose vectors are all masked out has nothing to fit: it updates nothing, except that with
        # synchronisation every process must still take part in the collective calls
        if update:
            self._refresh_sync()
        has_data = mask is None or bool(mask.any())
        participate = update and (has_data or self.codebook.use_ddp)
        if not self.initted:
            if participate:
                self.codebook.init_embed_(x.detach()[None], mask=None if mask is None else mask[None])
            elif not update:
                raise RuntimeError("VQ codebook is not initialised (kmeans_init=True and no training forward has "
                                   "run yet); run a forward pass in training mode or load a codebook with "
                                   "load_codebook")
        embed = self.codes()
        ids = nearest_code(x.detach(), embed.detach(), self.config.distance, self.config.distance_form)
        q = F.embedding(ids, embed)
        losses: Dict[str, torch.Tensor] = {}
        if self.config.commitment_weight > 0:
            losses["commitment"] = masked_mse(x, q.detach(), mask) * self.config.commitment_weight
        if not self.config.ema and self.config.codebook_weight > 0:
            losses["codebook"] = masked_mse(x.detach(), q, mask) * self.config.codebook_weight
        if participate:
            self.codebook.update_indices(x.detach()[None], ids[None], mask=None if mask is None else mask[None])
        # straight-through only when the input needs a gradient: otherwise the exact codes (x + (q - x) is not
        # bit-exactly q), so decode(encode(z)) == forward(z).quantized
        st = x + (q - x).detach() if x.requires_grad else q.detach()
        codes = q.detach()
        return self._project_out(codes), self._project_out(st), ids, losses

    def _decode(self, ids: torch.Tensor) -> torch.Tensor:
        embed = self.codes().detach()
        return self._project_out(F.embedding(ids.to(embed.device), embed))

    # ------------------------------------------------------------------ loading originals
    @torch.no_grad()
    def load_codebook(self, embed: torch.Tensor, cluster_size: Optional[torch.Tensor] = None,
                      embed_avg: Optional[torch.Tensor] = None, initted: bool = True) -> "VQ":
        """Load codebook buffers of an original implementation into this quantizer (in place).

        embed: ``[K, codebook_dim]`` codebook rows (as stored; unnormalised rows are fine for l2/cosine).
        cluster_size: ``[K]`` EMA cluster sizes (EnCodec ``cluster_size``, TFM ``cluster_size``); default ones.
        embed_avg: ``[K, codebook_dim]`` EMA sums (EnCodec ``embed_avg``, TFM ``ema_w``); default
            ``embed * smoothed(cluster_size)`` (consistent with ``embed``, so the next EMA step starts from it).
        initted: marks the codebook as initialised (EnCodec ``inited``); keep True for trained codebooks or the
            next training forward re-runs k-means.
        """
        K, D = self.codebook_size, self.config.code_dim
        embed = _as_tensor("embed", embed, (K, D))
        if not embed.is_floating_point():
            raise TypeError(f"embed must be floating point, got {embed.dtype}")
        cb = self.codebook
        if cluster_size is None:
            cluster_size = torch.ones(K)
        cluster_size = _as_tensor("cluster_size", cluster_size)
        if cluster_size.numel() != K:
            raise ValueError(f"cluster_size has shape {tuple(cluster_size.shape)}, expected ({K},)")
        cluster_size = cluster_size.reshape(K).float()
        if embed_avg is None:
            n = cluster_size.sum()
            smoothed = (cluster_size + self.config.eps) / (n + K * self.config.eps) * n
            embed_avg = embed.float() * smoothed[:, None]
        embed_avg = _as_tensor("embed_avg", embed_avg, (K, D))
        cb.embed.data.copy_(embed.reshape(1, K, D))
        cb.cluster_size.data.copy_(cluster_size.reshape(1, K))
        cb.embed_avg.data.copy_(embed_avg.reshape(1, K, D))
        cb.initted.data.copy_(torch.tensor(bool(initted)))
        return self

    @staticmethod
    def convert_encodec_state(state: Mapping[str, torch.Tensor], prefix: str = "") -> Dict[str, torch.Tensor]:
        """EnCodec / WavTokenizer ``EuclideanCodebook`` buffers -> this module's state dict (relative keys).

        Reads ``{prefix}inited`` ``[1]``, ``{prefix}cluster_size`` ``[K]``, ``{prefix}embed`` ``[K, D]`` and
        ``{prefix}embed_avg`` ``[K, D]`` (e.g. prefix
        ``feature_extractor.encodec.quantizer.vq.layers.0._codebook.``).
        """
        src = "EnCodec codebook state"
        embed = _get(state, prefix + "embed", src)
        if embed.ndim != 2:
            raise ValueError(f"{src}: {prefix}embed must be [K, D], got {tuple(embed.shape)}")
        K, D = embed.shape
        cs = _get(state, prefix + "cluster_size", src)
        ea = _get(state, prefix + "embed_avg", src)
        inited = _get(state, prefix + "inited", src)
        _as_tensor(prefix + "cluster_size", cs, (K,))
        _as_tensor(prefix + "embed_avg", ea, (K, D))
        return {
            "codebook.initted": torch.tensor(bool(inited.reshape(-1)[0] != 0)),
            "codebook.cluster_size": cs.reshape(1, K).float().clone(),
            "codebook.embed_avg": ea.reshape(1, K, D).float().clone(),
            "codebook.embed": embed.reshape(1, K, D).float().clone(),
        }

    @staticmethod
    def convert_ema_embedding_state(state: Mapping[str, torch.Tensor], prefix: str = "") -> Dict[str, torch.Tensor]:
        """TFM-Tokenizer ``EMAVectorQuantizer`` (``embedding.weight``, ``cluster_size``, ``ema_w``) -> state dict."""
        src = "EMA-embedding quantizer state"
        embed = _get(state, prefix + "embedding.weight", src)
        if embed.ndim != 2:
            raise ValueError(f"{src}: {prefix}embedding.weight must be [K, D], got {tuple(embed.shape)}")
        K, D = embed.shape
        cs = _as_tensor(prefix + "cluster_size", _get(state, prefix + "cluster_size", src), (K,))
        ea = _as_tensor(prefix + "ema_w", _get(state, prefix + "ema_w", src), (K, D))
        return {
            "codebook.initted": torch.tensor(True),
            "codebook.cluster_size": cs.reshape(1, K).float().clone(),
            "codebook.embed_avg": ea.reshape(1, K, D).float().clone(),
            "codebook.embed": embed.reshape(1, K, D).float().clone(),
        }

    @staticmethod
    def convert_embedding_state(state: Mapping[str, torch.Tensor], prefix: str = "") -> Dict[str, torch.Tensor]:
        """A plain ``nn.Embedding`` codebook (TiTok ``quantize.embedding.weight``) -> state dict.

        ``embed_avg``/``cluster_size`` (unused without EMA) are filled consistently: ones and ``embed``.
        """
        src = "embedding codebook state"
        embed = _get(state, prefix + "embedding.weight", src)
        if embed.ndim != 2:
            raise ValueError(f"{src}: {prefix}embedding.weight must be [K, D], got {tuple(embed.shape)}")
        K, D = embed.shape
        return {
            "codebook.initted": torch.tensor(True),
            "codebook.cluster_size": torch.ones(1, K),
            "codebook.embed_avg": embed.reshape(1, K, D).float().clone(),
            "codebook.embed": embed.reshape(1, K, D).float().clone(),
        }

    def _load_converted(self, converted: Dict[str, torch.Tensor]) -> "VQ":
        self.load_codebook(converted["codebook.embed"][0], cluster_size=converted["codebook.cluster_size"][0],
                           embed_avg=converted["codebook.embed_avg"][0],
                           initted=bool(converted["codebook.initted"]))
        return self

    @classmethod
    def from_encodec_state(cls, state: Mapping[str, torch.Tensor], prefix: str = "", **overrides) -> "VQ":
        """Build an EMA euclidean VQ from EnCodec/WavTokenizer codebook buffers.

        Defaults follow EnCodec's ``ResidualVectorQuantizer`` as WavTokenizer builds it: decay 0.99, eps 1e-5,
        k-means init with 200 iterations (WavTokenizer's ``vq_kmeans``; EnCodec's own default is 50), dead-code
        threshold 2, commitment weight 1; ``overrides`` replace any VQConfig field. Dimensions come from the
        stored ``embed`` shape.
        """
        converted = cls.convert_encodec_state(state, prefix)
        K, D = converted["codebook.embed"].shape[1:]
        cfg = dict(dim=D, codebook_size=K, distance="euclidean", ema=True, decay=0.99, eps=1e-5,
                   kmeans_init=True, kmeans_iters=200, threshold_ema_dead_code=2.0, commitment_weight=1.0)
        cfg.update(overrides)
        return cls(VQConfig(**cfg))._load_converted(converted)

    #: alias (the name the family briefs use)
    from_encodec_ema_state = from_encodec_state

    @classmethod
    def from_ema_embedding_state(cls, state: Mapping[str, torch.Tensor], prefix: str = "", **overrides) -> "VQ":
        """Build an EMA euclidean VQ (unnormalised codebook, no k-means, no expiry) from TFM-Tokenizer buffers."""
        converted = cls.convert_ema_embedding_state(state, prefix)
        K, D = converted["codebook.embed"].shape[1:]
        cfg = dict(dim=D, codebook_size=K, distance="euclidean", ema=True, decay=0.99, eps=1e-5,
                   kmeans_init=False, threshold_ema_dead_code=0.0, commitment_weight=1.0)
        cfg.update(overrides)
        return cls(VQConfig(**cfg))._load_converted(converted)

    @classmethod
    def from_embedding_state(cls, state: Mapping[str, torch.Tensor], prefix: str = "", *,
                             l2_normalize: bool = False, **overrides) -> "VQ":
        """Build a learned-codebook VQ (no EMA) from an ``nn.Embedding`` codebook, e.g. TiTok's quantizer.

        TiTok: ``l2_normalize=use_l2_norm``, commitment weight = ``commitment_cost`` (0.25), codebook weight 1,
        distances summed as TiTok does (``distance_form="norms_first"``).
        """
        converted = cls.convert_embedding_state(state, prefix)
        K, D = converted["codebook.embed"].shape[1:]
        cfg = dict(dim=D, codebook_size=K, distance="euclidean", distance_form="norms_first",
                   l2_normalize=l2_normalize, ema=False,
                   kmeans_init=False, threshold_ema_dead_code=0.0, commitment_weight=0.25, codebook_weight=1.0)
        cfg.update(overrides)
        return cls(VQConfig(**cfg))._load_converted(converted)

    def extra_repr(self) -> str:
        c = self.config
        return (f"dim={c.dim}, codebook_size={c.codebook_size}, codebook_dim={c.code_dim}, distance={c.distance}, "
                f"l2_normalize={c.l2_normalize}, ema={c.ema}")
