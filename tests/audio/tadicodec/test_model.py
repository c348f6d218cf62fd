"""TaDiCodec contract on a small random model: shapes, batching, lengths, determinism, chunking, errors."""

from __future__ import annotations

import json

import pytest
import torch

import zoo
from zoo.tokens import Tokens

from .conftest import tiny_config


def test_spec(tiny):
    s = tiny.spec
    assert (s.codebook_size, s.num_codebooks, s.token_rate, s.bitrate) == (16384, 1, 6.25, 87.5)
    assert tiny.sample_rate == 24000 and tiny.min_samples == 3840


def test_encode_shapes_and_layouts(tiny, speech):
    tok = tiny.encode(speech[None])
    assert tok.ids.shape == (1, (48000 // 480) // 8) and tok.lengths is None
    assert tok.ids.dtype == torch.long and 0 <= int(tok.ids.min()) and int(tok.ids.max()) < 16384
    assert torch.equal(tiny.encode(speech[None, None]).ids, tok.ids)
    assert torch.equal(tiny.encode(speech[None].double()).ids, tok.ids)
    assert len(set(tok.ids[0].tolist())) > 1  # a random model still spreads over the codebook


def test_batch_with_lengths_equals_one_at_a_time(tiny, speech):
    a, b = speech[:30000], speech[5000:5000 + 19200]
    batch = torch.randn(2, 30000)  # padding is noise: it must not matter
    batch[0] = a
    batch[1, :b.shape[0]] = b
    tok = tiny.encode(batch, lengths=torch.tensor([30000, b.shape[0]]))
    ta, tb = tiny.encode(a[None]), tiny.encode(b[None])
    assert tok.lengths.tolist() == [ta.ids.shape[1], tb.ids.shape[1]] == [7, 5]
    assert torch.equal(tok.ids[0, :7], ta.ids[0]) and torch.equal(tok.ids[1, :5], tb.ids[0])


def test_decode_batched_equals_one_at_a_time_and_noise_determinism(tiny, speech):
    tok = tiny.encode(torch.stack([speech[:24000], speech[24000:]]), lengths=torch.tensor([24000, 20000]))
    assert tok.lengths.tolist() == [6, 5]
    text_ids = [torch.tensor([1, 2, 3]), torch.tensor([4, 5])]
    noise = torch.randn(2, 48, 128, generator=torch.Generator().manual_seed(3))
    y = tiny.decode(tok, text_ids=text_ids, noise=noise)
    assert y.shape == (2, 48 * 480) and y.dtype == torch.float32
    y0 = tiny.decode(tok[0], text_ids=[text_ids[0]], noise=noise[:1])
    y1 = tiny.decode(Tokens(tok.ids[1:, :5]), text_ids=[text_ids[1]], noise=noise[1:, :40])
    assert torch.equal(y[0], y0[0]) and torch.equal(y[1, :40 * 480], y1[0])
    assert torch.all(y[1, 40 * 480:] == 0)
    assert torch.equal(tiny.decode(tok, text_ids=text_ids, noise=noise), y)  # same noise -> bit-identical
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(tiny.decode(tok[0], text_ids=[text_ids[0]], generator=g1),
                       tiny.decode(tok[0], text_ids=[text_ids[0]], generator=g2))
    assert torch.isfinite(y).all() and y.abs().max() > 0


def test_prompt_output_covers_only_frames_after_the_prompt(tiny, speech):
    tok = tiny.encode(speech[None])  # 12 tokens = 96 frames
    prompt = speech[:24000][None]  # 50 frames
    noise = torch.randn(1, 46, 128)
    y = tiny.decode(tok, text_ids=torch.tensor([[1, 2]]), prompt=prompt, noise=noise)
    assert y.shape == (1, 46 * 480)
    mel = tiny.decode(tok, text_ids=torch.tensor([[1, 2]]), prompt_mel=tiny.extract_mel(prompt), noise=noise,
                      output="mel")
    assert mel.shape == (1, 46, 128)
    with torch.inference_mode():
        assert torch.allclose(tiny.vocode(mel), y, atol=1e-5)
    with pytest.raises(ValueError, match="shorter than"):
        tiny.decode(tok, text_ids=torch.tensor([[1]]), prompt_mel=torch.zeros(1, 96, 128))


def test_text_recorded_at_encode_and_text_required_at_decode(tiny, speech):
    tok = tiny.encode(speech[None], text="Hello world this is a test")
    assert json.loads(tok.metadata["text"]) == ["Hello world this is a test"]
    noise = torch.randn(1, 96, 128)
    y = tiny.decode(tok, noise=noise)
    ids = tiny.text_tokenizer.encode("Hello world this is a test")
    assert ids == [1, 2, 3, 4, 5, 6]
    assert torch.equal(y, tiny.decode(Tokens(tok.ids), text_ids=torch.tensor([ids]), noise=noise))
    with pytest.raises(ValueError, match="transcript"):
        tiny.decode(Tokens(tok.ids))
    with pytest.raises(ValueError, match="either text or text_ids"):
        tiny.decode(tok, text="hello", text_ids=torch.tensor([[1]]))
    with pytest.raises(ValueError, match="text_ids"):
        tiny.decode(tok, text_ids=torch.tensor([[64]]))


def test_guidance_modes(tiny, speech):
    tok = tiny.encode(torch.stack([speech[:24000], speech[24000:]]))
    kw = dict(text_ids=torch.tensor([[1, 2], [3, 4]]), noise=torch.randn(2, 48, 128), output="mel")
    item = tiny.decode(tok, **kw)
    batch = tiny.decode(tok, rescale_mode="batch", **kw)
    assert not torch.equal(item, batch)  # the reference's rescale couples the items
    one = tiny.decode(tok[0], text_ids=kw["text_ids"][:1], noise=kw["noise"][:1], output="mel",
                      rescale_mode="batch")
    assert torch.equal(one[0], item[0])  # ... and agrees with per-item rescale for one item
    with pytest.raises(ValueError, match="equal token"):
        tiny.decode(tok, text_ids=[torch.tensor([1]), torch.tensor([1, 2])], rescale_mode="batch")
    nocfg = tiny.decode(tok, guidance_scale=0.0, **kw)
    assert not torch.equal(nocfg, item)


def test_chunked_encoding(tiny, speech):
    full = tiny.encode(speech[None])
    assert torch.equal(tiny.encode(speech[None], chunk_seconds=10.0).ids, full.ids)
    chunked = tiny.encode(speech[None], chunk_seconds=0.64)
    assert chunked.ids.shape == full.ids.shape
    with pytest.raises(ValueError, match="shorter than one token"):
        tiny.encode(speech[None], chunk_seconds=0.1)


def test_reconstruct_pipeline_modes(tiny, speech):
    with pytest.raises(ValueError, match="shorter than"):  # 2 s = 96 token frames <= the 150-frame self-prompt
        tiny.reconstruct(speech, "hello world")
    long = torch.cat([speech, speech])  # 4 s: 200 frames -> 25 tokens; the first 150 frames are the prompt
    y = tiny.reconstruct(long, "hello world", generator=torch.Generator().manual_seed(0))
    assert y.shape == (1, (200 - 150) * 480)
    y = tiny.reconstruct(speech[:24000], "world", prompt=speech[24000:], prompt_text="hello ",
                         generator=torch.Generator().manual_seed(0))
    assert y.shape == (1, (96 - 50) * 480)


def test_save_and_load_round_trip(tiny, speech, tmp_path):
    tiny.save_pretrained(tmp_path / "m")
    back = zoo.from_pretrained(str(tmp_path / "m"))
    assert type(back).__name__ == "TaDiCodec" and back.text_tokenizer is not None
    tok = tiny.encode(speech[None], text="hello world")
    assert torch.equal(back.encode(speech[None]).ids, tok.ids)
    noise = torch.randn(1, 96, 128)
    assert torch.equal(back.decode(tok, noise=noise), tiny.decode(tok, noise=noise))


@pytest.mark.parametrize("bad, exc, match", [
    (torch.zeros(2, 3, 4000), ValueError, "mono"),
    (torch.zeros(4000), ValueError, "dimensions"),
    (torch.zeros(1, 0), ValueError, "empty"),
    (torch.full((1, 4000), float("nan")), ValueError, "NaN"),
    (torch.zeros(1, 4000, dtype=torch.long), TypeError, "floating"),
    (torch.zeros(1, 3000), ValueError, "at least 3840"),
    ("a.wav", TypeError, "torch.Tensor"),
])
def test_encode_rejects_bad_input(tiny, bad, exc, match):
    with pytest.raises(exc, match=match):
        tiny.encode(bad)


def test_encode_rejects_wrong_rate_lengths_and_text(tiny, speech):
    with pytest.raises(ValueError, match="sample_rate"):
        tiny.encode(speech[None], sample_rate=16000)
    with pytest.raises(ValueError, match="lengths"):
        tiny.encode(speech[None], lengths=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="at least 3840"):
        tiny.encode(torch.stack([speech, speech]), lengths=torch.tensor([48000, 100]))
    with pytest.raises(ValueError, match="transcripts"):
        tiny.encode(speech[None], text=["a", "b"])
    with pytest.raises(TypeError, match="text"):
        tiny.encode(speech[None], text=3)


def test_decode_rejects_bad_tokens_and_options(tiny):
    tok = Tokens(torch.zeros(1, 4, dtype=torch.long))
    t = torch.tensor([[1]])
    with pytest.raises(ValueError, match="outside"):
        tiny.decode(Tokens(torch.tensor([[0, 16384]])), text_ids=t)
    with pytest.raises(ValueError, match="dimensions"):
        tiny.decode(Tokens(torch.zeros(1, 2, 4, dtype=torch.long)), text_ids=t)
    with pytest.raises(TypeError):
        tiny.decode(torch.zeros(1, 4), text_ids=t)
    with pytest.raises(ValueError, match="noise must have shape"):
        tiny.decode(tok, text_ids=t, noise=torch.zeros(1, 31, 128))
    with pytest.raises(ValueError, match="num_steps"):
        tiny.decode(tok, text_ids=t, num_steps=0)
    with pytest.raises(ValueError, match="guidance_scale"):
        tiny.decode(tok, text_ids=t, guidance_scale=-1.0)
    with pytest.raises(ValueError, match="rescale_mode"):
        tiny.decode(tok, text_ids=t, rescale_mode="global")
    with pytest.raises(ValueError, match="output"):
        tiny.decode(tok, text_ids=t, output="spec")
    with pytest.raises(ValueError, match="either noise or generator"):
        tiny.decode(tok, text_ids=t, noise=torch.zeros(1, 32, 128), generator=torch.Generator())
    with pytest.raises(ValueError, match="prompt_mel"):
        tiny.decode(tok, text_ids=t, prompt_mel=torch.zeros(1, 4, 100))
    with pytest.raises(ValueError, match="NaN"):
        tiny.decode(tok, text_ids=t, noise=torch.full((1, 32, 128), float("nan")))


def test_config_validation():
    from audio.tadicodec import TaDiCodecConfig, VocosConfig

    with pytest.raises(ValueError, match="heads"):
        TaDiCodecConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="hop_size"):
        TaDiCodecConfig(vocoder=VocosConfig(hop_size=256))
    with pytest.raises(ValueError, match="unknown config keys"):
        TaDiCodecConfig.from_dict({"hidden": 3})
    c = TaDiCodecConfig()
    assert TaDiCodecConfig.from_dict(c.to_dict()) == c
    assert (c.token_rate, c.codebook_size, c.samples_per_token) == (6.25, 16384, 3840)


def test_sampler_rescale_per_item_matches_batch_for_one_item():
    from audio.tadicodec.sampler import cfg_rescale

    g = torch.Generator().manual_seed(0)
    v, u = torch.randn(1, 10, 4, generator=g), torch.randn(1, 10, 4, generator=g)
    assert torch.equal(cfg_rescale(v, u, 2.0, 0.75, "item"), cfg_rescale(v, u, 2.0, 0.75, "batch"))
    v2, u2 = torch.cat([v, 3 * v]), torch.cat([u, 3 * u])
    per_item = cfg_rescale(v2, u2, 2.0, 0.75, "item")
    assert torch.allclose(per_item[0], cfg_rescale(v, u, 2.0, 0.75, "item")[0], atol=1e-6)
    assert torch.equal(cfg_rescale(v, u, 2.0, 0.0, "item"), u + 2.0 * (v - u))


def test_docs_runnable_example():
    """The 'Runnable example' block of docs/models/tadicodec.md runs as written."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "models" / "tadicodec.md").read_text()
    block = doc.split("Runnable example", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(block, "docs/models/tadicodec.md", "exec"), scope)
    assert scope["y"].shape == (2, 71 * 480)


def test_model_without_text_conditioning():
    """use_text_cond=False (a config option of the original): no text embedding, no guidance, no text needed."""
    from audio.tadicodec import TaDiCodec

    from .conftest import randomize

    m = randomize(TaDiCodec(tiny_config(use_text_cond=False)))
    assert not any("text" in k for k in m.state_dict())
    tok = m.encode(torch.randn(1, 9600, generator=torch.Generator().manual_seed(0)))
    y = m.decode(tok, noise=torch.randn(1, 16, 128))
    assert y.shape == (1, 16 * 480) and torch.isfinite(y).all()
