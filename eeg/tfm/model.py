"""TFM-Tokenizer (single-channel EEG -> time-frequency motif tokens) and its TFM-Encoder classifier.

Tokenizer, per channel (every channel is an independent single-channel sequence), at 200 Hz:

1. ``|STFT|`` with a periodic Hann window of ``n_fft`` = 200, hop 100, no centring, bins 0..99 -> ``[F, nT]``.
2. Frequency path, per frame: Conv1d patches of 5 bins -> 20 frequency tokens -> linear-attention transformer
   -> gated aggregation (``sigmoid(conv) * conv``, kernel/stride 5) -> ``E/2`` channels (channel-major flatten).
3. Temporal path: Conv1d(kernel 200, stride 100) on the raw waveform -> ``E/2`` channels per frame.
4. ``cat(frequency, temporal)`` -> linear-attention transformer over frames -> l2-normalise -> nearest code
   (squared euclidean, EMA codebook of ``codebook_size`` x ``E``) = token id.
5. Decoder: codes -> transformer -> head -> reconstructed ``|STFT|`` ``[F, nT]`` (no waveform decoder).

Shapes: ``x`` ``[B, C, T]`` -> ids ``[B, C, nT]`` with ``nT = 1 + (T - 200) // 100`` (2 tokens/s/channel);
``decode(ids)`` -> ``[B, C, 100, nT]``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from zoo.quantizers import VQ, VQConfig
from zoo.registry import register_family
from zoo.tokenizer import (CONFIG_NAME, FORMAT_TAG, FORMAT_VERSION, WEIGHTS_NAME, SeriesTokenizer, TokenizerSpec,
                           as_tokens)
from zoo.tokens import Tokens
from zoo.validation import check_ids, check_lengths, describe

from ..preprocess import (check_ch_names, check_series, num_frames, quantile_scale, resample_fft,
                          resampled_length, stft_magnitude)
from .config import TFMClassifierConfig, TFMConfig
from .layers import LinearAttentionTransformer, sinusoid_table

__all__ = ["TFMTokenizer", "TFMClassifier"]

# frames of the frequency path processed at once (the path is per frame, so blocking never changes results;
# it bounds the memory of long inputs to ~block * 20 * 4E floats)
_FREQ_BLOCK_FRAMES = 4096


def _conv_gn_stack(in_ch: int, emb: int, out_ch: int, kernel: int, stride: int) -> nn.Sequential:
    """Conv -> GELU -> GN, Conv1x1 -> GELU -> GN, Conv1x1 -> GELU -> GN (GroupNorm with emb/4 groups)."""
    groups = emb // 4
    return nn.Sequential(
        nn.Conv1d(in_ch, emb, kernel_size=kernel, stride=stride), nn.GELU(), nn.GroupNorm(groups, emb),
        nn.Conv1d(emb, emb, kernel_size=1), nn.GELU(), nn.GroupNorm(groups, emb),
        nn.Conv1d(emb, out_ch, kernel_size=1), nn.GELU(), nn.GroupNorm(groups, out_ch),
    )


@register_family("tfm")
class TFMTokenizer(SeriesTokenizer):
    """TFM-Tokenizer. ``encode(x [B, C, T], sfreq=200) -> Tokens [B, C, nT]``; ``decode -> |STFT| [B, C, F, nT]``.

    ``encode`` keyword arguments: ``sfreq`` (Hz; other rates are FFT-resampled to 200 Hz, or refused with
    ``resample=False``; ``None`` declares the input to be at 200 Hz already), ``lengths`` (valid samples per item,
    at ``sfreq``), ``ch_names`` (optional, used in error messages and kept in the tokens' metadata),
    ``normalize`` (per-channel 0.95-quantile scaling, default ``config.normalize``), ``chunk_seconds``
    (tokenize in independent chunks; changes tokens near chunk borders, see docs/models/tfm.md).
    """

    config_class = TFMConfig

    def __init__(self, config: TFMConfig):
        super().__init__(config)
        c = config
        E = c.emb_size
        self.freq_patch_embedding = _conv_gn_stack(1, E, E, c.n_freq_patch, c.n_freq_patch)
        self.freq_encoder = LinearAttentionTransformer(E, c.num_heads, c.freq_depth)
        self.freq_gate = nn.Conv1d(E, c.agg_channels, kernel_size=c.n_freq_patch, stride=c.n_freq_patch)
        self.freq_proj = nn.Conv1d(E, c.agg_channels, kernel_size=c.n_freq_patch, stride=c.n_freq_patch)
        self.temporal_patch_embedding = _conv_gn_stack(1, E, E // 2, c.n_fft, c.hop)
        self.temporal_encoder = LinearAttentionTransformer(E, c.num_heads, c.temporal_depth)
        self.quantizer = VQ(VQConfig(dim=E, codebook_size=c.codebook_size, distance="euclidean", ema=True,
                                     decay=c.decay, eps=c.eps, kmeans_init=False, threshold_ema_dead_code=0.0,
                                     commitment_weight=1.0))
        self.decoder_transformer = LinearAttentionTransformer(E, c.num_heads, c.decoder_depth)
        if c.decoder_head == "mlp":
            self.decoder_head = nn.Sequential(nn.Linear(E, E), nn.Tanh(), nn.Linear(E, c.n_freq))
        else:
            self.decoder_head = nn.Linear(E, c.n_freq)

    # ------------------------------------------------------------------ spec
    @property
    def spec(self) -> TokenizerSpec:
        """Per channel: ``sfreq / hop`` tokens/s (2 for the released models), one codebook."""
        return TokenizerSpec.discrete_spec("eeg", self.config.codebook_size, 1, self.config.tokens_per_second,
                                           "tokens/s")

    # ------------------------------------------------------------------ network pieces
    def stft(self, wave: torch.Tensor) -> torch.Tensor:
        """``[..., T]`` -> ``|STFT|`` ``[..., n_freq, nT]`` (float32)."""
        return stft_magnitude(wave.float(), self.config.n_fft, self.config.hop, self.config.n_freq)

    def frequency_features(self, spec: torch.Tensor, intermediates: Optional[Dict[str, torch.Tensor]] = None
                           ) -> torch.Tensor:
        """``|STFT|`` ``[N, F, nT]`` -> frequency half ``[N, nT, E/2]`` (frames processed independently)."""
        n, f, t = spec.shape
        frames = spec.permute(0, 2, 1).reshape(n * t, 1, f)
        outs = []
        for start in range(0, frames.shape[0], _FREQ_BLOCK_FRAMES):
            h = self.freq_patch_embedding(frames[start:start + _FREQ_BLOCK_FRAMES])  # [n*t, E, 20]
            if intermediates is not None:
                intermediates.setdefault("freq_patch_embedding_out", []).append(h)
            h = self.freq_encoder(h.transpose(1, 2))  # [n*t, 20, E]
            if intermediates is not None:
                intermediates.setdefault("freq_encoded", []).append(h)
            h = h.transpose(1, 2)
            gate = torch.sigmoid(self.freq_gate(h))
            proj = self.freq_proj(h)
            if intermediates is not None:
                intermediates.setdefault("freq_agg_atten", []).append(gate)
                intermediates.setdefault("freq_agg_proj", []).append(proj)
            outs.append((proj * gate).reshape(h.shape[0], -1))  # channel-major: index c * n_agg + g
        if intermediates is not None:
            for key in ("freq_patch_embedding_out", "freq_encoded", "freq_agg_atten", "freq_agg_proj"):
                intermediates[key] = torch.cat(intermediates[key])
        return torch.cat(outs).reshape(n, t, -1)

    def encode_features(self, spec: torch.Tensor, wave: torch.Tensor,
                        intermediates: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """``|STFT|`` ``[N, F, nT]`` and waveform ``[N, T]`` -> quantizer input ``[N, nT, E]`` (l2-normalised)."""
        freq = self.frequency_features(spec, intermediates)
        temporal = self.temporal_patch_embedding(wave.unsqueeze(1))  # [N, E/2, nT]
        if intermediates is not None:
            intermediates["temporal_patch_embedding_out"] = temporal
        h = torch.cat([freq, temporal.transpose(1, 2)], dim=-1)
        h = self.temporal_encoder(h)
        if intermediates is not None:
            intermediates["temporal_encoded"] = h
        return F.normalize(h, p=2, dim=-1)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[N, nT, E]`` -> reconstructed ``|STFT|`` ``[N, F, nT]``."""
        h = self.decoder_transformer(codes)
        return self.decoder_head(h).transpose(1, 2)

    def forward(self, spec: torch.Tensor, wave: torch.Tensor) -> Dict[str, Any]:
        """Training/analysis forward on single-channel sequences ``spec [N, F, nT]``, ``wave [N, T]``.

        Returns ``recon`` ``[N, F, nT]``, ``ids`` ``[N, nT]``, ``quantized`` (straight-through codes),
        ``quant_in`` and the quantizer ``losses``. In training mode the EMA codebook is updated.
        """
        quant_in = self.encode_features(spec, wave)
        q = self.quantizer(quant_in)
        return {"recon": self.decode_codes(q.quantized), "ids": q.ids, "quantized": q.quantized,
                "quant_in": quant_in, "losses": q.losses}

    def tokenize_sequences(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``[N, T]`` (200 Hz, already scaled) -> ids ``[N, nT]``. Never updates the codebook."""
        quant_in = self.encode_features(self.stft(wave), wave.float())
        return self.quantizer.encode(quant_in)

    # ------------------------------------------------------------------ contract
    def prepare_input(self, x, sfreq: Optional[float] = None, lengths=None, ch_names=None, resample: bool = True,
                      **kwargs):
        c = self.config
        names = None
        if isinstance(x, torch.Tensor) and x.ndim == 3:
            names = check_ch_names(ch_names, x.shape[1])
        x = check_series("x", x, sfreq=sfreq or c.sfreq, ch_names=names)
        if names is None and ch_names is not None:
            names = check_ch_names(ch_names, x.shape[1])
        if sfreq is not None:
            if isinstance(sfreq, bool) or not isinstance(sfreq, (int, float)) or not sfreq > 0:
                raise ValueError(f"sfreq must be a positive number of Hz, got {sfreq!r}")
            if float(sfreq) != float(c.sfreq):
                if not resample:
                    raise ValueError(f"x is sampled at {sfreq} Hz but TFM-Tokenizer works at {c.sfreq:g} Hz; "
                                     "pass resample=True (FFT resampling) or resample first")
                if lengths is not None:
                    lengths = check_lengths("lengths", lengths, x.shape[0], x.shape[-1])
                    lengths = torch.tensor([resampled_length(int(n), sfreq, c.sfreq) for n in lengths.tolist()])
                x = resample_fft(x, float(sfreq), float(c.sfreq))
        if x.shape[-1] < c.n_fft:
            raise ValueError(f"x has {x.shape[-1]} samples per channel at {c.sfreq:g} Hz; TFM-Tokenizer needs at "
                             f"least {c.n_fft} ({c.n_fft / c.sfreq:g} s, one token)")
        if lengths is not None:
            lengths = check_lengths("lengths", lengths, x.shape[0], x.shape[-1])
            if int(lengths.min()) < c.n_fft:
                raise ValueError(f"lengths must be at least {c.n_fft} samples (one token), got min "
                                 f"{int(lengths.min())}")
            kwargs["lengths"] = lengths
        if names is not None:
            kwargs["ch_names"] = names
        return x, kwargs

    def _encode(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None, ch_names: Optional[List[str]] = None,
                normalize: Optional[bool] = None, chunk_seconds: Optional[float] = None) -> Tokens:
        c = self.config
        normalize = c.normalize if normalize is None else normalize
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be True or False, got {describe(normalize)}")
        chunk = self._chunk_samples(chunk_seconds)
        B, C, T = x.shape
        n_samples = [T] * B if lengths is None else [int(n) for n in lengths.tolist()]
        frames = [num_frames(n, c.n_fft, c.hop) for n in n_samples]
        ids = torch.zeros(B, C, max(frames), dtype=torch.long, device=x.device)
        was_training = self.training
        self.eval()  # dropout off; the codebook is never updated by encode
        try:
            # linear attention and GroupNorm mix along time: items of different lengths are run separately
            for n in sorted(set(n_samples)):
                items = [i for i, m in enumerate(n_samples) if m == n]
                xs = x[items, :, :n].float()
                if normalize:
                    xs = quantile_scale(xs)
                nt = num_frames(n, c.n_fft, c.hop)
                ids[items, :, :nt] = self._tokenize_chunked(xs.reshape(len(items) * C, n), chunk).reshape(
                    len(items), C, nt)
        finally:
            self.train(was_training)
        metadata = {"family": self.family, "sfreq": f"{c.sfreq:g}"}
        if ch_names is not None:
            metadata["ch_names"] = json.dumps(ch_names)
        return Tokens(ids, None if lengths is None else torch.tensor(frames, dtype=torch.long), metadata)

    def reconstruction_reference(self, x, **kwargs) -> torch.Tensor:
        """What ``decode(encode(x))`` approximates: ``|STFT|`` ``[B, C, n_freq, nT]`` of the input as ``encode``
        sees it (resampled to 200 Hz, scaled when ``normalize``); zero past each item's ``lengths``."""
        x, kw = self.prepare_input(x, **kwargs)
        c = self.config
        normalize = kw.get("normalize")
        normalize = c.normalize if normalize is None else normalize
        lengths = kw.get("lengths")
        B, C, T = x.shape
        n_samples = [T] * B if lengths is None else [int(n) for n in lengths.tolist()]
        out = torch.zeros(B, C, c.n_freq, num_frames(T, c.n_fft, c.hop), device=x.device)
        with torch.inference_mode():
            for n in sorted(set(n_samples)):
                items = [i for i, m in enumerate(n_samples) if m == n]
                xs = x[items, :, :n].float()
                if normalize:
                    xs = quantile_scale(xs)
                spec = self.stft(xs)
                out[items, :, :, : spec.shape[-1]] = spec
        return out

    def _chunk_samples(self, chunk_seconds) -> Optional[int]:
        if chunk_seconds is None:
            return None
        if isinstance(chunk_seconds, bool) or not isinstance(chunk_seconds, (int, float)) or not chunk_seconds > 0:
            raise ValueError(f"chunk_seconds must be a positive number of seconds, got {chunk_seconds!r}")
        c = self.config
        step = int(round(chunk_seconds * c.sfreq / c.hop)) * c.hop
        if step < c.n_fft:
            raise ValueError(f"chunk_seconds must be at least {c.n_fft / c.sfreq:g} s (one STFT window), "
                             f"got {chunk_seconds}")
        return step

    def _tokenize_chunked(self, wave: torch.Tensor, step: Optional[int]) -> torch.Tensor:
        """Chunks start every ``step`` samples and overlap by ``n_fft - hop`` so frames tile exactly."""
        c = self.config
        if step is None or wave.shape[-1] <= step + c.n_fft - c.hop:
            return self.tokenize_sequences(wave)
        parts = []
        for start in range(0, wave.shape[-1] - c.n_fft + 1, step):
            parts.append(self.tokenize_sequences(wave[:, start:start + step + c.n_fft - c.hop]))
        return torch.cat(parts, dim=-1)

    def check_tokens(self, tokens: Tokens) -> Tokens:
        check_ids("tokens.ids", tokens.ids, self.config.codebook_size, ndim=(3,),
                  shape_hint="[B, C, nT] TFM token ids")
        return tokens

    def _decode(self, tokens: Tokens) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            ids = tokens.ids
            B, C, T = ids.shape
            out = torch.zeros(B, C, self.config.n_freq, T, device=ids.device)
            lengths = tokens.item_lengths().tolist()
            for n in sorted(set(lengths)):
                if n == 0:
                    continue
                items = [i for i, m in enumerate(lengths) if m == n]
                codes = self.quantizer.decode(ids[items, :, :n].reshape(len(items) * C, n))
                out[items, :, :, :n] = self.decode_codes(codes).reshape(len(items), C, self.config.n_freq, n)
        finally:
            self.train(was_training)
        return out

    # ------------------------------------------------------------------ official files
    @classmethod
    def from_official(cls, path, *, decoder_head: Optional[str] = None, **overrides) -> "TFMTokenizer":
        """Build from a release's ``tfm_tokenizer_last.pth`` (bare state dict; configuration from shapes)."""
        from .convert import convert_tokenizer_state, read_official_state

        state = read_official_state(path)
        config, converted = convert_tokenizer_state(state, **overrides)
        if decoder_head is not None and decoder_head != config.decoder_head:
            raise ValueError(f"{path}: the checkpoint has a {config.decoder_head!r} decoder head, "
                             f"not {decoder_head!r}")
        model = cls(config)
        from zoo.registry import load_state_strict

        load_state_strict(model, converted, source=str(path))
        return model.eval()


# ================================================================================================ classifier

@register_family("tfm-classifier")
class TFMClassifier(nn.Module):
    """TFM-Encoder: a linear-attention transformer over the token ids of all channels.

    ``classify(tokens [B, C, nT]) -> logits [B, n_classes]`` (sigmoid for the one-output binary models);
    ``masked_prediction(tokens) -> [B, C * nT, n_classes]``. Ids may use the mask id ``codebook_size``. Channel
    ``i`` gets channel embedding ``i`` (at most ``max_channels``), frame ``t`` the sinusoid row ``t``.
    """

    family = "tfm-classifier"
    modality = "eeg"
    config_class = TFMClassifierConfig

    def __init__(self, config: TFMClassifierConfig):
        super().__init__()
        if not isinstance(config, TFMClassifierConfig):
            raise TypeError(f"TFMClassifier needs a TFMClassifierConfig, got {type(config).__name__}")
        self.config = config
        E = config.emb_size
        self.token_embedding = nn.Embedding(config.codebook_size + 1, E)
        self.channel_embedding = nn.Embedding(config.max_channels, E)
        # channel i uses embedding row channel_index[i] (identity in every release; kept from the checkpoint)
        self.register_buffer("channel_index", torch.arange(config.max_channels, dtype=torch.long))
        self.register_buffer("position_table", sinusoid_table(config.max_frames, E))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, E))
        self.transformer = LinearAttentionTransformer(E, config.num_heads, config.depth)
        self.head = nn.Linear(E, config.n_classes)
        self.embed_dropout = nn.Dropout(0.1)

    @property
    def device(self) -> torch.device:
        return self.cls_token.device

    @property
    def mask_id(self) -> int:
        return self.config.mask_id

    def _check(self, tokens) -> Tokens:
        tokens = as_tokens(tokens)
        c = self.config
        check_ids("tokens.ids", tokens.ids, c.codebook_size + 1, ndim=(3,),
                  shape_hint=f"[B, C, nT] TFM token ids (0..{c.codebook_size - 1}, mask id {c.mask_id})")
        _, C, T = tokens.ids.shape
        if C > c.max_channels:
            raise ValueError(f"tokens have {C} channels; this classifier has embeddings for at most {c.max_channels}")
        if T > c.max_frames:
            raise ValueError(f"tokens have {T} frames per channel; the position table holds {c.max_frames}")
        return tokens

    def _transform(self, ids: torch.Tensor) -> torch.Tensor:
        B, C, T = ids.shape
        x = self.token_embedding(ids)  # [B, C, T, E]
        x = x + self.channel_embedding(self.channel_index[:C])[None, :, None, :]
        x = self.embed_dropout(x + self.position_table[:T][None, None])
        x = x.reshape(B, C * T, -1)
        x = torch.cat([self.cls_token.expand(B, -1, -1).to(x.dtype), x], dim=1)
        return self.transformer(x)

    def forward(self, ids: torch.Tensor, per_token: bool = False) -> torch.Tensor:
        """Raw forward on ids ``[B, C, nT]`` (all of the same length, mask id allowed) -> logits ``[B, n_classes]``
        from the CLS position, or with ``per_token`` the logits of every token ``[B, C * nT, n_classes]``
        (channel-major). Runs in the module's current mode (training: dropout on); for inference use
        :meth:`classify` / :meth:`masked_prediction`."""
        h = self._transform(ids)
        return self.head(h[:, 1:]) if per_token else self.head(h[:, 0])

    def token_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """``forward(ids, per_token=True)``: per-token logits ``[B, C * nT, n_classes]`` (training-friendly)."""
        return self.forward(ids, per_token=True)

    def _run(self, tokens, fn) -> List[torch.Tensor]:
        tokens = self._check(tokens)
        out_device = tokens.device
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                ids = tokens.ids.to(self.device)
                lengths = tokens.item_lengths().tolist()
                results: List[Optional[torch.Tensor]] = [None] * len(lengths)
                for n in sorted(set(lengths)):
                    if n == 0:
                        raise ValueError("tokens.lengths holds 0: every item needs at least one frame")
                    items = [i for i, m in enumerate(lengths) if m == n]
                    res = fn(ids[items, :, :n])
                    for j, i in enumerate(items):
                        results[i] = res[j].to(out_device)
        finally:
            self.train(was_training)
        return results

    def classify(self, tokens) -> torch.Tensor:
        """Logits ``[B, n_classes]`` (items of different ``lengths`` are run separately)."""
        return torch.stack(self._run(tokens, lambda ids: self.head(self._transform(ids)[:, 0])))

    def masked_prediction(self, tokens) -> torch.Tensor:
        """Per-token logits ``[B, C * nT, n_classes]`` (channel-major); needs equal lengths."""
        tokens = self._check(tokens)
        if tokens.lengths is not None and int(tokens.lengths.min()) != tokens.ids.shape[-1]:
            raise ValueError("masked_prediction needs tokens without padding (all lengths equal to nT)")
        return torch.stack(self._run(tokens, lambda ids: self.head(self._transform(ids)[:, 1:])))

    @torch.no_grad()
    def init_token_embedding(self, tokenizer: "TFMTokenizer") -> "TFMClassifier":
        """Copy the tokenizer's codebook into token-embedding rows ``0 .. K-1`` and zero the mask row, as the
        original does before masked-token pretraining (``load_embedding_weights``)."""
        if not isinstance(tokenizer, TFMTokenizer):
            raise TypeError(f"tokenizer must be a TFMTokenizer, got {describe(tokenizer)}")
        codes = tokenizer.quantizer.embed.detach()
        K, E = codes.shape
        if (K, E) != (self.config.codebook_size, self.config.emb_size):
            raise ValueError(f"the tokenizer's codebook is {K} x {E}, this classifier embeds "
                             f"{self.config.codebook_size} x {self.config.emb_size} tokens")
        self.token_embedding.weight.zero_()
        self.token_embedding.weight[:K] = codes.to(self.token_embedding.weight)
        return self

    # ------------------------------------------------------------------ persistence
    @classmethod
    def from_config(cls, config: Union[TFMClassifierConfig, Dict[str, Any]]) -> "TFMClassifier":
        if isinstance(config, dict):
            config = TFMClassifierConfig.from_dict(config)
        return cls(config)

    @classmethod
    def from_official(cls, path, **overrides) -> "TFMClassifier":
        """Build from a release's ``tfm_encoder_best_model.pth`` / ``tfm_encoder_mtp_last.pth``."""
        from zoo.registry import load_state_strict

        from .convert import convert_classifier_state, read_official_state

        config, converted = convert_classifier_state(read_official_state(path), **overrides)
        model = cls(config)
        load_state_strict(model, converted, source=str(path))
        return model.eval()

    @classmethod
    def from_pretrained(cls, name_or_path, **kwargs) -> "TFMClassifier":
        from zoo.registry import from_pretrained

        model = from_pretrained(name_or_path, **kwargs)
        if not isinstance(model, cls):
            raise TypeError(f"{name_or_path} holds a {type(model).__name__}, not a TFMClassifier")
        return model

    def save_pretrained(self, save_directory) -> None:
        """``config.json`` + ``model.safetensors`` in the tokenzoo folder format."""
        from safetensors.torch import save_file

        save_directory = Path(save_directory)
        if save_directory.exists() and not save_directory.is_dir():
            raise ValueError(f"save_pretrained: {save_directory} exists and is not a directory")
        save_directory.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT_TAG, "format_version": FORMAT_VERSION, "family": self.family,
                "modality": self.modality, "config": self.config.to_dict()}
        tmp = Path(tempfile.mkdtemp(prefix=".tokenzoo-save-", dir=save_directory))
        try:
            (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            state = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "tokenzoo.family": self.family})
            for name in (WEIGHTS_NAME, CONFIG_NAME):
                os.replace(tmp / name, save_directory / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def extra_repr(self) -> str:
        c = self.config
        return f"emb_size={c.emb_size}, depth={c.depth}, n_classes={c.n_classes}"
