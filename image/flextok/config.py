"""Configuration of FlexTok.

A FlexTok release describes its network as a hydra-style tree: top-level ``vae``, ``encoder``, ``regularizer``,
``decoder``, ``flow_matching_noise_module`` and ``pipeline`` entries, each a ``_target_`` dict; ``encoder`` and
``decoder`` hold a ``module_dict`` whose *file order is the execution order*. :class:`FlexTokConfig` keeps that
description as data, with the two module dicts stored as ordered **lists** of ``{"name", "_target_", ...}``
entries, so that the order survives any JSON writer (``save_pretrained`` sorts dict keys, lists keep their
order). Nothing here imports a ``_target_``: targets are matched against the allow-list in
:data:`ALLOWED_TARGETS` and dispatched to this package's own modules (see ``model.py``).

Defaults are the paper's main model, ``flextok_d18_d28`` (encoder 18 blocks of width 1152, decoder 28 blocks of
width 1792, 256 registers, FSQ [8, 8, 8, 5, 5, 5], 16-channel f8 VAE, adaLN expansion 2, learned null
condition). The released configs are read from the release files by ``convert.py``; values the release does not
carry are never guessed there.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from zoo.config import ConfigBase

__all__ = ["FlexTokConfig", "FlexTokVAEConfig", "ALLOWED_TARGETS", "VAE_BASE_CONFIG", "official_config", "module_list_from_dict",
           "module_dict_from_list"]

_P = "flextok.model."
#: every ``_target_`` a FlexTok config may name (module_dict entries, top-level modules, per-sample functions)
MODULE_TARGETS = {
    _P + "utils.dict_ops.PerSampleOp": "PerSampleOp",
    _P + "utils.dict_ops.DictKeyFilter": "DictKeyFilter",
    _P + "preprocessors.patching.PatchEmbedder": "PatchEmbedder",
    _P + "utils.posembs.PositionalEmbeddingAdder": "PositionalEmbeddingAdder",
    _P + "preprocessors.registers.Registers1D": "Registers1D",
    _P + "preprocessors.flex_seq_packing.BlockWiseSequencePacker": "BlockWiseSequencePacker",
    _P + "trunks.transformers.FlexTransformer": "FlexTransformer",
    _P + "postprocessors.seq_unpacking.SequenceUnpacker": "SequenceUnpacker",
    _P + "postprocessors.heads.LinearHead": "LinearHead",
    _P + "postprocessors.heads.ToPatchesLinearHead": "ToPatchesLinearHead",
    _P + "preprocessors.linear.LinearLayer": "LinearLayer",
    _P + "preprocessors.token_dropout.MaskedNestedDropout": "MaskedNestedDropout",
    _P + "preprocessors.nullcond.LearnedNullCond": "LearnedNullCond",
    _P + "preprocessors.nullcond.ZeroNullCond": "ZeroNullCond",
    _P + "preprocessors.time_embedding.TimestepEmbedder": "TimestepEmbedder",
}
FUNCTION_TARGETS = {
    _P + "utils.dict_ops.channels_first_to_last": "channels_first_to_last",
    _P + "utils.dict_ops.channels_last_to_first": "channels_last_to_first",
}
TOP_TARGETS = {
    "vae": {"flextok.vae_wrapper.StableDiffusionVAE"},
    "encoder": {_P + "utils.wrappers.SequentialModuleDictWrapper"},
    "decoder": {_P + "utils.wrappers.SequentialModuleDictWrapper"},
    "regularizer": {"flextok.regularizers.quantize_fsq.FSQ"},
    "flow_matching_noise_module": {"flextok.flow_matching.noise_modules.MinRFNoiseModule"},
    "pipeline": {"flextok.flow_matching.pipelines.MinRFPipeline"},
}
ROOT_TARGETS = {"flextok.flextok_wrapper.FlexTok", "flextok.flextok_wrapper.FlexTokFromHub"}
ALLOWED_TARGETS = frozenset(MODULE_TARGETS) | frozenset(FUNCTION_TARGETS) | frozenset(
    t for ts in TOP_TARGETS.values() for t in ts) | frozenset(ROOT_TARGETS)

#: the AutoencoderKL architecture FlexTok builds when the release names no VAE config (``hf_hub_path: null``);
#: fact from flextok/vae_wrapper.py ``VAE_BASE_CFG`` (SDXL-VAE-like, f8). ``latent_channels`` and
#: ``scaling_factor`` are filled in from the FlexTok config.
VAE_BASE_CONFIG: Dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": None,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 1024,
    "scaling_factor": None,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

_TOP_KEYS = ("vae", "encoder", "regularizer", "decoder", "flow_matching_noise_module", "pipeline")


def module_list_from_dict(module_dict: Dict[str, Any], where: str) -> List[Dict[str, Any]]:
    """``{name: {_target_, ...}}`` in file order -> ``[{"name": name, "_target_": ..., ...}]`` (same order)."""
    if not isinstance(module_dict, dict) or not module_dict:
        raise ValueError(f"{where}.module_dict must be a non-empty mapping of module name -> spec, "
                         f"got {type(module_dict).__name__}")
    out = []
    for name, spec in module_dict.items():
        if not isinstance(spec, dict):
            raise ValueError(f"{where}.module_dict.{name} must be a mapping with a _target_, got {type(spec).__name__}")
        if "name" in spec:
            raise ValueError(f"{where}.module_dict.{name} has a 'name' argument, which no FlexTok module takes")
        out.append({"name": name, **copy.deepcopy(spec)})
    return out


def module_dict_from_list(modules: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Inverse of :func:`module_list_from_dict` (a dict in execution order)."""
    return {m["name"]: {k: copy.deepcopy(v) for k, v in m.items() if k != "name"} for m in modules}


