"""TaDiCodec: text-aware diffusion speech tokenizer (Wang et al., 2025), 24 kHz, 6.25 tokens/s, one 2^14 codebook.

Encode (deterministic, audio only): waveform -> normalised log-mel (50 frames/s) -> non-causal Llama encoder ->
linear down-sampling x8 -> Linear to 14 dims -> l2 normalisation -> binary spherical quantization (14 bits,
MSB first) -> ids ``[B, N]``.

Decode (stochastic, needs the transcript): ids -> codes -> Linear -> linear up-sampling x8 (per-frame condition) ->
flow-matching transformer conditioned on the text prefix, the token condition and an optional clean mel prompt,
sampled with midpoint Euler steps and classifier-free guidance -> normalised mel of the frames AFTER the prompt ->
Vocos vocoder -> waveform.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from zoo.quantizers import BSQ, BSQConfig
from zoo.registry import register_family
from zoo.tokenizer import AudioTokenizer, TokenizerSpec
from zoo.tokens import Tokens
from zoo.validation import check_ids, check_tensor, describe

from audio.features import MelSpectrogram, load_audio_librosa

from .config import TaDiCodecConfig
from .sampler import RESCALE_MODES, sample_euler_cfg
from .text import TextTokenizer
from .transformer import PrefixTransformer
from .vocoder import TaDiCodecVocoder

__all__ = ["TaDiCodec"]

TextArg = Union[None, str, Sequence[str]]


def _as_list(name: str, value, batch: int) -> Optional[list]:
    """A per-item argument given for the whole batch (a tensor with batch axis, or a list of B items)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.shape[0] != batch:
            raise ValueError(f"{name} has {value.shape[0]} items on its first axis, the tokens have {batch}")
        return list(value.unbind(0))
    if isinstance(value, (list, tuple)):
        if len(value) != batch:
            raise ValueError(f"{name} is a list of {len(value)} items, the tokens have {batch}")
        return list(value)
    raise TypeError(f"{name} must be a tensor with a batch axis or a list with one entry per item, "
                    f"got {describe(value)}")


def mel_frontend(c: TaDiCodecConfig) -> MelSpectrogram:
    """The codec's normalised log-mel front-end ``wav [B, T] -> [B, T / hop, num_mels]`` (also the vocoder's input
    space; the vocoder recipe builds the same one)."""
    return MelSpectrogram(sample_rate=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_size, win_length=c.win_size,
                          n_mels=c.num_mels, fmin=c.fmin, fmax=c.fmax, mel_scale="slaney", mel_norm="slaney",
                          padding="same", pad_mode="reflect", power=1, magnitude_eps=1e-9, log="ln", log_clamp=1e-5,
                          mean=c.mel_mean, std=math.sqrt(c.mel_var), channels_last=True)


