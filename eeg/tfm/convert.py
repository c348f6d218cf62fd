"""Official TFM-Tokenizer checkpoints -> this package's state dicts (pure functions).

The releases (``Jathurshan/TFM-Tokenizer`` on the Hub, ``pretrained_weigths/`` in the GitHub repo) are bare
``torch.save(model.state_dict())`` files without any configuration; every hyper-parameter is read from tensor
shapes here. The number of attention heads (8) and the STFT hop (half the temporal kernel) are fixed in the
original code and cannot be read from shapes; they can be overridden.

Every tensor of a release is consumed; a missing or unexpected key fails with the list of keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Dict, Iterable, Tuple

import torch

from zoo.quantizers import VQ

from .config import TFMClassifierConfig, TFMConfig

__all__ = ["read_official_state", "infer_tokenizer_config", "convert_tokenizer_state",
           "infer_classifier_config", "convert_classifier_state"]

# official transformer wrappers: TFM_VQVAE2_deep.<name>.transformer.layers.layers.{i}... and
# TFM_TOKEN_Classifier.LAT.layers.layers.{i}...
_TOKENIZER_TRANSFORMERS = {
    "trans_freq_encoder.transformer.": "freq_encoder.",
    "trans_temporal_encoder.transformer.": "temporal_encoder.",
    "trans_decoder.transformer.": "decoder_transformer.",
}
_BLOCK_KEYS = {
    "0.fn.to_q.weight": "attn.to_q.weight",
    "0.fn.to_k.weight": "attn.to_k.weight",
    "0.fn.to_v.weight": "attn.to_v.weight",
    "0.fn.to_out.weight": "attn.to_out.weight",
    "0.fn.to_out.bias": "attn.to_out.bias",
    "0.norm.weight": "attn_norm.weight",
    "0.norm.bias": "attn_norm.bias",
    "1.fn.fn.w1.weight": "ff.w1.weight",
    "1.fn.fn.w1.bias": "ff.w1.bias",
    "1.fn.fn.w2.weight": "ff.w2.weight",
    "1.fn.fn.w2.bias": "ff.w2.bias",
    "1.norm.weight": "ff_norm.weight",
    "1.norm.bias": "ff_norm.bias",
}
_CONV_STACK = ("0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias", "5.weight", "5.bias",
               "6.weight", "6.bias", "8.weight", "8.bias")


def read_official_state(path) -> Dict[str, torch.Tensor]:
    """Read a bare state-dict ``.pth`` with ``torch.load(weights_only=True)`` (never runs pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, wrong format...
        raise ValueError(f"cannot read {path} as a PyTorch state dict (truncated or not a .pth checkpoint?): "
                         f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a bare state dict (name -> tensor) "
                         "as the TFM-Tokenizer releases are")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path} is not a bare state dict: entries that are not name -> tensor: {bad[:10]}")
    return dict(state)


def _require(state: Mapping, keys: Iterable[str], what: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"not a {what} checkpoint: missing keys {missing[:20]}"
                         f"{' ...' if len(missing) > 20 else ''} (found {len(state)} keys, e.g. "
                         f"{sorted(state)[:5]})")


def _depth(state: Mapping, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"layers\.layers\.(\d+)\.")
    idx = {int(m.group(1)) for k in state for m in [pat.match(k)] if m}
    return 0 if not idx else max(idx) + 1


def _map_transformer(state: Mapping, src: str, dst: str, depth: int, out: Dict[str, torch.Tensor],
                     used: set) -> None:
    for i in range(depth):
        for k_src, k_dst in _BLOCK_KEYS.items():
            key = f"{src}layers.layers.{i}.{k_src}"
            if key not in state:
                raise ValueError(f"transformer {src!r} layer {i}: missing key {key!r}")
            out[f"{dst}layers.{i}.{k_dst}"] = state[key]
            used.add(key)


def _finish(state: Mapping, used: set, what: str) -> None:
    unexpected = sorted(set(state) - used)
    if unexpected:
        raise ValueError(f"{what}: unexpected keys ({len(unexpected)}) not consumed by the converter: "
                         f"{unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}")


def infer_tokenizer_config(state: Mapping[str, torch.Tensor], **overrides) -> TFMConfig:
    """TFMConfig from the shapes of an official ``TFM_VQVAE2_deep`` state dict."""
    _require(state, ["freq_patch_embedding.0.weight", "temporal_patch_embedding.0.weight",
                     "quantizer.embedding.weight"], "TFM-Tokenizer (TFM_VQVAE2_deep)")
    emb, _, patch = state["freq_patch_embedding.0.weight"].shape
    kernel = state["temporal_patch_embedding.0.weight"].shape[-1]
    K = state["quantizer.embedding.weight"].shape[0]
    if "decoder.2.weight" in state:
        head, n_freq = "mlp", state["decoder.2.weight"].shape[0]
    elif "decoder.weight" in state:
        head, n_freq = "linear", state["decoder.weight"].shape[0]
    else:
        raise ValueError("not a TFM-Tokenizer checkpoint: no decoder head (neither 'decoder.2.weight' nor "
                         "'decoder.weight')")
    cfg = dict(n_fft=int(kernel), hop=int(kernel) // 2, n_freq=int(n_freq), n_freq_patch=int(patch),
               emb_size=int(emb), codebook_size=int(K),
               freq_depth=_depth(state, "trans_freq_encoder.transformer."),
               temporal_depth=_depth(state, "trans_temporal_encoder.transformer."),
               decoder_depth=_depth(state, "trans_decoder.transformer."), decoder_head=head)
    cfg.update(overrides)
    return TFMConfig(**cfg)


