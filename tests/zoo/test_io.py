"""zoo.io readers and writers: conversions are reported, bad files fail naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from zoo import io as zio


def test_audio_mixdown_resample_and_round_trip(tmp_path):
    x = np.stack([np.linspace(-0.5, 0.5, 4410), np.zeros(4410)], 1).astype(np.float32)
    sf.write(str(tmp_path / "a.flac"), x, 44100)
    loaded = zio.load_audio(tmp_path / "a.flac", 24000)
    assert loaded.data.shape == (1, 2400) and loaded.rate == 24000.0 and loaded.data.dtype == torch.float32
    assert loaded.notes == ["mixed 2 channels down to mono (mean)", "resampled 44100 Hz -> 24000 Hz (soxr VHQ)"]
    same = zio.load_audio(tmp_path / "a.flac")
    assert same.rate == 44100.0 and same.data.shape == (1, 4410)
    out = zio.save_audio(tmp_path / "o" / "b.wav", loaded.data, 24000)
    assert sf.info(str(out)).samplerate == 24000 and sf.info(str(out)).frames == 2400
    with pytest.raises(ValueError, match=r"save_audio expects mono \[T\] or \[1, T\], got shape \(2, 5\)"):
        zio.save_audio(tmp_path / "c.wav", torch.zeros(2, 5), 24000)


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="cannot read .*nope.wav: no such file"):
        zio.load_audio(tmp_path / "nope.wav")
    (tmp_path / "bad.wav").write_bytes(b"RIFFjunk")
    with pytest.raises(ValueError, match="cannot read audio file .*bad.wav"):
        zio.load_audio(tmp_path / "bad.wav")
    (tmp_path / "bad.png").write_bytes(b"\x89PNGjunk")
    with pytest.raises(ValueError, match="cannot read image file .*bad.png"):
        zio.load_image(tmp_path / "bad.png")
    np.savez(tmp_path / "v.npz", frames=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"'frames' must be uint8 \[F, H, W, 3\]"):
        zio.load_video(tmp_path / "v.npz")
    np.savez(tmp_path / "w.npz", pixels=np.zeros(3))
    with pytest.raises(ValueError, match=r"has no 'frames' array \(found \['pixels'\]\)"):
        zio.load_video(tmp_path / "w.npz")
    np.savez(tmp_path / "s.npz", signal=np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"lacks \['sfreq'\]"):
        zio.load_series(tmp_path / "s.npz")
    with pytest.raises(ValueError, match="modality must be one of"):
        zio.load_item(tmp_path / "s.npz", "smell")


def test_image_video_series(tmp_path):
    Image.fromarray(np.full((5, 7), 128, np.uint8), "L").save(tmp_path / "g.png")
    img = zio.load_image(tmp_path / "g.png")
    assert img.data.shape == (3, 5, 7) and img.data.dtype == torch.uint8 and img.notes == ["converted L to RGB"]
    crop = zio.center_crop_resize(img.data, (4, 4))
    assert crop.shape == (3, 4, 4) and crop.dtype == torch.uint8
    zio.save_image(tmp_path / "o.png", torch.rand(3, 4, 6))
    assert Image.open(tmp_path / "o.png").size == (6, 4)
    frames = np.random.default_rng(0).integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    zio.save_video(tmp_path / "v.npz", torch.from_numpy(frames).permute(3, 0, 1, 2), fps=8)
    v = zio.load_video(tmp_path / "v.npz")
    assert v.data.shape == (3, 3, 4, 5) and v.rate == 8.0
    assert np.array_equal(v.data.permute(1, 2, 3, 0).numpy(), frames)
    zio.save_series(tmp_path / "e.npz", torch.randn(2, 50), 128.0, ["Fz", "Cz"])
    s = zio.load_series(tmp_path / "e.npz")
    assert s.data.shape == (2, 50) and s.rate == 128.0 and s.extra["ch_names"] == ["Fz", "Cz"]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.wav").write_bytes(b"")
    assert [p.name for p in zio.list_files(tmp_path, "audio")] == ["x.wav"]
    assert [p.name for p in zio.list_files(tmp_path, "image", recursive=False)] == ["g.png", "o.png"]
    with pytest.raises(ValueError, match="does not exist or is not a folder"):
        zio.list_files(tmp_path / "nope", "audio")
