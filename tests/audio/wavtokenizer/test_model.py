"""WavTokenizer contract on small random configurations: shapes, batching with lengths, chunking, bad input,
and the converter on other architectures (exported in the original's key layout)."""

import math

import pytest
import torch

import zoo
from audio.wavtokenizer import WavTokenizer, WavTokenizerConfig, convert_state_dict, infer_config, preset
from zoo.registry import load_state_strict


def small_config(**kw):
    base = dict(n_filters=4, ratios=(4, 2), dimension=8, codebook_size=16, backbone_dim=16, intermediate_dim=32,
                num_layers=1, pos_net_groups=4, n_fft=32, hop_length=8)
    base.update(kw)
    return WavTokenizerConfig(**base)


def make_model(config=None, seed=0):
    torch.manual_seed(seed)
    m = WavTokenizer(config or small_config())
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name and ("scale" in name or "shift" in name):
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "scale" in name else 0.0))
        m.quantizer.load_codebook(torch.randn(m.config.codebook_size, m.config.dimension))
    return m.eval()


@pytest.fixture(scope="module")
def model():
    return make_model()


def wav(b, t, seed=1):
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(b, t, generator=g)


# ---------------------------------------------------------------------------------------------- shapes

def test_shapes_and_layouts(model):
    x = wav(2, 100)
    tokens = model.encode(x)
    assert tokens.ids.shape == (2, 1, math.ceil(100 / 8)) and tokens.ids.dtype == torch.long
    assert tokens.lengths is None
    assert torch.equal(model.encode(x[:, None]).ids, tokens.ids)
    assert torch.equal(model.encode(x.double()).ids, tokens.ids)
    y = model.decode(tokens)
    assert y.shape == (2, 1, 13 * 8) and y.dtype == torch.float32
    assert torch.equal(model.decode(tokens.ids), y)  # a bare id tensor works too


@pytest.mark.parametrize("t", [1, 2, 7, 8, 9, 31, 64])
def test_short_inputs(model, t):
    tokens = model.encode(wav(1, t))
    assert tokens.ids.shape[-1] == math.ceil(t / 8)
    assert model.decode(tokens).shape[-1] == math.ceil(t / 8) * 8


def test_spec_of_the_releases():
    c75, c40 = preset("75"), preset("40")
    assert c75.frame_rate == 75 and c40.frame_rate == 40
    m = WavTokenizer(small_config(ratios=(8, 5, 4, 2), n_fft=1280, hop_length=320, codebook_size=4096))
    spec = m.spec
    assert (spec.codebook_size, spec.num_codebooks, spec.token_rate, spec.bitrate) == (4096, 1, 75.0, 900.0)
    m40 = WavTokenizer(small_config(ratios=(6, 5, 5, 4), n_fft=2400, hop_length=600, codebook_size=4096))
    assert m40.spec.bitrate == 480.0


def test_codes_to_features(model):
    tokens = model.encode(wav(2, 64))
    feats = model.codes_to_features(tokens)
    assert feats.shape == (2, 8, 8)
    assert torch.equal(feats, model.quantizer.embed[tokens.ids[:, 0]].transpose(1, 2))
    assert torch.equal(model.decode_features(feats), model.decode(tokens))


def test_encode_latents_quantize_to_tokens(model):
    x = wav(2, 80)
    z = model.encode_latents(x)
    assert z.shape == (2, 8, 10)
    ids = model.quantizer.encode(z.transpose(1, 2))
    assert torch.equal(ids[:, None], model.encode(x).ids)


# ---------------------------------------------------------------------------------------------- batching

def test_batch_with_lengths_equals_single_items(model):
    x = wav(3, 203)
    lengths = torch.tensor([203, 77, 1])
    tokens = model.encode(x, lengths=lengths)
    assert tokens.lengths.tolist() == [26, 10, 1]
    y = model.decode(tokens)
    assert y.shape == (3, 1, 26 * 8)
    for i, n in enumerate(lengths.tolist()):
        single = model.encode(x[i:i + 1, :n])
        k = single.ids.shape[-1]
        assert torch.equal(tokens.ids[i:i + 1, :, :k], single.ids)
        assert (tokens.ids[i, :, k:] == 0).all()
        ys = model.decode(single)
        assert torch.equal(y[i:i + 1, :, :k * 8], ys)
        assert (y[i, :, k * 8:] == 0).all()


