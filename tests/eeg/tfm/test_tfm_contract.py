"""TFM-Tokenizer / TFM-Encoder: the tokenizer contract on small random models, conversion and bad input."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

import zoo
from eeg.preprocess import quantile_scale, resample_fft
from eeg.tfm import TFMClassifier, TFMClassifierConfig, TFMConfig, TFMTokenizer
from eeg.tfm.convert import convert_tokenizer_state
from zoo.tokens import Tokens

SMALL = dict(emb_size=16, codebook_size=32, freq_depth=1, temporal_depth=1, decoder_depth=1, num_heads=2)


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.fixture(scope="module")
def tok():
    model = TFMTokenizer(TFMConfig(**SMALL))
    _randomise(model)
    g = torch.Generator().manual_seed(1)
    codes = torch.nn.functional.normalize(torch.randn(32, 16, generator=g), dim=-1) * 0.9
    model.quantizer.load_codebook(codes, cluster_size=torch.rand(32, generator=g))
    return model.eval()


def _eeg(B, C, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, T, generator=g).cumsum(-1) * 0.1 + torch.randn(B, C, T, generator=g)


def test_shapes_spec_and_roundtrip_decode(tok):
    x = _eeg(2, 3, 1000)
    tokens = tok.encode(x, sfreq=200)
    assert tokens.ids.shape == (2, 3, 9) and tokens.lengths is None
    assert tokens.ids.dtype == torch.int64
    spec = tok.spec
    assert (spec.codebook_size, spec.num_codebooks, spec.token_rate, spec.token_rate_unit) == (32, 1, 2.0, "tokens/s")
    assert spec.bitrate == pytest.approx(2.0 * 5)
    recon = tok.decode(tokens)
    assert recon.shape == (2, 3, 100, 9) and recon.dtype == torch.float32


def test_channels_are_independent(tok):
    x = _eeg(1, 4, 800, seed=3)
    full = tok.encode(x).ids
    for c in range(4):
        assert torch.equal(tok.encode(x[:, c:c + 1]).ids[:, 0], full[:, c])


def test_lengths_batched_equals_one_at_a_time(tok):
    lengths = [1000, 650, 400]
    items = [_eeg(1, 2, n, seed=i) for i, n in enumerate(lengths)]
    batch = torch.zeros(3, 2, 1000)
    for i, it in enumerate(items):
        batch[i, :, : it.shape[-1]] = it
        batch[i, :, it.shape[-1]:] = 7.0  # padding must never matter
    tokens = tok.encode(batch, lengths=torch.tensor(lengths))
    assert tokens.lengths.tolist() == [9, 5, 3]
    for i, it in enumerate(items):
        alone = tok.encode(it).ids[0]
        assert torch.equal(tokens.ids[i, :, : alone.shape[-1]], alone)
    recon = tok.decode(tokens)
    for i in range(3):
        n = int(tokens.lengths[i])
        alone = tok.decode(Tokens(tokens.ids[i:i + 1, :, :n]))
        torch.testing.assert_close(recon[i:i + 1, :, :, :n], alone, rtol=0, atol=1e-6)
        assert (recon[i, :, :, n:] == 0).all()


def test_resampling_and_rate_checks(tok):
    x = _eeg(1, 2, 2000)  # 5 s at 400 Hz
    tokens = tok.encode(x, sfreq=400)
    assert tokens.ids.shape == (1, 2, 9)
    assert torch.equal(tokens.ids, tok.encode(resample_fft(x, 400, 200)).ids)
    with pytest.raises(ValueError, match="400 Hz"):
        tok.encode(x, sfreq=400, resample=False)
    with pytest.raises(ValueError, match="sfreq"):
        tok.encode(x, sfreq=-5)
    lt = tok.encode(torch.cat([x, x]), sfreq=400, lengths=[2000, 1000])
    assert lt.lengths.tolist() == [9, 4]


def test_normalisation_is_per_channel_quantile(tok):
    x = _eeg(1, 2, 1000) * torch.tensor([[[50.0], [3.0]]])
    assert torch.equal(tok.encode(x, normalize=True).ids, tok.encode(quantile_scale(x)).ids)
    assert torch.equal(tok.encode(x, normalize=True).ids, tok.encode(x * 20, normalize=True).ids)
    assert not tok.config.normalize  # default: the input is taken as already scaled, like the reference


def test_encode_never_updates_codebook(tok):
    before = {k: v.clone() for k, v in tok.state_dict().items()}
    tok.train()
    try:
        a = tok.encode(_eeg(2, 2, 600)).ids
        b = tok.encode(_eeg(2, 2, 600)).ids
    finally:
        tok.eval()
    assert torch.equal(a, b)
    assert tok.training is False
    for k, v in tok.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_training_forward_updates_ema():
    model = TFMTokenizer(TFMConfig(**SMALL)).train()
    x = _eeg(4, 1, 600)[:, 0]
    before = model.quantizer.codebook.cluster_size.clone()
    out = model(model.stft(x), x)
    assert out["recon"].shape == (4, 100, 5) and out["ids"].shape == (4, 5)
    loss = torch.nn.functional.mse_loss(out["recon"], model.stft(x)) + sum(out["losses"].values())
    loss.backward()
    assert model.freq_patch_embedding[0].weight.grad is not None
    assert not torch.equal(before, model.quantizer.codebook.cluster_size)


def test_chunked_encoding(tok):
    x = _eeg(1, 2, 3000)
    full = tok.encode(x).ids
    chunked = tok.encode(x, chunk_seconds=5).ids
    assert chunked.shape == full.shape
    assert torch.equal(tok.encode(x, chunk_seconds=60).ids, full)  # one chunk = one pass
    # chunk k starts at k*5 s; its tokens equal encoding that span alone (scaling is over the whole input)
    raw = tok.encode(x, chunk_seconds=5, normalize=False).ids
    assert torch.equal(raw[..., :10], tok.encode(x[..., :1100], normalize=False).ids)
    assert torch.equal(raw[..., 10:20], tok.encode(x[..., 1000:2100], normalize=False).ids)
    with pytest.raises(ValueError, match="chunk_seconds"):
        tok.encode(x, chunk_seconds=0.2)


def test_bad_inputs(tok):
    with pytest.raises(ValueError, match="3 dimensions"):
        tok.encode(torch.randn(2, 1000))
    with pytest.raises(TypeError, match="floating"):
        tok.encode(torch.ones(1, 1, 1000, dtype=torch.long))
    with pytest.raises(TypeError):
        tok.encode(np.zeros((1, 1, 1000)))
    with pytest.raises(ValueError, match="empty"):
        tok.encode(torch.zeros(1, 0, 1000))
    with pytest.raises(ValueError, match="at least 200"):
        tok.encode(torch.randn(1, 1, 150))
    x = _eeg(1, 3, 1000)
    x[0, 2, 450] = float("nan")
    with pytest.raises(ValueError, match=r"channel 2 \(Cz\).*sample 450 \(t = 2.250 s\)"):
        tok.encode(x, ch_names=["Fz", "Pz", "Cz"])
    with pytest.raises(ValueError, match="ch_names has 2 names"):
        tok.encode(_eeg(1, 3, 1000), ch_names=["a", "b"])
    with pytest.raises(ValueError, match="lengths"):
        tok.encode(_eeg(2, 1, 1000), lengths=[1000, 100])
    with pytest.raises(ValueError, match="outside"):
        tok.decode(torch.full((1, 1, 4), 32))
    with pytest.raises(ValueError, match="3 dimensions"):
        tok.decode(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(TypeError):
        tok.decode(torch.zeros(1, 1, 4))


def test_metadata_keeps_channel_names(tok):
    import json

    t = tok.encode(_eeg(1, 2, 400), ch_names=["C3", "C4"])
    assert json.loads(t.metadata["ch_names"]) == ["C3", "C4"]


def test_save_and_load_pretrained(tok, tmp_path):
    tok.save_pretrained(tmp_path / "m")
    back = zoo.from_pretrained(str(tmp_path / "m"))
    assert isinstance(back, TFMTokenizer)
    x = _eeg(2, 2, 700)
    assert torch.equal(back.encode(x).ids, tok.encode(x).ids)
    for k, v in tok.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def _official_state(model: TFMTokenizer):
    """This model's weights under the official key names (the inverse of the converter), for tests."""
    from eeg.tfm.convert import _BLOCK_KEYS

    inv_block = {v: k for k, v in _BLOCK_KEYS.items()}
    prefixes = {"freq_encoder.": "trans_freq_encoder.transformer.",
                "temporal_encoder.": "trans_temporal_encoder.transformer.",
                "decoder_transformer.": "trans_decoder.transformer."}
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("quantizer."):
            continue
        for mine, theirs in prefixes.items():
            if k.startswith(mine):
                _, i, rest = k[len(mine):].split(".", 2)
                k = f"{theirs}layers.layers.{i}.{inv_block[rest]}"
                break
        else:
            k = (k.replace("freq_gate.", "freq_patch_embedding_2_atten.0.")
                 .replace("freq_proj.", "freq_patch_embedding_2.0.").replace("decoder_head.", "decoder."))
        out[k] = v.clone()
    cb = model.quantizer.codebook
    out["quantizer.embedding.weight"] = cb.embed[0].clone()
    out["quantizer.cluster_size"] = cb.cluster_size[0].clone()
    out["quantizer.ema_w"] = cb.embed_avg[0].clone()
    return out


