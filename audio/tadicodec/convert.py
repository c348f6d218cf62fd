"""Official TaDiCodec release -> this package's model, strictly.

A release (``amphion/TaDiCodec``) is a folder::

    config.json                   {"model_type", "preprocess": {...}, "model": {"tadicodec": {...}, "vocos": {...}}}
    model.safetensors             TaDiCodec state dict (encoder, decoder, text_emb, vq_in/out_linear, bsq buffers)
    vocoder/config.json           {"model": {"vocos": {...}}}  (the reference ignores it and reads model.vocos of
                                  the top-level config; so do we, and we check that both agree)
    vocoder/model.safetensors     Vocos state dict
    text_tokenizer/tokenizer.json the text tokenizer (optional here: without it pass text_ids)

The reference loads both weight files with ``strict=False``, so mismatches pass silently there. Here every
tensor must land in the model: keys map one to one (the vocoder's get the prefix ``vocoder.``), the two int64
BSQ buffers (``bsq.basis``, ``bsq.group_basis``) are checked against their recomputed values and replaced by the
core quantizer's own buffer, ``head.istft.window`` is checked to be the periodic Hann window, and the only tensors
allowed to be dropped are the training-only ``repa_mlp.*`` (present when ``use_repa_loss`` is on).
:func:`convert_state_dict` is a pure function; :func:`load_release` reads the files and builds the model.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from zoo.quantizers import convert_state

from .config import TaDiCodecConfig, VocosConfig

__all__ = ["TRAINING_ONLY_PREFIXES", "find_release_files", "config_from_release", "check_config_against_state",
           "convert_state_dict", "load_release"]

TRAINING_ONLY_PREFIXES: Tuple[str, ...] = ("repa_mlp.",)

# keys of model.tadicodec that the reference stores but does not use for inference (or uses with a fixed value)
_IGNORED = {"cond_dim", "cond_scale_factor", "cond_drop_p", "context_drop_p", "use_repa_loss"}
_FIXED = {"time_scheduler": "linear", "vq_type": "bsq", "use_vq": True}
_MODEL_KEYS = {"mel_dim", "in_dim", "hidden_size", "encoder_num_layers", "decoder_num_layers", "num_heads",
               "down_sample_factor", "vq_emb_dim", "use_text_cond", "text_vocab_size", "sigma"}
_PRE_KEYS = {"sample_rate": "sample_rate", "n_fft": "n_fft", "win_size": "win_size", "hop_size": "hop_size",
             "num_mels": "num_mels", "fmin": "fmin", "fmax": "fmax", "mel_mean": "mel_mean", "mel_var": "mel_var"}
_VOCOS_REFERENCE_DEFAULTS = {"input_channels": 256, "dim": 384, "intermediate_dim": 1152, "num_layers": 8,
                             "n_fft": 800, "hop_size": 200, "padding": "same"}
_VOCOS_KEYS = {"input_channels", "dim", "intermediate_dim", "num_layers", "n_fft", "hop_size", "padding",
               "adanorm_num_embeddings"}


# ---------------------------------------------------------------------------------------------- files

def find_release_files(*paths) -> Dict[str, Optional[Path]]:
    """Locate the release's files from its folder, or from the files themselves (any order).

    Returns ``config``, ``weights``, ``vocoder_weights``, ``vocoder_config`` and ``tokenizer`` (the last two may
    be ``None``). Raises ``FileNotFoundError`` naming what is missing.
    """
    if not paths:
        raise TypeError("load_official('tadicodec', ...) needs the release folder or its files")
    found: Dict[str, Optional[Path]] = {"config": None, "weights": None, "vocoder_weights": None,
                                        "vocoder_config": None, "tokenizer": None}
    files = []
    for p in paths:
        if p is None:
            continue
        if not isinstance(p, (str, Path)):
            raise TypeError(f"release paths must be str or Path, got {type(p).__name__}")
        p = Path(p)
        if p.is_dir():
            files += [p / "config.json", p / "model.safetensors", p / "vocoder" / "model.safetensors"]
            files += [f for f in (p / "vocoder" / "config.json", p / "text_tokenizer" / "tokenizer.json")
                      if f.is_file()]
        else:
            files.append(p)
    for f in files:
        in_vocoder = f.parent.name == "vocoder"
        if f.name == "config.json":
            found["vocoder_config" if in_vocoder else "config"] = f
        elif f.suffix == ".safetensors":
            found["vocoder_weights" if in_vocoder else "weights"] = f
        elif f.name == "tokenizer.json":
            found["tokenizer"] = f
        elif f.parent.name == "text_tokenizer":
            continue  # tokenizer_config.json, special_tokens_map.json: not needed by the tokenizers library
        else:
            raise ValueError(f"unrecognised release file {f}: expected config.json, model.safetensors, "
                             "vocoder/config.json, vocoder/model.safetensors or text_tokenizer/tokenizer.json")
    for role, label in (("config", "config.json"), ("weights", "model.safetensors"),
                        ("vocoder_weights", "vocoder/model.safetensors")):
        path = found[role]
        if path is None or not path.is_file():
            raise FileNotFoundError(f"TaDiCodec release file {label} is missing"
                                    + (f" (looked for {path})" if path is not None else ""))
    return found


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); the release's config.json is plain JSON (the "
                         "reference repo's json5 training configs need converting first)") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _read_safetensors(path: Path) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated / foreign files
        raise ValueError(f"cannot read {path} as safetensors (truncated or not a safetensors file): {exc}") from exc


# ---------------------------------------------------------------------------------------------- config

def config_from_release(cfg: Mapping[str, Any], **overrides) -> TaDiCodecConfig:
    """The release's ``config.json`` (parsed) -> :class:`TaDiCodecConfig` (``overrides`` set other fields)."""
    if not isinstance(cfg, Mapping):
        raise TypeError(f"config must be a mapping, got {type(cfg).__name__}")
    model = cfg.get("model")
    if not isinstance(model, Mapping) or "tadicodec" not in model or "vocos" not in model:
        raise ValueError("not a TaDiCodec release config: needs model.tadicodec and model.vocos "
                         f"(found top-level keys {sorted(cfg)})")
    pre = cfg.get("preprocess")
    if not isinstance(pre, Mapping):
        raise ValueError("TaDiCodec config has no 'preprocess' block (sample rate, STFT and mel statistics)")
    tad, voc = dict(model["tadicodec"]), dict(model["vocos"])
    unknown = sorted(set(tad) - _MODEL_KEYS - _IGNORED - set(_FIXED))
    if unknown:
        raise ValueError(f"model.tadicodec has keys this implementation does not know: {unknown}")
    for key, value in _FIXED.items():
        if key in tad and tad[key] != value:
            raise ValueError(f"model.tadicodec.{key} = {tad[key]!r} is not supported (only {value!r})")
    # keys absent from model.tadicodec take the reference constructor's defaults (= TaDiCodecConfig's defaults);
    # keys absent from model.vocos take the reference Vocos constructor's defaults, which differ from the release
    missing = sorted(k for k in _PRE_KEYS if k not in pre)
    if missing:
        raise ValueError(f"preprocess lacks {missing}")
    unknown = sorted(set(voc) - _VOCOS_KEYS)
    if unknown:
        raise ValueError(f"model.vocos has keys this implementation does not know: {unknown}")
    kwargs = {dst: pre[src] for src, dst in _PRE_KEYS.items()}
    kwargs.update({k: tad[k] for k in _MODEL_KEYS if k in tad})
    if kwargs.get("fmax") is None:  # librosa's mel filter treats fmax=None as sample_rate / 2
        kwargs["fmax"] = kwargs["sample_rate"] / 2
    for k in ("fmin", "fmax", "mel_mean", "mel_var", "sigma"):
        if k in kwargs:
            kwargs[k] = float(kwargs[k])
    kwargs["vocoder"] = VocosConfig(**{**_VOCOS_REFERENCE_DEFAULTS, **voc})
    kwargs.update(overrides)
    try:
        return TaDiCodecConfig(**kwargs)
    except TypeError as exc:
        raise ValueError(f"cannot build a TaDiCodec config: {exc}") from exc