def test_padding_never_changes_other_items(model):
    x = wav(2, 160)
    lengths = torch.tensor([160, 90])
    a = model.encode(x, lengths=lengths)
    x2 = x.clone()
    x2[1, 90:] = 5.0  # garbage in the padding
    b = model.encode(x2, lengths=lengths)
    assert a == b


def test_equal_length_batch_equals_single_items(model):
    x = wav(3, 120)
    tokens = model.encode(x)
    y = model.decode(tokens, bandwidth_id=2)
    for i in range(3):
        assert torch.equal(model.encode(x[i:i + 1]).ids, tokens.ids[i:i + 1])
        assert torch.equal(model.decode(tokens[i], bandwidth_id=2), y[i:i + 1])


def test_per_item_bandwidth(model):
    tokens = model.encode(wav(2, 64))
    y = model.decode(tokens, bandwidth_id=torch.tensor([1, 3]))
    assert torch.equal(y[0:1], model.decode(tokens[0], bandwidth_id=1))
    assert torch.equal(y[1:2], model.decode(tokens[1], bandwidth_id=3))
    assert not torch.equal(y[0:1], model.decode(tokens[0], bandwidth_id=3))


# ---------------------------------------------------------------------------------------------- chunking

def test_chunk_index_arithmetic_is_exact_with_full_context(model):
    """With context covering the whole input every window sees the full signal: results equal one pass."""
    x = wav(2, 1003)
    one = model.encode(x)
    chunked = model.encode(x, chunk_seconds=0.01, context_seconds=1.0)  # 30-frame windows
    assert chunked == one
    y = model.decode(one)
    assert torch.equal(model.decode(one, chunk_seconds=0.01, context_seconds=1.0), y)


def test_chunking_shapes_and_lengths(model):
    x = wav(2, 1003)
    lengths = torch.tensor([1003, 450])
    full = model.encode(x, lengths=lengths)
    chunked = model.encode(x, lengths=lengths, chunk_seconds=0.004, context_seconds=0.002)
    assert chunked.ids.shape == full.ids.shape and torch.equal(chunked.lengths, full.lengths)
    agree = (chunked.ids == full.ids).float().mean().item()
    assert agree > 0.5  # windows see most of their context (exact figures on real speech: docs)
    y = model.decode(chunked, chunk_seconds=0.004, context_seconds=0.0)
    assert y.shape == model.decode(chunked).shape


# ---------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("bad,exc,match", [
    (torch.zeros(10), ValueError, "dimensions"),
    (torch.zeros(1, 2, 10), ValueError, "mono"),
    (torch.zeros(1, 0), ValueError, "empty"),
    (torch.full((1, 10), float("nan")), ValueError, "NaN"),
    (torch.zeros(1, 10, dtype=torch.long), TypeError, "floating"),
    ([0.0, 1.0], TypeError, "torch.Tensor"),
])
def test_bad_audio(model, bad, exc, match):
    with pytest.raises(exc, match=match):
        model.encode(bad)


def test_bad_arguments(model):
    x = wav(2, 40)
    with pytest.raises(ValueError, match="sample_rate"):
        model.encode(x, sample_rate=16000)
    with pytest.raises(ValueError, match="lengths"):
        model.encode(x, lengths=torch.tensor([40]))
    with pytest.raises(ValueError, match="lengths"):
        model.encode(x, lengths=torch.tensor([41, 3]))
    with pytest.raises(ValueError, match="bandwidth_id"):
        model.encode(x, bandwidth_id=4)
    with pytest.raises(ValueError, match="chunk_seconds"):
        model.encode(x, chunk_seconds=-1.0)
    with pytest.raises(TypeError, match="chunk_seconds"):
        model.encode(x, chunk_seconds="2")
    with pytest.raises(TypeError, match="bandwidth_id"):
        model.decode(model.encode(x), bandwidth_id=1.5)


