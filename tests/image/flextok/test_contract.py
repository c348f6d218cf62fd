"""The tokenizer contract on small random FlexTok models: batching, prefixes, lengths, errors, persistence,
loading of release-format folders (both VAE paths, both null conditions, adaLN expansion 1/2, other patch sizes
and FSQ levels)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

import zoo
from image.flextok import FlexTok, FlexTokConfig
from image.flextok.convert import convert_state_dict, read_release


# ---------------------------------------------------------------------------------------------- basics
def test_spec_and_shapes(tiny, make_images):
    spec = tiny.spec
    assert spec.codebook_size == 64000 and spec.num_codebooks == 1
    assert spec.token_rate == 8 and spec.token_rate_unit == "tokens/image"
    assert spec.bitrate == pytest.approx(8 * math.log2(64000))
    x = make_images(3)
    tokens = tiny.encode(x)
    assert tokens.ids.shape == (3, 8) and tokens.ids.dtype == torch.int64 and tokens.lengths is None
    assert int(tokens.ids.min()) >= 0 and int(tokens.ids.max()) < 64000
    y = tiny.decode(tokens, num_steps=2, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == torch.float32 and torch.isfinite(y).all()


def test_encode_is_deterministic_and_batch_independent(tiny, make_images):
    x = make_images(4, seed=5)
    batched = tiny.encode(x).ids
    single = torch.cat([tiny.encode(x[i:i + 1]).ids for i in range(4)])
    assert torch.equal(batched, single)
    assert torch.equal(tiny.encode(x).ids, batched)
    assert torch.equal(tiny.encode(x[[2, 0]]).ids, batched[[2, 0]])  # order / neighbours never matter


def test_prefixes_are_valid_token_sequences(tiny, make_images):
    x = make_images(2)
    full = tiny.encode(x).ids
    for k in (1, 3, 8):
        assert torch.equal(tiny.encode(x, num_tokens=k).ids, full[:, :k])
        out = tiny.decode(full[:, :k], num_steps=2, generator=torch.Generator().manual_seed(1))
        assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()


def test_per_item_lengths_match_individual_decodes(tiny, make_images):
    x = make_images(3, seed=2)
    ids = tiny.encode(x).ids
    lengths = torch.tensor([2, 8, 5])
    noise = tiny.make_noise(3, torch.Generator().manual_seed(4))
    batched = tiny.decode(zoo.Tokens(ids, lengths=lengths), num_steps=3, noise=noise)
    for i, k in enumerate(lengths.tolist()):
        single = tiny.decode(ids[i:i + 1, :k], num_steps=3, noise=noise[i:i + 1])
        torch.testing.assert_close(batched[i:i + 1], single, rtol=0, atol=1e-5)
    # ids past an item's length are padding: changing them changes nothing
    other = ids.clone()
    other[0, 2:] = 7
    assert torch.equal(tiny.decode(zoo.Tokens(other, lengths=lengths), num_steps=3, noise=noise), batched)


def test_same_noise_is_bit_for_bit_repeatable_and_generator_matches_noise(tiny, make_images):
    ids = tiny.encode(make_images(2)).ids
    a = tiny.decode(ids, num_steps=3, generator=torch.Generator().manual_seed(9))
    b = tiny.decode(ids, num_steps=3, generator=torch.Generator().manual_seed(9))
    c = tiny.decode(ids, num_steps=3, noise=tiny.make_noise(2, torch.Generator().manual_seed(9)))
    assert torch.equal(a, b) and torch.equal(a, c)
    d = tiny.decode(ids, num_steps=3, generator=torch.Generator().manual_seed(10))
    assert not torch.equal(a, d)


def test_guidance_modes_and_chunking(tiny, make_images):
    ids = tiny.encode(make_images(3)).ids
    noise = tiny.make_noise(3, torch.Generator().manual_seed(0))
    apg = tiny.decode(ids, num_steps=2, noise=noise, guidance="apg", guidance_scale=3.0)
    cfg = tiny.decode(ids, num_steps=2, noise=noise, guidance="cfg", guidance_scale=3.0)
    none = tiny.decode(ids, num_steps=2, noise=noise, guidance_scale=1.0)
    assert not torch.equal(apg, cfg) and not torch.equal(apg, none)
    sched = tiny.decode(ids, num_steps=2, noise=noise, guidance="cfg", guidance_scale=lambda t: 3.0)
    assert torch.equal(sched, cfg)
    chunked = tiny.decode(ids, num_steps=2, noise=noise, guidance_scale=3.0, chunk_size=1)
    torch.testing.assert_close(chunked, apg, rtol=0, atol=1e-5)
    assert torch.equal(tiny.encode(make_images(3), chunk_size=1).ids, ids)


def test_uint8_images_map_onto_minus_one_one(tiny):
    u8 = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    assert torch.equal(tiny.encode(u8).ids, tiny.encode(u8.float() / 255.0 * 2 - 1).ids)


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("bad, exc, match", [
    (torch.zeros(3, 16, 16), ValueError, "dimensions"),
    (torch.zeros(1, 1, 16, 16), ValueError, "3 channels"),
    (torch.zeros(1, 3, 32, 32), ValueError, "16x16"),
    (torch.full((1, 3, 16, 16), float("nan")), ValueError, "NaN"),
    (torch.zeros(0, 3, 16, 16), ValueError, "empty"),
    (torch.full((1, 3, 16, 16), 2.0), ValueError, r"\[-1"),
    (torch.zeros(1, 3, 16, 16, dtype=torch.int32), TypeError, "dtype"),
    ([[0.0]], TypeError, "torch.Tensor"),
])
def test_bad_images(tiny, bad, exc, match):
    with pytest.raises(exc, match=match):
        tiny.encode(bad)


def test_bad_encode_options(tiny, make_images):
    x = make_images(1)
    with pytest.raises(ValueError, match="num_tokens"):
        tiny.encode(x, num_tokens=9)
    with pytest.raises(ValueError, match="num_tokens"):
        tiny.encode(x, num_tokens=0)
    with pytest.raises(TypeError, match="num_tokens"):
        tiny.encode(x, num_tokens=2.0)
    with pytest.raises(ValueError, match="chunk_size"):
        tiny.encode(x, chunk_size=0)


@pytest.mark.parametrize("ids, exc, match", [
    (torch.tensor([[64000]]), ValueError, "outside"),
    (torch.tensor([[-1, 3]]), ValueError, "outside"),
    (torch.zeros(1, 9, dtype=torch.long), ValueError, "at most 8"),
    (torch.zeros(1, 2, 3, dtype=torch.long), ValueError, r"\[B, k\]"),
    (torch.zeros(1, 0, dtype=torch.long), ValueError, "empty"),
    (torch.zeros(1, 2), TypeError, "integer"),
])
def test_bad_tokens(tiny, ids, exc, match):
    with pytest.raises(exc, match=match):
        tiny.decode(ids, num_steps=1)


def test_bad_decode_options(tiny):
    ids = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="num_steps"):
        tiny.decode(ids, num_steps=0)
    with pytest.raises(ValueError, match="guidance"):
        tiny.decode(ids, num_steps=1, guidance="pag")
    with pytest.raises(TypeError, match="guidance_scale"):
        tiny.decode(ids, num_steps=1, guidance_scale="7")
    with pytest.raises(ValueError, match="noise must have shape"):
        tiny.decode(ids, num_steps=1, noise=torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        tiny.decode(ids, num_steps=1, noise=torch.full((2, 4, 8, 8), float("nan")))
    with pytest.raises(TypeError, match="generator"):
        tiny.decode(ids, num_steps=1, generator=7)
    with pytest.raises(ValueError, match="lengths"):
        zoo.Tokens(ids, lengths=torch.tensor([1, 4]))


# ---------------------------------------------------------------------------------------------- persistence
def test_save_and_reload_round_trip(tiny, make_images, tmp_path):
    tiny.save_pretrained(tmp_path / "m")
    again = zoo.from_pretrained(str(tmp_path / "m"))
    assert isinstance(again, FlexTok)
    x = make_images(2)
    assert torch.equal(again.encode(x).ids, tiny.encode(x).ids)
    noise = tiny.make_noise(2, torch.Generator().manual_seed(0))
    ids = tiny.encode(x).ids
    assert torch.equal(again.decode(ids, num_steps=2, noise=noise), tiny.decode(ids, num_steps=2, noise=noise))


def test_config_round_trip_keeps_order():
    cfg = FlexTokConfig()  # the paper's main model, d18-d28
    again = FlexTokConfig.from_dict(json.loads(json.dumps(cfg.to_dict(), sort_keys=True)))
    assert [m["name"] for m in again.decoder] == [m["name"] for m in cfg.decoder]
    assert again.to_official() == cfg.to_official()
    tr = dict(cfg.find_modules("FlexTransformer", "decoder"))["dec_transformer"]
    assert tr["dim"] == 1792 and tr["depth"] == 28 and cfg.codebook_size == 64000


# ---------------------------------------------------------------------------------------------- release folders
def _write_release(model: FlexTok, folder, official, with_metadata=True, config_json=True, vae_folder=None):
    folder.mkdir(parents=True, exist_ok=True)
    if config_json:
        (folder / "config.json").write_text(json.dumps(official, indent=2))  # insertion order kept
    meta = {"_target_": "flextok.flextok_wrapper.FlexTok", **{k: str(v) for k, v in official.items()}}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"),
              metadata=meta if with_metadata else None)
    if vae_folder is not None:
        vae_folder.mkdir(parents=True, exist_ok=True)
        (vae_folder / "config.json").write_text(json.dumps(dict(model.config.autoencoder)))


@pytest.mark.parametrize("variant", [
    dict(),
    dict(nullcond="zero"),
    dict(adaLN_expansion=1),
    dict(patch_size=(1, 1), posemb_max=(8, 8)),
    dict(levels=(7, 5, 5, 5)),
])
def test_release_folder_round_trip(make_tiny, make_images, tiny_official_config, tmp_path, variant):
    model = make_tiny(seed=3, **variant)
    official = tiny_official_config(**variant)
    _write_release(model, tmp_path / "rel", official, vae_folder=None)
    # hf_hub_path null: the base VAE config + latent_channels -- not this tiny VAE, so pass it explicitly
    loaded = zoo.load_official("flextok", tmp_path / "rel", vae_config=dict(model.config.autoencoder))
    x = make_images(2)
    assert torch.equal(loaded.encode(x).ids, model.encode(x).ids)
    assert loaded.spec.codebook_size == math.prod(variant.get("levels", (8, 8, 8, 5, 5, 5)))


def test_release_with_relative_vae_path_and_metadata_only(make_tiny, make_images, tiny_official_config, tmp_path):
    model = make_tiny(seed=4)
    official = tiny_official_config(hf_hub_path="vae")
    _write_release(model, tmp_path / "rel", official, config_json=False, vae_folder=tmp_path / "rel" / "vae")
    loaded = zoo.load_official("flextok", tmp_path / "rel" / "model.safetensors")  # config from the metadata
    x = make_images(1)
    assert torch.equal(loaded.encode(x).ids, model.encode(x).ids)
    assert list(loaded.decoder.module_dict) == list(model.decoder.module_dict)


def test_null_vae_path_builds_the_base_vae(tiny_official_config):
    official = tiny_official_config(hf_hub_path=None)
    cfg = FlexTokConfig.from_official(official)
    assert cfg.autoencoder["block_out_channels"] == [128, 256, 512, 512]
    assert cfg.autoencoder["latent_channels"] == 4 and cfg.vae_downsample == 8
    assert cfg.image_size == 4 * 2 * 8


def test_unsorted_module_order_is_execution_order(make_tiny, tiny_official_config, tmp_path):
    """A config whose module_dict is alphabetised (as huggingface_hub's sort_keys would write it) runs the
    modules in that (wrong) order and fails loudly instead of silently computing something else."""
    model = make_tiny(seed=5)
    official = tiny_official_config()
    official["decoder"]["module_dict"] = dict(sorted(official["decoder"]["module_dict"].items()))
    _write_release(model, tmp_path / "rel", official)
    loaded = zoo.load_official("flextok", tmp_path / "rel", vae_config=dict(model.config.autoencoder))
    assert list(loaded.decoder.module_dict) == sorted(loaded.decoder.module_dict)
    with pytest.raises(KeyError, match="was not produced"):
        loaded.decode(torch.zeros(1, 2, dtype=torch.long), num_steps=1)


def test_disallowed_targets_are_refused(make_tiny, tiny_official_config, tmp_path):
    model = make_tiny()
    official = tiny_official_config()
    official["decoder"]["module_dict"]["dec_to_patches"]["norm_layer"] = {"_target_": "os.system",
                                                                          "_args_": ["echo hi"]}
    _write_release(model, tmp_path / "rel", official)
    with pytest.raises(ValueError, match="os.system"):
        zoo.load_official("flextok", tmp_path / "rel")
    official = tiny_official_config()
    official["encoder"]["module_dict"]["enc_posemb_module"]["_target_"] = "torch.nn.Identity"
    _write_release(model, tmp_path / "rel2", official)
    with pytest.raises(ValueError, match="torch.nn.Identity"):
        zoo.load_official("flextok", tmp_path / "rel2")


def test_unsupported_module_arguments_fail_clearly(tiny_official_config):
    official = tiny_official_config()
    official["encoder"]["module_dict"]["enc_transformer"]["rope_forward_read_key"] = "rope"
    with pytest.raises(ValueError, match="RoPE"):
        FlexTok(FlexTokConfig.from_official(official))
    official = tiny_official_config()
    official["encoder"]["module_dict"]["enc_to_latents"]["use_mup_readout"] = True
    with pytest.raises(ValueError, match="MuReadout"):
        FlexTok(FlexTokConfig.from_official(official))
    official = tiny_official_config()
    official["encoder"]["module_dict"]["enc_patch_emb"]["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        FlexTok(FlexTokConfig.from_official(official))


def test_truncated_and_foreign_checkpoints(make_tiny, tiny_official_config, tmp_path):
    model = make_tiny()
    official = tiny_official_config()
    vae = dict(model.config.autoencoder)
    _write_release(model, tmp_path / "rel", official)
    # truncated file
    data = (tmp_path / "rel" / "model.safetensors").read_bytes()
    (tmp_path / "rel" / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read"):
        zoo.load_official("flextok", tmp_path / "rel", vae_config=vae)
    # missing tensors
    state = {k: v for k, v in model.state_dict().items() if "dec_to_patches" not in k}
    save_file(state, str(tmp_path / "rel" / "model.safetensors"))
    with pytest.raises(ValueError, match="missing keys.*dec_to_patches"):
        zoo.load_official("flextok", tmp_path / "rel", vae_config=vae)
    # foreign checkpoint: a tensor the model does not have, and a wrong shape
    state = dict(model.state_dict())
    state["encoder.module_dict.enc_extra.weight"] = torch.zeros(2)
    state["encoder.module_dict.enc_register_module.registers"] = torch.zeros(9, 32)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "rel" / "model.safetensors"))
    with pytest.raises(ValueError, match="unexpected keys.*enc_extra.*shape mismatches.*registers"):
        zoo.load_official("flextok", tmp_path / "rel", vae_config=vae)
    # a config-less safetensors
    (tmp_path / "rel" / "config.json").unlink()
    with pytest.raises(ValueError, match="no FlexTok config"):
        zoo.load_official("flextok", tmp_path / "rel", vae_config=vae)
    with pytest.raises(FileNotFoundError):
        zoo.load_official("flextok", tmp_path / "nowhere" / "model.safetensors")


def test_converter_is_pure_and_strips_wrappers(tiny):
    state = {("encoder.module_dict.enc_transformer.blocks.0._checkpoint_wrapped_module.attn.wq.weight"):
             torch.ones(1), "vae.logvar": torch.zeros(()), "decoder.module_dict.x": torch.zeros(1)}
    before = dict(state)
    out = convert_state_dict(state)
    assert state == before
    assert set(out) == {"encoder.module_dict.enc_transformer.blocks.0.attn.wq.weight", "decoder.module_dict.x"}


def test_read_release_prefers_config_json_order(tmp_path, tiny_official_config, make_tiny):
    model = make_tiny()
    official = tiny_official_config()
    _write_release(model, tmp_path / "rel", official)
    cfg, tensors, folder = read_release(tmp_path / "rel")
    assert list(cfg["decoder"]["module_dict"]) == list(official["decoder"]["module_dict"])
    assert folder == tmp_path / "rel" and len(tensors) == len(model.state_dict())


# ---------------------------------------------------------------------------------------------- VAE releases
def test_standalone_vae_release(tmp_path, make_images, make_tiny):
    """flextok_vae_c* repos: a diffusers AutoencoderKL folder -> the continuous FlexTokVAE."""
    from image.flextok import FlexTokVAE

    ref = make_tiny()
    ref.vae.vae.save_pretrained(str(tmp_path / "vae"))  # config.json + diffusion_pytorch_model.safetensors
    vae = zoo.load_official("flextok", tmp_path / "vae")
    assert isinstance(vae, FlexTokVAE)
    assert vae.vae.scaling_factor == 0.5  # the VAE config's own factor
    spec = vae.spec
    assert not spec.discrete and spec.codebook_size == 0 and spec.latent_channels == 4
    x = make_images(2)
    lat = vae.encode_latents(x)
    with torch.no_grad():
        assert torch.equal(lat, torch.cat([ref.vae.vae.encode(x[i:i + 1]).latent_dist.mode() * 0.5
                                           for i in range(2)]))
    y = vae.decode_latents(lat)
    assert y.shape == x.shape
    with pytest.raises(TypeError, match="continuous"):
        vae.encode(x)
    with pytest.raises(TypeError, match="continuous"):
        vae.decode(torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="channels"):
        vae.decode_latents(torch.zeros(1, 3, 8, 8))
    vae.save_pretrained(tmp_path / "saved")
    again = zoo.from_pretrained(str(tmp_path / "saved"))
    assert isinstance(again, FlexTokVAE) and torch.equal(again.encode_latents(x), lat)


def test_docs_offline_example_runs():
    """The offline usage block of docs/models/flextok.md runs as written."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "models" / "flextok.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    offline = [b for b in blocks if "official_config" in b]
    assert len(offline) == 1
    exec(compile(offline[0], "docs/models/flextok.md", "exec"), {})


def test_main_config_matches_the_reconstructed_release_state_dict():
    """FlexTokConfig() (d18-d28) builds exactly the 648 tensors (names and shapes) of the research note's
    reconstruction of the released state_dict, on the meta device (no memory)."""
    import os
    from pathlib import Path

    from diffusers import AutoencoderKL

    from image.flextok.model import Sequential

    shared = Path(os.environ.get("TOKENZOO_SHARED", Path(__file__).resolve().parents[3].parent / "shared"))
    tsv = shared / "research" / "flextok_state_dict_d18_d28_reconstructed.tsv"
    if not tsv.is_file():
        pytest.skip(f"{tsv} not found")
    expected = {}
    for line in tsv.read_text().splitlines():
        if line.startswith("#") or line.startswith("key\t") or not line.strip():
            continue
        key, shape = line.split("\t")
        expected[key] = tuple(json.loads(shape))
    cfg = FlexTokConfig()
    with torch.device("meta"):
        enc, dec = Sequential(cfg.encoder, "encoder"), Sequential(cfg.decoder, "decoder")
        vae = AutoencoderKL.from_config({k: v for k, v in cfg.autoencoder.items() if not k.startswith("_")})
    got = {f"encoder.{k}": tuple(v.shape) for k, v in enc.state_dict().items()}
    got.update({f"decoder.{k}": tuple(v.shape) for k, v in dec.state_dict().items()})
    got.update({f"vae.vae.{k}": tuple(v.shape) for k, v in vae.state_dict().items()})
    assert len(expected) == 648
    assert got == expected
    assert sum(math.prod(s) for s in got.values()) == 2_540_882_841


def test_single_token_null_condition(tiny_official_config, make_images):
    """LearnedNullCond(replace_with_single_token=True): the unconditional pass sees ONE null register, so the
    conditional and unconditional passes run separately."""
    from image.flextok.model import LearnedNullCond

    official = tiny_official_config()
    official["decoder"]["module_dict"]["dec_latent_dropout"]["replace_with_single_token"] = True
    torch.manual_seed(0)
    vae = {"block_out_channels": [8, 8], "down_block_types": ["DownEncoderBlock2D"] * 2,
           "up_block_types": ["UpDecoderBlock2D"] * 2, "latent_channels": 4, "layers_per_block": 1,
           "norm_num_groups": 4, "scaling_factor": 0.5}
    model = FlexTok(FlexTokConfig.from_official(official, vae)).eval()
    assert model._single_null
    null = model.decoder.module_dict["dec_latent_dropout"]
    assert isinstance(null, LearnedNullCond)
    out = null({"dec_quants": torch.zeros(2, 8, 32), "eval_dropout_mask": [True, True]})["dec_quants"]
    assert out.shape == (2, 1, 32) and torch.equal(out[0, 0], null.nullcond)
    with pytest.raises(ValueError, match="all or none"):
        null({"dec_quants": torch.zeros(2, 8, 32), "eval_dropout_mask": [True, False]})
    ids = model.encode(make_images(2)).ids
    noise = model.make_noise(2, torch.Generator().manual_seed(0))
    y = model.decode(ids, num_steps=2, noise=noise, guidance_scale=3.0)
    with torch.no_grad():
        codes, keep, t = model.token_codes(ids), torch.tensor([8, 8]), torch.ones(2)
        v_c = model.velocity(noise, t, codes, keep)
        v_u = model.velocity(noise, t, codes, keep, torch.tensor([True, True]))
    assert not torch.allclose(v_c, v_u) and torch.isfinite(y).all()
