"""LiPCoT's released files -> (LiPCoTConfig, state dict) (pure functions).

The release is ``models/lipcot_model/lipcot_model.joblib`` (a dict of settings and scikit-learn objects, read by
:func:`eeg.lipcot.safe_pickle.load_joblib` without scikit-learn) plus the reduced BERT tokenizer folder
``models/modifiedBertTokenizer/`` whose ``vocab.txt`` gives the BERT ids. Every entry of the joblib is either
used, checked, or listed in ``TRAINING_ONLY`` (fitting state with no effect on tokenization).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from .config import LiPCoTConfig

__all__ = ["read_vocab", "find_vocab", "convert_lipcot_model", "TRAINING_ONLY"]

# entries that only describe how the model was fitted (or where on the author's disk); not needed to tokenize
TRAINING_ONLY = {
    "top": {"tokenizer_path", "vocab_length"},
    "kmeans": {"init", "max_iter", "tol", "n_init", "verbose", "random_state", "copy_x", "algorithm", "_tol",
               "_n_init", "_algorithm", "_n_threads", "_n_features_out", "inertia_", "n_iter_", "labels_",
               "_sklearn_version", "n_clusters", "n_features_in_"},
    "scaler": {"copy", "n_features_in_", "n_samples_seen_", "_sklearn_version", "with_mean", "with_std"},
}
_TOP_USED = {"order", "w_factor", "model_max_length", "unk_token", "method", "Fs", "kmeans_model", "WordMap"}


def read_vocab(path) -> List[str]:
    """Lines of a BERT ``vocab.txt`` (one token per line, id = line number)."""
    path = Path(path)
    if path.is_dir():
        path = path / "vocab.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no BERT vocabulary at {path} (LiPCoT ships it as modifiedBertTokenizer/vocab.txt)")
    lines = path.read_text(encoding="utf-8").splitlines()
    tokens = [t.strip() for t in lines]
    if not tokens or any(not t for t in tokens):
        raise ValueError(f"{path}: a BERT vocab.txt needs one non-empty token per line")
    return tokens


def find_vocab(model_path) -> Optional[Path]:
    """``vocab.txt`` of the release layout: ``modifiedBertTokenizer/`` beside the joblib or one folder up."""
    model_path = Path(model_path)
    for folder in (model_path.parent, model_path.parent.parent):
        cand = folder / "modifiedBertTokenizer" / "vocab.txt"
        if cand.is_file():
            return cand
    cand = model_path.parent / "vocab.txt"
    return cand if cand.is_file() else None


def _unknown(where: str, keys, known) -> None:
    extra = sorted(str(k) for k in set(keys) - set(known))
    if extra:
        raise ValueError(f"LiPCoT model file: unexpected entries in {where}: {extra} (not consumed by the converter)")


def _array(state: Mapping, key: str, where: str, ndim: int) -> np.ndarray:
    if key not in state:
        raise ValueError(f"LiPCoT model file: {where} has no {key!r}")
    arr = state[key]
    if not isinstance(arr, np.ndarray) or arr.ndim != ndim or not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"LiPCoT model file: {where}.{key} must be a float array with {ndim} dims, got "
                         f"{type(arr).__name__} {getattr(arr, 'shape', '')}")
    return arr.astype(np.float64)


def convert_lipcot_model(obj: Any, vocab: List[str], *, sfreq: Optional[float] = None
                         ) -> Tuple[LiPCoTConfig, Dict[str, torch.Tensor]]:
    """The unpickled joblib dict + vocab lines -> (config, state dict of float64 buffers)."""
    from .safe_pickle import EstimatorState

    if not isinstance(obj, dict):
        raise ValueError(f"LiPCoT model file must hold a dict, got {type(obj).__name__}")
    _unknown("the top-level dict", obj, _TOP_USED | TRAINING_ONLY["top"])
    for key in ("order", "w_factor", "kmeans_model", "WordMap"):
        if key not in obj:
            raise ValueError(f"LiPCoT model file: missing {key!r} (found {sorted(obj)})")
    km = obj["kmeans_model"]
    if not isinstance(km, dict) or not {"model", "scaler", "TokenMap"} <= set(km):
        raise ValueError("LiPCoT model file: kmeans_model must be a dict with model, scaler and TokenMap")
    _unknown("kmeans_model", km, {"model", "scaler", "TokenMap"})
    kmeans, scaler = km["model"], km["scaler"]
    if not isinstance(kmeans, EstimatorState) or not kmeans.class_path.endswith("KMeans"):
        raise ValueError(f"LiPCoT model file: kmeans_model['model'] must be a KMeans, got {kmeans!r}")
    if not isinstance(scaler, EstimatorState) or not scaler.class_path.endswith("StandardScaler"):
        raise ValueError(f"LiPCoT model file: kmeans_model['scaler'] must be a StandardScaler, got {scaler!r}")
    _unknown("the KMeans state", kmeans.state, {"cluster_centers_"} | TRAINING_ONLY["kmeans"])
    _unknown("the StandardScaler state", scaler.state, {"mean_", "var_", "scale_"} | TRAINING_ONLY["scaler"])

    centers = _array(kmeans.state, "cluster_centers_", "KMeans", 2)
    K, F = centers.shape
    if kmeans.get("n_clusters", K) != K:
        raise ValueError(f"KMeans n_clusters {kmeans.get('n_clusters')} != {K} centres")
    with_mean = bool(scaler.get("with_mean", True))
    with_std = bool(scaler.get("with_std", True))
    mean = _array(scaler.state, "mean_", "StandardScaler", 1) if with_mean else np.zeros(F)
    scale = _array(scaler.state, "scale_", "StandardScaler", 1) if with_std else np.ones(F)
    var = _array(scaler.state, "var_", "StandardScaler", 1) if with_std else np.ones(F)
    for name, arr in (("mean_", mean), ("scale_", scale), ("var_", var)):
        if arr.shape != (F,):
            raise ValueError(f"StandardScaler.{name} has shape {arr.shape}, expected ({F},) like the centres")

    token_map = km["TokenMap"]
    if not isinstance(token_map, dict) or len(token_map) != K:
        raise ValueError(f"LiPCoT model file: TokenMap must map the {K} cluster ids to centres")
    for cid, vec in token_map.items():
        i = int(cid)
        if not 0 <= i < K or not np.array_equal(np.asarray(vec, dtype=np.float64), centers[i]):
            raise ValueError(f"LiPCoT model file: TokenMap entry {i} is not cluster_centers_[{i}]; cluster ids "
                             "must index the KMeans centres")
    word_map = obj["WordMap"]
    if not isinstance(word_map, dict):
        raise ValueError("LiPCoT model file: WordMap must be a dict cluster id -> word")
    words = [None] * K
    for cid, word in word_map.items():
        i = int(cid)
        if not 0 <= i < K or not isinstance(word, str):
            raise ValueError(f"LiPCoT model file: bad WordMap entry {cid!r} -> {word!r}")
        words[i] = word
    if any(w is None for w in words):
        raise ValueError(f"LiPCoT model file: WordMap misses clusters {[i for i, w in enumerate(words) if w is None]}")
    missing = [w for w in words if w not in vocab]
    if missing:
        raise ValueError(f"the BERT vocabulary does not hold the model's words {missing[:10]}: wrong vocab.txt?")

    method = int(obj.get("method", 2))  # releases before the 'method' key existed used method 2
    fs = obj.get("Fs", sfreq)
    if fs is None:
        raise ValueError("this LiPCoT model file has no 'Fs' (sampling rate); pass sfreq=... to the loader")
    if sfreq is not None and float(sfreq) != float(fs):
        raise ValueError(f"sfreq={sfreq} contradicts the model file's Fs={fs}")
    order = int(obj["order"])
    warp = obj["w_factor"]
    config = LiPCoTConfig(order=order, warp=None if warp is None else float(warp), method=method,
                          sfreq=float(fs), vocab_size=K, model_max_length=int(obj.get("model_max_length", 64)),
                          unk_token=str(obj.get("unk_token", "[UNK]")), words=list(words), bert_vocab=list(vocab))
    if config.num_features != F:
        raise ValueError(f"method {method} with order {order} has {config.num_features} features, the centres "
                         f"have {F}")
    state = {"centers": torch.from_numpy(centers.copy()), "scaler_mean": torch.from_numpy(mean.copy()),
             "scaler_scale": torch.from_numpy(scale.copy()), "scaler_var": torch.from_numpy(var.copy())}
    return config, state