def _layers(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    idx = {int(k[len(prefix):].split(".", 1)[0]) for k in state if k.startswith(prefix)}
    return 0 if not idx else max(idx) + 1


def check_config_against_state(config: TaDiCodecConfig, state: Mapping[str, torch.Tensor],
                               vocoder_state: Mapping[str, torch.Tensor]) -> None:
    """Compare the configuration with what the tensor shapes say; raise naming every disagreement."""
    c = config
    facts = []

    def shape(key, dim):
        t = state.get(key) if not key.startswith("vocoder:") else vocoder_state.get(key[8:])
        return None if t is None else int(t.shape[dim])

    facts.append(("hidden_size", shape("encoder.in_linear.weight", 0), c.hidden_size))
    facts.append(("in_dim", shape("encoder.in_linear.weight", 1), c.in_dim))
    facts.append(("mel_dim", shape("decoder.out_linear.weight", 0), c.mel_dim))
    facts.append(("vq_emb_dim", shape("vq_in_linear.weight", 0), c.vq_emb_dim))
    facts.append(("encoder_num_layers", _layers(state, "encoder.layers."), c.encoder_num_layers))
    facts.append(("decoder_num_layers", _layers(state, "decoder.layers."), c.decoder_num_layers))
    if c.use_text_cond:
        facts.append(("text_vocab_size", shape("text_emb.weight", 0), c.text_vocab_size))
    facts.append(("intermediate (4 x hidden)", shape("encoder.layers.0.mlp.gate_proj.weight", 0), 4 * c.hidden_size))
    v = c.vocoder
    facts.append(("vocos.dim", shape("vocoder:backbone.embed.weight", 0), v.dim))
    facts.append(("vocos.input_channels", shape("vocoder:backbone.embed.weight", 1), v.input_channels))
    facts.append(("vocos.intermediate_dim", shape("vocoder:backbone.convnext.0.pwconv1.weight", 0),
                  v.intermediate_dim))
    facts.append(("vocos.num_layers", _layers(vocoder_state, "backbone.convnext."), v.num_layers))
    facts.append(("vocos.n_fft + 2", shape("vocoder:head.out.weight", 0), v.n_fft + 2))
    bad = [f"{name}: config {want}, checkpoint {got}" for name, got, want in facts
           if got is not None and got != want]
    if bad:
        raise ValueError("the release's config.json disagrees with its weights: " + "; ".join(bad))


# ---------------------------------------------------------------------------------------------- state

def convert_state_dict(state: Mapping[str, torch.Tensor], vocoder_state: Mapping[str, torch.Tensor],
                       config: TaDiCodecConfig) -> Dict[str, torch.Tensor]:
    """Release tensors -> this model's state dict (pure; float tensors cast to float32 as the reference does).

    ``bsq.basis`` / ``bsq.group_basis`` are optional and checked (MSB-first powers of two / ``[1]``); other
    ``bsq.*`` keys, and anything outside the model, surface as unexpected keys when the result is loaded with
    :func:`zoo.registry.load_state_strict`. ``repa_mlp.*`` (training only) is dropped.
    """
    if not isinstance(state, Mapping) or not isinstance(vocoder_state, Mapping):
        raise TypeError("convert_state_dict needs two mappings of names to tensors")
    out: Dict[str, torch.Tensor] = {}
    bsq_keys = {"bsq.basis", "bsq.group_basis"}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{key}: expected a tensor, got {type(value).__name__}")
        if key in bsq_keys or key.startswith(TRAINING_ONLY_PREFIXES):
            continue
        out[key] = value.float() if value.is_floating_point() else value
    if "bsq.group_basis" in state:
        gb = state["bsq.group_basis"]
        if gb.numel() != 1 or int(gb.reshape(-1)[0]) != 1:
            raise ValueError(f"bsq.group_basis = {gb.tolist()}: only one BSQ group (group_basis [1]) is supported")
    for k, v in convert_state("bsq", state, prefix="bsq.", bits=config.vq_emb_dim).items():
        out["bsq." + k] = v
    win = vocoder_state.get("head.istft.window")
    if win is not None:
        expected = torch.hann_window(config.vocoder.n_fft)
        if win.shape != expected.shape or not torch.allclose(win.float(), expected, atol=1e-6):
            raise ValueError("vocoder head.istft.window is not the periodic Hann window of n_fft "
                             f"{config.vocoder.n_fft}: this is not a Vocos ISTFT head as the config describes")
    for key, value in vocoder_state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"vocoder {key}: expected a tensor, got {type(value).__name__}")
        out["vocoder." + key] = value.float() if value.is_floating_point() else value
    return out


