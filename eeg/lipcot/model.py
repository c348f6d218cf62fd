"""LiPCoT: Linear-Predictive-Coding tokens for time series (one token per window).

window -> frequency-warped Burg LPC (order p, warp lambda) -> feature vector (method 2: ``[a1..ap, log10 E]``;
1: poles; 3: cepstrum) -> standardise (the fitted mean/scale) -> nearest of K centres (squared euclidean, float64,
lowest index on ties) = token id -> word -> BERT id (the reduced vocabulary shipped with the model).

Decoding a token gives its centre's all-pole model, not a signal: ``decode`` returns ``[a1..ap, E]`` per token
and :meth:`LiPCoT.synthesize` draws a signal by filtering white noise of power ``E`` through ``1 / A(z)``.

Everything is NumPy float64 (the buffers are float64 tensors so that ``save_pretrained`` keeps them exactly).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from zoo.registry import load_state_strict, register_family
from zoo.tokenizer import SeriesTokenizer, TokenizerSpec, as_tokens
from zoo.tokens import Tokens
from zoo.validation import check_ids, check_lengths, describe

from ..preprocess import check_ch_names, check_series, resample_fft, resampled_length
from .config import SPECIAL_TOKENS, LiPCoTConfig
from .lpc import ar_psd_db, features_to_ar, lpc_features, unwarp, warped_burg

__all__ = ["LiPCoT"]

# windows whose features are computed at once (bounds memory for long inputs; windows are independent, so the
# block size never changes a token)
_BLOCK_WINDOWS = 8192


@register_family("lipcot")
class LiPCoT(SeriesTokenizer):
    """LiPCoT tokenizer. ``encode(x [B, C, T], sfreq=...) -> Tokens [B, C, n_windows]``.

    ``x`` may also be windows ``[n_windows, n_samples]`` (one item whose rows are windows -> ids ``[1, n, 1]``),
    as a tensor or a float NumPy array.

    With ``config.window_seconds`` (or ``window_seconds=`` at encode time) each channel is cut into consecutive
    windows of that length (a trailing partial window is dropped); otherwise each channel of an item is ONE
    window, as in the reference pipeline (a 5 s segment x 59 channels -> 59 tokens).
    """

    config_class = LiPCoTConfig

    def __init__(self, config: LiPCoTConfig):
        super().__init__(config)
        K, F = config.vocab_size, config.num_features
        self.register_buffer("centers", torch.zeros(K, F, dtype=torch.float64))
        self.register_buffer("scaler_mean", torch.zeros(F, dtype=torch.float64))
        self.register_buffer("scaler_scale", torch.ones(F, dtype=torch.float64))
        self.register_buffer("scaler_var", torch.ones(F, dtype=torch.float64))
        self._cache: Dict[str, np.ndarray] = {}
        self._vocab_index = {w: i for i, w in enumerate(config.bert_vocab)}
        self.cluster_to_bert_id = torch.tensor([self._vocab_index[w] for w in config.words], dtype=torch.long)

    # ------------------------------------------------------------------ spec / vocabulary
    @property
    def spec(self) -> TokenizerSpec:
        ws = self.config.window_seconds
        if ws is None:
            return TokenizerSpec.discrete_spec("eeg", self.config.vocab_size, 1, 1.0, "tokens/window")
        return TokenizerSpec.discrete_spec("eeg", self.config.vocab_size, 1, 1.0 / float(ws), "tokens/s")

    @property
    def special_token_ids(self) -> Dict[str, int]:
        """BERT ids of ``[PAD]``, ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``."""
        return {t: self._vocab_index[t] for t in SPECIAL_TOKENS}

    @property
    def words(self) -> List[str]:
        return list(self.config.words)

    def _np(self, name: str) -> np.ndarray:
        return getattr(self, name).detach().cpu().numpy().astype(np.float64)

    def _load_from_state_dict(self, *args, **kwargs):
        self._cache.clear()
        return super()._load_from_state_dict(*args, **kwargs)

    # ------------------------------------------------------------------ features
    def window_features(self, windows) -> Dict[str, np.ndarray]:
        """LPC analysis of windows ``[n, L]`` (rows; array or tensor, any rate the model was fitted at).

        Returns float64 ``ar`` ``[n, p]``, ``energy`` ``[n]`` (E = sigma^2), ``features`` ``[n, F]`` and
        ``scaled`` ``[n, F]`` (standardised).
        """
        w = _as_windows(windows, self.config.order)
        a, energy = warped_burg(w, self.config.order, self.config.warp)
        feats = lpc_features(a, energy, self.config.method, self.config.sfreq)
        scaled = (feats - self._np("scaler_mean")) / self._np("scaler_scale")
        return {"ar": a, "energy": energy, "features": feats, "scaled": scaled}

    def nearest(self, scaled: np.ndarray) -> np.ndarray:
        """Cluster id of standardised features ``[n, F]``: argmin ``|c|^2 - 2 z.c`` (KMeans.predict), float64.

        Computed here in float64 rather than with zoo.quantizers' nearest-code search, which ranks in float32.
        """
        centers = self._np("centers")
        dist = (centers * centers).sum(axis=1)[None, :] - 2.0 * scaled @ centers.T
        return dist.argmin(axis=1).astype(np.int64)

    def centroid_distances(self, scaled: np.ndarray) -> np.ndarray:
        """Euclidean distance of standardised features ``[n, F]`` to every centre -> ``[n, K]``."""
        centers = self._np("centers")
        return np.sqrt(((scaled[:, None, :] - centers[None]) ** 2).sum(-1))

    def encode_windows(self, windows, sfreq: Optional[float] = None) -> torch.Tensor:
        """Token ids ``[n]`` of windows ``[n, L]`` (rows). ``sfreq`` other than the model's is refused here."""
        if sfreq is not None and float(sfreq) != float(self.config.sfreq):
            raise ValueError(f"windows at {sfreq} Hz: this model was fitted at {self.config.sfreq:g} Hz; resample "
                             "first or use encode(x, sfreq=...) which resamples")
        w = _as_windows(windows, self.config.order)
        out = np.empty(w.shape[0], dtype=np.int64)
        for start in range(0, w.shape[0], _BLOCK_WINDOWS):
            block = w[start:start + _BLOCK_WINDOWS]
            f = self.window_features(block)
            _check_features(f["scaled"], start)
            out[start:start + len(block)] = self.nearest(f["scaled"])
        return torch.from_numpy(out)

    # ------------------------------------------------------------------ contract
    def prepare_input(self, x, sfreq: Optional[float] = None, lengths=None, ch_names=None, resample: bool = True,
                      **kwargs):
        c = self.config
        if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating):
            x = torch.from_numpy(np.ascontiguousarray(x))
        if isinstance(x, torch.Tensor) and x.ndim == 2:
            x = x[None]  # windows [n_windows, n_samples]: one item whose rows are the windows
        names = check_ch_names(ch_names, x.shape[1]) if isinstance(x, torch.Tensor) and x.ndim == 3 else None
        x = check_series("x", x, sfreq=sfreq or c.sfreq, ch_names=names)
        if sfreq is not None:
            if isinstance(sfreq, bool) or not isinstance(sfreq, (int, float)) or not sfreq > 0:
                raise ValueError(f"sfreq must be a positive number of Hz, got {sfreq!r}")
            if float(sfreq) != float(c.sfreq):
                if not resample:
                    raise ValueError(f"x is sampled at {sfreq} Hz but this LiPCoT model was fitted at {c.sfreq:g} "
                                     "Hz; pass resample=True (FFT resampling) or resample first")
                if lengths is not None:
                    lengths = check_lengths("lengths", lengths, x.shape[0], x.shape[-1])
                    lengths = torch.tensor([resampled_length(int(n), sfreq, c.sfreq) for n in lengths.tolist()])
                x = resample_fft(x, float(sfreq), float(c.sfreq))
        if lengths is not None:
            kwargs["lengths"] = check_lengths("lengths", lengths, x.shape[0], x.shape[-1])
        if names is not None:
            kwargs["ch_names"] = names
        return x, kwargs

    def _window_samples(self, window_seconds, n_samples: int) -> Optional[int]:
        ws = self.config.window_seconds if window_seconds is None else window_seconds
        if ws is None:
            return None
        if isinstance(ws, bool) or not isinstance(ws, (int, float)) or not ws > 0:
            raise ValueError(f"window_seconds must be a positive number of seconds, got {ws!r}")
        w = int(round(ws * self.config.sfreq))
        if w <= self.config.order + 1:
            raise ValueError(f"window_seconds={ws} gives {w} samples; LPC of order {self.config.order} needs more")
        return w

    def _encode(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                ch_names: Optional[List[str]] = None, window_seconds: Optional[float] = None) -> Tokens:
        B, C, T = x.shape
        data = x.detach().cpu().double().numpy()
        n_samples = [T] * B if lengths is None else [int(n) for n in lengths.tolist()]
        win = self._window_samples(window_seconds, T)
        if win is None:
            counts = [1] * B  # one window per channel: each item's window is its valid part
        else:
            counts = [n // win for n in n_samples]
            short = [i for i, n in enumerate(counts) if n == 0]
            if short:
                raise ValueError(f"item {short[0]} has {n_samples[short[0]]} samples, shorter than one window of "
                                 f"{win} samples ({win / self.config.sfreq:g} s)")
        ids = torch.zeros(B, C, max(counts), dtype=torch.long)
        for i in range(B):
            with self._named_errors(i, counts[i], ch_names):
                tok = self.encode_windows(self._item_windows(data[i], n_samples[i], win, counts[i]))
            ids[i, :, :counts[i]] = tok.reshape(C, counts[i])
        metadata = {"family": self.family, "sfreq": f"{self.config.sfreq:g}"}
        if ch_names is not None:
            metadata["ch_names"] = json.dumps(ch_names)
        out_lengths = None
        if lengths is not None and win is not None:
            out_lengths = torch.tensor(counts, dtype=torch.long)
        return Tokens(ids.to(x.device), out_lengths, metadata)

    def _item_windows(self, item: np.ndarray, n: int, win: Optional[int], count: int) -> np.ndarray:
        """Windows (rows) of one item ``[C, T]``: its valid part per channel, or ``count`` windows of ``win``."""
        windows = item[:, :n] if win is None else item[:, :count * win].reshape(item.shape[0] * count, win)
        if windows.shape[-1] <= self.config.order + 1:
            raise ValueError(f"windows of {windows.shape[-1]} samples are too short: LPC of order "
                             f"{self.config.order} needs more than {self.config.order + 1}")
        return windows

    @contextlib.contextmanager
    def _named_errors(self, item: int, count: int, ch_names: Optional[List[str]]):
        try:
            yield
        except _BadWindow as exc:
            ch, wi = divmod(exc.index, count)
            chan = f"channel {ch}" + (f" ({ch_names[ch]})" if ch_names else "")
            raise ValueError(f"x item {item}, {chan}, window {wi}: {exc.reason}") from None

    def reconstruction_reference(self, x, **kwargs) -> torch.Tensor:
        """What ``decode(encode(x))`` approximates: every window's own LPC model ``[a1 .. ap, E]``, float64
        ``[B, C, n_windows, p + 1]`` (warped domain, like ``decode``); zero past each item's windows."""
        x, kw = self.prepare_input(x, **kwargs)
        lengths, ch_names = kw.get("lengths"), kw.get("ch_names")
        B, C, T = x.shape
        data = x.detach().cpu().double().numpy()
        n_samples = [T] * B if lengths is None else [int(n) for n in lengths.tolist()]
        win = self._window_samples(kw.get("window_seconds"), T)
        counts = [1] * B if win is None else [n // win for n in n_samples]
        if min(counts) == 0:
            raise ValueError(f"an item is shorter than one window of {win} samples")
        out = np.zeros((B, C, max(counts), self.config.order + 1))
        for i in range(B):
            with self._named_errors(i, counts[i], ch_names):
                f = self.window_features(_as_windows(self._item_windows(data[i], n_samples[i], win, counts[i]),
                                                     self.config.order))
            out[i, :, :counts[i], :-1] = f["ar"].reshape(C, counts[i], -1)
            out[i, :, :counts[i], -1] = f["energy"].reshape(C, counts[i])
        return torch.from_numpy(out).to(x.device)

    def check_tokens(self, tokens: Tokens) -> Tokens:
        check_ids("tokens.ids", tokens.ids, self.config.vocab_size, ndim=(3,),
                  shape_hint="[B, C, n_windows] LiPCoT cluster ids")
        return tokens

    # ------------------------------------------------------------------ decoding
    def centroid_ar(self, unwarped: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """AR models of the K centres: ``(a [K, p], E [K])`` (real part; ``unwarped``: ordinary-frequency a)."""
        key = "unwarped" if unwarped else "warped"
        if key not in self._cache:
            c = self.config
            feats = self._np("centers") * self._np("scaler_scale") + self._np("scaler_mean")
            raw, energy = [], []
            for f in feats:
                a, e = features_to_ar(f, c.method, c.order, c.sfreq)
                raw.append(a)
                energy.append(e)
            self._cache["warped"] = np.real(np.stack(raw)).astype(np.float64)
            self._cache["unwarped"] = np.stack([unwarp(a, c.warp) for a in raw])
            self._cache["energy"] = np.asarray(energy, dtype=np.float64)
        return self._cache[key].copy(), self._cache["energy"].copy()

    def centroid_psd_db(self, n_points: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Power spectra of the centres in dB on ``n_points`` (default ``2 * sfreq``) frequencies -> (Hz, [K, n])."""
        n_points = int(2 * self.config.sfreq) if n_points is None else n_points
        a, energy = self.centroid_ar(unwarped=True)
        spectra = [ar_psd_db(ai, ei, n_points, self.config.sfreq) for ai, ei in zip(a, energy)]
        return spectra[0][0], np.stack([s[1] for s in spectra])

    def _decode(self, tokens: Tokens, unwarped: bool = False) -> torch.Tensor:
        a, energy = self.centroid_ar(unwarped=unwarped)
        table = torch.from_numpy(np.concatenate([a, energy[:, None]], axis=1))
        out = table.to(tokens.ids.device)[tokens.ids]
        if tokens.lengths is not None:
            pos = torch.arange(tokens.ids.shape[-1], device=out.device)
            out = out * (pos[None, None, :] < tokens.lengths[:, None, None]).unsqueeze(-1)
        return out

    def decode(self, tokens, unwarped: bool = False) -> torch.Tensor:
        """``[B, C, n]`` ids -> float64 ``[B, C, n, p + 1]``: each token's centre ``[a1 .. ap, E]``.

        ``a`` are the coefficients of ``A(z) = 1 + a1 z^-1 + ..`` in the warped domain (``unwarped=True``: mapped
        back to ordinary frequency), ``E`` the prediction-error power sigma^2. Padding positions are zero.
        """
        return super().decode(tokens, unwarped=unwarped)

    def synthesize(self, tokens, n_samples: Optional[int] = None, generator: Optional[torch.Generator] = None
                   ) -> torch.Tensor:
        """A signal ``[B, C, n * n_samples]`` (float64): white noise of power E through ``1 / A(z)`` per token.

        Uses each centre's unwarped coefficients; poles on or outside the unit circle (a centre is an average of
        feature vectors, so its filter need not be stable) are reflected inside (``p -> 1 / conj(p)``) so the
        output stays bounded. ``n_samples`` per token defaults to the window length. The same ``generator`` state
        gives the same signal. Padding positions (``lengths``) are zero.
        """
        from scipy.signal import lfilter

        tokens = self.check_tokens(as_tokens(tokens))
        if n_samples is None:
            if self.config.window_seconds is None:
                raise ValueError("synthesize needs n_samples (this model has no fixed window length)")
            n_samples = int(round(self.config.window_seconds * self.config.sfreq))
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {describe(generator)}")
        a, energy = self.centroid_ar(unwarped=True)
        stable = np.stack([_stabilise(ai) for ai in a])
        ids = tokens.ids.cpu()
        B, C, N = ids.shape
        noise = torch.randn(B, C, N, n_samples, generator=generator, dtype=torch.float64).numpy()
        out = np.zeros((B, C, N, n_samples))
        lengths = tokens.item_lengths().tolist()
        for k in np.unique(ids.numpy()):
            mask = ids.numpy() == k
            den = np.concatenate([[1.0], stable[k]])
            out[mask] = lfilter([1.0], den, noise[mask] * np.sqrt(energy[k]), axis=-1)
        for i, n in enumerate(lengths):
            out[i, :, int(n):] = 0.0
        return torch.from_numpy(out.reshape(B, C, N * n_samples)).to(tokens.ids.device)

    # ------------------------------------------------------------------ BERT side
    def bert_ids(self, tokens) -> torch.Tensor:
        """Cluster ids -> BERT ids of their words (same shape)."""
        tokens = self.check_tokens(as_tokens(tokens))
        return self.cluster_to_bert_id.to(tokens.ids.device)[tokens.ids]

    def to_words(self, tokens) -> List[str]:
        """One space-joined sentence per item (channels in order, then windows; padding left out)."""
        tokens = self.check_tokens(as_tokens(tokens))
        out = []
        for i, ids in enumerate(tokens.unbind()):
            out.append(" ".join(self.config.words[int(t)] for t in ids.reshape(-1).tolist()))
        return out

    def bert_inputs(self, tokens, max_length: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` ``[B, max_length]`` as the reference's BertDataset builds them.

        ``[CLS]`` + the item's words (channels in order, then windows) + ``[SEP]``, truncated to ``max_length``
        (default ``model_max_length``; ``[SEP]`` is kept), padded with ``[PAD]``.
        """
        tokens = self.check_tokens(as_tokens(tokens))
        L = self.config.model_max_length if max_length is None else max_length
        if isinstance(L, bool) or not isinstance(L, int) or L < 2:
            raise ValueError(f"max_length must be an int >= 2, got {L!r}")
        sp = self.special_token_ids
        ids = torch.full((len(tokens), L), sp["[PAD]"], dtype=torch.long)
        mask = torch.zeros(len(tokens), L, dtype=torch.long)
        table = self.cluster_to_bert_id
        for i, item in enumerate(tokens.unbind()):
            words = table[item.reshape(-1).cpu()][: L - 2]
            seq = torch.cat([torch.tensor([sp["[CLS]"]]), words, torch.tensor([sp["[SEP]"]])])
            ids[i, : len(seq)] = seq
            mask[i, : len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def write_bert_vocab(self, folder) -> Path:
        """Write ``vocab.txt`` (the BERT vocabulary, one token per line) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "vocab.txt"
        path.write_text("\n".join(self.config.bert_vocab) + "\n", encoding="utf-8")
        return path

    # ------------------------------------------------------------------ loading and fitting
    @classmethod
    def from_official(cls, model_path, vocab=None, *, sfreq: Optional[float] = None) -> "LiPCoT":
        """The release's ``lipcot_model.joblib`` (+ ``vocab.txt`` or the ``modifiedBertTokenizer`` folder).

        The joblib is read by a restricted unpickler (no scikit-learn import, no code execution); when ``vocab`` is
        not given it is looked up in the release layout (``modifiedBertTokenizer/vocab.txt`` beside the joblib or
        one folder up).
        """
        from .convert import convert_lipcot_model, find_vocab, read_vocab
        from .safe_pickle import load_joblib

        model_path = Path(model_path)
        obj = load_joblib(model_path)
        if vocab is None:
            vocab = find_vocab(model_path)
            if vocab is None:
                raise FileNotFoundError(f"no modifiedBertTokenizer/vocab.txt found near {model_path}; pass vocab=")
        config, state = convert_lipcot_model(obj, read_vocab(vocab), sfreq=sfreq)
        model = cls(config)
        load_state_strict(model, state, source=str(model_path))
        return model.eval()

    @classmethod
    def fit(cls, windows, *, order: int = 16, warp: Optional[float] = 0.2, vocab_size: int = 64, seed: int = 42,
            method: int = 2, sfreq: float = 500.0, words: Optional[Sequence[str]] = None,
            model_max_length: int = 64, window_seconds: Optional[float] = None, n_init: int = 10,
            max_iter: int = 500) -> "LiPCoT":
        """Fit a new model on training windows ``[n, L]`` (rows) as the reference does.

        Standardise the features (population variance), K-means (k-means++, ``n_init`` restarts, ``max_iter``,
        ``random_state=seed``; needs scikit-learn: ``pip install 'tokenzoo[fit]'``). Cluster ``i`` gets
        ``words[i]`` (default ``lpc0 .. lpcK-1``), so the word map never depends on Python's hash seed; the BERT
        vocabulary is the five special tokens followed by the words.
        """
        try:
            from sklearn.cluster import KMeans
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("LiPCoT.fit needs scikit-learn: pip install 'tokenzoo[fit]'") from exc
        config = LiPCoTConfig(order=order, warp=warp, method=method, sfreq=float(sfreq), vocab_size=vocab_size,
                              model_max_length=model_max_length, window_seconds=window_seconds,
                              words=list(words) if words is not None else [])
        model = cls(config)
        w = _as_windows(windows, order)
        if w.shape[0] < vocab_size:
            raise ValueError(f"fit needs at least vocab_size={vocab_size} windows, got {w.shape[0]}")
        feats = np.concatenate([model.window_features(w[s:s + _BLOCK_WINDOWS])["features"]
                                for s in range(0, w.shape[0], _BLOCK_WINDOWS)])
        _check_features(feats, 0)
        mean = feats.mean(axis=0)
        var = feats.var(axis=0)
        scale = np.sqrt(var)
        scale[scale < 10 * np.finfo(np.float64).eps] = 1.0  # constant features are left unscaled (as sklearn)
        kmeans = KMeans(n_clusters=vocab_size, init="k-means++", max_iter=max_iter, n_init=n_init,
                        random_state=seed)
        kmeans.fit((feats - mean) / scale)
        state = {"centers": torch.from_numpy(np.asarray(kmeans.cluster_centers_, dtype=np.float64).copy()),
                 "scaler_mean": torch.from_numpy(mean), "scaler_scale": torch.from_numpy(scale),
                 "scaler_var": torch.from_numpy(var)}
        load_state_strict(model, state, source="LiPCoT.fit")
        return model.eval()


# ---------------------------------------------------------------------------------------------- helpers

class _BadWindow(ValueError):
    def __init__(self, index: int, reason: str):
        super().__init__(f"window {index}: {reason}")
        self.index = index
        self.reason = reason


def _as_windows(windows, order: int) -> np.ndarray:
    if isinstance(windows, torch.Tensor):
        if not windows.is_floating_point():
            raise TypeError(f"windows must be floating point, got dtype {windows.dtype}")
        windows = windows.detach().cpu().double().numpy()
    if not isinstance(windows, np.ndarray):
        raise TypeError(f"windows must be a numpy array or torch tensor [n_windows, n_samples], got "
                        f"{describe(windows)}")
    if windows.ndim != 2:
        raise ValueError(f"windows must be 2-D [n_windows, n_samples] (one window per ROW), got shape "
                         f"{windows.shape}")
    if not np.issubdtype(windows.dtype, np.floating):
        raise TypeError(f"windows must be floating point, got dtype {windows.dtype}")
    if windows.shape[0] == 0 or windows.shape[1] == 0:
        raise ValueError(f"windows is empty (shape {windows.shape})")
    if windows.shape[1] <= order + 1:
        raise ValueError(f"windows have {windows.shape[1]} samples; LPC of order {order} needs more than {order + 1}")
    w = windows.astype(np.float64, copy=False)
    bad = ~np.isfinite(w)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise _BadWindow(int(r), f"NaN/Inf at sample {int(c)}")
    energy = np.einsum("ij,ij->i", w, w)
    if (energy == 0).any():
        raise _BadWindow(int(np.argmax(energy == 0)), "the window is all zeros (LPC is undefined)")
    return w


def _check_features(feats: np.ndarray, offset: int) -> None:
    bad = ~np.isfinite(feats).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise _BadWindow(offset + i, "its LPC features are not finite (a constant or degenerate window)")


def _stabilise(a: np.ndarray) -> np.ndarray:
    den = np.concatenate([[1.0], a])
    roots = np.roots(den)
    outside = np.abs(roots) >= 1.0
    if not outside.any():
        return a
    roots[outside] = 1.0 / np.conj(roots[outside]) * (1 - 1e-9)
    return np.real(np.poly(roots))[1:]