def test_linear_decoder_head_variant(tmp_path):
    model = TFMTokenizer(TFMConfig(**SMALL, decoder_head="linear"))
    _randomise(model, seed=5)
    state = _official_state(model)
    assert "decoder.weight" in state and "decoder.0.weight" not in state
    torch.save(state, tmp_path / "old.pth")
    loaded = zoo.load_official("tfm", tmp_path / "old.pth", num_heads=2)  # heads are not in the shapes
    assert loaded.config.decoder_head == "linear"
    x = _eeg(1, 2, 600)
    assert torch.equal(loaded.encode(x).ids, model.eval().encode(x).ids)
    torch.testing.assert_close(loaded.decode(loaded.encode(x)), model.decode(model.encode(x)))


def test_strict_conversion_errors(tok, tmp_path, tfm_dir):
    state = _official_state(tok)
    torch.save(state, tmp_path / "ok.pth")
    assert torch.equal(zoo.load_official("tfm", tmp_path / "ok.pth", num_heads=2).encode(_eeg(1, 1, 400)).ids,
                       tok.encode(_eeg(1, 1, 400)).ids)
    extra = dict(state, **{"something.else": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected keys.*something.else"):
        convert_tokenizer_state(extra)
    missing = {k: v for k, v in state.items() if k != "quantizer.ema_w"}
    with pytest.raises(ValueError, match="ema_w"):
        convert_tokenizer_state(missing)
    # a truncated file and a foreign file
    raw = (tfm_dir / "tfm_tokenizer_last.pth").read_bytes()
    (tmp_path / "trunc.pth").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cannot read"):
        zoo.load_official("tfm", tmp_path / "trunc.pth")
    with pytest.raises(ValueError, match="not a TFM-Tokenizer"):
        zoo.load_official("tfm", tfm_dir / "tfm_encoder_best_model.pth")
    with pytest.raises(ValueError, match="TFM-Encoder classifier"):
        zoo.load_official("tfm-classifier", tfm_dir / "tfm_tokenizer_last.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="bare state dict"):
        zoo.load_official("tfm", tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError):
        zoo.load_official("tfm", tmp_path / "nope.pth")


# ------------------------------------------------------------------------------------------------ classifier

@pytest.fixture(scope="module")
def clf():
    model = TFMClassifier(TFMClassifierConfig(emb_size=16, codebook_size=32, num_heads=2, depth=1, n_classes=3))
    _randomise(model, seed=2)
    return model.eval()


def test_classifier_lengths_and_validation(clf):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 32, (3, 4, 9), generator=g)
    out = clf.classify(Tokens(ids, torch.tensor([9, 5, 9])))
    assert out.shape == (3, 3)
    torch.testing.assert_close(out[1:2], clf.classify(ids[1:2, :, :5]))
    torch.testing.assert_close(out[0:1], clf.classify(ids[0:1]))
    assert clf.masked_prediction(ids).shape == (3, 36, 3)
    masked = ids.clone()
    masked[0, 0, 0] = clf.mask_id
    clf.classify(masked)  # the mask id is a valid input
    with pytest.raises(ValueError, match="outside"):
        clf.classify(torch.full((1, 1, 3), 33))
    with pytest.raises(ValueError, match="at most 16"):
        clf.classify(torch.zeros(1, 17, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="3 dimensions"):
        clf.classify(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="padding"):
        clf.masked_prediction(Tokens(ids, torch.tensor([9, 5, 9])))


def test_classifier_save_load(clf, tmp_path):
    clf.save_pretrained(tmp_path / "c")
    back = zoo.from_pretrained(str(tmp_path / "c"))
    assert isinstance(back, TFMClassifier)
    ids = torch.randint(0, 32, (2, 2, 5))
    torch.testing.assert_close(back.classify(ids), clf.classify(ids), rtol=0, atol=0)


def test_registry_entry_through_hf_cache(tfm_dir, tmp_path):
    """zoo.from_pretrained('tfm-classifier-tuev') through huggingface_hub's cache (offline), sha256-verified."""
    entry = [e for e in zoo.list_models(family="tfm-classifier") if e.name == "tfm-classifier-tuev"][0]
    f = entry.files[0]
    commit = "0" * 40
    repo_dir = tmp_path / ("models--" + entry.repo_id.replace("/", "--"))
    target = repo_dir / "snapshots" / commit / f.filename
    target.parent.mkdir(parents=True)
    shutil.copyfile(tfm_dir / "real_TUEV_single_tfm_encoder_best_model.pth", target)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    model = zoo.from_pretrained("tfm-classifier-tuev", cache_dir=tmp_path, local_files_only=True)
    assert isinstance(model, TFMClassifier) and model.config.n_classes == 6
    real = np.load(tfm_dir / "real_classifier_outputs.npz")
    logits = model.classify(torch.from_numpy(real["tokens"]))
    assert np.abs(logits.numpy() - real["logits"]).max() <= 1e-4
    os.chmod(target, 0o644)
    target.write_bytes(target.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ValueError, match="checksum"):
        zoo.from_pretrained("tfm-classifier-tuev", cache_dir=tmp_path, local_files_only=True)


def test_reconstruction_reference(tok):
    x = _eeg(2, 2, 1000)
    ref = tok.reconstruction_reference(x, sfreq=200, lengths=[1000, 600], normalize=True)
    assert ref.shape == (2, 2, 100, 9)
    torch.testing.assert_close(ref[0], tok.stft(quantile_scale(x[:1]))[0])
    torch.testing.assert_close(ref[1, :, :, :5], tok.stft(quantile_scale(x[1:2, :, :600]))[0])
    assert (ref[1, :, :, 5:] == 0).all()
    assert tok.decode(tok.encode(x)).shape == ref.shape


def test_classifier_embedding_from_codebook(tok):
    clf = TFMClassifier(TFMClassifierConfig(emb_size=16, codebook_size=32, num_heads=2, depth=1, n_classes=32))
    clf.init_token_embedding(tok)
    torch.testing.assert_close(clf.token_embedding.weight[:32], tok.quantizer.embed, rtol=0, atol=0)
    assert (clf.token_embedding.weight[32] == 0).all()
    with pytest.raises(ValueError, match="codebook"):
        TFMClassifier(TFMClassifierConfig(emb_size=16, codebook_size=64, num_heads=2, depth=1)).init_token_embedding(tok)


def test_tokenizer_entry_through_hf_cache(tfm_dir, tmp_path):
    """zoo.from_pretrained('tfm-tokenizer-multi') resolves the release path in the HF cache and converts it
    (here the cache holds the official-format fixture file under the release's name)."""
    entry = [e for e in zoo.list_models(family="tfm") if e.name == "tfm-tokenizer-multi"][0]
    commit = "1" * 40
    repo_dir = tmp_path / ("models--" + entry.repo_id.replace("/", "--"))
    target = repo_dir / "snapshots" / commit / entry.files[0].filename
    target.parent.mkdir(parents=True)
    shutil.copyfile(tfm_dir / "tfm_tokenizer_last.pth", target)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    model = zoo.from_pretrained("tfm-tokenizer-multi", cache_dir=tmp_path, local_files_only=True)
    ref = np.load(tfm_dir / "reference_outputs.npz")
    x = torch.from_numpy(np.load(tfm_dir / "input.npz")["x"])
    np.testing.assert_array_equal(model.encode(x).ids.numpy(), ref["tokens"])
    assert getattr(model, "registry_name", None) == "tfm-tokenizer-multi"
