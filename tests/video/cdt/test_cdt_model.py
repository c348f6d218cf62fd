"""CDT unit tests on tiny random models: contract, streaming, batching, validation, loading."""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import pytest
import torch

import zoo
from video.cdt import CDTConfig, CDTTokenizer
from video.cdt.convert import convert_state_dict, infer_config

TINY = dict(context_dim=4, latent_dim=3, unet_dim=4)


def tiny(variant: str, seed: int = 0, **kw) -> CDTTokenizer:
    torch.manual_seed(seed)
    cfg = CDTConfig.variant(variant, **{**TINY, "out_channels": 5 if variant == "base" else 3, **kw})
    tok = CDTTokenizer(cfg).eval()
    with torch.no_grad():  # LayerNorm affine and TimeDownsample/Upsample stay at init otherwise: perturb all
        for p in tok.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return tok


@lru_cache(maxsize=None)
def model(variant: str) -> CDTTokenizer:
    return tiny(variant)


def video(b=1, f=9, h=16, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, f, h, w, generator=g)


def official_state(tok: CDTTokenizer) -> "OrderedDict[str, torch.Tensor]":
    """Write ``tok``'s weights back under the release's key names (inverse of the converter)."""
    import re

    inverse = (
        (r"^unet\.final_conv\.(weight|bias)$", r"unet.final_conv.1.\1"),
        (r"^unet\.final_norm\.", "unet.final_conv.0."),
        (r"\.block([12])\.conv\.", r".block\1.block.0."),
        (r"\.block([12])\.norm\.", r".block\1.block.1."),
        (r"\.time_proj\.", ".mlp.1."),
        (r"\.attn\.", ".fn.fn."),
        (r"\.norm\.(g|b)$", r".fn.norm.\1"),
    )
    out = OrderedDict()
    for k, v in tok.net.state_dict().items():
        name = k
        for pat, rep in inverse:
            name = re.sub(pat, rep, name)
        name = name.replace("unet.", "model.denoise_fn.", 1) if name.startswith("unet.") else \
            name.replace("autoencoder.", "model.context_fn.", 1)
        out[name] = v.clone()
    return out


# ---------------------------------------------------------------------------------------------- config

def test_config_round_trip_and_variants():
    for name in ("base", "small"):
        cfg = CDTConfig.variant(name)
        assert CDTConfig.from_dict(cfg.to_dict()) == cfg
    assert CDTConfig.base().pad_mode == "zeros" and CDTConfig.base().new_upsample
    assert CDTConfig.small().pad_mode == "replicate" and not CDTConfig.small().new_upsample
    with pytest.raises(ValueError, match="pad_mode"):
        CDTConfig(pad_mode="reflect")
    with pytest.raises(ValueError, match="unknown CDT variant"):
        CDTConfig.variant("large")
    with pytest.raises(ValueError, match="space_down"):
        CDTConfig(space_down=(1, 1))


def test_released_configs_match_reference_key_tables(shared_data):
    """The two released architectures, built on the meta device, have exactly the release's keys and shapes."""
    research = Path(shared_data()).parent / "research"
    for name in ("base", "small"):
        table = research / f"cdt_state_dict_{name}.tsv"
        if not table.is_file():
            pytest.skip(f"{table} not found")
        rows = [line.split("\t") for line in table.read_text().splitlines()[1:] if line.strip()]
        shapes = {k: torch.empty(tuple(int(x) for x in s.strip("()").split(",") if x.strip()), device="meta")
                  for k, s in rows}
        converted = convert_state_dict(shapes)
        with torch.device("meta"):
            tok = CDTTokenizer(CDTConfig.variant(name))
        own = {k: tuple(v.shape) for k, v in tok.net.state_dict().items()}
        assert own == {k: tuple(v.shape) for k, v in converted.items()}
        cfg = infer_config(converted)
        assert cfg == CDTConfig.variant(name)
        n_params = sum(p.numel() for p in tok.parameters())
        assert abs(n_params / 1e6 - {"base": 192.59, "small": 120.67}[name]) < 0.01


