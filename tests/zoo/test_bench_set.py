"""Set-level bench columns: rFID (images) and FVD (videos) over the whole set, from cached per-item features."""

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo import bench
from zoo.config import ConfigBase
from zoo.metrics.fid import INCEPTION_FILES, frechet_distance_features
from zoo.metrics.inception import FID_WEIGHTS_TORCH_FIDELITY
from zoo.metrics.video import I3D_TORCHSCRIPT
from zoo.tokenizer import TokenizerSpec, VideoTokenizer
from zoo.tokens import Tokens

from .toy_tokenizers import ToyImage, ToyImageConfig


@pytest.fixture(autouse=True)
def _empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

pytestmark = pytest.mark.usefixtures("one_thread")  # full CPU forwards: one thread is faster here


class _TinyInception(torch.nn.Module):
    """NVIDIA TorchScript calling convention (``net(x in [0, 255], return_features=True)``), 12-d features."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 12, 5, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.2)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return torch.relu(self.conv(x / 255.0)).mean((2, 3))


class _TinyI3D(torch.nn.Module):
    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        d = x[:, :, 1:] - x[:, :, :-1]
        return torch.cat([x.mean((2, 3, 4)), x.std((2, 3, 4)), d.abs().mean((2, 3, 4)),
                          F.avg_pool3d(x, (x.shape[2], 112, 112)).flatten(1)], 1)


@pytest.fixture
def inception_ts(tmp_path):
    path = tmp_path / "nets" / "inception-2015-12-05.pt"
    path.parent.mkdir(exist_ok=True)
    torch.jit.script(_TinyInception()).save(str(path))
    return path


def _lossy():
    return ToyImage(ToyImageConfig(image_size=64, pool=4, levels=8))


def _exact():
    # 256 levels, no pooling: the reconstruction of an 8-bit image is the image itself
    return ToyImage(ToyImageConfig(image_size=64, pool=1, levels=256))


def test_rfid_column_with_n_stated(shared_data, tmp_path, inception_ts):
    out = tmp_path / "lossy"
    res = bench.run([_lossy()], shared_data("image/256"), out=out, limit=4, metrics=["psnr", "rfid"], figures=0,
                    progress=False, extractors={"rfid": inception_ts})
    m = res["models"]["toy-image"]
    st = m["metrics"]["rfid"]
    assert st["set_level"] and st["n"] == 4 and st["reference_set_size"] == 4 and st["dim"] == 12
    assert st["value"] > 0 and "ci95_low" not in st
    assert st["extractor"].startswith("inception-2015-12-05.pt:")
    assert "rfid" not in m["unavailable"]
    # the identity of the user-supplied weights file is recorded
    assert m["weight_files"]["rfid"] == {"path": str(inception_ts.resolve()), "size": inception_ts.stat().st_size,
                                         "sha256": hashlib.sha256(inception_ts.read_bytes()).hexdigest()}
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["models"]["toy-image"]["metrics"]["rfid"]["reference_set_size"] == 4
    assert "N = reference-set size" in on_disk["models"]["toy-image"]["metrics"]["rfid"]["note"]
    md = (out / "results.md").read_text()
    assert "rfid ↓" in md and f"{st['value']:.4g} (N=4)" in md and "N = reference-set size" in md
    # the value is the Frechet distance of the cached per-item features
    feats = sorted((out / "items" / "toy-image").glob("*.rfid.npz"))
    assert len(feats) == 4
    ref = torch.from_numpy(np.stack([np.load(p)["ref"] for p in feats]))
    rec = torch.from_numpy(np.stack([np.load(p)["rec"] for p in feats]))
    assert frechet_distance_features(ref, rec).value == pytest.approx(st["value"], rel=1e-12)

    same = bench.run([_exact()], shared_data("image/256"), out=tmp_path / "exact", limit=4, metrics=["rfid"],
                     figures=0, progress=False, extractors={"rfid": inception_ts})
    assert same["models"]["toy-image"]["metrics"]["rfid"]["value"] == pytest.approx(0.0, abs=1e-9)


def test_missing_weights_give_unavailable_entry(shared_data, tmp_path):
    res = bench.run([_lossy()], shared_data("image/256"), out=tmp_path / "u", limit=2, figures=0, progress=False)
    m = res["models"]["toy-image"]
    assert "rfid" not in m["metrics"] and "psnr" in m["metrics"]  # rfid is a default image column
    why = m["unavailable"]["rfid"]
    for name in INCEPTION_FILES:
        assert name in why
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in why
    assert "`rfid` unavailable" in (tmp_path / "u" / "results.md").read_text()
    assert not list((tmp_path / "u" / "items").rglob("*.npz"))
    # an explicit path that does not exist names that path
    res = bench.run([_lossy()], shared_data("image/256"), out=tmp_path / "u2", limit=2, figures=0, progress=False,
                    extractors={"rfid": tmp_path / FID_WEIGHTS_TORCH_FIDELITY})
    assert str(tmp_path / FID_WEIGHTS_TORCH_FIDELITY) in res["models"]["toy-image"]["unavailable"]["rfid"]


def test_too_few_items_and_bad_extractors(shared_data, tmp_path, inception_ts):
    res = bench.run([_lossy()], shared_data("image/256"), out=tmp_path / "one", limit=1, metrics=["rfid"],
                    figures=0, progress=False, extractors={"rfid": inception_ts})
    assert "at least 2 items" in res["models"]["toy-image"]["unavailable"]["rfid"]
    with pytest.raises(ValueError, match="unknown metrics"):
        bench.run([_lossy()], shared_data("image/256"), out=tmp_path / "x", extractors={"fid": inception_ts})
    with pytest.raises(TypeError, match="extractors"):
        bench.run([_lossy()], shared_data("image/256"), out=tmp_path / "x", extractors=[inception_ts])


class _Interrupting(ToyImage):
    """Stops the process-like run (KeyboardInterrupt is not an item error) at the n-th decode."""

    def __init__(self, config, stop_at):
        super().__init__(config)
        self.calls, self.stop_at = 0, stop_at

    def _decode(self, tokens):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return super()._decode(tokens)


def test_interrupted_and_resumed_run_gives_the_same_value(shared_data, tmp_path, inception_ts, monkeypatch):
    data = shared_data("image/256")
    kw = dict(limit=4, metrics=["psnr", "rfid"], figures=0, progress=False, extractors={"rfid": inception_ts})
    full = bench.run([_lossy()], data, out=tmp_path / "full", **kw)["models"]["toy-image"]["metrics"]["rfid"]

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        bench.run([_Interrupting(_lossy().config, stop_at=3)], data, out=out, **kw)
    assert len(list((out / "items" / "toy-image").glob("*.rfid.npz"))) == 2
    featurised = []
    real = bench._item_features

    def counting(ext, modality, x, y, cache, metric):
        featurised.append(cache.name)
        return real(ext, modality, x, y, cache, metric)

    monkeypatch.setattr(bench, "_item_features", counting)
    resumed = bench.run([_lossy()], data, out=out, **kw)["models"]["toy-image"]["metrics"]["rfid"]
    assert len(featurised) == 2  # only the items the interrupted run had not reached
    assert resumed["n"] == full["n"] == 4
    assert resumed["value"] == pytest.approx(full["value"], rel=1e-12)
    # a complete cache is reused as is: nothing is featurised again
    featurised.clear()
    again = bench.run([_lossy()], data, out=out, **kw)["models"]["toy-image"]["metrics"]["rfid"]
    assert not featurised and again["value"] == pytest.approx(full["value"], rel=1e-12)
    # features from another network are not reused
    other = tmp_path / "nets" / "other.pt"
    net = _TinyInception()
    with torch.no_grad():
        net.conv.weight.mul_(-1)
    torch.jit.script(net).save(str(other))
    changed = bench.run([_lossy()], data, out=out, **{**kw, "extractors": {"rfid": other}})
    assert len(featurised) == 4
    assert changed["models"]["toy-image"]["metrics"]["rfid"]["extractor"].startswith("other.pt:")


@dataclass
class _ToyVideoConfig(ConfigBase):
    pool: int = 8
    levels: int = 16


class _ToyVideo(VideoTokenizer):
    family = "toy-video"
    config_class = _ToyVideoConfig

    @property
    def spec(self):
        return TokenizerSpec.discrete_spec("video", self.config.levels, 1, 1.0, "tokens/frame")

    def _encode(self, video):
        c = self.config
        small = F.avg_pool3d(video, (1, c.pool, c.pool))
        ids = (small * (c.levels - 1)).round().long()
        return Tokens(ids.flatten(1), metadata={"shape": ",".join(str(s) for s in small.shape[1:])})

    def _decode(self, tokens):
        shape = [int(s) for s in tokens.metadata["shape"].split(",")]
        small = tokens.ids.float().reshape(-1, *shape) / (self.config.levels - 1)
        return F.interpolate(small, scale_factor=(1, self.config.pool, self.config.pool), mode="nearest")


def test_fvd_column_for_video_models(shared_data, tmp_path):
    i3d = tmp_path / I3D_TORCHSCRIPT
    torch.jit.script(_TinyI3D()).save(str(i3d))
    res = bench.run([_ToyVideo(_ToyVideoConfig())], shared_data("video"), out=tmp_path / "v", metrics=["psnr", "fvd"],
                    figures=0, progress=False, extractors={"fvd": i3d})
    m = res["models"]["toy-video"]
    assert not m["errors"], m["errors"]
    st = m["metrics"]["fvd"]
    assert st["set_level"] and st["n"] == m["items"] == 2 and st["dim"] == 3 + 3 + 3 + 12
    assert st["value"] > 0
    assert "(N=2)" in (tmp_path / "v" / "results.md").read_text()
    missing = bench.run([_ToyVideo(_ToyVideoConfig())], shared_data("video"), out=tmp_path / "v2",
                        metrics=["psnr", "fvd"], figures=0, progress=False)
    assert I3D_TORCHSCRIPT in missing["models"]["toy-video"]["unavailable"]["fvd"]