def convert_tokenizer_state(state: Mapping[str, torch.Tensor], **overrides
                            ) -> Tuple[TFMConfig, Dict[str, torch.Tensor]]:
    """Official tokenizer state dict -> (TFMConfig, this model's state dict). Keeps the EMA buffers."""
    config = infer_tokenizer_config(state, **overrides)
    out: Dict[str, torch.Tensor] = {}
    used: set = set()

    def take(src: str, dst: str):
        if src not in state:
            raise ValueError(f"TFM-Tokenizer checkpoint: missing key {src!r}")
        out[dst] = state[src]
        used.add(src)

    for k in _CONV_STACK:
        take(f"freq_patch_embedding.{k}", f"freq_patch_embedding.{k}")
        take(f"temporal_patch_embedding.{k}", f"temporal_patch_embedding.{k}")
    for p in ("weight", "bias"):
        take(f"freq_patch_embedding_2_atten.0.{p}", f"freq_gate.{p}")
        take(f"freq_patch_embedding_2.0.{p}", f"freq_proj.{p}")
    depths = {"trans_freq_encoder.transformer.": config.freq_depth,
              "trans_temporal_encoder.transformer.": config.temporal_depth,
              "trans_decoder.transformer.": config.decoder_depth}
    for src, dst in _TOKENIZER_TRANSFORMERS.items():
        _map_transformer(state, src, dst, depths[src], out, used)
    q = VQ.convert_ema_embedding_state(state, prefix="quantizer.")
    used.update({"quantizer.embedding.weight", "quantizer.cluster_size", "quantizer.ema_w"})
    out.update({f"quantizer.{k}": v for k, v in q.items()})
    if config.decoder_head == "mlp":
        for k in ("0.weight", "0.bias", "2.weight", "2.bias"):
            take(f"decoder.{k}", f"decoder_head.{k}")
    else:
        take("decoder.weight", "decoder_head.weight")
        take("decoder.bias", "decoder_head.bias")
    _finish(state, used, "TFM-Tokenizer checkpoint")
    return config, out


def infer_classifier_config(state: Mapping[str, torch.Tensor], **overrides) -> TFMClassifierConfig:
    """TFMClassifierConfig from the shapes of an official ``TFM_TOKEN_Classifier`` state dict."""
    _require(state, ["eeg_token_embedding.weight", "channel_embed.weight", "temporal_pos_embed.pe",
                     "classification_head.weight"], "TFM-Encoder classifier (TFM_TOKEN_Classifier)")
    vocab, emb = state["eeg_token_embedding.weight"].shape
    cfg = dict(emb_size=int(emb), codebook_size=int(vocab) - 1, depth=_depth(state, "LAT."),
               n_classes=int(state["classification_head.weight"].shape[0]),
               max_channels=int(state["channel_embed.weight"].shape[0]),
               max_frames=int(state["temporal_pos_embed.pe"].shape[1]))
    cfg.update(overrides)
    return TFMClassifierConfig(**cfg)


def convert_classifier_state(state: Mapping[str, torch.Tensor], **overrides
                             ) -> Tuple[TFMClassifierConfig, Dict[str, torch.Tensor]]:
    """Official classifier state dict -> (TFMClassifierConfig, this model's state dict)."""
    config = infer_classifier_config(state, **overrides)
    out: Dict[str, torch.Tensor] = {}
    used: set = set()
    names = {"eeg_token_embedding.weight": "token_embedding.weight",
             "channel_embed.weight": "channel_embedding.weight", "index": "channel_index",
             "cls_token": "cls_token", "classification_head.weight": "head.weight",
             "classification_head.bias": "head.bias"}
    for src, dst in names.items():
        if src not in state:
            raise ValueError(f"TFM classifier checkpoint: missing key {src!r}")
        out[dst] = state[src]
        used.add(src)
    pe = state["temporal_pos_embed.pe"]
    if pe.ndim != 3 or pe.shape[0] != 1:
        raise ValueError(f"temporal_pos_embed.pe must be [1, max_len, emb], got {tuple(pe.shape)}")
    out["position_table"] = pe[0]
    used.add("temporal_pos_embed.pe")
    idx = out["channel_index"]
    if idx.dtype not in (torch.int64, torch.int32) or idx.shape != (config.max_channels,):
        raise ValueError(f"index must be an integer tensor [{config.max_channels}], got {idx.dtype} "
                         f"{tuple(idx.shape)}")
    if int(idx.min()) < 0 or int(idx.max()) >= config.max_channels:
        raise ValueError(f"index holds channel rows outside [0, {config.max_channels})")
    out["channel_index"] = idx.long()
    _map_transformer(state, "LAT.", "transformer.", config.depth, out, used)
    _finish(state, used, "TFM classifier checkpoint")
    return config, out

