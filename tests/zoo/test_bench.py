import json
import shutil

import pytest
import torch

from zoo import bench

from .toy_tokenizers import ToyAudio, ToyAudioConfig, ToyImage, ToyImageConfig, ToySeries, ToySeriesConfig


@pytest.fixture(autouse=True)
def _no_lpips_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def _check_outputs(out, results):
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["models"].keys() == results["models"].keys()
    md = (out / "results.md").read_text()
    html = (out / "report.html").read_text()
    for name, m in results["models"].items():
        assert name in md and name in html
        assert m["figures"], "every model gets figures"
        for f in m["figures"]:
            assert (out / "figures" / f).is_file()
            assert f"figures/{f}" in html
    assert on_disk["versions"]["torch"] == torch.__version__.split("+")[0] or on_disk["versions"]["torch"]


def test_bench_audio_images_eeg(shared_data, tmp_path):
    audio = bench.run([ToyAudio(ToyAudioConfig())], shared_data("audio/speech"), out=tmp_path / "a", limit=2,
                      metrics=["si_sdr", "mel_distance", "pesq_wb", "stoi"], progress=False)
    m = audio["models"]["toy-audio"]
    assert m["items"] == 2 and not m["errors"]
    assert m["metrics"]["si_sdr"]["n"] == 2 and m["metrics"]["si_sdr"]["mean"] > 5
    assert 1.0 <= m["metrics"]["pesq_wb"]["mean"] <= 4.7
    assert 0 < m["codebook"]["utilization"][0] <= 1
    assert m["codebook"]["entropy_coded_bitrate"] <= m["codebook"]["nominal_bitrate"]
    assert m["throughput"]["encode_items_per_s"] > 0 and "encode_rtf" in m["throughput"]
    _check_outputs(tmp_path / "a", audio)

    img = bench.run([ToyImage(ToyImageConfig())], shared_data("image/256"), out=tmp_path / "i", limit=2,
                    progress=False)
    m = img["models"]["toy-image"]
    assert m["metrics"]["psnr"]["mean"] > 20 and 0 < m["metrics"]["ssim"]["mean"] <= 1
    assert "alexnet-owt-7be5be79.pth" in m["unavailable"]["lpips"]
    assert "lpips" in (tmp_path / "i" / "results.md").read_text()
    _check_outputs(tmp_path / "i", img)

    eeg = bench.run([ToySeries(ToySeriesConfig())], shared_data("eeg"), out=tmp_path / "e", limit=2, progress=False)
    m = eeg["models"]["toy-series"]
    assert m["metrics"]["channel_correlation"]["mean"] > 0.9
    _check_outputs(tmp_path / "e", eeg)


def test_bench_resumes_from_item_cache_and_records_bad_files(shared_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    src = shared_data("audio/speech")
    for name in ("en_real_arctic_a0007.wav", "en_real_arctic_a0009.wav"):
        shutil.copy(src / name, data / name)
    (data / "broken.wav").write_bytes(b"RIFF not really a wav")
    tok = ToyAudio(ToyAudioConfig())
    out = tmp_path / "out"
    first = bench.run([tok], data, out=out, metrics=["si_sdr"], figures=0, progress=False)
    m = first["models"]["toy-audio"]
    assert m["items"] == 2
    assert [e["item"] for e in m["errors"]] == ["broken.wav"]
    # an interrupted run continues from the per-item cache: a cached value is reused, not recomputed
    cached = sorted((out / "items" / "toy-audio").glob("en_real_arctic_a0007*.json"))
    assert len(cached) == 1
    rec = json.loads(cached[0].read_text())
    rec["metrics"]["si_sdr"] = 123.0
    cached[0].write_text(json.dumps(rec))
    second = bench.run([tok], data, out=out, metrics=["si_sdr"], figures=0, progress=False)
    vals = second["models"]["toy-audio"]["metrics"]["si_sdr"]
    assert vals["n"] == 2 and vals["mean"] > 60


def test_bench_rejects_bad_arguments(tmp_path, shared_data):
    tok = ToyAudio(ToyAudioConfig())
    with pytest.raises(ValueError, match="non-empty list"):
        bench.run([], shared_data("audio/speech"), out=tmp_path)
    with pytest.raises(ValueError, match="unknown metrics"):
        bench.run([tok], shared_data("audio/speech"), out=tmp_path, metrics=["nope"])
    with pytest.raises(ValueError, match="no audio files"):
        bench.run([tok], shared_data("eeg"), out=tmp_path)
    with pytest.raises(ValueError, match="limit"):
        bench.run([tok], shared_data("audio/speech"), out=tmp_path, limit=0)


class _TextAware(ToyAudio):
    """Needs the transcript at decode time, like TaDiCodec."""

    def _encode(self, wav, lengths=None, text=None):
        tokens = super()._encode(wav, lengths)
        if text is not None:
            tokens.metadata["text"] = text[0]
        return tokens

    def _decode(self, tokens):
        if "text" not in tokens.metadata:
            raise ValueError("needs the transcript")
        return super()._decode(tokens)


def test_bench_feeds_transcripts_to_text_aware_codecs(shared_data, tmp_path):
    tsv = tmp_path / "t.tsv"
    tsv.write_text("# comment\nen_real_arctic_a0007.wav\tAnd you always want to see it.\n")
    tok = _TextAware(ToyAudioConfig())
    res = bench.run([tok], shared_data("audio/speech"), out=tmp_path / "o", limit=2, metrics=["si_sdr"],
                    figures=0, progress=False, transcripts=tsv)
    m = res["models"]["toy-audio"]
    assert m["items"] == 1  # arctic_a0007 has a transcript, arctic_a0009 does not
    assert [e["item"] for e in m["errors"]] == ["en_real_arctic_a0009.wav"]
    assert "needs the transcript" in m["errors"][0]["error"]
    assert bench.load_transcripts({"a.wav": "x"}) == {"a.wav": "x"}
    bad = tmp_path / "bad.tsv"
    bad.write_text("no tab here\n")
    with pytest.raises(ValueError, match="bad.tsv:1"):
        bench.load_transcripts(bad)