# ---------------------------------------------------------------------------------------------- loader

def load_release(cls, *paths, **overrides):
    """Read a release (folder or files) and return a strict, eval-mode ``cls`` model."""
    from zoo.registry import load_state_strict

    from .text import TextTokenizer

    files = find_release_files(*paths)
    raw = _read_json(files["config"])
    if files["vocoder_config"] is not None and files["vocoder_config"].is_file():
        vraw = _read_json(files["vocoder_config"])
        vvoc = vraw.get("model", {}).get("vocos") if isinstance(vraw.get("model"), dict) else None
        top = raw.get("model", {}).get("vocos") if isinstance(raw.get("model"), dict) else None
        if vvoc is not None and top is not None and dict(vvoc) != dict(top):
            warnings.warn(f"{files['vocoder_config']} differs from model.vocos of {files['config']}; the "
                          "reference builds the vocoder from the top-level config and so does this loader",
                          stacklevel=3)
    tokenizer = None
    if files["tokenizer"] is not None and files["tokenizer"].is_file():
        tokenizer = TextTokenizer.from_file(files["tokenizer"])
    config = config_from_release(raw, **overrides)
    if tokenizer is not None:
        config.text_tokenizer_json = tokenizer.json_text
    state = _read_safetensors(files["weights"])
    vocoder_state = _read_safetensors(files["vocoder_weights"])
    check_config_against_state(config, state, vocoder_state)
    model = cls(config)
    if tokenizer is not None and tokenizer.vocab_size > config.text_vocab_size:
        raise ValueError(f"the text tokenizer has {tokenizer.vocab_size} ids but the model embeds only "
                         f"{config.text_vocab_size}")
    converted = convert_state_dict(state, vocoder_state, config)
    load_state_strict(model, converted, source=f"{files['weights']} + {files['vocoder_weights']}")
    return model.eval()
