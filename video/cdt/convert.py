"""Official CDT checkpoints (``cdt_base.ckpt``, ``cdt_small.ckpt`` of ``yangnianzu/CDT``) -> this implementation.

The release files are torch pickles holding a state dict with keys ``model.denoise_fn.*`` (U-Net) and
``model.context_fn.*`` (encoder + context decoder), either flat, under ``"state_dict"`` or under ``"module"``
(the reference reader accepts all three). They are read with ``torch.load(weights_only=True)`` (no code is
executed), cast to float32, renamed by :func:`convert_state_dict` (a pure function) and loaded strictly.

The release has no config file: every width and layout switch is read from the tensor shapes
(:func:`infer_config`). Two settings leave no trace in the weights: the upsampler kind and the padding mode.
They are fixed per released code path (``load_cdt_base``: nearest+conv upsampling with zero padding;
``load_cdt_small``: transposed-conv upsampling with replicate padding; the reference constructor ties the padding
to the upsampler). Pass ``variant="base"``/``"small"`` (the hub_configs entries do) or a config, or let
:func:`infer_config` read the upsampler from the weights where its orientation shows, else identify the released
code path from the layout (``space_down`` differs between the two releases).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch

from .config import CDTConfig

PREFIXES = {"model.denoise_fn.": "unet.", "model.context_fn.": "autoencoder."}
# No training-only tensors are known for this release (no EMA copy, no discriminator, no buffers); any tensor
# outside the two prefixes is reported as unexpected.
TRAINING_ONLY_PREFIXES: Tuple[str, ...] = ()

# (pattern, replacement) applied in order to the key after the prefix swap
_RENAMES: Tuple[Tuple[str, str], ...] = (
    (r"\.block([12])\.block\.0\.", r".block\1.conv."),
    (r"\.block([12])\.block\.1\.", r".block\1.norm."),
    (r"\.mlp\.1\.", ".time_proj."),
    (r"\.fn\.norm\.", ".norm."),
    (r"\.fn\.fn\.", ".attn."),
    (r"^unet\.final_conv\.0\.", "unet.final_norm."),
    (r"^unet\.final_conv\.1\.", "unet.final_conv."),
)

PathLike = Union[str, Path]


# ---------------------------------------------------------------------------------------------- reading

def read_checkpoint(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read a release file (``.ckpt``/``.pt``/``.pth`` torch file, or ``.safetensors``) -> flat state dict.

    Accepts the flat layout, ``{"state_dict": ...}`` and ``{"module": ...}`` (also nested in that order, as the
    reference reader does). Raises ``ValueError`` naming the problem for a truncated, foreign or empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CDT checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            obj: Any = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(f"cannot read CDT checkpoint {path}: {exc}") from exc
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - truncated zip, foreign pickle (refused by weights_only), ...
            raise ValueError(f"cannot read CDT checkpoint {path} with torch.load(weights_only=True): "
                             f"{type(exc).__name__}: {exc}") from exc
    return unwrap_state_dict(obj, source=str(path))


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded checkpoint object (flat, ``state_dict`` or ``module``)."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    for key in ("state_dict", "module"):
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            obj = inner
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    others = sorted(k for k in obj if k not in tensors)
    if others:
        raise ValueError(f"{source}: entries that are not tensors in the state dict: {others[:10]}")
    if not tensors:
        raise ValueError(f"{source}: the checkpoint holds no tensors")
    return dict(tensors)


# ---------------------------------------------------------------------------------------------- converting

def convert_state_dict(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official key names -> this implementation's names, tensors cast to float32 (a pure function).

    Raises ``ValueError`` listing keys that belong to neither the U-Net nor the autoencoder (and are not in
    :data:`TRAINING_ONLY_PREFIXES`), and for a checkpoint without any CDT key (a foreign file).
    """
    out: Dict[str, torch.Tensor] = {}
    foreign: List[str] = []
    for key, value in state.items():
        if any(key.startswith(p) for p in TRAINING_ONLY_PREFIXES):
            continue
        for old, new in PREFIXES.items():
            if key.startswith(old):
                name = new + key[len(old):]
                break
        else:
            foreign.append(key)
            continue
        for pattern, repl in _RENAMES:
            name = re.sub(pattern, repl, name)
        if not value.is_floating_point():
            raise ValueError(f"checkpoint tensor {key} has dtype {value.dtype}; CDT weights are floating point")
        out[name] = value.detach().to(torch.float32)
    if foreign:
        raise ValueError(f"checkpoint has {len(foreign)} keys outside {sorted(PREFIXES)} (not a CDT checkpoint "
                         f"or a different release): {sorted(foreign)[:20]}")
    if not out:
        raise ValueError("checkpoint holds no CDT tensors")
    return out