@pytest.mark.parametrize("cfg", [
    CDTConfig.small(context_dim=4, latent_dim=2, unet_dim=4, context_dim_mults=(1, 2, 4), space_down=(1, 1, 0),
                    time_down=(0, 1, 1), unet_dim_mults=(1, 2, 3, 4, 5), condition_times=2, pad_mode="zeros",
                    new_upsample=True),
    CDTConfig.base(context_dim=4, latent_dim=2, unet_dim=4, out_channels=4, condition_times=0),
])
def test_other_configurations_stream_and_load(cfg, tmp_path):
    """Other widths/layouts: chunked == one pass, and the converter reads the configuration from the weights."""
    torch.manual_seed(0)
    tok = CDTTokenizer(cfg).eval()
    x = torch.rand(1, 3, 1 + 2 * cfg.time_factor, 16, 24)
    lat = tok.encode_latents(x)
    assert lat.shape == (1, 2, 3, 16 // cfg.space_factor, 24 // cfg.space_factor)
    assert (tok.encode_latents(x, chunk_frames=cfg.time_factor) - lat).abs().max() < 1e-5
    noise = 0.8 * torch.randn(1, 3, x.shape[2], 16, 24)
    one = tok.decode_latents(lat, noise=noise)
    assert (tok.decode_latents(lat, noise=noise, chunk_latents=1) - one).abs().max() < 1e-4
    path = _save(official_state(tok), tmp_path / "other.ckpt")
    loaded = zoo.load_official("cdt", path)
    assert loaded.config == cfg
    assert torch.equal(loaded.decode_latents(lat, noise=noise), one)


# ---------------------------------------------------------------------------------------------- contract

@pytest.mark.parametrize("variant", ["base", "small"])
def test_shapes_and_spec(variant):
    tok = model(variant)
    x = video(f=9, h=16, w=24)
    lat = tok.encode_latents(x)
    assert lat.shape == (1, 3, 3, 2, 3)
    y = tok.decode_latents(lat, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    spec = tok.spec
    assert spec.discrete is False and spec.codebook_size == 0 and spec.latent_channels == 3
    assert spec.token_rate == 32 * 32 / 4


def test_encode_decode_refuse_tokens():
    tok = model("base")
    with pytest.raises(TypeError, match="continuous"):
        tok.encode(video())
    with pytest.raises(TypeError, match="continuous"):
        tok.decode(torch.zeros(1, 4, dtype=torch.long))


@pytest.mark.parametrize("variant", ["base", "small"])
def test_chunked_encode_equals_one_pass(variant):
    tok = model(variant)
    x = video(f=17)
    one = tok.encode_moments(x, chunk_frames=64)
    for chunk in (4, 8):
        assert (tok.encode_moments(x, chunk_frames=chunk) - one).abs().max() < 1e-5


@pytest.mark.parametrize("variant,steps", [("base", 1), ("base", 2), ("small", 2)])
def test_chunked_decode_equals_one_pass(variant, steps):
    tok = model(variant)
    lat = torch.randn(1, 3, 4, 2, 3, generator=torch.Generator().manual_seed(1))
    noise = 0.8 * torch.randn(1, 3, 13, 16, 24, generator=torch.Generator().manual_seed(2))
    one = tok.decode_latents(lat, steps, noise=noise, chunk_latents=4)
    for chunk in ((1, 3) if steps == 1 else (2,)):
        got = tok.decode_latents(lat, steps, noise=noise, chunk_latents=chunk)
        # float noise, amplified by the DDIM update (1/sqrt(alphas_cumprod) ~ 1e5 at the first step) when steps > 1
        assert (got - one).abs().max() < (1e-4 if steps == 1 else 1e-3)
        ref = tok.decode_latents(lat, steps, noise=noise, chunk_latents=chunk, reference_chunking=True)
        first = 1 + 4 * (chunk - 1)
        if variant == "small":  # no uncached block in this layout
            assert torch.equal(ref, got)
        else:  # the reference's uncached mapping block: identical first chunk, different afterwards
            assert (ref[:, :, :first] - one[:, :, :first]).abs().max() < 1e-4
            assert (ref - one).abs().max() > 1e-3


@pytest.mark.parametrize("variant", ["base", "small"])
def test_batched_equals_one_at_a_time(variant):
    tok = model(variant)
    x = video(b=2, f=5, seed=3)
    lat = tok.encode_latents(x)
    for i in range(2):
        assert torch.equal(lat[i:i + 1], tok.encode_latents(x[i:i + 1]))
    noise = 0.8 * torch.randn(2, 3, 5, 16, 24, generator=torch.Generator().manual_seed(4))
    y = tok.decode_latents(lat, 2, noise=noise)
    for i in range(2):
        assert torch.equal(y[i:i + 1], tok.decode_latents(lat[i:i + 1], 2, noise=noise[i:i + 1]))


def test_lengths_unequal_items():
    tok = model("base")
    x = video(b=2, f=9, seed=5)
    short = x[1:, :, :5]
    lat, lat_len = tok.encode_latents(x, lengths=torch.tensor([9, 5]))
    assert lat_len.tolist() == [3, 2]
    assert torch.equal(lat[0:1], tok.encode_latents(x[:1]))
    assert torch.equal(lat[1:, :, :2], tok.encode_latents(short))
    assert torch.count_nonzero(lat[1:, :, 2:]) == 0
    noise = 0.8 * torch.randn(2, 3, 9, 16, 24, generator=torch.Generator().manual_seed(6))
    y, frames = tok.decode_latents(lat, noise=noise, lengths=lat_len)
    assert frames.tolist() == [9, 5]
    assert torch.equal(y[1:, :, :5], tok.decode_latents(lat[1:, :, :2], noise=noise[1:, :, :5]))
    assert torch.equal(y[:1], tok.decode_latents(lat[:1], noise=noise[:1]))
    assert torch.count_nonzero(y[1:, :, 5:]) == 0


def test_noise_and_generator_repeatable():
    tok = model("small")
    lat = tok.encode_latents(video())
    a = tok.decode_latents(lat, generator=torch.Generator().manual_seed(7))
    b = tok.decode_latents(lat, generator=torch.Generator().manual_seed(7))
    c = tok.decode_latents(lat, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # x_T = noise_scale * randn over 4T' frames with the first 3 dropped
    raw = torch.randn(1, 3, 12, 16, 24, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, tok.decode_latents(lat, noise=0.8 * raw[:, :, 3:]))
    # without a generator the global RNG is drawn exactly like the reference's torch.randn(target_shape)
    torch.manual_seed(7)
    assert torch.equal(a, tok.decode_latents(lat))


def test_value_ranges_and_uint8():
    tok = model("base")
    x = video()
    unit = tok.encode_latents(x)
    signed = tok.encode_latents(x * 2 - 1, value_range=(-1, 1))
    assert (unit - signed).abs().max() < 1e-5
    u8 = (x * 255).round().to(torch.uint8)
    assert (tok.encode_latents(u8) - tok.encode_latents(u8.float() / 255)).abs().max() == 0
    noise = torch.randn(1, 3, 9, 16, 24)
    y01 = tok.decode_latents(unit, noise=noise)
    y11 = tok.decode_latents(unit, noise=noise, value_range=(-1, 1))
    assert (y01 - (y11 + 1) / 2).abs().max() < 1e-6
    clamped = tok.decode_latents(unit, noise=noise, clamp=True)
    assert clamped.min() >= 0 and clamped.max() <= 1


def test_single_image_is_one_frame_video():
    tok = model("small")
    img = video(f=1)[:, :, 0]
    lat = tok.encode_latents(img)
    assert lat.shape == (1, 3, 1, 2, 3)
    assert torch.equal(lat, tok.encode_latents(img[:, :, None]))
    assert tok.decode_latents(lat, generator=torch.Generator().manual_seed(0)).shape == (1, 3, 1, 16, 24)


def test_odd_latent_sizes_decode():
    tok = model("base")  # 3x5 latents: the U-Net's skip grid needs the nearest resize
    x = video(f=5, h=24, w=40)
    y = tok.reconstruct(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and torch.isfinite(y).all()


# ---------------------------------------------------------------------------------------------- bad input

def test_bad_inputs_have_clear_errors():
    tok = model("base")
    good = video()
    cases = [
        (lambda: tok.encode_latents(good[0, 0]), ValueError, "dimensions"),
        (lambda: tok.encode_latents(good.numpy()), TypeError, "torch.Tensor"),
        (lambda: tok.encode_latents(good[:, :2]), ValueError, "3 channels"),
        (lambda: tok.encode_latents(good[:, :, :8]), ValueError, "1 \\+ 4k frames"),
        (lambda: tok.encode_latents(good[:, :, :, :12]), ValueError, "multiples of 8"),
        (lambda: tok.encode_latents(good * 3), ValueError, "must lie in"),
        (lambda: tok.encode_latents(good * 2 - 1), ValueError, "must lie in"),
        (lambda: tok.encode_latents(good.new_full(good.shape, float("nan"))), ValueError, "NaN"),
        (lambda: tok.encode_latents(good[:, :, :0]), ValueError, "empty"),
        (lambda: tok.encode_latents(good.long()), TypeError, "dtype"),
        (lambda: tok.encode_latents(good, value_range=(0, 255)), ValueError, "value_range"),
        (lambda: tok.encode_latents(good, chunk_frames=6), ValueError, "multiple of 4"),
        (lambda: tok.encode_latents(good, chunk_frames=0), ValueError, "chunk_frames"),
        (lambda: tok.encode_latents(good, lengths=[4]), ValueError, "1 \\+ 4k"),
        (lambda: tok.encode_latents(good, lengths=[1, 2]), ValueError, "shape"),
    ]
    lat = torch.zeros(1, 3, 3, 2, 3)
    cases += [
        (lambda: tok.decode_latents(lat[:, :2]), ValueError, "3 channels"),
        (lambda: tok.decode_latents(lat[0]), ValueError, "dimensions"),
        (lambda: tok.decode_latents(lat.long()), TypeError, "floating"),
        (lambda: tok.decode_latents(lat + float("inf")), ValueError, "Inf"),
        (lambda: tok.decode_latents(lat, num_steps=0), ValueError, "num_steps"),
        (lambda: tok.decode_latents(lat, num_steps=1.5), TypeError, "num_steps"),
        (lambda: tok.decode_latents(lat, num_steps=10 ** 6), ValueError, "num_timesteps"),
        (lambda: tok.decode_latents(lat, noise=torch.zeros(1, 3, 12, 16, 24)), ValueError, "noise must have shape"),
        (lambda: tok.decode_latents(lat, generator=1), TypeError, "Generator"),
        (lambda: tok.decode_latents(lat, noise=torch.zeros(1, 3, 9, 16, 24), generator=torch.Generator()),
         ValueError, "either noise or generator"),
        (lambda: tok.decode_latents(lat, chunk_latents=-1), ValueError, "chunk_latents"),
        (lambda: tok.decode_latents(lat, lengths=[4]), ValueError, "lengths"),
        (lambda: tok.decode_latents(lat, reference_chunking="yes"), TypeError, "reference_chunking"),
    ]
    for fn, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            fn()


# ---------------------------------------------------------------------------------------------- loading

def _save(obj, path):
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("layout", ["flat", "state_dict", "module"])
def test_official_layouts_load_strictly(tmp_path, layout):
    src = model("small")
    sd = official_state(src)
    obj = {"flat": sd, "state_dict": {"state_dict": sd, "epoch": 3}, "module": {"module": sd}}[layout]
    path = _save(obj, tmp_path / "cdt_small.ckpt")
    tok = zoo.load_official("cdt", path)  # configuration read from the shapes (small layout)
    assert tok.config == src.config
    for k, v in src.state_dict().items():
        assert torch.equal(tok.state_dict()[k], v)
    half = _save({"state_dict": OrderedDict((k, v.half()) for k, v in sd.items())}, tmp_path / "half.ckpt")
    assert zoo.load_official("cdt", half).net.unet.final_conv.weight.dtype == torch.float32


def test_official_base_layout_and_variant(tmp_path):
    src = model("base")
    path = _save({"state_dict": official_state(src)}, tmp_path / "cdt_base.ckpt")
    tok = zoo.load_official("cdt", path, variant="base")
    assert tok.config == src.config
    x = video()
    assert torch.equal(tok.encode_latents(x), src.encode_latents(x))
    with pytest.raises(ValueError, match="either config or variant"):
        zoo.load_official("cdt", path, {"new_upsample": True}, variant="base")


def test_bad_checkpoints(tmp_path):
    sd = official_state(model("small"))
    # missing key
    partial = OrderedDict(list(sd.items())[:-1])
    with pytest.raises(ValueError, match="missing keys"):
        zoo.load_official("cdt", _save(partial, tmp_path / "missing.ckpt"))
    # unexpected key
    extra = OrderedDict(sd)
    extra["model.ae_fn.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="model.ae_fn.weight"):
        zoo.load_official("cdt", _save(extra, tmp_path / "extra.ckpt"))
    # truncated file
    good = _save(sd, tmp_path / "good.ckpt")
    data = good.read_bytes()
    trunc = tmp_path / "trunc.ckpt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read CDT checkpoint"):
        zoo.load_official("cdt", trunc)
    # foreign checkpoint (another model's keys)
    with pytest.raises(ValueError, match="not a CDT checkpoint"):
        zoo.load_official("cdt", _save({"encoder.weight": torch.zeros(2)}, tmp_path / "foreign.ckpt"))
    # pickled code is refused (weights_only)
    with pytest.raises(ValueError, match="weights_only"):
        zoo.load_official("cdt", _save({"state_dict": sd, "obj": Path("x")}, tmp_path / "code.ckpt"))
    # a shape that contradicts the given config
    with pytest.raises(ValueError, match="shape mismatches|contradicts"):
        zoo.load_official("cdt", good, CDTConfig.small(context_dim=4, unet_dim=4, out_channels=3, latent_dim=4))
    # wrong variant for the weights: the transposed-conv orientation gives it away
    with pytest.raises(ValueError, match="contradicts"):
        zoo.load_official("cdt", good, variant="base")
    with pytest.raises(FileNotFoundError):
        zoo.load_official("cdt", tmp_path / "absent.ckpt")


def test_reference_kwargs_config(tmp_path):
    import json

    src = model("base")
    path = _save({"state_dict": official_state(src)}, tmp_path / "m.ckpt")
    kwargs = dict(unet_dim=4, context_dim=4, latent_dim=3, out_channels=5, new_upsample=True,
                  space_down=[0, 1, 1, 1], time_down=[0, 0, 1, 1], context_dim_mults=[1, 2, 3, 4],
                  condition_times=4, num_timesteps=8192, sample_gamma=0.8, enc_frames=4, dec_frames=1,
                  sample_steps=1, _note="x")
    cfg_path = tmp_path / "m.config.json"
    cfg_path.write_text(json.dumps(kwargs))
    tok = zoo.load_official("cdt", path, cfg_path)
    assert tok.config == src.config
    cfg_path.write_text(json.dumps({**kwargs, "colour": 1}))
    with pytest.raises(ValueError, match="unknown CDT constructor keys"):
        zoo.load_official("cdt", path, cfg_path)


def test_save_pretrained_round_trip(tmp_path):
    src = model("small")
    src.save_pretrained(tmp_path / "out")
    tok = zoo.from_pretrained(tmp_path / "out")
    assert isinstance(tok, CDTTokenizer) and tok.config == src.config
    x = video()
    assert torch.equal(tok.encode_latents(x), src.encode_latents(x))


def test_hub_configs_entries():
    entries = {e.name: e for e in zoo.list_models(family="cdt")}
    assert set(entries) == {"cdt-base", "cdt-small"}
    for name, e in entries.items():
        assert e.repo_id == "yangnianzu/CDT" and e.modality == "video"
        assert [f.filename for f in e.files] == [f"{name.replace('-', '_')}.ckpt"]
        assert e.load_kwargs["variant"] == name.split("-")[1]


def test_from_pretrained_through_hf_cache(tmp_path, monkeypatch):
    """``zoo.from_pretrained('cdt-small')`` resolves the release file with huggingface_hub (offline cache)."""
    src = model("small")
    snap = tmp_path / "models--yangnianzu--CDT" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    _save({"state_dict": official_state(src)}, snap / "cdt_small.ckpt")
    (tmp_path / "models--yangnianzu--CDT" / "refs").mkdir()
    (tmp_path / "models--yangnianzu--CDT" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = zoo.from_pretrained("cdt-small", cache_dir=tmp_path, local_files_only=True)
    assert tok.config == src.config
    assert torch.equal(tok.encode_latents(video()), src.encode_latents(video()))
