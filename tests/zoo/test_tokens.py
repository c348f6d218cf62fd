"""zoo.Tokens: construction checks, batching helpers, and save/load round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo import Tokens


def test_ids_become_long_and_lengths_follow():
    t = Tokens(torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=torch.int32), [3, 1], {"model": "x"})
    assert t.ids.dtype == torch.long and t.lengths.dtype == torch.long
    assert t.batch_size == 2 and len(t) == 2 and t.shape == (2, 3)
    assert [u.tolist() for u in t.unbind()] == [[1, 2, 3], [4]]
    assert t.item_lengths().tolist() == [3, 1]
    assert Tokens(torch.zeros(2, 5, dtype=torch.long)).item_lengths().tolist() == [5, 5]


def test_numpy_ids_are_accepted():
    t = Tokens(np.arange(6, dtype=np.int16).reshape(2, 3))
    assert t.ids.dtype == torch.long and t.ids[1, 2] == 5


@pytest.mark.parametrize("ids, exc, words", [
    ([[1, 2]], TypeError, ["Tokens.ids", "torch.Tensor", "list"]),
    (torch.zeros(2, 3), TypeError, ["Tokens.ids", "integer dtype", "torch.float32"]),
    (torch.zeros(2, 3, dtype=torch.bool), TypeError, ["integer dtype", "torch.bool"]),
    (torch.tensor(3), ValueError, ["batch axis", "()"]),
])
def test_bad_ids(ids, exc, words):
    with pytest.raises(exc) as info:
        Tokens(ids)
    for w in words:
        assert w in str(info.value)


@pytest.mark.parametrize("ids, lengths, exc, words", [
    (torch.zeros(2, 4, dtype=torch.long), "ab", TypeError, ["Tokens.lengths", "str"]),
    (torch.zeros(2, 4, dtype=torch.long), torch.tensor([1.0, 2.0]), TypeError, ["Tokens.lengths", "float32"]),
    (torch.zeros(2, 4, dtype=torch.long), torch.tensor([1, 2, 3]), ValueError, ["shape [2]", "(3,)"]),
    (torch.zeros(2, 4, dtype=torch.long), torch.tensor([[1, 2]]), ValueError, ["shape [2]", "(1, 2)"]),
    (torch.zeros(2, 4, dtype=torch.long), torch.tensor([1, 5]), ValueError, ["[0, 4]", "max 5"]),
    (torch.zeros(2, 4, dtype=torch.long), torch.tensor([-1, 2]), ValueError, ["[0, 4]", "min -1"]),
    (torch.zeros(2, dtype=torch.long), torch.tensor([1, 1]), ValueError, ["sequence axis", "(2,)"]),
])
def test_bad_lengths(ids, lengths, exc, words):
    with pytest.raises(exc) as info:
        Tokens(ids, lengths)
    for w in words:
        assert w in str(info.value)


def test_bad_metadata():
    with pytest.raises(TypeError, match="Tokens.metadata must be a dict of str to str"):
        Tokens(torch.zeros(1, 2, dtype=torch.long), None, {"a": 1})


def test_indexing_to_and_equality():
    t = Tokens(torch.arange(12).reshape(3, 4), torch.tensor([4, 2, 1]))
    assert t[1].ids.tolist() == [[4, 5, 6, 7]] and t[1].lengths.tolist() == [2]
    assert t[-1].ids.tolist() == [[8, 9, 10, 11]]
    assert t[0:2].batch_size == 2
    with pytest.raises(IndexError, match="item 3 is out of range for a batch of 3"):
        t[3]
    with pytest.raises(IndexError, match="item -4 is out of range"):
        t[-4]
    assert t.cpu() == t and t.to("cpu").device.type == "cpu"
    assert t != Tokens(torch.arange(12).reshape(3, 4))
    assert t != Tokens(torch.arange(12).reshape(3, 4) + 1, torch.tensor([4, 2, 1]))


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_save_load_round_trip(tmp_path, suffix, with_lengths):
    ids = torch.randint(0, 4096, (3, 2, 17))
    lengths = torch.tensor([17, 9, 1]) if with_lengths else None
    t = Tokens(ids, lengths, {"model": "toy", "notes": "mixed 2 channels down to mono"})
    path = t.save(tmp_path / "sub" / f"tok{suffix}")
    back = Tokens.load(path)
    assert back == t and back.metadata == t.metadata and back.ids.dtype == torch.long
    assert (back.lengths is None) == (not with_lengths)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "no temporary file is left behind"


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), high=st.integers(1, 2 ** 40),
       suffix=st.sampled_from([".npz", ".safetensors"]))
def test_round_trip_property(tmp_path_factory, shape, high, suffix):
    ids = torch.randint(0, high, tuple(shape))
    path = tmp_path_factory.mktemp("tok") / f"t{suffix}"
    assert Tokens.load(Tokens(ids).save(path)) == Tokens(ids)


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    old = Tokens(torch.ones(1, 3, dtype=torch.long)).save(tmp_path / "t.npz")
    before = old.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        Tokens(torch.zeros(1, 5, dtype=torch.long)).save(old)
    assert old.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["t.npz"]


def test_save_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported file type '\.pt'.*use \.npz or \.safetensors"):
        Tokens(torch.zeros(1, 2, dtype=torch.long)).save(tmp_path / "x.pt")


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        Tokens.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="bad.npz"):
        Tokens.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, frames=np.zeros(3))
    with pytest.raises(ValueError, match=r"no 'ids' array \(found \['frames'\]\)"):
        Tokens.load(other)
    floats = tmp_path / "floats.npz"
    np.savez(floats, ids=np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="integer dtype"):
        Tokens.load(floats)
    txt = tmp_path / "t.txt"
    txt.write_text("1 2 3")
    with pytest.raises(ValueError, match="unsupported file type"):
        Tokens.load(txt)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\x01\x02garbage")
    with pytest.raises(ValueError, match="g.safetensors"):
        Tokens.load(garbage)
