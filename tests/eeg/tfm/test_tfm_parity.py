"""Parity of TFM-Tokenizer with the reference outputs in ../shared/parity/tfm (see its MANIFEST.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import zoo
from zoo.tokens import Tokens

TOL = 1e-4  # MANIFEST: every float output max-abs-err <= 1e-4; ids exact


def _max_err(a, b) -> float:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    assert a.shape == np.asarray(b).shape, (a.shape, np.asarray(b).shape)
    return float(np.abs(a.astype(np.float64) - np.asarray(b, dtype=np.float64)).max())


@pytest.fixture(scope="module")
def fx(tfm_dir):
    root = tfm_dir
    inp = np.load(root / "input.npz")
    ref = np.load(root / "reference_outputs.npz")
    tok = zoo.load_official("tfm", root / "tfm_tokenizer_last.pth")
    return root, inp, ref, tok


def test_config_inferred_from_shapes(fx):
    root, _, _, tok = fx
    import json

    kw = json.loads((root / "config.json").read_text())["kwargs"]
    c = tok.config
    assert (c.emb_size, c.codebook_size, c.n_freq, c.n_freq_patch) == (
        kw["emb_size"], kw["code_book_size"], kw["n_freq"], kw["n_freq_patch"])
    assert (c.freq_depth, c.temporal_depth, c.decoder_depth) == (
        kw["trans_freq_encoder_depth"], kw["trans_temporal_encoder_depth"], kw["trans_decoder_depth"])
    assert c.decoder_head == "mlp"


def test_stft_and_tokens_exact(fx):
    _, inp, ref, tok = fx
    x = torch.from_numpy(inp["x"])
    assert _max_err(tok.stft(x), ref["stft_mag"]) <= TOL
    tokens = tok.encode(x, sfreq=200)
    assert tokens.ids.dtype == torch.int64
    np.testing.assert_array_equal(tokens.ids.numpy(), ref["tokens"])
    # the fixture input is already q95-scaled: scaling it again gives the same ids
    np.testing.assert_array_equal(tok.encode(x, normalize=True).ids.numpy(), ref["tokens"])


def test_intermediates(fx):
    _, inp, ref, tok = fx
    x = torch.from_numpy(inp["x"])
    B, C, T = x.shape
    inter = {}
    with torch.no_grad():
        spec = tok.stft(x).reshape(B * C, tok.config.n_freq, -1)
        quant_in = tok.encode_features(spec, x.reshape(B * C, T), inter)
        ids = tok.quantizer.encode(quant_in)
        lookup = tok.quantizer.decode(ids)
        out = tok(spec, x.reshape(B * C, T))
        dec = tok.decoder_transformer(out["quantized"])
    for key in ("freq_patch_embedding_out", "freq_encoded", "freq_agg_atten", "freq_agg_proj",
                "temporal_patch_embedding_out", "temporal_encoded"):
        assert _max_err(inter[key], ref[key]) <= TOL, key
    assert _max_err(quant_in, ref["quant_in"]) <= TOL
    np.testing.assert_array_equal(ids.reshape(B, C, -1).numpy(), ref["tokens"])
    assert _max_err(lookup, ref["quant_lookup"]) <= TOL
    assert _max_err(out["quantized"], ref["quant_out_st"]) <= TOL
    assert _max_err(dec, ref["decoder_transformer_out"]) <= TOL
    assert _max_err(out["recon"], ref["recon_forward"]) <= TOL


def test_decode_from_tokens(fx):
    _, _, ref, tok = fx
    recon = tok.decode(Tokens(torch.from_numpy(ref["tokens"])))
    B, C, nT = ref["tokens"].shape
    assert recon.shape == (B, C, tok.config.n_freq, nT)
    assert _max_err(recon.reshape(B * C, tok.config.n_freq, nT), ref["recon_from_tokens"]) <= TOL
    assert _max_err(recon.reshape(B * C, tok.config.n_freq, nT), ref["recon_forward"]) <= TOL


def test_ema_buffers_kept(fx):
    root, _, _, tok = fx
    state = torch.load(root / "tfm_tokenizer_last.pth", weights_only=True)
    cb = tok.quantizer.codebook
    torch.testing.assert_close(cb.embed[0], state["quantizer.embedding.weight"], rtol=0, atol=0)
    torch.testing.assert_close(cb.cluster_size[0], state["quantizer.cluster_size"], rtol=0, atol=0)
    torch.testing.assert_close(cb.embed_avg[0], state["quantizer.ema_w"], rtol=0, atol=0)


def test_small_classifier_logits(fx):
    root, _, ref, _ = fx
    clf = zoo.load_official("tfm-classifier", root / "tfm_encoder_best_model.pth")
    assert clf.config.n_classes == 6 and clf.config.codebook_size == 256
    assert _max_err(clf.classify(Tokens(torch.from_numpy(ref["tokens"]))), ref["cls_logits"]) <= TOL
    masked = torch.from_numpy(ref["mtp_tokens_masked"])
    expect = torch.where(torch.from_numpy(ref["mtp_mask"]) == 0, clf.mask_id, torch.from_numpy(ref["tokens"]))
    np.testing.assert_array_equal(masked.numpy(), expect.numpy())
    assert _max_err(clf.masked_prediction(masked), ref["mtp_logits"]) <= TOL


def test_real_tuev_classifier(fx):
    root = fx[0]
    clf = zoo.load_official("tfm-classifier", root / "real_TUEV_single_tfm_encoder_best_model.pth")
    c = clf.config
    assert (c.emb_size, c.codebook_size, c.depth, c.n_classes) == (64, 8192, 4, 6)
    real = np.load(root / "real_classifier_outputs.npz")
    np.testing.assert_array_equal(real["tokens"][:, 0], fx[1]["notebook_real_tokens"])
    logits = clf.classify(torch.from_numpy(real["tokens"]))
    assert _max_err(logits, real["logits"]) <= TOL
