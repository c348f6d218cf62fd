"""The WavTokenizer registry entries (hub_configs/wavtokenizer-*.yaml) and loading one through the real
huggingface_hub cache lookup (offline; the parity fixture stands in for the release's files)."""

import pytest
import torch
from safetensors.torch import load_file

import zoo

RELEASES = {  # name -> (tokens/s, checkpoint file): every checkpoint the authors published
    "wavtokenizer-small-40": (40, "WavTokenizer_small_600_24k_4096.ckpt"),
    "wavtokenizer-small-75": (75, "WavTokenizer_small_320_24k_4096.ckpt"),
    "wavtokenizer-medium-speech-75": (75, "wavtokenizer_medium_speech_320_24k.ckpt"),
    "wavtokenizer-medium-speech-75-v2": (75, "wavtokenizer_medium_speech_320_24k_v2.ckpt"),
    "wavtokenizer-medium-music-audio-75": (75, "wavtokenizer_medium_music_audio_320_24k.ckpt"),
    "wavtokenizer-medium-music-audio-75-v2": (75, "wavtokenizer_medium_music_audio_320_24k_v2.ckpt"),
    "wavtokenizer-large-speech-75": (75, "wavtokenizer_large_speech_320_v2.ckpt"),
    "wavtokenizer-large-unify-40": (40, "wavtokenizer_large_unify_600_24k.ckpt"),
}


def test_every_release_is_registered():
    entries = {e.name: e for e in zoo.list_models(family="wavtokenizer") if not e.bundled}  # released only
    assert set(entries) == set(RELEASES)
    for name, (rate, ckpt) in RELEASES.items():
        e = entries[name]
        assert e.modality == "audio" and e.format == "official-lightning-ckpt"
        assert e.token_rate == rate and e.codebook_size == 4096 and e.num_codebooks == 1
        assert e.files[0].filename == ckpt and e.files[1].filename.endswith(".yaml")
        assert e.architecture["hop_length"] * rate == 24000
        assert e.architecture["n_fft"] == 4 * e.architecture["hop_length"]
        frame = "frame40" if rate == 40 else "frame75"
        assert frame in e.files[1].filename


def _fake_hub_cache(cache, repo, files, commit="0123456789abcdef0123456789abcdef01234567"):
    """A Hugging Face cache folder (models--owner--name/{refs,snapshots}) holding ``files`` at ``main``."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, target in files.items():
        (snap / name).symlink_to(target)


def test_from_pretrained_through_the_hub_cache(parity, tmp_path, monkeypatch):
    fixture = parity("wavtokenizer")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = zoo.hub_configs_schema.get_entry("wavtokenizer-small-75")
    _fake_hub_cache(tmp_path, entry.repo_id, {
        entry.files[0].filename: fixture / "WavTokenizer_tiny_320_24k_128.ckpt",
        entry.files[1].filename: fixture / "wavtokenizer_tiny_frame75_nq1_code128_dim32.yaml",
    })
    tok = zoo.from_pretrained("wavtokenizer-small-75", cache_dir=tmp_path, local_files_only=True)
    assert tok.registry_name == "wavtokenizer-small-75"
    inputs = load_file(str(fixture / "inputs.safetensors"))
    outputs = load_file(str(fixture / "outputs.safetensors"))
    assert torch.equal(tok.encode(inputs["audio"]).ids, outputs["codes"].permute(1, 0, 2))


def test_missing_release_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="WavTokenizer_small_600_24k_4096.ckpt"):
        zoo.from_pretrained("wavtokenizer-small-40", cache_dir=tmp_path, local_files_only=True)