@register_family("tadicodec")
class TaDiCodec(AudioTokenizer):
    """TaDiCodec tokenizer. ``encode(wav, text=None, lengths=None) -> Tokens [B, N]``; ``decode(tokens, text=...)``.

    Module names follow the release (``text_emb``, ``encoder``, ``vq_in_linear``, ``bsq``, ``vq_out_linear``,
    ``decoder``) plus ``vocoder`` (the release's ``vocoder/model.safetensors``).
    """

    config_class = TaDiCodecConfig

    def __init__(self, config: TaDiCodecConfig):
        super().__init__(config)
        c = config
        self.mel = mel_frontend(c)
        if c.use_text_cond:
            self.text_emb = nn.Embedding(c.text_vocab_size, c.hidden_size)
        self.encoder = PrefixTransformer(c.hidden_size, c.num_heads, c.encoder_num_layers, in_dim=c.in_dim,
                                         rope_theta=c.rope_theta, eps=c.rms_norm_eps)
        self.vq_in_linear = nn.Linear(c.hidden_size, c.vq_emb_dim)
        # training recipe of the release: soft entropy with gamma0 = gamma = zeta = 1 at inverse temperature 1,
        # commitment weight 0 (beta = 0)
        self.bsq = BSQ(BSQConfig(bits=c.vq_emb_dim, spherical=True, entropy_loss_weight=1.0, diversity_gamma=1.0,
                                 inv_temperature=1.0, commitment_weight=0.0))
        self.vq_out_linear = nn.Linear(c.vq_emb_dim, c.hidden_size)
        self.decoder = PrefixTransformer(c.hidden_size, c.num_heads, c.decoder_num_layers, in_dim=c.mel_dim,
                                         out_dim=c.mel_dim, use_text=c.use_text_cond, use_time=True, use_cond=True,
                                         rope_theta=c.rope_theta, eps=c.rms_norm_eps)
        self.vocoder = TaDiCodecVocoder(c.vocoder)
        self.text_tokenizer: Optional[TextTokenizer] = (
            TextTokenizer(c.text_tokenizer_json, "config.text_tokenizer_json") if c.text_tokenizer_json else None)

    # ------------------------------------------------------------------ facts
    @property
    def spec(self) -> TokenizerSpec:
        return TokenizerSpec.discrete_spec("audio", self.config.codebook_size, 1, self.config.token_rate, "tokens/s")

    @property
    def min_samples(self) -> int:
        """Shortest input that gives one token (8 mel frames = 3840 samples = 0.16 s)."""
        return self.config.samples_per_token

    def set_text_tokenizer(self, tokenizer: Union[str, "TextTokenizer", Any]) -> None:
        """Use ``tokenizer`` (a ``tokenizer.json`` path / folder or a :class:`TextTokenizer`) for ``text=``.

        It is also stored in the config, so :meth:`save_pretrained` keeps it.
        """
        if not isinstance(tokenizer, TextTokenizer):
            tokenizer = TextTokenizer.from_file(tokenizer)
        self.text_tokenizer = tokenizer
        self.config.text_tokenizer_json = tokenizer.json_text

    # ------------------------------------------------------------------ front-end
    def extract_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel ``[B, T // hop, num_mels]`` of ``wav`` ``[B, T]`` / ``[B, 1, T]`` (24 kHz)."""
        wav = check_tensor("wav", wav, ndim=(1, 2, 3), floating=True, shape_hint="[B, T] mono float audio")
        return self.mel(wav.to(self.mel.mel_basis.device, torch.float32))

    def read_file(self, path):
        """Read like the reference pipeline (``librosa.load(path, sr=24000)``: channel mean, soxr HQ)."""
        wav = load_audio_librosa(path, self.sample_rate)
        return wav, {}, {"source": str(path), "sample_rate": str(self.sample_rate),
                         "notes": "read as librosa.load(sr=24000): channel mean, soxr HQ resampling"}

    # ------------------------------------------------------------------ encoder path
    def encode_mel(self, mel: torch.Tensor, return_details: bool = False):
        """Tokens of normalised mels ``[B, T, num_mels]`` (all items of length T) -> ids ``[B, T // 8]``.

        With ``return_details`` returns a dict with ``encoder_out``, ``downsampled``, ``vq_in``, ``latent``
        (l2-normalised, what BSQ quantizes), ``ids`` and ``codes`` (+-1/sqrt(14)).
        """
        mel = check_tensor("mel", mel, ndim=(3,), floating=True, shape_hint=f"[B, T, {self.config.num_mels}]")
        if mel.shape[-1] != self.config.num_mels:
            raise ValueError(f"mel must have {self.config.num_mels} mel bins on its last axis, got {tuple(mel.shape)}")
        T = mel.shape[1]
        n = T // self.config.down_sample_factor
        if n < 1:
            raise ValueError(f"mel has {T} frames; one token needs at least {self.config.down_sample_factor}")
        h = self.encoder(mel.float())
        down = F.interpolate(h.transpose(1, 2), size=n, mode="linear").transpose(1, 2)
        vq_in = self.vq_in_linear(down)
        latent = F.normalize(vq_in, dim=-1)
        ids = self.bsq.encode(latent)
        if not return_details:
            return ids
        return {"encoder_out": h, "downsampled": down, "vq_in": vq_in, "latent": latent, "ids": ids,
                "codes": self.bsq.decode(ids)}

    def _encode_item(self, wav: torch.Tensor, chunk_frames: Optional[int]) -> torch.Tensor:
        mel = self.mel(wav[None])  # [1, T, mels]
        f = self.config.down_sample_factor
        if chunk_frames is None or mel.shape[1] <= chunk_frames:
            return self.encode_mel(mel)[0]
        parts = []
        for s in range(0, mel.shape[1], chunk_frames):
            piece = mel[:, s:s + chunk_frames]
            if piece.shape[1] >= f:
                parts.append(self.encode_mel(piece)[0])
        return torch.cat(parts)

    def _chunk_frames(self, chunk_seconds) -> Optional[int]:
        if chunk_seconds is None:
            return None
        if isinstance(chunk_seconds, bool) or not isinstance(chunk_seconds, (int, float)) or not chunk_seconds > 0:
            raise ValueError(f"chunk_seconds must be a positive number of seconds, got {chunk_seconds!r}")
        f = self.config.down_sample_factor
        frames = int(chunk_seconds * self.config.frame_rate) // f * f
        if frames < f:
            raise ValueError(f"chunk_seconds={chunk_seconds} is shorter than one token "
                             f"({f / self.config.frame_rate:g} s)")
        return frames

    def _encode(self, wav: torch.Tensor, text: TextArg = None, lengths: Optional[torch.Tensor] = None,
                chunk_seconds: Optional[float] = None) -> Tokens:
        """``wav [B, T]`` -> Tokens ``[B, N]`` with ``N = (T // 480) // 8``; items are encoded one by one, so
        padding never changes another item's tokens. ``text`` (a str or one per item) is recorded in the
        tokens' metadata for :meth:`decode`. ``chunk_seconds`` encodes long inputs in pieces (whole tokens)."""
        B = wav.shape[0]
        texts = self._check_texts(text, B) if text is not None else None
        chunk_frames = self._chunk_frames(chunk_seconds)
        wav = wav.float()
        lens = [wav.shape[-1]] * B if lengths is None else [int(n) for n in lengths.tolist()]
        for i, n in enumerate(lens):
            if n < self.min_samples:
                raise ValueError(f"wav item {i} has {n} samples; TaDiCodec needs at least {self.min_samples} "
                                 f"({self.min_samples / self.sample_rate:g} s = one token) at {self.sample_rate} Hz")
        ids = [self._encode_item(wav[i, :n], chunk_frames) for i, n in enumerate(lens)]
        n_max = max(x.shape[0] for x in ids)
        out = torch.zeros(B, n_max, dtype=torch.long, device=wav.device)
        for i, x in enumerate(ids):
            out[i, :x.shape[0]] = x
        tok_lengths = None
        if lengths is not None:
            tok_lengths = torch.tensor([x.shape[0] for x in ids], dtype=torch.long, device=wav.device)
        meta = {}
        if texts is not None:
            meta["text"] = json.dumps(texts, ensure_ascii=False)
        return Tokens(out, tok_lengths, meta)

    def _check_texts(self, text: TextArg, batch: int) -> List[str]:
        if isinstance(text, str):
            texts = [text]
        elif isinstance(text, (list, tuple)) and all(isinstance(s, str) for s in text):
            texts = list(text)
        else:
            raise TypeError(f"text must be a str or a list of str (one transcript per item), got {describe(text)}")
        if len(texts) != batch:
            raise ValueError(f"text has {len(texts)} transcripts for a batch of {batch} items")
        for i, s in enumerate(texts):
            if not s.strip():
                raise ValueError(f"text item {i} is empty: give the transcript of the audio")
        return texts

    # ------------------------------------------------------------------ decoder path
    def check_tokens(self, tokens: Tokens) -> Tokens:
        check_ids("tokens.ids", tokens.ids, self.config.codebook_size, ndim=(2,),
                  shape_hint="[B, N] TaDiCodec token ids (one codebook)")
        return tokens

    def _text_ids(self, tokens: Tokens, text: TextArg, text_ids, batch: int) -> Optional[List[torch.Tensor]]:
        c = self.config
        if not c.use_text_cond:
            return None
        if text is not None and text_ids is not None:
            raise ValueError("give either text or text_ids, not both")
        if text is None and text_ids is None and "text" in tokens.metadata:
            text = json.loads(tokens.metadata["text"])
        if text_ids is None:
            if text is None:
                raise ValueError("TaDiCodec's decoder is conditioned on the transcript: pass text=... (the words "
                                 "spoken over the whole token sequence, prompt included) or text_ids=...; the "
                                 "tokens carry no text (encode(wav, text=...) records it)")
            texts = self._check_texts(text, batch)
            if self.text_tokenizer is None:
                raise ValueError("this model has no text tokenizer (load the release with its text_tokenizer/ "
                                 "folder or call set_text_tokenizer(path)); pass text_ids=... instead of text=")
            text_ids = [torch.tensor(self.text_tokenizer.encode(s), dtype=torch.long) for s in texts]
        items = _as_list("text_ids", text_ids, batch)
        out = []
        for i, t in enumerate(items):
            t = torch.as_tensor(t)
            check_ids(f"text_ids[{i}]", t, c.text_vocab_size, ndim=(1,), shape_hint="[Lt] text token ids")
            out.append(t.long().to(self.device))
        return out

    def _prompt_mels(self, prompt, prompt_mel, batch: int) -> List[Optional[torch.Tensor]]:
        c = self.config
        if prompt is not None and prompt_mel is not None:
            raise ValueError("give either prompt (waveform) or prompt_mel, not both")
        if prompt is None and prompt_mel is None:
            return [None] * batch
        out = []
        if prompt is not None:
            if isinstance(prompt, torch.Tensor) and prompt.ndim == 3:
                if prompt.shape[1] != 1:
                    raise ValueError(f"prompt must be mono [B, 1, T], got shape {tuple(prompt.shape)}")
                prompt = prompt[:, 0]
            for i, p in enumerate(_as_list("prompt", prompt, batch)):
                p = check_tensor(f"prompt[{i}]", p, ndim=(1,), floating=True, shape_hint="[T] mono 24 kHz audio")
                if p.shape[0] < self.mel.min_length:
                    raise ValueError(f"prompt item {i} has {p.shape[0]} samples; need at least {self.mel.min_length}")
                out.append(self.mel(p.to(self.device, torch.float32)[None])[0])
        else:
            for i, p in enumerate(_as_list("prompt_mel", prompt_mel, batch)):
                p = check_tensor(f"prompt_mel[{i}]", p, ndim=(2,), floating=True,
                                 shape_hint=f"[P, {c.mel_dim}] normalised mel (extract_mel)")
                if p.shape[-1] != c.mel_dim:
                    raise ValueError(f"prompt_mel[{i}] must have {c.mel_dim} bins, got shape {tuple(p.shape)}")
                out.append(p.to(self.device, torch.float32))
        return out

    def token_condition(self, ids: torch.Tensor) -> Dict[str, torch.Tensor]:
        """ids ``[B, N]`` -> ``codes [B, N, 14]``, ``vq_out [B, N, H]``, ``cond [B, 8N, H]`` (up-sampled)."""
        codes = self.bsq.decode(ids)
        vq_out = self.vq_out_linear(codes)
        cond = F.interpolate(vq_out.transpose(1, 2), scale_factor=self.config.down_sample_factor,
                             mode="linear").transpose(1, 2)
        return {"codes": codes, "vq_out": vq_out, "cond": cond}

    def generate_mel(self, ids: torch.Tensor, text_ids: Optional[torch.Tensor] = None,
                     prompt_mel: Optional[torch.Tensor] = None, *, noise: Optional[torch.Tensor] = None,
                     generator: Optional[torch.Generator] = None, num_steps: Optional[int] = None,
                     guidance_scale: Optional[float] = None, rescale: Optional[float] = None,
                     rescale_mode: Optional[str] = None, trace: Optional[Dict[str, Any]] = None) -> torch.Tensor:
        """The reference's ``reverse_diffusion`` on a batch of equal-length items.

        ``ids [B, N]``, ``text_ids [B, Lt]``, ``prompt_mel [B, P, mels]`` (normalised; ``None`` = no prompt) ->
        normalised mel ``[B, 8N - P, mels]`` of the frames after the prompt. ``noise [B, 8N - P, mels]`` is the
        initial sample (else drawn with ``generator``, or the global RNG like the reference). ``trace`` (a dict)
        receives intermediate tensors for debugging and parity checks.
        """
        c = self.config
        num_steps = c.num_steps if num_steps is None else num_steps
        guidance_scale = c.guidance_scale if guidance_scale is None else guidance_scale
        rescale = c.rescale if rescale is None else rescale
        rescale_mode = c.rescale_mode if rescale_mode is None else rescale_mode
        self._check_sampling(num_steps, guidance_scale, rescale, rescale_mode)
        B = ids.shape[0]
        tc = self.token_condition(ids)
        cond = tc["cond"]
        if prompt_mel is None:
            prompt_mel = cond.new_zeros(B, 0, c.mel_dim)
        P = prompt_mel.shape[1]
        Tt = cond.shape[1] - P
        if Tt < 1:
            raise ValueError(f"the prompt ({P} frames) must be shorter than the {cond.shape[1]} frames the "
                             f"{ids.shape[1]} tokens cover ({c.down_sample_factor} frames per token): the output "
                             "covers only the frames after the prompt")
        if noise is None:
            # drawn where the generator lives (a CPU generator also serves a GPU model); without one, from the
            # global RNG of the model's device, as the reference does
            where = generator.device if generator is not None else cond.device
            noise = torch.randn((B, Tt, c.mel_dim), dtype=cond.dtype, device=where,
                                generator=generator).to(cond.device)
        elif tuple(noise.shape) != (B, Tt, c.mel_dim):
            raise ValueError(f"noise must have shape {(B, Tt, c.mel_dim)} (items, target frames = 8 * tokens - "
                             f"prompt frames, mels), got {tuple(noise.shape)}")
        dec = self.decoder
        cond_emb = dec.cond_mlp(cond)
        text_mlp_out = None
        if c.use_text_cond:
            if text_ids is None:
                raise ValueError("text_ids are required: the decoder is conditioned on the transcript")
            text_mlp_out = dec.text_mlp(self.text_emb(text_ids))
        uncond_emb = dec.cond_mlp(torch.zeros_like(cond))
        full: Dict[str, torch.Tensor] = {}

        def velocity(x, t):
            out = dec(torch.cat([prompt_mel, x], dim=1), cond_emb=cond_emb, text_emb=text_mlp_out,
                      time_emb=dec.time_condition(t))
            full["cond"] = out
            return out[:, P:]

        def uncond_velocity(x, t):
            return dec(torch.cat([prompt_mel, x], dim=1), cond_emb=uncond_emb, time_emb=dec.time_condition(t))[:, P:]

        if trace is None:
            callback = None
        else:
            trace.update({"codes": tc["codes"], "vq_out": tc["vq_out"], "cond": cond, "text_mlp_out": text_mlp_out,
                          "noise": noise, "xt_steps": []})

            def callback(step, t, x, v_cond, v_uncond, v):
                if step == 0:
                    trace["time_emb_step0"] = dec.time_condition(t)
                    trace["flow_cond_step0"] = full["cond"]
                    trace["flow_uncond_step0"] = v_uncond
                else:
                    trace["xt_steps"].append(x)

        use_cfg = c.use_text_cond and guidance_scale > 0
        return sample_euler_cfg(velocity, noise, num_steps, uncond_velocity if use_cfg else None, guidance_scale,
                                rescale, rescale_mode, callback=callback)

    @staticmethod
    def _check_sampling(num_steps, guidance_scale, rescale, rescale_mode) -> None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        for name, v in (("guidance_scale", guidance_scale), ("rescale", rescale)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if rescale > 1:
            raise ValueError(f"rescale must lie in [0, 1], got {rescale}")
        if rescale_mode not in RESCALE_MODES:
            raise ValueError(f"rescale_mode must be one of {list(RESCALE_MODES)}, got {rescale_mode!r}")

    def load_vocoder(self, path) -> "TaDiCodec":
        """Replace the vocoder's weights with those of ``path``: a folder holding ``vocoder/model.safetensors`` (a
        release folder, or the output of ``tokenzoo train tadicodec-vocoder``) or that file itself. Strict: the
        shapes must be this codec's vocoder configuration."""
        from safetensors.torch import load_file

        from zoo.registry import load_state_strict

        path = Path(path)
        f = path / "vocoder" / "model.safetensors" if path.is_dir() else path
        if not f.is_file():
            raise FileNotFoundError(f"no vocoder weights at {f} (expected a folder with vocoder/model.safetensors "
                                    f"or the .safetensors file)")
        load_state_strict(self.vocoder, load_file(str(f)), source=str(f))
        return self

    def vocode(self, mel: torch.Tensor) -> torch.Tensor:
        """Normalised mel ``[B, T, mels]`` -> waveform ``[B, T * hop]`` with the Vocos vocoder."""
        mel = check_tensor("mel", mel, ndim=(3,), floating=True, shape_hint=f"[B, T, {self.config.mel_dim}]")
        if mel.shape[-1] != self.config.mel_dim:
            raise ValueError(f"mel must have {self.config.mel_dim} bins on its last axis, got {tuple(mel.shape)}")
        return self.vocoder(mel.float().transpose(1, 2))

    def _decode(self, tokens: Tokens, text: TextArg = None, text_ids=None, prompt=None, prompt_mel=None,
                num_steps: Optional[int] = None, guidance_scale: Optional[float] = None,
                rescale: Optional[float] = None, rescale_mode: Optional[str] = None, noise=None,
                generator: Optional[torch.Generator] = None, output: str = "wav") -> torch.Tensor:
        """Tokens -> waveform ``[B, L]`` (or normalised mel ``[B, T, mels]`` with ``output="mel"``).

        The output covers ONLY the frames after the prompt: item ``i`` has ``8 N_i - P_i`` mel frames
        (``(8 N_i - P_i) * 480`` samples), where ``P_i`` is the prompt's frame count (0 without a prompt).
        Shorter items are zero-padded at the end. See :meth:`decode` for the arguments.
        """
        c = self.config
        if output not in ("wav", "mel"):
            raise ValueError(f"output must be 'wav' or 'mel', got {output!r}")
        num_steps = c.num_steps if num_steps is None else num_steps
        guidance_scale = c.guidance_scale if guidance_scale is None else guidance_scale
        rescale = c.rescale if rescale is None else rescale
        rescale_mode = c.rescale_mode if rescale_mode is None else rescale_mode
        self._check_sampling(num_steps, guidance_scale, rescale, rescale_mode)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {describe(generator)}")
        if noise is not None and generator is not None:
            raise ValueError("give either noise or generator, not both")
        B = tokens.batch_size
        n_tok = tokens.item_lengths().tolist()
        if min(n_tok) < 1:
            raise ValueError("every item needs at least one token (tokens.lengths has a 0)")
        texts = self._text_ids(tokens, text, text_ids, B)
        prompts = self._prompt_mels(prompt, prompt_mel, B)
        f = c.down_sample_factor
        target = [f * n - (0 if p is None else p.shape[0]) for n, p in zip(n_tok, prompts)]
        for i, tt in enumerate(target):
            if tt < 1:
                raise ValueError(f"item {i}: the prompt ({prompts[i].shape[0]} frames) must be shorter than the "
                                 f"{f * n_tok[i]} frames its {n_tok[i]} tokens cover; the output covers only "
                                 "the frames after the prompt")
        t_max = max(target)
        if noise is not None:
            noise = check_tensor("noise", noise, ndim=(3,), floating=True, shape_hint="[B, T, mels]")
            if tuple(noise.shape) != (B, t_max, c.mel_dim):
                raise ValueError(f"noise must have shape {(B, t_max, c.mel_dim)} (items, frames after the prompt, "
                                 f"mels), got {tuple(noise.shape)}")
            noise = noise.to(self.device, torch.float32)
        ids = tokens.ids
        kw = dict(num_steps=num_steps, guidance_scale=guidance_scale, rescale=rescale)
        mels: List[torch.Tensor] = []
        if rescale_mode == "batch" and B > 1:
            # the reference's batch-coupled guidance rescale: one joint sampler run over equal-length items
            lt = {None if t is None else t.shape[0] for t in (texts or [None])}
            lp = {None if p is None else p.shape[0] for p in prompts}
            if len(set(n_tok)) != 1 or len(lt) != 1 or len(lp) != 1:
                raise ValueError("rescale_mode='batch' couples the items of a batch as the reference does and "
                                 "needs equal token, text and prompt lengths; use rescale_mode='item'")
            n = n_tok[0]
            x0 = None if noise is None else noise
            mel = self.generate_mel(ids[:, :n], None if texts is None else torch.stack(texts),
                                    None if prompts[0] is None else torch.stack(prompts), noise=x0,
                                    generator=generator, rescale_mode="batch", **kw)
            mels = list(mel.unbind(0))
        else:
            for i in range(B):
                x0 = None if noise is None else noise[i:i + 1, :target[i]]
                mel = self.generate_mel(ids[i:i + 1, :n_tok[i]], None if texts is None else texts[i][None],
                                        None if prompts[i] is None else prompts[i][None], noise=x0,
                                        generator=generator, rescale_mode="item", **kw)
                mels.append(mel[0])
        if output == "mel":
            out = torch.zeros(B, t_max, c.mel_dim, device=self.device)
            for i, m in enumerate(mels):
                out[i, :m.shape[0]] = m
            return out
        hop = c.hop_size
        wav = torch.zeros(B, t_max * hop, device=self.device)
        for i, m in enumerate(mels):
            wav[i, :m.shape[0] * hop] = self.vocode(m[None])[0]
        return wav

    def decode(self, tokens, text: TextArg = None, text_ids=None, prompt=None, num_steps: Optional[int] = None,
               guidance_scale: Optional[float] = None, rescale: Optional[float] = None, noise=None,
               generator: Optional[torch.Generator] = None, **kwargs) -> torch.Tensor:
        """Tokens ``[B, N]`` -> 24 kHz waveform ``[B, L]`` (float32).

        Args:
            text / text_ids: the transcript of the whole token sequence (prompt included), a str or one per item,
                or its token ids (``[B, Lt]`` tensor or a list of 1-D tensors). Required (the decoder is
                text-conditioned); when both are omitted the text recorded by ``encode(wav, text=...)`` is used.
            prompt: optional clean prompt audio whose frames are the FIRST frames covered by the tokens
                (``[B, Tp]``, ``[B, 1, Tp]`` or a list of 1-D tensors); ``prompt_mel=`` takes normalised mels
                ``[B, P, 128]`` instead. Without a prompt every frame is generated (the reference's
                ``prompt_mel=None`` mode; :meth:`reconstruct` offers the pipeline's self-prompt mode).
            num_steps, guidance_scale, rescale: Euler steps, CFG scale, CFG std-rescale (defaults 32, 2.0, 0.75).
            rescale_mode: ``"item"`` (default: each item rescaled on its own) or ``"batch"`` (the reference's
                rescale over the whole batch, which couples items; needs equal lengths).
            noise: initial noise ``[B, T_out, 128]`` (T_out = frames after the prompt, of the longest item);
                same noise -> bit-identical output. generator: a ``torch.Generator`` for the noise instead.
            output: ``"wav"`` (default) or ``"mel"`` (normalised mel ``[B, T_out, 128]``, before the vocoder).

        The output covers ONLY the frames after the prompt: ``8 N - P`` mel frames = ``(8 N - P) * 480`` samples
        per item (shorter items are zero-padded at the end).
        """
        return super().decode(tokens, text=text, text_ids=text_ids, prompt=prompt, num_steps=num_steps,
                              guidance_scale=guidance_scale, rescale=rescale, noise=noise, generator=generator,
                              **kwargs)

    # ------------------------------------------------------------------ the reference pipeline
    @torch.inference_mode()
    def reconstruct(self, wav: torch.Tensor, text: str, prompt: Optional[torch.Tensor] = None,
                    prompt_text: Optional[str] = None, *, num_steps: Optional[int] = None,
                    guidance_scale: Optional[float] = None, rescale: Optional[float] = None, noise=None,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The reference pipeline's reconstruction of ONE utterance ``wav`` ``[T]``/``[1, T]``/``[1, 1, T]``.

        With a prompt utterance (``prompt`` audio + ``prompt_text``): tokens of ``cat(mel(prompt), mel(wav))``,
        text ``prompt_text + text``, decoded with the prompt's mel -> the reconstruction of ``wav``
        (``8 N - P`` frames). Without: tokens of ``mel(wav)``, and the first ``self_prompt_frames`` (150 = 3 s)
        frames of ``wav``'s own mel serve as the prompt, so the output LACKS those first 3 s, exactly as in the
        reference. Returns ``[1, L]``.
        """
        wav = check_tensor("wav", wav, ndim=(1, 2, 3), floating=True, shape_hint="one utterance [T] or [1, T]")
        wav = wav.reshape(-1) if wav.ndim == 1 or wav.shape[0] == 1 else None
        if wav is None:
            raise ValueError("reconstruct takes one utterance (batch of 1)")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("reconstruct needs the transcript text of wav")
        target_mel = self.extract_mel(wav[None])
        if prompt is not None:
            prompt = check_tensor("prompt", prompt, ndim=(1, 2, 3), floating=True, shape_hint="[T] prompt audio")
            if not isinstance(prompt_text, str) or not prompt_text.strip():
                raise ValueError("a prompt utterance needs its transcript prompt_text")
            prompt_mel = self.extract_mel(prompt.reshape(1, -1))
            ids = self.encode_mel(torch.cat([prompt_mel, target_mel], dim=1))
            full_text = prompt_text + text
        else:
            if prompt_text is not None:
                raise ValueError("prompt_text was given without prompt audio")
            ids = self.encode_mel(target_mel)
            prompt_mel = target_mel[:, :self.config.self_prompt_frames]
            full_text = text
        return self._decode(Tokens(ids), text=[full_text], prompt_mel=prompt_mel, num_steps=num_steps,
                            guidance_scale=guidance_scale, rescale=rescale, noise=noise, generator=generator)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_official(cls, *paths, **kwargs) -> "TaDiCodec":
        """Build from the release's own files: its folder (``config.json``, ``model.safetensors``,
        ``vocoder/model.safetensors``, ``text_tokenizer/``) or those files listed one by one. Strict: every
        tensor must land in the model (see :mod:`audio.tadicodec.convert`)."""
        from .convert import load_release

        return load_release(cls, *paths, **kwargs)

    def extra_repr(self) -> str:
        c = self.config
        return (f"family={self.family!r}, hidden={c.hidden_size}, enc_layers={c.encoder_num_layers}, "
                f"dec_layers={c.decoder_num_layers}, bits={c.vq_emb_dim}, token_rate={c.token_rate:g}/s")