# ---------------------------------------------------------------------------------------------- config from shapes

def _require(state: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise ValueError(f"cannot read the CDT configuration: checkpoint lacks {key!r} (truncated or foreign file)")
    return state[key]


def infer_config(state: Mapping[str, torch.Tensor], **overrides) -> CDTConfig:
    """Read every architecture setting from a converted state dict's shapes and key layout.

    ``new_upsample`` comes from ``overrides`` when given, else from the weights when the last context stage
    upsamples to a different width (conv vs transposed-conv orientation), else from the released code path with
    the same ``space_down`` (:func:`released_code_path`); if none applies, a ``ValueError`` asks for it.
    ``pad_mode`` follows ``new_upsample`` as in the reference constructor (zeros with the new upsampler,
    replicate otherwise) unless given. Sampling/chunking settings (not stored in the weights) are the release loader's defaults unless
    overridden.
    """
    n_enc = 0
    while f"autoencoder.enc.{n_enc}.0.block1.conv.weight" in state:
        n_enc += 1
    if n_enc < 2:
        _require(state, "autoencoder.enc.0.0.block1.conv.weight")
        raise ValueError(f"cannot read the CDT configuration: only {n_enc} encoder stage(s) in the checkpoint")
    widths = [int(state[f"autoencoder.enc.{i}.0.block1.conv.weight"].shape[0]) for i in range(n_enc)]
    context_dim = widths[0]
    if any(w % context_dim for w in widths):
        raise ValueError(f"encoder widths {widths} are not multiples of the first stage's {context_dim}")
    context_dim_mults = tuple(w // context_dim for w in widths)
    space_down = tuple(int(f"autoencoder.enc.{i}.1.conv.weight" in state) for i in range(n_enc))
    time_down = tuple(int(f"autoencoder.enc.{i}.2.conv.weight" in state) for i in range(n_enc))
    latent_dim = int(_require(state, "autoencoder.quant_conv.weight").shape[0]) // 2

    n_levels = 0
    while f"unet.downs.{n_levels}.0.block1.conv.weight" in state:
        n_levels += 1
    unet_dim = int(_require(state, "unet.time_mlp.2.weight").shape[0])
    unet_widths = [int(state[f"unet.downs.{i}.0.block1.conv.weight"].shape[0]) for i in range(n_levels)]
    if any(w % unet_dim for w in unet_widths):
        raise ValueError(f"U-Net widths {unet_widths} are not multiples of its base width {unet_dim}")
    unet_dim_mults = tuple(w // unet_dim for w in unet_widths)

    # conditioned levels take 3 + context channels in their first block; level 0 reveals out_channels
    condition_times = 0
    ctx_in: List[int] = []
    for i in range(n_levels - 1):
        cin = int(state[f"unet.downs.{i}.0.block1.conv.weight"].shape[1])
        prev = 3 if i == 0 else unet_widths[i - 1]
        if cin == prev:
            break
        ctx_in.append(cin - prev)
        condition_times += 1
    if condition_times > 0:
        out_channels = ctx_in[0]
    else:  # unconditioned U-Net: read it from the context decoder's last stage
        last = f"autoencoder.dec.{n_enc - 1}.1"
        if f"{last}.block1.conv.weight" in state:
            out_channels = int(state[f"{last}.block1.conv.weight"].shape[0])
        else:
            out_channels = int(_require(state, f"{last}.conv.weight").shape[0])

    # the upsampler kind is visible when the last context stage upsamples from d to out_channels channels:
    # a transposed conv stores (in, out, 1, 5, 5), a conv (out, in, 1, 5, 5)
    evidence: Optional[bool] = None
    w = state.get(f"autoencoder.dec.{n_enc - 1}.1.conv.weight")
    if w is not None and context_dim != out_channels:
        evidence = tuple(w.shape[:2]) == (out_channels, context_dim)

    arch = dict(context_dim=context_dim, context_dim_mults=context_dim_mults, latent_dim=latent_dim,
                out_channels=out_channels, unet_dim=unet_dim, unet_dim_mults=unet_dim_mults,
                space_down=space_down, time_down=time_down, condition_times=condition_times)
    path = released_code_path(space_down)
    if "new_upsample" in overrides:
        new_upsample = bool(overrides.pop("new_upsample"))
    elif evidence is not None:
        new_upsample = evidence
    elif path is not None:
        new_upsample = CDTConfig.variant(path).new_upsample
    else:
        raise ValueError(f"the checkpoint's layout (space_down={list(space_down)}) matches no released CDT code path "
                         "and the weights do not show the upsampler kind: pass variant='base' or 'small', or "
                         "new_upsample=... (and pad_mode=...)")
    if evidence is not None and new_upsample != evidence:
        raise ValueError(f"new_upsample={new_upsample} contradicts the checkpoint, whose "
                         f"autoencoder.dec.{n_enc - 1}.1.conv.weight {tuple(w.shape)} is a "
                         f"{'conv' if evidence else 'transposed conv'}")
    # the reference constructor ties the padding mode to the upsampler kind (zeros with new_upsample)
    settings: Dict[str, Any] = {"new_upsample": new_upsample,
                                "pad_mode": overrides.pop("pad_mode", "zeros" if new_upsample else "replicate")}
    unknown = sorted(set(overrides) - set(asdict(CDTConfig())))
    if unknown:
        raise ValueError(f"unknown CDT settings {unknown}")
    bad = sorted(k for k in overrides if k in arch and overrides[k] != arch[k]
                 and not (isinstance(arch[k], tuple) and tuple(overrides[k]) == arch[k]))
    if bad:
        raise ValueError("settings contradict the checkpoint's shapes: "
                         + ", ".join(f"{k}={overrides[k]!r} but the weights say {arch[k]!r}" for k in bad))
    return CDTConfig(**{**arch, **settings, **overrides})


def released_code_path(space_down) -> Optional[str]:
    """'base' or 'small' when ``space_down`` is that release's layout, else None."""
    for name in ("base", "small"):
        if tuple(space_down) == CDTConfig.variant(name).space_down:
            return name
    return None


def check_config_against_state(config: CDTConfig, state: Mapping[str, torch.Tensor]) -> None:
    """Fail when the upsampler orientation visible in the weights contradicts ``config.new_upsample``."""
    n = len(config.context_dim_mults)
    w = state.get(f"autoencoder.dec.{n - 1}.1.conv.weight")
    if w is not None and w.ndim == 5 and config.context_dim != config.out_channels:
        is_conv = tuple(w.shape[:2]) == (config.out_channels, config.context_dim)
        if is_conv != config.new_upsample:
            raise ValueError(f"config new_upsample={config.new_upsample} contradicts the checkpoint, whose "
                             f"autoencoder.dec.{n - 1}.1.conv.weight {tuple(w.shape)} is a "
                             f"{'conv' if is_conv else 'transposed conv'}")


def read_config_file(path: PathLike) -> CDTConfig:
    """A JSON file of reference constructor kwargs (``ConditionedDiffusionTokenizer(**kwargs)``) -> config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CDT config file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of constructor keyword arguments")
    return CDTConfig.from_reference_kwargs(data)


def resolve_config(state: Mapping[str, torch.Tensor], config=None, variant: Optional[str] = None,
                   **overrides) -> CDTConfig:
    """The model config for a converted state dict: an explicit config (object, dict of reference kwargs or
    JSON path), a released variant name, or the shapes; ``overrides`` adjust sampling/chunking settings."""
    if config is not None and variant is not None:
        raise ValueError("pass either config or variant, not both")
    if config is None:
        if variant is not None:
            base = CDTConfig.variant(variant)
            overrides = {"new_upsample": base.new_upsample, "pad_mode": base.pad_mode, **overrides}
        return infer_config(state, **overrides)
    if isinstance(config, (str, Path)):
        cfg = read_config_file(config)
    elif isinstance(config, CDTConfig):
        cfg = config
    elif isinstance(config, dict):
        cfg = CDTConfig.from_reference_kwargs(config)
    else:
        raise TypeError(f"config must be a CDTConfig, a dict of reference kwargs or a JSON path, "
                        f"got {type(config).__name__}")
    if overrides:
        try:
            cfg = replace(cfg, **overrides)
        except TypeError as exc:
            raise ValueError(f"unknown CDT settings: {exc}") from exc
    check_config_against_state(cfg, state)
    return cfg


__all__ = ["PREFIXES", "TRAINING_ONLY_PREFIXES", "check_config_against_state", "convert_state_dict",
           "infer_config", "read_checkpoint", "read_config_file", "released_code_path", "resolve_config",
           "unwrap_state_dict"]
