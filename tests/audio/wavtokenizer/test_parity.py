"""Parity with the original WavTokenizer on ../shared/parity/wavtokenizer (see its MANIFEST.md).

Token ids and features exact; audio, the mel loss and float intermediates within the MANIFEST tolerance (1e-4,
intermediates 1e-4 x max(1, max|ref|)).
"""

import shutil

import pytest
import torch
from safetensors.torch import load_file

import zoo

CKPT = "WavTokenizer_tiny_320_24k_128.ckpt"
YAML = "wavtokenizer_tiny_frame75_nq1_code128_dim32.yaml"
AUDIO_TOL = 1e-4


@pytest.fixture(scope="module")
def fixture_dir():
    from tests.conftest import _shared_subdir

    return _shared_subdir("parity", "wavtokenizer")


@pytest.fixture(scope="module")
def model(fixture_dir):
    return zoo.load_official("wavtokenizer", fixture_dir / CKPT, fixture_dir / YAML)


@pytest.fixture(scope="module")
def data(fixture_dir):
    return (load_file(str(fixture_dir / "inputs.safetensors")), load_file(str(fixture_dir / "outputs.safetensors")),
            load_file(str(fixture_dir / "intermediates.safetensors")))


def _ref_ids(codes):  # the original returns (n_q, B, T); ours is (B, n_q, T)
    return codes.permute(1, 0, 2)


def test_config_from_release(model):
    c = model.config
    assert (c.n_filters, c.dimension, c.codebook_size) == (3, 32, 128)  # fixture_overrides.json / codebook shape
    assert c.ratios == (8, 5, 4, 2) and c.hop_length == 320 and c.n_fft == 1280
    assert (c.backbone_dim, c.intermediate_dim, c.num_layers, c.adanorm_num_embeddings) == (32, 64, 2, 4)
    assert c.lstm_layers == 2 and c.vq_kmeans_iters == 12
    assert model.quantizer.initted
    assert model.spec.token_rate == 75 and model.spec.codebook_size == 128


