"""Every training recipe (tiny configs, real data): a run killed mid-epoch and resumed ends with exactly the weights of
an uninterrupted run, and two CPU processes (gloo, as ``accelerate launch`` starts them) with half the batch each
train the same model as one process with the whole batch. CDT / cdt-fsq have their own file
(tests/video/cdt/test_recipe_distributed.py)."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from zoo.train import TrainConfig, fit, latest_checkpoint

from .multiprocess import run_two_processes

REPO = Path(__file__).resolve().parents[2]
# tadicodec-text: the text-conditioned TaDiCodec (whole utterances + transcripts, batch 1 per process); its "batch
# size" here is the number of utterances per optimiser step, made of micro-batches of one (train.grad_accum)
RECIPES = ("wavtokenizer", "titok", "tfm", "tadicodec", "tadicodec-text", "tadicodec-vocoder", "flextok")
MODALITY = {"wavtokenizer": "audio", "tadicodec": "audio", "tadicodec-text": "audio-text",
            "tadicodec-vocoder": "audio", "titok": "image", "flextok": "image", "tfm": "eeg"}


def _without_batch_dependent_init(recipe_class):
    """The recipe with the parts that by design depend on how a batch is split turned off (see ``make_recipe``):
    codebooks start from a seeded draw instead of k-means on the first batch, dropout is off."""

    class Recipe(recipe_class):
        def build_model(self):
            from zoo.quantizers import VQ

            model = super().build_model()
            g = torch.Generator().manual_seed(7)
            for m in model.modules():
                if isinstance(m, VQ):
                    m.load_codebook(torch.randn(m.codebook_size, m.config.code_dim, generator=g) * 0.1)
                if isinstance(m, torch.nn.Dropout):
                    m.p = 0.0
            return model

    Recipe.__name__ = recipe_class.__name__
    return Recipe


def make_recipe(name: str, batch_size: int, max_steps: int, checkpoint_every: int = 100, split_invariant=False):
    """A tiny recipe of family ``name`` (no LPIPS / REPA weights, so nothing depends on downloaded files).

    ``split_invariant``: turn off what makes N processes differ from one process by design, as in the originals
    under DDP: k-means codebook init on the first (per-process) batch and dropout (test side, above), dead-code
    replacement (codes resampled from the per-process batch), TiTok's LeCam
    term (an EMA of per-process discriminator outputs) and TaDiCodec's BSQ entropy term (the code entropy of the
    per-process batch). Everything else -- data split, per-item noise, gradient averaging, loss normalisation --
    must then give one process's weights. ``tadicodec-text`` takes ``batch_size`` utterances per step as that many
    micro-batches of one (``grad_accum``): a text-conditioned run has batch 1 per process."""
    recipe = _make_recipe(name, batch_size, max_steps, checkpoint_every, split_invariant)
    if split_invariant and name in ("wavtokenizer", "tfm"):
        recipe = _without_batch_dependent_init(type(recipe))(recipe.config, recipe.train)
    return recipe


def _make_recipe(name, batch_size, max_steps, checkpoint_every, split_invariant):
    train = TrainConfig(max_steps=max_steps, batch_size=batch_size, log_every=1, eval_every=100,
                        checkpoint_every=checkpoint_every, holdout_files=0, seed=0, utilization_warning=0.0)
    if name == "wavtokenizer":
        from audio.wavtokenizer import WavTokenizerConfig
        from audio.wavtokenizer.recipe import WavTokenizerRecipe, WavTokenizerRecipeConfig

        model = WavTokenizerConfig(n_filters=4, ratios=(8, 5, 4, 2), dimension=8, codebook_size=16, backbone_dim=32,
                                   intermediate_dim=32, num_layers=1, pos_net_groups=32, n_fft=1280, hop_length=320,
                                   vq_kmeans_iters=2, vq_threshold_ema_dead_code=0 if split_invariant else 2)
        # the full discriminator set from step 0, so the adversarial and feature-matching paths are covered
        cfg = WavTokenizerRecipeConfig(model=model, segment_samples=1920, mpd_periods=[2, 3],
                                       period_channels=[4, 8, 8, 8, 8], dac_periods=[2], dac_windows=[512])
        return WavTokenizerRecipe(cfg, train)
    if name == "titok":
        from image.titok import TiTokConfig, ViTSize
        from image.titok.recipe import TiTokRecipe, TiTokRecipeConfig

        model = TiTokConfig(image_size=32, enc_patch_size=8, dec_patch_size=8, encoder=ViTSize(32, 1, 2, "custom"),
                            decoder=ViTSize(32, 1, 2, "custom"), num_latent_tokens=8, token_size=8, codebook_size=64,
                            use_l2_norm=False, is_legacy=False, finetune_decoder=False)
        cfg = TiTokRecipeConfig(model=model, lr=1e-3, discriminator_lr=1e-4, warmup_steps=1, end_lr=1e-4,
                                discriminator_start=0, discriminator_channels=32, discriminator_stages=1,
                                perceptual_weight=0.0, lecam_weight=0.0 if split_invariant else 0.001)
        return TiTokRecipe(cfg, train)
    if name == "tfm":
        from eeg.tfm import TFMConfig
        from eeg.tfm.recipe import TFMRecipe, TFMRecipeConfig

        model = TFMConfig(emb_size=16, codebook_size=32, freq_depth=1, temporal_depth=1, decoder_depth=1, num_heads=2)
        return TFMRecipe(TFMRecipeConfig(model=model, window_seconds=5.0), train)
    if name == "tadicodec":
        from audio.tadicodec import TaDiCodecConfig, VocosConfig
        from audio.tadicodec.recipe import TaDiCodecRecipe, TaDiCodecRecipeConfig

        model = TaDiCodecConfig(hidden_size=32, num_heads=2, encoder_num_layers=1, decoder_num_layers=1,
                                text_vocab_size=64, vocoder=VocosConfig(dim=32, intermediate_dim=48, num_layers=1),
                                num_steps=2, use_text_cond=False)
        return TaDiCodecRecipe(TaDiCodecRecipeConfig(model=model, segment_seconds=0.64, warmup_steps=1,
                                                     vq_loss_weight=0.0 if split_invariant else 1.0), train)
    if name == "tadicodec-text":
        from audio.tadicodec import TaDiCodecConfig, VocosConfig
        from audio.tadicodec.recipe import TaDiCodecRecipe, TaDiCodecRecipeConfig
        from tests.audio.tadicodec.conftest import TRANSCRIPTS, word_tokenizer_json

        # the word-level tokenizer of the clips' transcripts travels in the model config (no file needed)
        model = TaDiCodecConfig(hidden_size=32, num_heads=2, encoder_num_layers=1, decoder_num_layers=1,
                                text_vocab_size=96, vocoder=VocosConfig(dim=32, intermediate_dim=48, num_layers=1),
                                num_steps=2, use_text_cond=True,
                                text_tokenizer_json=word_tokenizer_json(TRANSCRIPTS.values()))
        train = TrainConfig(max_steps=max_steps, batch_size=1, grad_accum=batch_size, log_every=1, eval_every=100,
                            checkpoint_every=checkpoint_every, holdout_files=0, seed=0, utilization_warning=0.0)
        return TaDiCodecRecipe(TaDiCodecRecipeConfig(model=model, segment_seconds=4.5, warmup_steps=1,
                                                     vq_loss_weight=0.0 if split_invariant else 1.0), train)
    if name == "tadicodec-vocoder":
        from audio.tadicodec import TaDiCodecConfig, VocosConfig
        from audio.tadicodec.recipe import TaDiCodecVocoderRecipe, TaDiCodecVocoderRecipeConfig

        model = TaDiCodecConfig(hidden_size=32, num_heads=2, encoder_num_layers=1, decoder_num_layers=1,
                                text_vocab_size=64, vocoder=VocosConfig(dim=32, intermediate_dim=48, num_layers=1),
                                num_steps=2, use_text_cond=False)
        cfg = TaDiCodecVocoderRecipeConfig(model=model, segment_samples=2400, mpd_periods=[2, 3],
                                           period_channels=[4, 8, 8, 8, 8])
        return TaDiCodecVocoderRecipe(cfg, train)
    if name == "flextok":
        from image.flextok import FlexTokConfig
        from image.flextok.config import official_config
        from image.flextok.recipe import FlexTokRecipe, FlexTokRecipeConfig

        vae = {"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [8, 8],
               "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
               "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
               "norm_num_groups": 4, "sample_size": 16, "scaling_factor": 4.0}
        official = official_config(enc_dim=32, enc_depth=1, dec_dim=32, dec_depth=1, head_dim=16, n_registers=8,
                                   latent_channels=4, patch_size=(2, 2), posemb_max=(4, 4), scaling_factor=4.0,
                                   hf_hub_path=None)
        cfg = FlexTokRecipeConfig(model=FlexTokConfig.from_official(official, vae), lr=1e-3, weight_decay=0.0,
                                  keep_k_mode="pow2", cfg_dropout_prob=0.1)
        return FlexTokRecipe(cfg, train)
    raise ValueError(name)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    """Four real files per modality (the seeded crops differ per file and epoch); audio-text: the same four
    speech clips with their transcripts (<file>.txt)."""
    from tests.audio.tadicodec.conftest import TRANSCRIPTS
    from tests.conftest import SHARED

    root = tmp_path_factory.mktemp("equivalence_data")
    sources = {"audio": sorted((SHARED / "data/audio/speech").glob("*.wav"))[:4],
               "image": sorted((SHARED / "data/image/256").glob("*.png"))[:4],
               "eeg": sorted((SHARED / "data/eeg").glob("tuev_tfm_sample_*.npz"))[:4]}
    out = {}
    for modality, files in sources.items():
        if len(files) < 4:
            pytest.skip(f"shared data for {modality} not found under {SHARED / 'data'}")
        folder = root / modality
        folder.mkdir()
        for f in files:
            shutil.copyfile(f, folder / f.name)
        out[modality] = folder
    text = root / "audio-text"
    shutil.copytree(out["audio"], text)
    for f in text.glob("*.wav"):
        f.with_suffix(".txt").write_text(TRANSCRIPTS[f.name])
    out["audio-text"] = text
    return out


def _weights(out):
    from safetensors.torch import load_file

    # the vocoder recipe writes the release layout (vocoder/model.safetensors)
    f = out / "vocoder" / "model.safetensors" if (out / "vocoder").is_dir() else out / "model.safetensors"
    return load_file(str(f))


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_kill_and_resume_equals_uninterrupted(name, data_dirs, tmp_path):
    data = data_dirs[MODALITY[name]]
    full = tmp_path / "full"
    fit(make_recipe(name, 2, 4, checkpoint_every=2), data, full, progress=False)
    part = tmp_path / "part"
    s1 = fit(make_recipe(name, 2, 4, checkpoint_every=2), data, part, progress=False, stop_after=3)
    assert s1["interrupted"] and latest_checkpoint(part).name == "step-00000003"  # killed mid-epoch (2 batches)
    fit(make_recipe(name, 2, 4, checkpoint_every=2), data, part, resume=True, progress=False)
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), (name, k)


_WORKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    import torch
    torch.set_num_threads(1)
    from tests.zoo.test_recipes_equivalence import MODALITY, STEPS, make_recipe
    from zoo.train import fit
    data = {data!r}
    for name, steps in STEPS.items():
        fit(make_recipe(name, 1, steps, split_invariant=True), data[MODALITY[name]], {out!r} + "/" + name,
            progress=False)
""")