def _check_modules(modules, where: str) -> List[Dict[str, Any]]:
    if not isinstance(modules, (list, tuple)) or not modules:
        raise ValueError(f"FlexTokConfig.{where} must be a non-empty list of module specs "
                         "[{'name': ..., '_target_': ..., ...}] in execution order")
    seen = set()
    for i, m in enumerate(modules):
        if not isinstance(m, dict):
            raise ValueError(f"FlexTokConfig.{where}[{i}] must be a mapping, got {type(m).__name__}")
        name, target = m.get("name"), m.get("_target_")
        if not isinstance(name, str) or not name:
            raise ValueError(f"FlexTokConfig.{where}[{i}] needs a non-empty 'name'")
        if name in seen:
            raise ValueError(f"FlexTokConfig.{where}: module name {name!r} appears twice")
        seen.add(name)
        if target not in MODULE_TARGETS:
            raise ValueError(f"FlexTokConfig.{where}[{i}] ({name}): _target_ {target!r} is not an allowed FlexTok "
                             f"module; allowed: {sorted(MODULE_TARGETS)}")
    return [copy.deepcopy(dict(m)) for m in modules]


def official_config(*, enc_dim: int = 1152, enc_depth: int = 18, dec_dim: int = 1792, dec_depth: int = 28,
                    head_dim: int = 64, n_registers: int = 256, latent_channels: int = 16,
                    patch_size: Tuple[int, int] = (2, 2), levels=(8, 8, 8, 5, 5, 5),
                    posemb_max: Tuple[int, int] = (16, 16), adaLN_expansion: int = 2, nullcond: str = "learned",
                    scaling_factor: Optional[float] = 1.0, hf_hub_path: Optional[str] = None,
                    timestep_freq: int = 256, max_timestep: float = 1.0) -> Dict[str, Any]:
    """A FlexTok config in the release layout (the structure of the released ``config.json``).

    The module names and wiring follow the layout the releases use (see docs/models/flextok.md); the widths are
    the paper's (width = 64 x depth, head_dim 64). ``scaling_factor`` is a placeholder for models trained from
    scratch: a release's config states its own.
    """
    p = list(patch_size)
    dec_patches_key = "dec_patches"
    null = ({"_target_": _P + "preprocessors.nullcond.LearnedNullCond", "read_write_key": "dec_quants",
             "dim": dec_dim, "eval_drop_flag_read_key": "eval_dropout_mask", "dropout_prob": 0.2,
             "replace_with_single_token": False} if nullcond == "learned" else
            {"_target_": _P + "preprocessors.nullcond.ZeroNullCond", "read_write_key": "dec_quants",
             "eval_drop_flag_read_key": "eval_dropout_mask", "dropout_prob": 0.2})
    to_last = {"_target_": _P + "utils.dict_ops.channels_first_to_last", "_partial_": True}
    to_first = {"_target_": _P + "utils.dict_ops.channels_last_to_first", "_partial_": True}
    encoder = {
        "enc_channels_to_last": {"_target_": _P + "utils.dict_ops.PerSampleOp", "read_key": "vae_latents",
                                 "write_key": "enc_vae_latents_bhwc", "per_sample_op": to_last},
        "enc_patch_emb": {"_target_": _P + "preprocessors.patching.PatchEmbedder",
                          "input_tensor_list_read_key": "enc_vae_latents_bhwc", "patches_list_write_key": "enc_patches",
                          "n_patches_write_key": "enc_n_patches", "patch_sizes": p, "channels_in": latent_channels,
                          "dim": enc_dim, "flatten_patches": False},
        "enc_posemb_module": {"_target_": _P + "utils.posembs.PositionalEmbeddingAdder", "read_key": "enc_patches",
                              "write_key": "enc_patches", "dim": enc_dim, "max_sizes": list(posemb_max),
                              "posemb_type": "sincos", "posemb_scaling": "absolute"},
        "enc_register_module": {"_target_": _P + "preprocessors.registers.Registers1D",
                                "input_tensor_list_read_key": "enc_patches",
                                "register_sizes_read_write_key": "enc_register_sizes",
                                "registers_write_key": "enc_registers", "dim": enc_dim, "n_min": n_registers,
                                "n_max": n_registers, "size_sampling_mode": "uniform", "ordering_mode": "nested"},
        "enc_seq_packer": {"_target_": _P + "preprocessors.flex_seq_packing.BlockWiseSequencePacker",
                           "input_list_read_keys": ["enc_patches", "enc_registers"],
                           "packed_seq_write_key": "enc_packed_seq", "block_mask_write_key": "enc_block_mask",
                           "inner_packed_shapes_write_key": "enc_ps_inner",
                           "outer_packed_shapes_write_key": "enc_ps_outer", "mask_mode": "causal_last",
                           "pad_to_multiple": 128},
        "enc_transformer": {"_target_": _P + "trunks.transformers.FlexTransformer",
                            "input_seq_read_key": "enc_packed_seq", "output_seq_write_key": "enc_packed_seq",
                            "dim": enc_dim, "depth": enc_depth, "head_dim": head_dim,
                            "block_mask_read_key": "enc_block_mask", "use_act_checkpoint": True},
        "enc_unpacker": {"_target_": _P + "postprocessors.seq_unpacking.SequenceUnpacker",
                         "packed_seq_read_key": "enc_packed_seq", "inner_seq_write_keys": ["enc_patches", "enc_registers"],
                         "inner_packed_shapes_read_key": "enc_ps_inner",
                         "outer_packed_shapes_read_key": "enc_ps_outer"},
        "enc_to_latents": {"_target_": _P + "postprocessors.heads.LinearHead", "read_key": "enc_registers",
                           "write_key": "enc_registers_latents", "dim": enc_dim, "dim_out": len(levels),
                           "use_mup_readout": False, "weight_init_style": "zero"},
    }
    decoder = {
        "dec_from_latents": {"_target_": _P + "preprocessors.linear.LinearLayer", "read_key": "enc_registers_quants",
                             "write_key": "dec_quants", "dim_in": len(levels), "dim": dec_dim},
        "dec_registers_posemb_module": {"_target_": _P + "utils.posembs.PositionalEmbeddingAdder",
                                        "read_key": "dec_quants", "write_key": "dec_quants", "dim": dec_dim,
                                        "max_sizes": [n_registers], "posemb_type": "learnable_sum",
                                        "posemb_scaling": "absolute"},
        "dec_nested_dropout": {"_target_": _P + "preprocessors.token_dropout.MaskedNestedDropout",
                               "read_write_key": "dec_quants", "dim": dec_dim, "eval_keep_k_read_key": "eval_keep_k",
                               "train_keep_k_write_key": "train_keep_k", "size_sampling_mode": "uniform"},
        "dec_latent_dropout": null,
        "dec_noise_channels_to_last": {"_target_": _P + "utils.dict_ops.PerSampleOp", "read_key": "vae_latents_noised",
                                       "write_key": "dec_noised_bhwc", "per_sample_op": to_last},
        "dec_noise_patch_emb": {"_target_": _P + "preprocessors.patching.PatchEmbedder",
                                "input_tensor_list_read_key": "dec_noised_bhwc", "patches_list_write_key": dec_patches_key,
                                "n_patches_write_key": "dec_n_patches", "patch_sizes": p,
                                "channels_in": latent_channels, "dim": dec_dim, "flatten_patches": False},
        "dec_patches_posemb_module": {"_target_": _P + "utils.posembs.PositionalEmbeddingAdder",
                                      "read_key": dec_patches_key, "write_key": dec_patches_key, "dim": dec_dim,
                                      "max_sizes": list(posemb_max), "posemb_type": "sincos",
                                      "posemb_scaling": "absolute"},
        "dec_seq_packer": {"_target_": _P + "preprocessors.flex_seq_packing.BlockWiseSequencePacker",
                           "input_list_read_keys": [dec_patches_key, "dec_quants"],
                           "packed_seq_write_key": "dec_packed_seq", "block_mask_write_key": "dec_sa_block_mask",
                           "inner_packed_shapes_write_key": "dec_ps_inner",
                           "outer_packed_shapes_write_key": "dec_ps_outer", "mask_mode": "full",
                           "pad_to_multiple": 128, "emb_packing_fn_write_key": "dec_emb_packing_fn",
                           "per_subseq_embs": adaLN_expansion > 1},
        "dec_time_embedder": {"_target_": _P + "preprocessors.time_embedding.TimestepEmbedder",
                              "timesteps_read_key": "timesteps", "time_embedding_write_key": "dec_temb",
                              "dim": dec_dim, "frequency_embedding_size": timestep_freq,
                              "max_timestep": max_timestep},
        "dec_transformer": {"_target_": _P + "trunks.transformers.FlexTransformer",
                            "input_seq_read_key": "dec_packed_seq", "output_seq_write_key": "dec_packed_seq",
                            "dim": dec_dim, "depth": dec_depth, "head_dim": head_dim,
                            "block_mask_read_key": "dec_sa_block_mask", "adaLN_emb_read_key": "dec_temb",
                            "adaLN_packing_fn_read_key": "dec_emb_packing_fn", "adaLN_expansion": adaLN_expansion,
                            "intermediate_layer_write_key": "dec_packed_seq_repa_layer",
                            "intermediate_layers": [1], "use_act_checkpoint": True},
        "dec_unpacker": {"_target_": _P + "postprocessors.seq_unpacking.SequenceUnpacker",
                         "packed_seq_read_key": "dec_packed_seq", "inner_seq_write_keys": [dec_patches_key, "dec_quants"],
                         "inner_packed_shapes_read_key": "dec_ps_inner",
                         "outer_packed_shapes_read_key": "dec_ps_outer"},
        "dec_to_patches": {"_target_": _P + "postprocessors.heads.ToPatchesLinearHead", "read_key": dec_patches_key,
                           "write_key": "dec_patches_out", "dim": dec_dim, "channels_out": latent_channels,
                           "patch_sizes": p, "use_mup_readout": False, "weight_init_style": "zero",
                           "adaLN_emb_read_key": "dec_temb"},
        "dec_to_channels_first": {"_target_": _P + "utils.dict_ops.PerSampleOp", "read_key": "dec_patches_out",
                                  "write_key": "vae_latents_reconst", "per_sample_op": to_first},
    }
    return {
        "vae": {"_target_": "flextok.vae_wrapper.StableDiffusionVAE", "images_read_key": "rgb",
                "vae_latents_read_key": "vae_latents_reconst", "vae_latents_write_key": "vae_latents",
                "images_reconst_write_key": "rgb_reconst", "vae_kl_loss_write_key": "vae_kl_loss",
                "latent_channels": latent_channels, "scaling_factor": scaling_factor, "dtype_override": "fp32",
                "hf_hub_path": hf_hub_path, "sample_posterior": False, "learnable_logvar": False,
                "compile_encode_fn": False, "force_vae_encode": True, "frozen": True},
        "encoder": {"_target_": _P + "utils.wrappers.SequentialModuleDictWrapper", "module_dict": encoder},
        "regularizer": {"_target_": "flextok.regularizers.quantize_fsq.FSQ", "latents_read_key": "enc_registers_latents",
                        "quants_write_key": "enc_registers_quants", "tokens_write_key": "tokens",
                        "levels": list(levels), "drop_quant_p": 0.0, "corrupt_tokens_p": 0.0, "packed_call": True},
        "decoder": {"_target_": _P + "utils.wrappers.SequentialModuleDictWrapper", "module_dict": decoder},
        "flow_matching_noise_module": {"_target_": "flextok.flow_matching.noise_modules.MinRFNoiseModule",
                                       "clean_images_read_key": "vae_latents", "noised_images_write_key": "vae_latents_noised",
                                       "timesteps_write_key": "timesteps", "sigmas_write_key": "sigmas", "ln": True,
                                       "stratisfied": False, "mode_scale": 0.0, "noise_write_key": "flow_noise"},
        "pipeline": {"_target_": "flextok.flow_matching.pipelines.MinRFPipeline", "_partial_": True,
                     "noise_read_key": None, "target_sizes_read_key": None, "latents_read_key": "enc_registers_quants",
                     "timesteps_read_key": "timesteps", "noised_images_read_key": "vae_latents_noised",
                     "reconst_write_key": "vae_latents_reconst", "out_channels": latent_channels},
    }