@pytest.mark.parametrize("case,bw", [("", 0), ("_odd", 0), ("_batch2", 0), ("", 3)])
def test_parity_cases(model, data, case, bw):
    inputs, outputs, _ = data
    wav = inputs["audio" + case]
    tokens = model.encode(wav, bandwidth_id=bw)
    assert tokens.ids.shape == (wav.shape[0], 1, -(-wav.shape[-1] // 320))
    assert torch.equal(tokens.ids, _ref_ids(outputs["codes" + case]))
    feats = model.codes_to_features(tokens)
    assert torch.equal(feats, outputs["features" + case])
    audio = model.decode(tokens, bandwidth_id=bw)
    ref = outputs["audio_out" + ("_bw3" if bw == 3 else case)]
    assert audio.shape == (ref.shape[0], 1, ref.shape[1])
    err = (audio[:, 0] - ref).abs().max().item()
    assert err <= AUDIO_TOL, f"audio max-abs error {err}"


def test_bandwidth_id_as_tensor(model, data):
    inputs, outputs, _ = data
    tokens = model.encode(inputs["audio"])
    audio = model.decode(tokens, bandwidth_id=torch.tensor([3]))
    assert (audio[:, 0] - outputs["audio_out_bw3"]).abs().max().item() <= AUDIO_TOL


def test_intermediates(model, data):
    inputs, outputs, inter = data

    def close(name, got):
        ref = inter[name]
        tol = AUDIO_TOL * max(1.0, ref.abs().max().item())
        err = (got - ref).abs().max().item()
        assert err <= tol, f"{name}: max-abs error {err} > {tol}"

    close("enc_out", model.encode_latents(inputs["audio"]))
    with torch.inference_mode():
        h = model.backbone(outputs["features"], 0)
        close("bb_out", h)
        close("head_linear", model.head.out(h))


def test_mel_loss(data):
    from audio.losses import MelLoss  # the shared mel L1 the recipe trains with (WavTokenizer's settings)

    inputs, outputs, _ = data
    loss = MelLoss(sample_rate=24000)(inputs["audio"], outputs["audio_out"])
    assert abs(loss.item() - outputs["mel_loss"].item()) <= 1e-4


def test_batch_equals_single_items(model, data):
    inputs, _, _ = data
    wav = inputs["audio_batch2"]
    batched = model.encode(wav)
    for i in range(2):
        assert torch.equal(model.encode(wav[i:i + 1]).ids, batched.ids[i:i + 1])
    y = model.decode(batched)
    for i in range(2):
        assert torch.equal(model.decode(batched[i]), y[i:i + 1])


def test_checkpoint_only_and_folder(fixture_dir, model, tmp_path, data):
    inputs, outputs, _ = data
    m2 = zoo.load_official("wavtokenizer", fixture_dir / CKPT)  # shapes alone define the architecture
    assert m2.config.to_dict() | {"vq_kmeans_iters": 12} == model.config.to_dict()
    (tmp_path / CKPT).symlink_to(fixture_dir / CKPT)
    (tmp_path / YAML).symlink_to(fixture_dir / YAML)
    m3 = zoo.load_official("wavtokenizer", tmp_path)
    assert torch.equal(m3.encode(inputs["audio"]).ids, _ref_ids(outputs["codes"]))


def test_save_pretrained_roundtrip(model, data, tmp_path):
    inputs, outputs, _ = data
    model.save_pretrained(tmp_path / "wt")
    again = zoo.from_pretrained(str(tmp_path / "wt"))
    tokens = again.encode(inputs["audio"])
    assert torch.equal(tokens.ids, _ref_ids(outputs["codes"]))
    assert (again.decode(tokens)[:, 0] - outputs["audio_out"]).abs().max().item() <= AUDIO_TOL


def test_registry_entry_with_release_files(fixture_dir, data, tmp_path):
    """A hub_configs entry in the release format goes through the registry's file resolution and converter."""
    inputs, outputs, _ = data
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / CKPT).symlink_to(fixture_dir / CKPT)
    (tmp_path / "files" / YAML).symlink_to(fixture_dir / YAML)
    (tmp_path / "tiny.yaml").write_text(
        "name: wavtokenizer-tiny-fixture\nfamily: wavtokenizer\nmodality: audio\nformat: official-lightning-ckpt\n"
        "files:\n"
        f"  - {{filename: {CKPT}, local: files/{CKPT}, "
        "sha256: fd17efb3d801da59fc66d0c4f1d66d57dbd5ca7e59d79352ae119cf3e854d174}\n"
        f"  - {{filename: {YAML}, local: files/{YAML}}}\n"
        "codebook_size: 128\nnum_codebooks: 1\ntoken_rate: 75\ntoken_rate_unit: tokens/s\n")
    tok = zoo.from_pretrained("wavtokenizer-tiny-fixture", hub_configs=tmp_path)
    assert torch.equal(tok.encode(inputs["audio"]).ids, _ref_ids(outputs["codes"]))


# ---------------------------------------------------------------------------------------------- bad releases

def test_truncated_checkpoint(fixture_dir, tmp_path):
    data = (fixture_dir / CKPT).read_bytes()
    bad = tmp_path / "truncated.ckpt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot load"):
        zoo.load_official("wavtokenizer", bad)


