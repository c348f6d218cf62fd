"""zoo.validation helpers and zoo.config: every error names the argument, what was given and what was expected."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import pytest
import torch

from zoo.config import ConfigBase
from zoo.signal import resample
from zoo.validation import check_choice, check_ids, check_positive_int, check_tensor, describe


def test_describe():
    assert describe(torch.zeros(2, 3)) == "tensor of shape (2, 3) and dtype torch.float32"
    assert describe([1]) == "list"


def test_check_tensor_accepts_and_returns():
    x = torch.randn(2, 5)
    assert check_tensor("wav", x, ndim=(2, 3), floating=True) is x


@pytest.mark.parametrize("x, kwargs, exc, words", [
    ([1.0, 2.0], {}, TypeError, ["wav must be a torch.Tensor", "(expected [B, T])", "got list"]),
    (torch.zeros(5), {"ndim": (2, 3)}, ValueError, ["wav must have 2 or 3 dimensions", "[B, T]", "(5,)"]),
    (torch.zeros(2, 5, dtype=torch.int16), {"floating": True}, TypeError,
     ["wav must be a floating point tensor", "torch.int16"]),
    (torch.zeros(2, 0), {}, ValueError, ["wav is empty", "(2, 0)"]),
    (torch.tensor([[0.0, float("nan"), float("inf"), float("nan")]]), {}, ValueError,
     ["wav contains 2 NaN and 1 Inf values", "first at index (0, 1)"]),
    (torch.tensor([[0.0, -float("inf")]]), {}, ValueError, ["0 NaN and 1 Inf", "(0, 1)"]),
])
def test_check_tensor_errors(x, kwargs, exc, words):
    with pytest.raises(exc) as info:
        check_tensor("wav", x, shape_hint="[B, T]", **kwargs)
    for w in words:
        assert w in str(info.value)


def test_check_tensor_switches():
    check_tensor("x", torch.zeros(0), non_empty=False)
    check_tensor("x", torch.tensor([float("nan")]), finite=False)


@pytest.mark.parametrize("ids, kwargs, exc, words", [
    ([1, 2], {}, TypeError, ["ids must be a torch.Tensor of integer ids", "got list"]),
    (torch.zeros(2, 3), {}, TypeError, ["ids must have an integer dtype", "torch.float32"]),
    (torch.zeros(2, dtype=torch.long), {"ndim": (3,)}, ValueError, ["ids must have 3 dimensions", "(2,)"]),
    (torch.zeros(2, 0, dtype=torch.long), {}, ValueError, ["ids is empty", "(2, 0)"]),
    (torch.zeros(2, 3, 4, dtype=torch.long), {"num_codebooks": 8, "codebook_axis": 1}, ValueError,
     ["ids has 3 codebooks along axis 1", "uses 8"]),
    (torch.tensor([[0, 5, 16, 2]]), {}, ValueError,
     ["ids outside [0, 16)", "min 0, max 16", "first offending index (0, 2)"]),
    (torch.tensor([[3, -1]]), {}, ValueError, ["outside [0, 16)", "min -1", "(0, 1)"]),
])
def test_check_ids_errors(ids, kwargs, exc, words):
    with pytest.raises(exc) as info:
        check_ids("ids", ids, 16, **kwargs)
    for w in words:
        assert w in str(info.value)


def test_check_ids_accepts():
    ids = torch.randint(0, 16, (2, 3, 5))
    assert check_ids("ids", ids, 16, num_codebooks=3, codebook_axis=1, ndim=(3,)) is ids


def test_check_choice_and_positive_int():
    check_choice("mode", "a", ["a", "b"])
    with pytest.raises(ValueError, match=r"mode must be one of \['a', 'b'\], got 'c'"):
        check_choice("mode", "c", ["a", "b"])
    assert check_positive_int("n", 3) == 3 and check_positive_int("n", 0, allow_zero=True) == 0
    with pytest.raises(TypeError, match="n must be an int, got bool"):
        check_positive_int("n", True)
    with pytest.raises(TypeError, match="n must be an int, got float"):
        check_positive_int("n", 2.0)
    with pytest.raises(ValueError, match="n must be > 0, got 0"):
        check_positive_int("n", 0)
    with pytest.raises(ValueError, match="n must be >= 0, got -2"):
        check_positive_int("n", -2, allow_zero=True)


def test_resample():
    x = torch.sin(torch.arange(4800) / 10.0)[None]
    y = resample(x, 48000, 24000)
    assert y.shape == (1, 2400) and y.dtype == x.dtype
    assert resample(x, 100, 100) is x
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        resample([1.0], 1, 2)
    with pytest.raises(ValueError, match="orig_rate must be a positive number of Hz, got 0"):
        resample(x, 0, 2)
    with pytest.raises(ValueError, match="target_rate must be a positive number of Hz, got True"):
        resample(x, 2, True)


# ---------------------------------------------------------------------------------------------- config

@dataclass
class Inner(ConfigBase):
    depth: int = 2
    ratios: Tuple[int, ...] = (2, 4)


@dataclass
class Outer(ConfigBase):
    dim: int = 8
    scale: float = 1.0
    inner: Inner = field(default_factory=Inner)
    names: List[str] = field(default_factory=lambda: ["a"])
    maybe: Optional[Tuple[int, int]] = None


def test_config_round_trip_through_json():
    import json

    c = Outer(dim=3, scale=2.5, inner=Inner(depth=5, ratios=(8, 5, 4)), names=["x", "y"], maybe=(1, 2))
    d = json.loads(json.dumps(c.to_dict()))
    back = Outer.from_dict(d)
    assert back == c and isinstance(back.inner, Inner) and back.inner.ratios == (8, 5, 4)
    assert back.maybe == (1, 2) and isinstance(back.maybe, tuple)
    assert Outer.from_dict({"scale": 3}).scale == 3.0 and isinstance(Outer.from_dict({"scale": 3}).scale, float)


def test_config_errors():
    with pytest.raises(ValueError, match=r"Outer: unknown config keys \['dimm'\]; known keys are"):
        Outer.from_dict({"dimm": 3})
    with pytest.raises(ValueError, match=r"Inner: unknown config keys \['oops'\]"):
        Outer.from_dict({"inner": {"oops": 1}})
    with pytest.raises(TypeError, match="Outer.from_dict expects a dict, got list"):
        Outer.from_dict([1])