def test_bad_tokens(model):
    with pytest.raises(ValueError, match="outside"):
        model.decode(torch.full((1, 1, 5), 16))
    with pytest.raises(ValueError, match="outside"):
        model.decode(torch.full((1, 1, 5), -1))
    with pytest.raises(ValueError, match="codebooks"):
        model.decode(torch.zeros(1, 2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="dimensions"):
        model.decode(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(TypeError):
        model.decode(torch.zeros(1, 1, 5))
    with pytest.raises(ValueError, match="empty"):
        model.decode(torch.zeros(1, 1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one token"):
        model.decode(zoo.Tokens(torch.zeros(2, 1, 5, dtype=torch.long), torch.tensor([5, 0])))
    with pytest.raises(ValueError, match="channels"):
        model.decode_features(torch.zeros(1, 7, 5))


def test_bad_config():
    with pytest.raises(ValueError, match="hop_length"):
        small_config(hop_length=16)
    with pytest.raises(ValueError, match="padding"):
        small_config(padding="center")
    with pytest.raises(ValueError, match="pos_net_groups"):
        small_config(pos_net_groups=5)
    with pytest.raises(ValueError, match="unknown config keys"):
        WavTokenizerConfig.from_dict({"n_filter": 3})
    c = small_config()
    assert WavTokenizerConfig.from_dict(c.to_dict()) == c


def test_uninitialised_codebook_is_an_error():
    m = WavTokenizer(small_config()).eval()
    with pytest.raises(RuntimeError, match="not initialised"):
        m.encode(wav(1, 16))


# ---------------------------------------------------------------------------------------------- converter

def to_original_state(model):
    """This model's weights in the original's key layout (as a Lightning checkpoint stores them)."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("encoder."):
            rest = k[len("encoder."):]
            rest = (rest.replace(".conv.parametrizations.weight.original0", ".conv.conv.weight_g")
                    .replace(".conv.parametrizations.weight.original1", ".conv.conv.weight_v")
                    .replace(".conv.bias", ".conv.conv.bias"))
            out["feature_extractor.encodec.encoder." + rest] = v
        elif k.startswith("quantizer.codebook."):
            name = k[len("quantizer.codebook."):]
            p = "feature_extractor.encodec.quantizer.vq.layers.0._codebook."
            if name == "initted":
                out[p + "inited"] = torch.tensor([float(v)])
            else:
                out[p + name] = v[0]
        else:
            out[k] = v
    out["multiperioddisc.discriminators.0.convs.0.weight_v"] = torch.zeros(2, 1, 5, 1)
    out["feature_extractor.encodec.decoder.model.0.conv.conv.weight_v"] = torch.zeros(4, 8, 7)
    return out


@pytest.mark.parametrize("cfg", [
    dict(ratios=(6, 5), hop_length=30, n_fft=60),                       # 40 tokens/s-like (hop not a power of 2)
    dict(ratios=(3, 2), hop_length=6, n_fft=24, n_residual_layers=2, lstm_layers=1, adanorm_num_embeddings=2),
    dict(ratios=(2, 2, 2), hop_length=8, n_fft=16, true_skip=True, residual_kernel_size=5, kernel_size=5),
])
def test_converter_roundtrip_other_architectures(cfg, tmp_path):
    # GroupNorm groups are not in the weights: the original always uses 32
    src = make_model(small_config(backbone_dim=32, pos_net_groups=32, **cfg), seed=3)
    path = tmp_path / "release.ckpt"
    torch.save({"epoch": 1, "state_dict": to_original_state(src), "hyper_parameters": {}}, path)
    got = zoo.load_official("wavtokenizer", path)
    assert got.config == src.config
    x = wav(2, 97)
    a, b = src.encode(x), got.encode(x)
    assert a == b
    assert torch.equal(src.decode(a, bandwidth_id=1), got.decode(b, bandwidth_id=1))


def test_convert_is_pure_and_complete():
    src = make_model(small_config(backbone_dim=32, pos_net_groups=32))
    orig = to_original_state(src)
    snapshot = {k: v.clone() for k, v in orig.items()}
    converted = convert_state_dict(orig)
    assert set(orig) == set(snapshot) and all(torch.equal(orig[k], snapshot[k]) for k in orig)
    m = WavTokenizer(infer_config(orig))
    load_state_strict(m, converted)


def test_converter_input_checks():
    with pytest.raises(TypeError, match="state dict"):
        infer_config([1, 2])
    with pytest.raises(TypeError, match="non-tensor"):
        convert_state_dict({"backbone.embed.weight": [1.0]})
    with pytest.raises(ValueError, match="no encoder tensors"):
        infer_config({"backbone.embed.weight": torch.zeros(2, 2, 7)})