def _default_official() -> Dict[str, Any]:
    return official_config()


def _vae_base(latent_channels: int) -> Dict[str, Any]:
    cfg = copy.deepcopy(VAE_BASE_CONFIG)
    cfg["latent_channels"] = int(latent_channels)
    return cfg


@dataclass
class FlexTokConfig(ConfigBase):
    """FlexTok hyper-parameters, as the release's own config tree (see the module docstring).

    vae: the ``StableDiffusionVAE`` arguments of the release (``scaling_factor``, ``latent_channels``,
        ``hf_hub_path``, ``sample_posterior`` ...).
    autoencoder: the diffusers ``AutoencoderKL`` config actually built (resolved from ``vae.hf_hub_path`` or the
        base VAE config + ``latent_channels``).
    encoder / decoder: ordered module specs ``[{"name", "_target_", **kwargs}]``; order = execution order.
    regularizer: the FSQ arguments (``levels`` and data keys).
    pipeline: the ``MinRFPipeline`` arguments (data keys, ``out_channels``).
    flow_matching_noise_module: training-only noise module arguments, kept so a config re-exports unchanged.
    image_size: input/output image side in pixels (256 for every release).
    """

    vae: Dict[str, Any] = field(default_factory=lambda: _default_official()["vae"])
    autoencoder: Dict[str, Any] = field(default_factory=lambda: _vae_base(16))
    encoder: List[Dict[str, Any]] = field(
        default_factory=lambda: module_list_from_dict(_default_official()["encoder"]["module_dict"], "encoder"))
    regularizer: Dict[str, Any] = field(default_factory=lambda: _default_official()["regularizer"])
    decoder: List[Dict[str, Any]] = field(
        default_factory=lambda: module_list_from_dict(_default_official()["decoder"]["module_dict"], "decoder"))
    pipeline: Dict[str, Any] = field(default_factory=lambda: _default_official()["pipeline"])
    flow_matching_noise_module: Dict[str, Any] = field(
        default_factory=lambda: _default_official()["flow_matching_noise_module"])
    image_size: int = 256

    def __post_init__(self):
        for key in ("vae", "autoencoder", "regularizer", "pipeline", "flow_matching_noise_module"):
            if not isinstance(getattr(self, key), dict):
                raise ValueError(f"FlexTokConfig.{key} must be a mapping, got {type(getattr(self, key)).__name__}")
        for key in ("vae", "regularizer", "pipeline", "flow_matching_noise_module"):
            target = getattr(self, key).get("_target_")
            if target not in TOP_TARGETS[key]:
                raise ValueError(f"FlexTokConfig.{key}._target_ must be one of {sorted(TOP_TARGETS[key])}, "
                                 f"got {target!r}")
        self.encoder = _check_modules(self.encoder, "encoder")
        self.decoder = _check_modules(self.decoder, "decoder")
        levels = self.regularizer.get("levels")
        if (not isinstance(levels, (list, tuple)) or not levels
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 3 for v in levels)):
            raise ValueError(f"FlexTokConfig.regularizer.levels must be a non-empty list of ints >= 3, got {levels!r}")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size <= 0:
            raise ValueError(f"FlexTokConfig.image_size must be a positive int, got {self.image_size!r}")
        if self.scaling_factor is None:
            raise ValueError("FlexTokConfig: no VAE scaling factor: neither vae.scaling_factor nor "
                             "autoencoder.scaling_factor is set")

    # ------------------------------------------------------------------ derived facts
    @property
    def levels(self) -> List[int]:
        return [int(v) for v in self.regularizer["levels"]]

    @property
    def codebook_size(self) -> int:
        return int(math.prod(self.levels))

    @property
    def scaling_factor(self) -> Optional[float]:
        # the FlexTok value wins over the VAE config's (flextok/vae_wrapper.py: ``scaling_factor or config``)
        value = self.vae.get("scaling_factor") or self.autoencoder.get("scaling_factor")
        return None if value is None else float(value)

    @property
    def latent_channels(self) -> int:
        return int(self.autoencoder["latent_channels"])

    @property
    def vae_downsample(self) -> int:
        return 2 ** (len(self.autoencoder.get("down_block_types", [])) - 1)

    def find_modules(self, short_target: str, where: str = "both") -> List[Tuple[str, Dict[str, Any]]]:
        lists = {"encoder": [self.encoder], "decoder": [self.decoder], "both": [self.encoder, self.decoder]}[where]
        return [(m["name"], m) for lst in lists for m in lst if MODULE_TARGETS[m["_target_"]] == short_target]

    def to_official(self) -> Dict[str, Any]:
        """The config tree in the release layout (module dicts in execution order)."""
        return {
            "vae": copy.deepcopy(self.vae),
            "encoder": {"_target_": _P + "utils.wrappers.SequentialModuleDictWrapper",
                        "module_dict": module_dict_from_list(self.encoder)},
            "regularizer": copy.deepcopy(self.regularizer),
            "decoder": {"_target_": _P + "utils.wrappers.SequentialModuleDictWrapper",
                        "module_dict": module_dict_from_list(self.decoder)},
            "flow_matching_noise_module": copy.deepcopy(self.flow_matching_noise_module),
            "pipeline": copy.deepcopy(self.pipeline),
        }

    @classmethod
    def from_official(cls, official: Dict[str, Any], autoencoder: Optional[Dict[str, Any]] = None,
                      image_size: Optional[int] = None) -> "FlexTokConfig":
        """Build from a release config tree; ``autoencoder`` is the resolved AutoencoderKL config (None = the base
        VAE config with the release's ``latent_channels``)."""
        if not isinstance(official, dict):
            raise ValueError(f"a FlexTok config must be a mapping, got {type(official).__name__}")
        missing = [k for k in _TOP_KEYS if k not in official]
        if missing:
            raise ValueError(f"FlexTok config lacks the top-level entries {missing} (found {sorted(official)})")
        extra = sorted(set(official) - set(_TOP_KEYS) - {"_target_"})
        if extra:
            raise ValueError(f"FlexTok config has unknown top-level entries {extra}")
        if "_target_" in official and official["_target_"] not in ROOT_TARGETS:
            raise ValueError(f"FlexTok config _target_ {official['_target_']!r} is not one of {sorted(ROOT_TARGETS)}")
        for key in ("encoder", "decoder"):
            target = official[key].get("_target_") if isinstance(official[key], dict) else None
            if target not in TOP_TARGETS[key]:
                raise ValueError(f"FlexTok config {key}._target_ must be one of {sorted(TOP_TARGETS[key])}, "
                                 f"got {target!r}")
        vae = copy.deepcopy(official["vae"])
        if autoencoder is None:
            autoencoder = _vae_base(vae.get("latent_channels", 16))
        autoencoder = copy.deepcopy(dict(autoencoder))
        if image_size is None:
            image_size = _infer_image_size(official, autoencoder)
        return cls(vae=vae, autoencoder=autoencoder,
                   encoder=module_list_from_dict(official["encoder"].get("module_dict"), "encoder"),
                   regularizer=copy.deepcopy(official["regularizer"]),
                   decoder=module_list_from_dict(official["decoder"].get("module_dict"), "decoder"),
                   pipeline=copy.deepcopy(official["pipeline"]),
                   flow_matching_noise_module=copy.deepcopy(official["flow_matching_noise_module"]),
                   image_size=image_size)


