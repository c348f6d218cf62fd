"""Parity of LiPCoT with the reference outputs in ../shared/parity/lipcot (see its MANIFEST.md)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

import zoo
from eeg.lipcot.safe_pickle import load_joblib

MODELS = ["", "historical/method1_poles", "historical/method3_cepstrum"]
DEGENERATE = slice(0, 6)  # MANIFEST: public columns 0-5 are nearly singular band-limited fits (rel. err 1e-6)
REGULAR = slice(6, None)


def _check_float(got, ref, *, abs_tol=1e-8, rel_degenerate=1e-6, per_window=True, what=""):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    if not per_window:
        assert np.abs(got - ref).max() <= abs_tol, what
        return
    assert np.abs(got[REGULAR] - ref[REGULAR]).max() <= abs_tol, what
    d = got[DEGENERATE] - ref[DEGENERATE]
    assert (np.abs(d) <= np.maximum(abs_tol, rel_degenerate * np.abs(ref[DEGENERATE]))).all(), what


@pytest.fixture(scope="module", params=MODELS, ids=["released-method2", "method1-poles", "method3-cepstrum"])
def case(request, lipcot_dir):
    folder = lipcot_dir / request.param if request.param else lipcot_dir
    blocked = sys.modules.get("sklearn", "absent")
    sys.modules["sklearn"] = None  # loading must never import scikit-learn
    try:
        tok = zoo.load_official("lipcot", folder / "lipcot_model.joblib")
    finally:
        if blocked == "absent":
            del sys.modules["sklearn"]
        else:
            sys.modules["sklearn"] = blocked
    ref = np.load(folder / "reference_tokens.npz")
    x = np.load(lipcot_dir / "input.npz")["x"]  # (samples, windows): every COLUMN is one window
    return folder, tok, ref, x


def test_model_file_read_exactly(case):
    folder, tok, _, _ = case
    arrays = np.load(folder / "lipcot_model_arrays.npz")
    params = json.loads((folder / "lipcot_model_params.json").read_text())
    np.testing.assert_array_equal(tok.centers.numpy(), arrays["cluster_centers"])
    np.testing.assert_array_equal(tok.centers.numpy(), arrays["token_map_centers"])
    np.testing.assert_array_equal(tok.scaler_mean.numpy(), arrays["scaler_mean"])
    np.testing.assert_array_equal(tok.scaler_scale.numpy(), arrays["scaler_scale"])
    np.testing.assert_array_equal(tok.scaler_var.numpy(), arrays["scaler_var"])
    np.testing.assert_array_equal(tok.cluster_to_bert_id.numpy(), arrays["cluster_to_bert_id"])
    c = tok.config
    assert (c.order, c.warp, c.method, c.sfreq, c.model_max_length, c.unk_token) == (
        params["order"], params["w_factor"], params["method"], params["Fs"], params["model_max_length"],
        params["unk_token"])
    assert c.words == [params["WordMap"][str(i)] for i in range(c.vocab_size)]
    assert c.bert_vocab == params["bert_vocab"]
    assert tok.special_token_ids == params["special_token_ids"]
    # the raw reader recovers the training labels and every scalar too
    raw = load_joblib(folder / "lipcot_model.joblib")
    km = raw["kmeans_model"]
    np.testing.assert_array_equal(km["model"]["labels_"], arrays["kmeans_labels"])
    np.testing.assert_array_equal(np.array([int(k) for k in km["TokenMap"]]), arrays["token_map_keys"])
    for key, value in params["kmeans"].items():
        if not key.startswith("__"):
            assert km["model"][key] == value, key
    for key, value in params["scaler"].items():
        if not key.startswith("__"):
            assert km["scaler"][key] == value, key


def test_features(case):
    _, tok, ref, x = case
    f = tok.window_features(x.T)
    _check_float(f["ar"], ref["ar_coeff"], what="ar_coeff")
    e = f["energy"]
    assert (np.abs(e / ref["ar_sigma"] - 1) <= 1e-8).all()
    _check_float(f["features"], ref["ar_feature"], what="ar_feature")
    _check_float(f["scaled"], ref["scaled_feature"], what="scaled_feature")
    _check_float(tok.centroid_distances(f["scaled"]), ref["centroid_dist"], what="centroid_dist")


def test_tokens_and_bert_ids_exact(case):
    _, tok, ref, x = case
    tokens = tok.encode(torch.from_numpy(x.T.copy())[None], sfreq=500)
    assert tokens.ids.shape == (1, x.shape[1], 1)
    np.testing.assert_array_equal(tokens.ids[0, :, 0].numpy(), ref["token_ids"])
    np.testing.assert_array_equal(tok.encode_windows(x.T).numpy(), ref["token_ids"])
    np.testing.assert_array_equal(tok.encode(x.T, sfreq=500).ids[0, :, 0].numpy(), ref["token_ids"])
    bert = tok.bert_inputs(tokens)
    np.testing.assert_array_equal(bert["input_ids"].numpy(), ref["bert_input_ids"])
    np.testing.assert_array_equal(bert["attention_mask"].numpy(), ref["bert_attention_mask"])


def test_centroid_models(case):
    _, tok, ref, _ = case
    a, energy = tok.centroid_ar()
    assert np.abs(a - ref["centroid_ar"]).max() <= 1e-10
    assert np.abs(energy - ref["centroid_sigma"]).max() <= 1e-10
    a_un, _ = tok.centroid_ar(unwarped=True)
    assert np.abs(a_un - ref["centroid_ar_unwarped"]).max() <= 1e-6
    freqs, psd = tok.centroid_psd_db()
    assert np.abs(freqs - ref["psd_freqs"]).max() <= 1e-6
    assert np.abs(psd - ref["centroid_psd_db"]).max() <= 1e-6
    # decode(tokens) = the centre's [a, E] for every token
    ids = torch.from_numpy(ref["token_ids"]).reshape(1, -1, 1)
    dec = tok.decode(ids)
    assert dec.dtype == torch.float64 and dec.shape == (1, ids.shape[1], 1, tok.config.order + 1)
    np.testing.assert_array_equal(dec[0, :, 0, :-1].numpy(), a[ref["token_ids"]])
    np.testing.assert_array_equal(dec[0, :, 0, -1].numpy(), energy[ref["token_ids"]])
    dec_un = tok.decode(ids, unwarped=True)
    assert np.abs(dec_un[0, :, 0, :-1].numpy() - ref["centroid_ar_unwarped"][ref["token_ids"]]).max() <= 1e-6


def test_centres_are_their_own_tokens(case):
    _, tok, _, _ = case
    np.testing.assert_array_equal(tok.nearest(tok.centers.numpy()), np.arange(tok.config.vocab_size))


def test_real_dataset_tokens(lipcot_dir):
    """The authors' tokens of all 552 real segments: BERT ids and words follow from the cluster ids."""
    tok = zoo.load_official("lipcot", lipcot_dir / "lipcot_model.joblib",
                            lipcot_dir / "modifiedBertTokenizer")
    real = np.load(lipcot_dir / "real_dataset_tokens.npz")
    raw = load_joblib(lipcot_dir / "lipcot_model.joblib")
    np.testing.assert_array_equal(real["train_cluster_ids"].reshape(-1), raw["kmeans_model"]["model"]["labels_"])
    for split in ("train", "val", "test"):
        cl = torch.from_numpy(real[f"{split}_cluster_ids"].astype(np.int64))[:, :, None]  # [segments, 59, 1]
        np.testing.assert_array_equal(tok.bert_ids(cl)[..., 0].numpy(), real[f"{split}_bert_ids"])
        inputs = tok.bert_inputs(cl)
        assert inputs["input_ids"].shape == (cl.shape[0], 64)
        np.testing.assert_array_equal(inputs["input_ids"][:, 1:60].numpy(), real[f"{split}_bert_ids"])
        assert (inputs["input_ids"][:, 0] == 2).all() and (inputs["input_ids"][:, 60] == 3).all()
        assert (inputs["attention_mask"].sum(1) == 61).all()