# two steps: the second batch also checks that the processes split the data as one process orders it
STEPS = {name: 2 for name in RECIPES}


@pytest.mark.slow  # one 2-process launch for all recipes + the 1-process runs
def test_two_processes_match_one_with_the_same_global_batch(data_dirs, tmp_path):
    two = tmp_path / "two"
    run_two_processes(_WORKER.format(repo=str(REPO), data={k: str(v) for k, v in data_dirs.items()}, out=str(two)))
    ratios = {}
    for name, steps in STEPS.items():
        one = tmp_path / "one" / name
        fit(make_recipe(name, 2, steps, split_invariant=True), data_dirs[MODALITY[name]], one, progress=False)
        a, b = _weights(one), _weights(two / name)
        init = make_recipe(name, 2, steps, split_invariant=True).build_model().state_dict()  # seeded: the runs' initial weights
        assert a.keys() == b.keys()
        floats = [k for k in a if a[k].is_floating_point()]
        diff = sum(float((a[k] - b[k]).abs().sum()) for k in floats) / sum(a[k].numel() for k in floats)
        moved = sum(float((a[k] - init[k].to(a[k])).abs().sum()) for k in floats) / sum(a[k].numel() for k in floats)
        ratios[name] = diff / moved
        rows = [line for line in (two / name / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
        assert len(rows) == steps, name
        assert moved > 0, name
    # Adam's first steps are ~lr * sign(grad): a weight whose gradient is at rounding level can flip sign with a
    # different batch split, so weights are compared on average relative to how far training moved them (each
    # process stepping on its own half-batch gradient gives ratios of 0.3-0.5)
    print("mean |weight difference| / mean |movement|:", {k: f"{v:.2g}" for k, v in ratios.items()})
    assert all(r < 1e-2 for r in ratios.values()), ratios


def test_item_and_step_generators():
    from zoo.train import item_generators, per_item, step_generator

    a = per_item(item_generators(0, 5, torch.tensor([7, 2])), lambda g: torch.randn(3, generator=g))
    b = per_item(item_generators(0, 5, torch.tensor([2, 7])), lambda g: torch.randn(3, generator=g))
    assert a.shape == (2, 3) and torch.equal(a[0], b[1]) and torch.equal(a[1], b[0])
    assert not torch.equal(a[0], per_item(item_generators(0, 6, torch.tensor([7])), lambda g: torch.randn(3, generator=g))[0])
    assert torch.equal(torch.rand(4, generator=step_generator(3, 9)), torch.rand(4, generator=step_generator(3, 9)))
    assert not torch.equal(torch.rand(4, generator=step_generator(3, 9)), torch.rand(4, generator=step_generator(3, 10)))
    with pytest.raises(TypeError, match="integer tensor"):
        item_generators(0, 1, torch.tensor([0.5]))
    with pytest.raises(TypeError, match="integer tensor"):
        item_generators(0, 1, [1, 2])
    with pytest.raises(ValueError, match="at least one"):
        per_item([], lambda g: torch.zeros(1))


def test_flextok_and_tadicodec_losses_reject_a_wrong_number_of_generators():
    from zoo.train import item_generators

    recipe = make_recipe("flextok", 2, 1)
    model = recipe.build_model()
    from image.flextok.recipe import flow_matching_loss

    images = torch.zeros(2, 3, 16, 16)
    with pytest.raises(ValueError, match="1 generators for a batch of 2"):
        flow_matching_loss(model, images, torch.tensor([1, 8]), torch.tensor([False, False]),
                           generators=item_generators(0, 0, torch.tensor([0])))
    from audio.tadicodec.recipe import flow_matching_losses

    core = make_recipe("tadicodec", 2, 1).build_model()
    mel = core.mel(torch.zeros(2, 4800))
    with pytest.raises(ValueError, match="3 generators for a batch of 2"):
        flow_matching_losses(core, mel, generators=item_generators(0, 0, torch.tensor([0, 1, 2])))


# a few dozen steps of the tiny configs: the held-out reconstruction loss clearly falls (the other recipes assert
# it in their own files: titok, flextok, cdt/cdt-fsq, tfm-mtp)
# recipe: (steps, required fraction of the step-0 loss, learning-rate overrides for a short run)
DECREASE = {"wavtokenizer": (40, 0.7, {"lr": 2e-3}), "tfm": (40, 0.85, {"lr": 3e-3, "final_lr": 3e-3}),
            "tadicodec": (40, 0.85, {"lr": 3e-3}), "tadicodec-text": (80, 0.85, {"lr": 3e-3}),
            "tadicodec-vocoder": (40, 0.8, {"lr": 2e-3})}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DECREASE))
def test_heldout_reconstruction_loss_decreases(name, data_dirs, tmp_path):
    import json

    steps, factor, lrs = DECREASE[name]
    recipe = make_recipe(name, 2, steps)
    for k, v in lrs.items():
        setattr(recipe.config, k, v)
    recipe.train.holdout_files = 1
    recipe.train.eval_every = steps
    out = tmp_path / "run"
    fit(recipe, data_dirs[MODALITY[name]], out, progress=False)
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "eval"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == steps
    print(name, "held-out recon_loss", evals[0]["recon_loss"], "->", evals[-1]["recon_loss"])
    assert evals[-1]["recon_loss"] < factor * evals[0]["recon_loss"], evals