def _infer_image_size(official: Dict[str, Any], autoencoder: Dict[str, Any]) -> int:
    """The largest image the encoder's absolute position table covers: max_sizes x patch x VAE factor."""
    modules = official["encoder"].get("module_dict") or {}
    patch = next((m.get("patch_sizes") for m in modules.values()
                  if isinstance(m, dict) and str(m.get("_target_", "")).endswith("PatchEmbedder")), None)
    posemb = next((m.get("max_sizes") for m in modules.values()
                   if isinstance(m, dict) and str(m.get("_target_", "")).endswith("PositionalEmbeddingAdder")
                   and m.get("posemb_scaling", "absolute") == "absolute" and len(m.get("max_sizes", [])) == 2), None)
    factor = 2 ** (len(autoencoder.get("down_block_types", [None] * 4)) - 1)
    if patch is None or posemb is None or len(set(int(a) * int(b) for a, b in zip(posemb, patch))) != 1:
        return 256  # the size every release was trained at (paper, model cards)
    return int(posemb[0]) * int(patch[0]) * factor


@dataclass
class FlexTokVAEConfig(ConfigBase):
    """A stand-alone FlexTok VAE release (``EPFL-VILAB/flextok_vae_c{4,8,16}``): a diffusers ``AutoencoderKL``.

    autoencoder: its diffusers config; scaling_factor: None = the one in that config; component: always "vae"
    (tells the ``flextok`` family loader that this folder is the VAE alone).
    """

    autoencoder: Dict[str, Any] = field(default_factory=lambda: {**_vae_base(16), "scaling_factor": 1.0})
    scaling_factor: Optional[float] = None
    image_size: int = 256
    component: str = "vae"

    def __post_init__(self):
        if not isinstance(self.autoencoder, dict) or "latent_channels" not in self.autoencoder:
            raise ValueError("FlexTokVAEConfig.autoencoder must be an AutoencoderKL config with latent_channels")
        if self.component != "vae":
            raise ValueError(f"FlexTokVAEConfig.component must be 'vae', got {self.component!r}")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size <= 0:
            raise ValueError(f"FlexTokVAEConfig.image_size must be a positive int, got {self.image_size!r}")
