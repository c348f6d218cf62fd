"""LiPCoT: the tokenizer contract, the restricted unpickler, fitting and persistence."""

from __future__ import annotations

import io
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

import zoo
from eeg.lipcot import LiPCoT
from eeg.lipcot.safe_pickle import UnsafePickleError, load_joblib
from eeg.preprocess import resample_fft
from zoo.tokens import Tokens


@pytest.fixture(scope="module")
def tok(lipcot_dir):
    return zoo.load_official("lipcot", lipcot_dir / "lipcot_model.joblib")


def _ar_noise(B, C, T, seed=0):
    """AR(2) resonances at a few frequencies plus noise, in uV-like units."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    out = np.empty((B, C, T))
    for b in range(B):
        for c in range(C):
            f = rng.uniform(2, 40)
            r = rng.uniform(0.8, 0.99)
            w = 2 * np.pi * f / 500
            out[b, c] = lfilter([1.0], [1.0, -2 * r * np.cos(w), r * r], rng.normal(0, 5, T))
    return torch.from_numpy(out)


def test_encode_shapes_and_windows(tok):
    x = _ar_noise(2, 3, 2500)
    t = tok.encode(x, sfreq=500)
    assert t.ids.shape == (2, 3, 1) and t.lengths is None
    assert tok.spec.codebook_size == 64 and tok.spec.token_rate_unit == "tokens/window"
    # windows of 1 s: 5 per channel, each equal to encoding that second alone
    tw = tok.encode(x, window_seconds=1.0)
    assert tw.ids.shape == (2, 3, 5)
    for k in range(5):
        assert torch.equal(tw.ids[..., k], tok.encode(x[..., k * 500:(k + 1) * 500]).ids[..., 0])
    # float32 input is accepted (computed in float64)
    assert tok.encode(x.float()).ids.shape == (2, 3, 1)


def test_lengths_batched_equals_one_at_a_time(tok):
    x = _ar_noise(3, 2, 2500, seed=1)
    lengths = [2500, 1700, 1000]
    padded = x.clone()
    for i, n in enumerate(lengths):
        padded[i, :, n:] = 123.0
    t = tok.encode(padded, lengths=lengths, window_seconds=1.0)
    assert t.lengths.tolist() == [5, 3, 2]
    for i, n in enumerate(lengths):
        alone = tok.encode(x[i:i + 1, :, :n], window_seconds=1.0).ids[0]
        assert torch.equal(t.ids[i, :, : alone.shape[-1]], alone)
    # one window per channel: each item's window is its valid part
    t1 = tok.encode(padded, lengths=lengths)
    for i, n in enumerate(lengths):
        assert torch.equal(t1.ids[i], tok.encode(x[i:i + 1, :, :n]).ids[0])
    dec = tok.decode(t)
    assert dec.shape == (3, 2, 5, 17) and dec.dtype == torch.float64
    assert (dec[1, :, 3:] == 0).all() and (dec[1, :, :3] != 0).any()


def test_resampling(tok):
    x = _ar_noise(1, 2, 1250)  # 5 s at 250 Hz
    t = tok.encode(x, sfreq=250)
    assert torch.equal(t.ids, tok.encode(resample_fft(x, 250, 500)).ids)
    with pytest.raises(ValueError, match="fitted at 500"):
        tok.encode(x, sfreq=250, resample=False)
    with pytest.raises(ValueError, match="fitted at 500"):
        tok.encode_windows(x[0].numpy(), sfreq=250)


def test_bad_inputs(tok):
    with pytest.raises(ValueError, match="3 dimensions"):
        tok.encode(torch.randn(1, 2, 3, 2500))
    with pytest.raises(TypeError):
        tok.encode(np.zeros((2, 2500), dtype=np.int64))
    with pytest.raises(ValueError, match="empty"):
        tok.encode(torch.zeros(1, 2, 0))
    x = _ar_noise(1, 3, 2500)
    x[0, 1, 1000] = float("inf")
    with pytest.raises(ValueError, match=r"channel 1 \(Cz\).*sample 1000 \(t = 2.000 s\)"):
        tok.encode(x, ch_names=["Fz", "Cz", "Pz"])
    x = _ar_noise(1, 3, 2500)
    x[0, 2] = 0.0
    with pytest.raises(ValueError, match=r"channel 2 \(Pz\), window 0: .*all zeros"):
        tok.encode(x, ch_names=["Fz", "Cz", "Pz"])
    with pytest.raises(ValueError, match="needs more"):
        tok.encode(_ar_noise(1, 1, 10))
    with pytest.raises(ValueError, match="shorter than one window"):
        tok.encode(_ar_noise(1, 1, 400), window_seconds=1.0)
    with pytest.raises(ValueError, match="outside"):
        tok.decode(torch.full((1, 1, 1), 64))
    with pytest.raises(ValueError, match="3 dimensions"):
        tok.decode(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="ROW"):
        tok.encode_windows(np.zeros(100))
    with pytest.raises(TypeError):
        tok.encode_windows([[1.0, 2.0]])


def test_synthesize(tok):
    ids = torch.tensor([[[3, 7, 7]], [[19, 5, 0]]])
    g = torch.Generator().manual_seed(0)
    y = tok.synthesize(ids, n_samples=500, generator=g)
    assert y.shape == (2, 1, 1500) and y.dtype == torch.float64 and torch.isfinite(y).all()
    y2 = tok.synthesize(ids, n_samples=500, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, y2)
    y3 = tok.synthesize(ids, n_samples=500, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(y, y3)
    padded = tok.synthesize(Tokens(ids, torch.tensor([3, 1])), n_samples=100, generator=g)
    assert (padded[1, :, 100:] == 0).all()
    with pytest.raises(ValueError, match="n_samples"):
        tok.synthesize(ids)
    # the signal of a token has roughly its centre's spectrum: power near E / |A|^2 mean level
    a, energy = tok.centroid_ar(unwarped=True)
    long = tok.synthesize(torch.full((1, 1, 1), 7), n_samples=20000, generator=g)[0, 0].numpy()
    from scipy.signal import lfilter

    resid = lfilter(np.concatenate([[1.0], a[7]]), [1.0], long)[200:]
    assert np.var(resid) == pytest.approx(energy[7], rel=0.1)


def test_words_and_bert_ids(tok):
    ids = torch.tensor([[[19], [7], [8]]])
    assert tok.to_words(ids) == ["555 ata pudding"]
    b = tok.bert_inputs(ids, max_length=4)  # truncation keeps [SEP]
    assert b["input_ids"].tolist() == [[2, 19, 15, 3]]
    assert tok.special_token_ids["[MASK]"] == 4


def test_restricted_unpickler_refuses_foreign_types(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    p = tmp_path / "evil.joblib"
    p.write_bytes(pickle.dumps({"order": 16, "x": Evil()}, protocol=4))
    with pytest.raises(UnsafePickleError, match=r"refusing to load (posix|os|nt)\.system"):
        load_joblib(p)
    p.write_bytes(pickle.dumps({"m": io.BytesIO}, protocol=4))
    with pytest.raises(UnsafePickleError, match="_io.BytesIO"):
        load_joblib(p)
    # an estimator class outside the allow-list, spelled by hand
    payload = b"\x80\x04" + b"\x8c\x0bsklearn.svm" + b"\x8c\x03SVC" + b"\x93" + b")" + b"\x81" + b"."
    p.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match="sklearn.svm.SVC"):
        load_joblib(p)


def test_truncated_and_foreign_model_files(lipcot_dir, tmp_path):
    raw = (lipcot_dir / "lipcot_model.joblib").read_bytes()
    (tmp_path / "t.joblib").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ValueError, match="truncated|not a readable"):
        load_joblib(tmp_path / "t.joblib")
    (tmp_path / "list.joblib").write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    shutil.copytree(lipcot_dir / "modifiedBertTokenizer", tmp_path / "modifiedBertTokenizer")
    with pytest.raises(ValueError, match="must hold a dict"):
        zoo.load_official("lipcot", tmp_path / "list.joblib")
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n")
    with pytest.raises(ValueError, match="does not hold the model's words"):
        zoo.load_official("lipcot", lipcot_dir / "lipcot_model.joblib", tmp_path / "vocab.txt")
    with pytest.raises(FileNotFoundError):
        zoo.load_official("lipcot", tmp_path / "missing.joblib")


def test_save_load_roundtrip_of_released_model(tok, tmp_path):
    tok.save_pretrained(tmp_path / "m")
    back = zoo.from_pretrained(str(tmp_path / "m"))
    assert isinstance(back, LiPCoT) and back.config == tok.config
    for k, v in tok.state_dict().items():
        assert v.dtype == torch.float64 and torch.equal(back.state_dict()[k], v)
    x = _ar_noise(2, 4, 2500, seed=4)
    assert torch.equal(back.encode(x).ids, tok.encode(x).ids)


def test_fit_and_roundtrip(tmp_path):
    pytest.importorskip("sklearn")
    x = _ar_noise(1, 80, 1000, seed=7)[0]
    words = [f"w{i}" for i in range(6)]
    model = LiPCoT.fit(x, order=6, warp=0.1, vocab_size=6, seed=3, method=3, sfreq=500, words=words, n_init=2)
    assert model.config.words == words
    assert model.cluster_to_bert_id.tolist() == [5, 6, 7, 8, 9, 10]
    ids = model.encode_windows(x)
    assert set(ids.tolist()) <= set(range(6)) and len(set(ids.tolist())) > 1
    again = LiPCoT.fit(x, order=6, warp=0.1, vocab_size=6, seed=3, method=3, sfreq=500, words=words, n_init=2)
    assert torch.equal(again.centers, model.centers)
    model.save_pretrained(tmp_path / "fitted")
    back = zoo.from_pretrained(str(tmp_path / "fitted"))
    assert torch.equal(back.encode_windows(x), ids)
    assert back.write_bert_vocab(tmp_path / "vocab").read_text().split() == ["[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                                              "[MASK]"] + words
    for method in (1, 2):
        m = LiPCoT.fit(x, order=4, warp=None, vocab_size=3, seed=0, method=method, n_init=1)
        assert m.centers.shape == (3, m.config.num_features)
        assert m.config.words == ["lpc0", "lpc1", "lpc2"]
    with pytest.raises(ValueError, match="at least vocab_size"):
        LiPCoT.fit(x[:3], vocab_size=6)


def test_registry_entry_through_hf_cache(lipcot_dir, tmp_path):
    entry = [e for e in zoo.list_models(family="lipcot") if e.name == "lipcot-pd-eeg"][0]
    commit = entry.revision
    repo_dir = tmp_path / ("models--" + entry.repo_id.replace("/", "--"))
    snap = repo_dir / "snapshots" / commit
    (snap / "models" / "lipcot_model").mkdir(parents=True)
    (snap / "models" / "modifiedBertTokenizer").mkdir(parents=True)
    shutil.copyfile(lipcot_dir / "lipcot_model.joblib", snap / entry.files[0].filename)
    shutil.copyfile(lipcot_dir / "modifiedBertTokenizer" / "vocab.txt", snap / entry.files[1].filename)
    model = zoo.from_pretrained("lipcot-pd-eeg", cache_dir=tmp_path, local_files_only=True)
    ref = np.load(lipcot_dir / "reference_tokens.npz")
    x = np.load(lipcot_dir / "input.npz")["x"]
    assert np.array_equal(model.encode_windows(x.T).numpy(), ref["token_ids"])


def test_reconstruction_reference(tok):
    x = _ar_noise(2, 3, 2500, seed=9)
    ref = tok.reconstruction_reference(x, window_seconds=1.0, lengths=[2500, 1200])
    dec = tok.decode(tok.encode(x, window_seconds=1.0, lengths=[2500, 1200]))
    assert ref.shape == dec.shape == (2, 3, 5, 17)
    f = tok.window_features(x[0, :, 500:1000].numpy())
    np.testing.assert_array_equal(ref[0, :, 1, :-1].numpy(), f["ar"])
    np.testing.assert_array_equal(ref[0, :, 1, -1].numpy(), f["energy"])
    assert (ref[1, :, 2:] == 0).all() and (ref[1, :, :2] != 0).any()
