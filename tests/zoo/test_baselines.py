"""The trivial baseline codecs: contract, bitrate bookkeeping, more bits -> better, bitrate matching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

import zoo
from zoo.baselines import (AudioBaseline, AudioBaselineConfig, ImageBaseline, ImageBaselineConfig, SeriesBaseline,
                           SeriesBaselineConfig, VideoBaseline, VideoBaselineConfig, matched_baseline)
from zoo.metrics.image import psnr


def _speech(shared_data):
    x, sr = sf.read(str(shared_data("audio", "speech") / "en_real_arctic_a0007.wav"), dtype="float32")
    assert sr == 24000
    return torch.from_numpy(x)[None]


def _image(shared_data):
    from zoo.io import center_crop_resize, load_image

    img = load_image(shared_data("image", "256") / "astronaut.png").data
    return center_crop_resize(img, (64, 64))[None].float() / 255


def test_audio_round_trip_and_bitrate(shared_data):
    x = _speech(shared_data)
    errs = []
    for bits in (3, 5, 8):
        tok = AudioBaseline(AudioBaselineConfig(rate=8000, bits=bits))
        t = tok.encode(x)
        assert t.ids.shape == (1, 1, math.ceil(x.shape[-1] * 8000 / 24000))
        assert int(t.ids.max()) < 2 ** bits and int(t.ids.min()) >= 0
        assert tok.spec.bitrate == 8000 * bits
        # the bitrate is what the ids cost: ids x bits / duration
        assert math.isclose(t.ids.numel() * bits / (x.shape[-1] / 24000), tok.spec.bitrate, rel_tol=1e-3)
        y = tok.decode(t)[..., : x.shape[-1]]
        errs.append(float((y[:, 0] - x).pow(2).mean()))
    assert errs[0] > errs[1] > errs[2]  # more bits, lower error on real speech


def test_image_more_bits_and_larger_thumbnails_are_better(shared_data):
    x = _image(shared_data)
    scores = []
    for thumb, bits in ((4, 3), (4, 8), (16, 8)):
        tok = ImageBaseline(ImageBaselineConfig(image_size=64, thumb=thumb, bits=bits))
        t = tok.encode(x)
        assert t.ids.shape == (1, 3 * thumb * thumb) and tok.spec.bitrate == 3 * thumb * thumb * bits
        y = tok.decode(t)
        assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
        scores.append(float(psnr(x, y).mean()))
    assert scores[0] < scores[1] < scores[2]


def test_video_key_frames_and_interpolation(shared_data):
    frames = np.load(shared_data("video") / "bikes_17f_128.npz")["frames"][:, :32, :32]
    x = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 255
    tok = VideoBaseline(VideoBaselineConfig(image_size=32, thumb=8, bits=8, frame_stride=4, clip_frames=17))
    t = tok.encode(x)
    assert t.ids.shape == (1, 5 * 3 * 64) == (1, tok.tokens_per_clip(17))
    y = tok.decode(t)
    assert y.shape == x.shape
    key = ImageBaseline(ImageBaselineConfig(image_size=32, thumb=8, bits=8))
    # key frames decode exactly as the image baseline does on that frame
    assert torch.allclose(y[:, :, 4], key.decode(key.encode(x[:, :, 4])), atol=1e-6)


def test_series_round_trip(shared_data):
    with np.load(shared_data("eeg") / "tuev_tfm_sample_0.npz") as d:
        x = torch.from_numpy(d["signal"])[None].float()
    errs = []
    for rate in (10.0, 50.0):
        tok = SeriesBaseline(SeriesBaselineConfig(sfreq=200.0, rate=rate, bits=8))
        t = tok.encode(x, sfreq=200.0)
        assert t.ids.shape[-1] == math.ceil(1000 * rate / 200)
        y = tok.decode(t)
        assert y.shape == x.shape
        errs.append(float((y - x).pow(2).mean()))
    assert errs[1] < errs[0]


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="bits"):
        AudioBaselineConfig(bits=0)
    with pytest.raises(ValueError, match="rate"):
        AudioBaselineConfig(rate=48000)
    with pytest.raises(ValueError, match="thumb"):
        ImageBaselineConfig(image_size=32, thumb=64)
    with pytest.raises(ValueError, match="frame_stride"):
        VideoBaselineConfig(frame_stride=0)
    with pytest.raises(ValueError, match="rate"):
        SeriesBaselineConfig(sfreq=100.0, rate=200.0)


@pytest.mark.parametrize("target", [480.0, 675.0, 900.0, 6000.0])
def test_matched_baseline_never_exceeds_and_is_close(target):
    tok = AudioBaseline(AudioBaselineConfig(rate=int(target // 3), bits=3))
    base, params = matched_baseline(tok)
    assert base.spec.bitrate <= tok.spec.bitrate and base.spec.bitrate > tok.spec.bitrate / 2
    img = ImageBaseline(ImageBaselineConfig(image_size=64, thumb=8, bits=5))
    base, params = matched_baseline(img)
    assert base.spec.bitrate <= img.spec.bitrate and params["bits"] == 8
    with pytest.raises(ValueError, match="tokens_per_clip"):
        matched_baseline(VideoBaseline(VideoBaselineConfig()), frames=17)


def test_save_and_load_round_trip(tmp_path, shared_data):
    tok = AudioBaseline(AudioBaselineConfig(rate=300, bits=6))
    tok.save_pretrained(tmp_path / "b")
    again = zoo.from_pretrained(str(tmp_path / "b"))
    x = _speech(shared_data)
    assert torch.equal(tok.encode(x).ids, again.encode(x).ids)
