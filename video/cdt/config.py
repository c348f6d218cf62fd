"""Configuration of CDT (Conditioned Diffusion-based video Tokenizer, ali-vilab/CDT, arXiv 2503.03708).

Defaults are CDT-base, the paper's main model, with the settings of the official loader ``load_cdt_base``
(encode chunk 4, decode chunk 1, one sampling step, noise scale 0.8) rather than the class defaults of the
reference ``ConditionedDiffusionTokenizer`` (13 / 4 / 10), which the release never uses.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, Tuple

from zoo.config import ConfigBase

PAD_MODES = ("zeros", "replicate")


@dataclass
class CDTConfig(ConfigBase):
    """Hyper-parameters of one CDT model.

    Architecture (all read from the checkpoint's tensor shapes by :func:`video.cdt.convert.infer_config`, except
    ``new_upsample``/``pad_mode`` which the two released code paths fix, see :meth:`base` and :meth:`small`):

    - ``context_dim``/``context_dim_mults``: widths of the causal 3D encoder and of the context decoder.
    - ``latent_dim``: channels of the continuous latent (16 for both releases).
    - ``out_channels``: channels of the full-resolution conditioning tensor (base 16, small 3).
    - ``unet_dim``/``unet_dim_mults``: widths of the denoising U-Net (the reference hard-codes the multipliers
      ``(1, 2, 3, 4, 5, 6)``).
    - ``space_down``/``time_down``: per encoder stage, whether it halves H and W / the number of frames.
    - ``condition_times``: how many U-Net levels receive a conditioning tensor.
    - ``new_upsample``: nearest x2 + (1,5,5) conv (base) instead of a transposed conv (small).
    - ``pad_mode``: padding of every causal conv, spatial and temporal: ``"zeros"`` (base) or ``"replicate"``
      (small). A per-model setting (the reference keeps it in a class attribute shared by all models).

    Sampling and chunking (not stored in the checkpoint; loader defaults of the release):

    - ``num_timesteps``: length of the cosine training schedule (8192).
    - ``sample_steps``: DDIM steps used by ``decode_latents`` when ``num_steps`` is not given.
    - ``sample_gamma``: the initial sample is ``sample_gamma * N(0, I)`` (0.8, not unit variance).
    - ``enc_frames``/``dec_frames``: the reference's resolution-based chunk rule: pixel frames per encoder chunk
      ``max(4, int(enc_frames * (1024/H) * (1024/W) / 4) * 4)``, latent frames per decoder chunk
      ``max(1, int(dec_frames * (1024/8/H') * (1024/8/W')))``.
    - ``latent_scale``: 1.3, set by the reference ``load_cdt`` for downstream latent generation; encode and
      decode never apply it (kept as metadata).
    """

    context_dim: int = 128
    context_dim_mults: Tuple[int, ...] = (1, 2, 3, 4)
    latent_dim: int = 16
    out_channels: int = 16
    unet_dim: int = 64
    unet_dim_mults: Tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    space_down: Tuple[int, ...] = (0, 1, 1, 1)
    time_down: Tuple[int, ...] = (0, 0, 1, 1)
    condition_times: int = 4
    new_upsample: bool = True
    pad_mode: str = "zeros"
    num_timesteps: int = 8192
    sample_steps: int = 1
    sample_gamma: float = 0.8
    enc_frames: float = 4.0
    dec_frames: float = 1.0
    latent_scale: float = 1.3

    def __post_init__(self):
        self.context_dim_mults = tuple(int(m) for m in self.context_dim_mults)
        self.unet_dim_mults = tuple(int(m) for m in self.unet_dim_mults)
        self.space_down = tuple(int(bool(s)) for s in self.space_down)
        self.time_down = tuple(int(bool(s)) for s in self.time_down)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        def pos_int(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"CDTConfig.{name} must be a positive int, got {v!r}")

        for name in ("context_dim", "latent_dim", "out_channels", "unet_dim", "num_timesteps", "sample_steps"):
            pos_int(name)
        n = len(self.context_dim_mults)
        if n < 2:
            raise ValueError(f"CDTConfig.context_dim_mults needs at least 2 stages, got {self.context_dim_mults}")
        if any(m <= 0 for m in self.context_dim_mults + self.unet_dim_mults):
            raise ValueError("CDTConfig: channel multipliers must be positive")
        if len(self.space_down) != n or len(self.time_down) != n:
            raise ValueError(f"CDTConfig.space_down {self.space_down} and time_down {self.time_down} need one entry "
                             f"per encoder stage ({n})")
        if len(self.unet_dim_mults) < n + 1:
            raise ValueError(f"CDTConfig.unet_dim_mults {self.unet_dim_mults} needs at least {n + 1} levels "
                             f"(one more than the {n} encoder stages)")
        if not 0 <= self.condition_times <= n:
            raise ValueError(f"CDTConfig.condition_times must lie in [0, {n}], got {self.condition_times}")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"CDTConfig.pad_mode must be one of {list(PAD_MODES)}, got {self.pad_mode!r}")
        if not isinstance(self.new_upsample, bool):
            raise TypeError(f"CDTConfig.new_upsample must be a bool, got {self.new_upsample!r}")
        for name in ("sample_gamma", "enc_frames", "dec_frames", "latent_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"CDTConfig.{name} must be a positive number, got {v!r}")

    # ------------------------------------------------------------------ derived
    @property
    def space_factor(self) -> int:
        return 2 ** sum(self.space_down)

    @property
    def time_factor(self) -> int:
        return 2 ** sum(self.time_down)

    # ------------------------------------------------------------------ released configurations
    @classmethod
    def base(cls, **overrides) -> "CDTConfig":
        """CDT-base as built by the reference ``load_cdt_base`` (zero padding, nearest+conv upsampling)."""
        return replace(cls(), **overrides)

    @classmethod
    def small(cls, **overrides) -> "CDTConfig":
        """CDT-small as built by the reference ``load_cdt_small`` (replicate padding, transposed-conv upsampling)."""
        return replace(cls(context_dim=64, out_channels=3, space_down=(1, 1, 1, 0), new_upsample=False,
                           pad_mode="replicate"), **overrides)

    @classmethod
    def variant(cls, name: str, **overrides) -> "CDTConfig":
        if name not in VARIANTS:
            raise ValueError(f"unknown CDT variant {name!r}; released variants are {sorted(VARIANTS)}")
        return getattr(cls, VARIANTS[name])(**overrides)

    # ------------------------------------------------------------------ reference constructor kwargs
    @classmethod
    def from_reference_kwargs(cls, kwargs: Dict[str, Any]) -> "CDTConfig":
        """Build from the keyword arguments of the reference ``ConditionedDiffusionTokenizer`` (e.g. a JSON file
        written next to a checkpoint). The padding mode follows ``new_upsample`` exactly as the reference
        constructor sets it (zeros when True, replicate otherwise)."""
        if not isinstance(kwargs, dict):
            raise TypeError(f"reference kwargs must be a dict, got {type(kwargs).__name__}")
        data = {k: v for k, v in kwargs.items() if not k.startswith("_") and k not in _INFORMATIONAL_KEYS}
        unknown = sorted(set(data) - set(_REFERENCE_KEYS))
        if unknown:
            raise ValueError(f"unknown CDT constructor keys {unknown}; known keys are {sorted(_REFERENCE_KEYS)}")
        fields: Dict[str, Any] = {}
        for key, value in data.items():
            target = _REFERENCE_KEYS[key]
            if target is not None:
                fields[target] = value
        new_upsample = bool(data.get("new_upsample", False))
        fields["new_upsample"] = new_upsample
        fields["pad_mode"] = "zeros" if new_upsample else "replicate"
        # The reference class defaults differ from the CDTConfig defaults (which are CDT-base): start from them.
        base = dict(context_dim=64, latent_dim=16, out_channels=3, unet_dim=64, space_down=(1, 1, 1, 1),
                    time_down=(0, 0, 1, 1), context_dim_mults=(1, 2, 3, 4), condition_times=4, sample_steps=10,
                    sample_gamma=0.8, num_timesteps=8192, enc_frames=13.0, dec_frames=4.0)
        base.update(fields)
        for key in ("enc_frames", "dec_frames", "sample_gamma", "latent_scale"):
            if key in base and isinstance(base[key], int) and not isinstance(base[key], bool):
                base[key] = float(base[key])
        return cls(**base)


VARIANTS = {"base": "base", "small": "small"}

# reference constructor key -> CDTConfig field (None: accepted and ignored, see the notes)
_REFERENCE_KEYS: Dict[str, Any] = {
    "unet_dim": "unet_dim", "context_dim": "context_dim", "latent_dim": "latent_dim",
    "out_channels": "out_channels", "new_upsample": "new_upsample", "space_down": "space_down",
    "time_down": "time_down", "context_dim_mults": "context_dim_mults", "condition_times": "condition_times",
    "num_timesteps": "num_timesteps", "sample_gamma": "sample_gamma", "unet_dim_mults": "unet_dim_mults",
    "enc_frames": "enc_frames", "dec_frames": "dec_frames", "sample_steps": "sample_steps",
    "latent_scale": "latent_scale",
    # batch sizes of the reference's item loop and its unused overlap attribute: results do not depend on them
    # (this implementation always processes batch items one at a time; the reference's encode/decode use an
    # overlap of 0 whatever z_overlap says)
    "enc_bs": None, "dec_bs": None, "z_overlap": None,
}
_INFORMATIONAL_KEYS = ("follows_code_path", "init_seed", "pretrained")

__all__ = ["CDTConfig", "PAD_MODES", "VARIANTS"]