def test_foreign_checkpoint(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"encoder.layer.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(ValueError, match="not a WavTokenizer checkpoint"):
        zoo.load_official("wavtokenizer", path)


def _state(fixture_dir):
    return torch.load(fixture_dir / CKPT, map_location="cpu", weights_only=True)


def test_unexpected_and_missing_keys(fixture_dir, tmp_path):
    ck = _state(fixture_dir)
    ck["state_dict"]["backbone.extra_layer.weight"] = torch.zeros(3)
    path = tmp_path / "extra.ckpt"
    torch.save(ck, path)
    with pytest.raises(ValueError, match="backbone.extra_layer.weight"):
        zoo.load_official("wavtokenizer", path)
    ck = _state(fixture_dir)
    ck["state_dict"]["mystery.weight"] = torch.zeros(3)
    torch.save(ck, path)
    with pytest.raises(ValueError, match="mystery.weight"):
        zoo.load_official("wavtokenizer", path)
    ck = _state(fixture_dir)
    del ck["state_dict"]["backbone.convnext.1.pwconv2.bias"]
    torch.save(ck, path)
    with pytest.raises(ValueError, match="backbone.convnext.1.pwconv2.bias"):
        zoo.load_official("wavtokenizer", path)


def test_generator_only_checkpoint(fixture_dir, tmp_path, data):
    """Training-only tensors are optional: a state dict with only the generator loads too."""
    inputs, outputs, _ = data
    sd = {k: v for k, v in _state(fixture_dir)["state_dict"].items()
          if k.startswith(("feature_extractor.encodec.encoder.", "feature_extractor.encodec.quantizer.",
                           "backbone.", "head."))}
    path = tmp_path / "gen.pt"
    torch.save(sd, path)
    m = zoo.load_official("wavtokenizer", path)
    assert torch.equal(m.encode(inputs["audio"]).ids, _ref_ids(outputs["codes"]))


def test_inited_flag_is_treated_as_initialised(fixture_dir, tmp_path, data):
    inputs, outputs, _ = data
    ck = _state(fixture_dir)
    ck["state_dict"]["feature_extractor.encodec.quantizer.vq.layers.0._codebook.inited"] = torch.zeros(1)
    path = tmp_path / "uninit.ckpt"
    torch.save(ck, path)
    with pytest.warns(UserWarning, match="uninitialised"):
        m = zoo.load_official("wavtokenizer", path)
    assert m.quantizer.initted
    m.train()  # even a training-mode forward must not re-run k-means over the stored codebook
    z = m.encode_latents(inputs["audio"]).transpose(1, 2)
    out = m.quantizer(z)
    assert torch.equal(out.ids[:, None], _ref_ids(outputs["codes"]))


def test_yaml_mismatch(fixture_dir, tmp_path):
    text = (fixture_dir / YAML).read_text().replace("dowmsamples: [8, 5, 4, 2]", "dowmsamples: [6, 5, 5, 4]")
    assert "[6, 5, 5, 4]" in text
    (tmp_path / "wrong.yaml").write_text(text)
    with pytest.raises(ValueError, match="dowmsamples"):
        zoo.load_official("wavtokenizer", fixture_dir / CKPT, tmp_path / "wrong.yaml")
    (tmp_path / "foreign.yaml").write_text("model: {class_path: x.Y, init_args: {}}\n")
    with pytest.raises(ValueError, match="feature_extractor"):
        zoo.load_official("wavtokenizer", fixture_dir / CKPT, tmp_path / "foreign.yaml")


def test_bad_paths(fixture_dir, tmp_path):
    with pytest.raises(ValueError, match="needs the release checkpoint"):
        zoo.load_official("wavtokenizer", fixture_dir / YAML)
    with pytest.raises(FileNotFoundError):
        zoo.load_official("wavtokenizer", tmp_path / "nope.ckpt")
    with pytest.raises(TypeError):
        zoo.load_official("wavtokenizer", 42)
    shutil.copy(fixture_dir / YAML, tmp_path / "x.txt")
    with pytest.raises(ValueError, match="unknown file type"):
        zoo.load_official("wavtokenizer", fixture_dir / CKPT, tmp_path / "x.txt")


# ---------------------------------------------------------------------------------------------- real speech

def test_real_speech_files_and_chunking(model, shared_data):
    """encode_file on the speech corpus; chunked encoding with 0.25 s of context reproduces the one-pass tokens
    (the figure quoted in docs/models/wavtokenizer.md; without context a few percent of tokens change)."""
    speech = shared_data("audio", "speech")
    files = sorted(speech.glob("*.wav"))[:4]
    assert files
    changed = total = 0
    for f in files:
        tokens = model.encode_file(f)
        assert tokens.metadata["source"].endswith(f.name) and tokens.metadata["family"] == "wavtokenizer"
        import soundfile as sf

        x = torch.from_numpy(sf.read(str(f), dtype="float32")[0])[None]
        assert torch.equal(model.encode(x).ids, tokens.ids)
        chunked = model.encode(x, chunk_seconds=1.0, context_seconds=0.25)
        changed += int((chunked.ids != tokens.ids).sum())
        total += tokens.ids.numel()
        assert model.decode(tokens).shape[-1] == tokens.ids.shape[-1] * 320
    assert changed == 0, f"{changed}/{total} tokens changed by chunking"
