"""TiTok contract, configuration, converter and bad-input tests on tiny random models (no fixtures needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file

import zoo
from image.titok import MaskGITVQGAN, MaskGITVQGANConfig, TiTok, TiTokConfig, ViTSize, official_config
from image.titok.convert import convert_state_dict, export_state_dict
from image.titok.maskgit_vqgan import ResBlock

REPO = Path(__file__).resolve().parents[3]
TINY_VQGAN = {"num_embeddings": 64, "z_channels": 8, "hidden_channels": 32, "channel_mult": [1, 2],
              "num_res_blocks": 1, "resolution": 16}


def tiny_tree(kind: str) -> dict:
    """A reference-style config.json tree for a tiny model (``custom`` sizes, like the parity fixtures)."""
    vq = {"token_size": 6, "vit_enc_model_size": "custom", "vit_dec_model_size": "custom",
          "vit_enc_patch_size": 4, "vit_dec_patch_size": 2, "num_latent_tokens": 5,
          "vit_enc_width": 32, "vit_enc_num_layers": 1, "vit_enc_num_heads": 2,
          "vit_dec_width": 32, "vit_dec_num_layers": 2, "vit_dec_num_heads": 4}
    if kind == "two_stage":  # no finetune_decoder / is_legacy keys: both default to True
        vq.update(codebook_size=32, use_l2_norm=True, commitment_cost=0.25,
                  pixel_vqgan=dict(TINY_VQGAN, resolution=16))
    elif kind == "vq":
        vq.update(codebook_size=32, use_l2_norm=False, commitment_cost=0.25, finetune_decoder=False, is_legacy=False)
    else:
        vq.update(quantize_mode="vae", finetune_decoder=False, is_legacy=False)
    return {"model": {"vq_model": vq}, "dataset": {"preprocessing": {"crop_size": 16}}}


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim > 1 else 0.3))
    return model


def tiny(kind: str, seed: int = 0) -> TiTok:
    torch.manual_seed(seed)
    return randomize(TiTok(official_config(tiny_tree(kind))), seed).eval()


def write_release(model: TiTok, tree: dict, folder: Path, state=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(tree, indent=4))
    save_file(state if state is not None else export_state_dict(model), str(folder / "model.safetensors"))
    return folder


def images(b: int = 3, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


KINDS = ("two_stage", "vq", "vae")


# ------------------------------------------------------------------------------------------------- configuration

def test_official_defaults_and_size_names():
    ref = REPO / "hub_configs"
    l32 = official_config(yaml.safe_load((ref / "titok-l32.yaml").read_text())["architecture"]["config_json"])
    assert l32.encoder == ViTSize(1024, 24, 16, "large") and l32.decoder.width == 1024
    assert l32.finetune_decoder and l32.is_legacy and l32.quantize_mode == "vq" and l32.use_l2_norm
    assert l32.pixel_vqgan == MaskGITVQGANConfig()  # the hardcoded MaskGIT-VQGAN
    # the released l32 config.json has no finetune_decoder / is_legacy / quantize_mode keys
    tree = yaml.safe_load((ref / "titok-l32.yaml").read_text())["architecture"]["config_json"]
    del tree["model"]["vq_model"]["finetune_decoder"]
    assert official_config(tree) == l32
    s128 = official_config(yaml.safe_load((ref / "titok-s128.yaml").read_text())["architecture"]["config_json"])
    assert (s128.encoder.width, s128.encoder.num_layers, s128.encoder.num_heads) == (512, 8, 8)
    b64 = official_config(yaml.safe_load((ref / "titok-b64.yaml").read_text())["architecture"]["config_json"])
    assert (b64.decoder.width, b64.decoder.num_layers, b64.decoder.num_heads) == (768, 12, 12)


# official key counts of the releases (research note: l32 692 keys, bl64_vq8k 459, bl64_vae_c16 458) and the
# MaskGIT-VQGAN pixel decoder's 30.48 M parameters
@pytest.mark.parametrize("name,keys", [("l32", 692), ("bl64-vq8k", 459), ("bl64-vae-c16", 458)])
def test_release_architectures_match_key_counts(name, keys):
    entry = yaml.safe_load((REPO / "hub_configs" / f"titok-{name}.yaml").read_text())
    cfg = official_config(entry["architecture"]["config_json"])
    with torch.device("meta"):
        model = TiTok(cfg)
    assert len(export_state_dict(model)) == keys
    assert model.spec.token_rate == entry["token_rate"]
    if cfg.finetune_decoder:
        n = sum(p.numel() for p in model.pixel_decoder.parameters())
        assert abs(n / 1e6 - 30.48) < 0.01


def test_all_nine_hub_configs_build():
    entries = [e for e in zoo.list_models(family="titok") if not e.bundled]  # the releases, not tokenzoo/ models
    assert len(entries) == 9
    for e in entries:
        cfg = official_config(e.architecture["config_json"])
        assert cfg.num_latent_tokens == e.token_rate
        assert cfg.discrete == (e.codebook_size > 0)
        if cfg.discrete:
            assert cfg.codebook_size == e.codebook_size


def test_spec():
    with torch.device("meta"):
        m = TiTok(TiTokConfig())  # defaults: TiTok-L-32
    assert m.spec.discrete and m.spec.codebook_size == 4096 and m.spec.token_rate == 32
    assert m.spec.bitrate == 384 and m.spec.bitrate_unit == "bits/image"
    v = tiny("vae")
    assert not v.spec.discrete and v.spec.codebook_size == 0 and v.spec.latent_channels == 6


def test_config_round_trip_and_errors():
    cfg = official_config(tiny_tree("two_stage"))
    assert TiTokConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="model.vq_model"):
        official_config({"model": {}})
    with pytest.raises(ValueError, match="vit_enc_model_size"):
        t = tiny_tree("vq")
        for k in ("vit_enc_width", "vit_enc_num_layers", "vit_enc_num_heads"):
            del t["model"]["vq_model"][k]
        official_config(t)
    with pytest.raises(ValueError, match="finetune_decoder"):
        t = tiny_tree("vae")
        t["model"]["vq_model"]["finetune_decoder"] = True
        official_config(t)
    with pytest.raises(ValueError, match="divisible"):
        t = tiny_tree("vq")
        t["dataset"]["preprocessing"]["crop_size"] = 18
        official_config(t)
    with pytest.raises(ValueError, match="grid"):
        t = tiny_tree("two_stage")
        t["model"]["vq_model"]["pixel_vqgan"]["resolution"] = 32
        official_config(t)


# ------------------------------------------------------------------------------------------------- quirks

def test_legacy_reshape_is_not_a_transpose():
    """Legacy encoders view [B, K, W] memory as [B, W, K] before the 1x1 conv (reference behaviour)."""
    m = tiny("two_stage")
    enc = m.encoder
    h = torch.randn(2, 5, 32)
    expected = F.conv2d(h.reshape(2, 32, 5, 1), enc.conv_out.weight, enc.conv_out.bias)  # [B, D, K, 1]
    torch.testing.assert_close(enc.project(h), expected[..., 0].transpose(1, 2), rtol=1e-6, atol=1e-6)
    enc.is_legacy = False
    proper = F.conv2d(h.transpose(1, 2)[..., None], enc.conv_out.weight, enc.conv_out.bias)
    torch.testing.assert_close(enc.project(h), proper[..., 0].transpose(1, 2), rtol=1e-6, atol=1e-6)


def test_resblock_shortcut_uses_the_output():
    torch.manual_seed(0)
    blk = randomize(ResBlock(32, 64)).eval()
    x = torch.randn(1, 32, 4, 4)
    h = blk.conv2(F.silu(blk.norm2(blk.conv1(F.silu(blk.norm1(x))))))
    torch.testing.assert_close(blk(x), h + F.conv2d(h, blk.nin_shortcut.weight))
    assert tuple(blk.nin_shortcut.weight.shape) == (64, 64, 1, 1)


def test_two_stage_decodes_through_softmax_mixture():
    m = tiny("two_stage")
    z = m.ids_to_latents(torch.tensor([[1, 2, 3, 4, 5]]))
    with torch.inference_mode():
        logits = m.proxy_logits(z)
        soft = m.pixel_decoder(m.pixel_mixture(logits))
        hard = m.pixel_decoder(m.pixel_quantize.decode(logits.argmax(1)).permute(0, 3, 1, 2))
        out = m.decoder_forward(z)
    torch.testing.assert_close(out, soft, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, hard, atol=1e-3)


def test_stage1_checkpoint_is_refused_clearly():
    t = tiny_tree("two_stage")
    t["model"]["vq_model"]["finetune_decoder"] = False
    m = randomize(TiTok(official_config(t)))
    assert m.pixel_decoder is None
    with pytest.raises(TypeError, match="stage-1"):
        m.decode(torch.zeros(1, 5, dtype=torch.long))
    with torch.inference_mode():
        assert m.proxy_logits(m.ids_to_latents(torch.zeros(1, 5, dtype=torch.long))).shape == (1, 64, 8, 8)  # pixel_vqgan.num_embeddings


# ------------------------------------------------------------------------------------------------- the contract

@pytest.mark.parametrize("kind", ["two_stage", "vq"])
def test_encode_decode_batched_equals_single(kind):
    m = tiny(kind)
    x = images(3)
    tok = m.encode(x)
    assert tok.ids.shape == (3, 5) and tok.ids.dtype == torch.long and tok.lengths is None
    for i in range(3):
        assert torch.equal(m.encode(x[i:i + 1]).ids, tok.ids[i:i + 1])
    y = m.decode(tok)
    assert y.shape == (3, 3, 16, 16) and y.dtype == torch.float32
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    for i in range(3):
        assert torch.equal(m.decode(tok.ids[i:i + 1]), y[i:i + 1])
    # larger chunks: same ids here, same images up to float rounding
    assert torch.equal(m.encode(x, chunk_size=2).ids, tok.ids)
    torch.testing.assert_close(m.decode(tok, chunk_size=3), y, rtol=1e-5, atol=1e-5)
    # the reference's [B, 1, K] layout and full lengths are accepted
    assert torch.equal(m.decode(tok.ids[:, None]), y)
    assert torch.equal(m.decode(zoo.Tokens(tok.ids, torch.full((3,), 5))), y)


def test_uint8_input():
    m = tiny("vq")
    x8 = (images(2) * 255).round().to(torch.uint8)
    assert torch.equal(m.encode(x8).ids, m.encode(x8.float() / 255).ids)


def test_vae_latents_batched_and_sampling():
    m = tiny("vae")
    x = images(3)
    mean = m.encode_latents(x)
    assert mean.shape == (3, 5, 6)
    for i in range(3):
        assert torch.equal(m.encode_latents(x[i:i + 1]), mean[i:i + 1])
    post = m.posterior(x)
    assert torch.equal(post["mean"], mean)
    a = m.encode_latents(x, generator=torch.Generator().manual_seed(3))
    b = m.encode_latents(x, generator=torch.Generator().manual_seed(3))
    c = m.encode_latents(x, sample=True)
    assert torch.equal(a, b) and not torch.equal(a, mean) and c.shape == mean.shape
    noise = torch.randn(3, 5, 6)
    torch.testing.assert_close(m.encode_latents(x, noise=noise), post["mean"] + post["std"] * noise)
    y = m.decode_latents(mean)
    assert y.shape == (3, 3, 16, 16) and float(y.min()) >= 0 and float(y.max()) <= 1
    ref_layout = mean.transpose(1, 2)[:, :, None, :]  # [B, C, 1, K]
    assert torch.equal(m.decode_latents(ref_layout), y)
    for i in range(3):
        assert torch.equal(m.decode_latents(mean[i:i + 1]), y[i:i + 1])


def test_vq_encode_latents_are_the_quantizer_input():
    m = tiny("vq")
    x = images(2)
    z = m.encode_latents(x)
    assert z.shape == (2, 5, 6)
    assert torch.equal(m.quantize.encode(z), m.encode(x).ids)
    torch.testing.assert_close(m.decode_latents(m.ids_to_latents(m.encode(x).ids)), m.decode(m.encode(x)))


@pytest.mark.parametrize("bad,err,match", [
    (torch.rand(3, 16, 16), ValueError, "4 dimensions"),
    (torch.rand(1, 3, 32, 32), ValueError, "16x16"),
    (torch.rand(1, 1, 16, 16), ValueError, "3 channels"),
    (torch.full((1, 3, 16, 16), float("nan")), ValueError, "NaN"),
    (torch.rand(0, 3, 16, 16), ValueError, "empty"),
    (torch.rand(1, 3, 16, 16) * 4 - 2, ValueError, r"\[0.0, 1.0\]"),
    (torch.zeros(1, 3, 16, 16, dtype=torch.int32), TypeError, "uint8"),
    ([[0.0]], TypeError, "torch.Tensor"),
])
def test_bad_images(bad, err, match):
    m = tiny("vq")
    with pytest.raises(err, match=match):
        m.encode(bad)
    with pytest.raises(err, match=match):
        m.encode_latents(bad)


def test_bad_tokens_and_arguments():
    m = tiny("vq")
    with pytest.raises(ValueError, match="outside"):
        m.decode(torch.full((1, 5), 32))
    with pytest.raises(ValueError, match="outside"):
        m.decode(torch.full((1, 5), -1))
    with pytest.raises(ValueError, match=r"\[B, 5\]"):
        m.decode(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[B, 5\]"):
        m.decode(torch.zeros(1, 2, 5, dtype=torch.long))  # two codebooks
    with pytest.raises(TypeError, match="integer"):
        m.decode(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="lengths"):
        m.decode(zoo.Tokens(torch.zeros(2, 5, dtype=torch.long), torch.tensor([5, 3])))
    with pytest.raises(TypeError, match="unexpected keyword"):
        m.encode(images(1), lengths=[16])
    with pytest.raises(ValueError, match="chunk_size"):
        m.encode(images(1), chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size"):
        m.decode(torch.zeros(1, 5, dtype=torch.long), chunk_size=1.5)
    with pytest.raises(ValueError, match="VAE"):
        m.encode_latents(images(1), sample=True)
    with pytest.raises(ValueError, match="latents"):
        m.decode_latents(torch.zeros(1, 4, 6))
    with pytest.raises(ValueError, match="NaN"):
        m.decode_latents(torch.full((1, 5, 6), float("nan")))


def test_vae_refuses_discrete_api():
    m = tiny("vae")
    with pytest.raises(TypeError, match="encode_latents"):
        m.encode(images(1))
    with pytest.raises(TypeError, match="continuous"):
        m.decode(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="noise"):
        m.encode_latents(images(2), noise=torch.zeros(2, 5, 7))
    with pytest.raises(ValueError, match="items"):
        m.encode_latents(images(2), noise=torch.zeros(3, 5, 6))
    with pytest.raises(TypeError, match="generator"):
        m.encode_latents(images(2), generator=3)


# ------------------------------------------------------------------------------------------------- loading

@pytest.mark.parametrize("kind", KINDS)
def test_load_official_round_trip(kind, tmp_path):
    m = tiny(kind, seed=4)
    folder = write_release(m, tiny_tree(kind), tmp_path / "rel")
    for args in ((folder,), (folder / "model.safetensors", folder / "config.json")):
        again = zoo.load_official("titok", *args)
        assert again.config == m.config
        theirs = dict(again.named_parameters())
        for k, v in m.named_parameters():  # (the VQ's EMA buffers are unused without EMA and not exported)
            assert torch.equal(theirs[k], v), k
    x = images(2)
    if m.spec.discrete:
        assert torch.equal(again.encode(x).ids, m.encode(x).ids)
    else:
        assert torch.equal(again.encode_latents(x), m.encode_latents(x))
    # this package's own format round-trips too (config.json with the typed config + model.safetensors)
    saved = zoo.from_pretrained(str(m.save_pretrained(tmp_path / "saved")))
    assert type(saved) is TiTok and saved.config == m.config
    if m.spec.discrete:
        assert torch.equal(saved.decode(m.encode(x)), m.decode(m.encode(x)))
    else:
        assert torch.equal(saved.decode_latents(m.encode_latents(x)), m.decode_latents(m.encode_latents(x)))


def test_strict_loading_names_keys(tmp_path):
    m = tiny("two_stage")
    tree = tiny_tree("two_stage")
    state = export_state_dict(m)
    missing = dict(state)
    del missing["decoder.mask_token"]
    with pytest.raises(ValueError, match="decoder.mask_token"):
        zoo.load_official("titok", write_release(m, tree, tmp_path / "a", missing))
    extra = dict(state, **{"encoder.extra.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match="encoder.extra.weight"):
        zoo.load_official("titok", write_release(m, tree, tmp_path / "b", extra))
    shaped = dict(state, **{"latent_tokens": torch.zeros(6, 32)})
    with pytest.raises(ValueError, match="latent_tokens"):
        zoo.load_official("titok", write_release(m, tree, tmp_path / "c", shaped))
    # a single-stage config over two-stage weights: the pixel decoder is unexpected
    with pytest.raises(ValueError, match="pixel_decoder"):
        zoo.load_official("titok", write_release(m, tiny_tree("vq"), tmp_path / "d", state))


def test_truncated_and_foreign_files(tmp_path):
    m = tiny("vq")
    folder = write_release(m, tiny_tree("vq"), tmp_path / "t")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read"):
        zoo.load_official("titok", folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        zoo.load_official("titok", folder)
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(ValueError, match="model.vq_model"):
        zoo.load_official("titok", folder)
    with pytest.raises(FileNotFoundError):
        zoo.load_official("titok", tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        zoo.load_official("titok", empty)
    with pytest.raises(ValueError):
        zoo.load_official("titok")


def test_convert_is_pure():
    m = tiny("two_stage")
    state = export_state_dict(m)
    before = {k: v.clone() for k, v in state.items()}
    out = convert_state_dict(state)
    assert set(state) == set(before) and all(torch.equal(state[k], before[k]) for k in state)
    assert "quantize.codebook.embed" in out and "quantize.embedding.weight" not in out
    assert set(out) == set(m.state_dict())


# ------------------------------------------------------------------------------------------------- MaskGIT-VQGAN

def test_maskgit_vqgan_bin_loader(tmp_path):
    torch.manual_seed(0)
    cfg = MaskGITVQGANConfig(**dict(TINY_VQGAN, channel_mult=(1, 2)))
    v = randomize(MaskGITVQGAN(cfg))
    path = tmp_path / "vqgan.bin"
    torch.save(export_state_dict(v), path)
    again = zoo.load_official("titok", path, _json(tmp_path, TINY_VQGAN))
    assert isinstance(again, MaskGITVQGAN) and again.config == cfg
    x = images(2)
    ids = again.encode(x)
    assert ids.ids.shape == (2, 64) and torch.equal(ids.ids, v.encode(x).ids)
    assert torch.equal(again.encode(x[1:]).ids, ids.ids[1:])
    y = again.decode(ids)
    assert y.shape == (2, 3, 16, 16) and float(y.min()) >= 0 and float(y.max()) <= 1
    with pytest.raises(ValueError, match="outside"):
        again.decode(torch.full((1, 64), 64))
    with pytest.raises(ValueError, match=r"\[B, 64\]"):
        again.decode(torch.zeros(1, 63, dtype=torch.long))
    # shapes alone give the architecture
    inferred = zoo.load_official("titok", path)
    assert inferred.config.channel_mult == (1, 2) and inferred.config.z_channels == 8
    state = export_state_dict(v)
    del state["decoder.conv_out.bias"]
    torch.save(state, tmp_path / "broken.bin")
    with pytest.raises(ValueError, match="decoder.conv_out.bias"):
        zoo.load_official("titok", tmp_path / "broken.bin")


def _json(tmp_path, data):
    p = tmp_path / "vqgan.json"
    p.write_text(json.dumps(data))
    return p


@pytest.mark.parametrize("kind", KINDS)
def test_training_forward_has_gradients(kind):
    m = tiny(kind).train()
    out = m(images(2))
    assert out["reconstruction"].shape == (2, 3, 16, 16)
    loss = out["reconstruction"].pow(2).mean()
    if kind == "vae":
        assert out["kl"].shape == (2,)
        loss = loss + out["kl"].mean()
    else:
        assert out["ids"].shape == (2, 5) and set(out) >= {"commitment", "codebook"}
        loss = loss + out["commitment"] + out["codebook"]
    loss.backward()
    assert m.encoder.patch_embed.weight.grad is not None and m.decoder.decoder_embed.weight.grad is not None
    assert float(m.encoder.patch_embed.weight.grad.abs().sum()) > 0
    if kind != "vae":
        assert m.quantize.codebook.embed.grad is not None
    m.eval()
    if kind != "vae":
        assert torch.equal(m(images(2))["ids"], m.encode(images(2)).ids)
