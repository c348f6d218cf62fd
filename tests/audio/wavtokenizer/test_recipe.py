"""WavTokenizer's GAN recipe runs on the shared training loop (tiny model, a few steps on real speech)."""

import json

import pytest
import torch

from audio.wavtokenizer.recipe import WavTokenizerRecipe, WavTokenizerRecipeConfig
from zoo.train import TrainConfig, fit

from .test_model import small_config


class _SmallDiscRecipe(WavTokenizerRecipe):
    """The recipe with fewer sub-discriminators (same classes and losses) so a CPU test stays quick."""

    def build_aux_modules(self):
        from audio.discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator

        n = self.config.model.adanorm_num_embeddings
        mods = {"mpd": MultiPeriodDiscriminator(periods=(2, 3), num_embeddings=n),
                "mrd": MultiResolutionDiscriminator(resolutions=((512, 128),), num_embeddings=n)}
        if self.config.use_dac_discriminator and self.config.train_dac_discriminator:
            mods["dac"] = self._dac()
        return mods

    def _dac(self):
        from audio.discriminators import DACDiscriminator

        return DACDiscriminator(periods=(2,), windows=(512,))


def _recipe(**kw):
    model = small_config(backbone_dim=32, pos_net_groups=32, ratios=(8, 5, 4, 2), hop_length=320, n_fft=1280,
                         vq_kmeans_iters=2)
    cfg = WavTokenizerRecipeConfig(model=model, segment_samples=1920, **kw)
    train = TrainConfig(max_steps=2, batch_size=2, log_every=1, eval_every=2, checkpoint_every=2, holdout_files=1,
                        seed=1, utilization_warning=0.0)
    return _SmallDiscRecipe(cfg, train)


class _RecordingRecipe(_SmallDiscRecipe):
    """Keeps a copy of every module's weights as built (the run's initial weights)."""

    def _keep(self, mods):
        self.initial = {**getattr(self, "initial", {}),
                        **{n: {k: v.detach().clone() for k, v in m.state_dict().items()} for n, m in mods.items()}}
        return mods

    def build_model(self):
        return self._keep({"model": super().build_model()})["model"]

    def build_aux_modules(self):
        return self._keep(super().build_aux_modules())

    def build_frozen_modules(self):
        return self._keep(super().build_frozen_modules())


def _recording(**kw):
    r = _recipe(**kw)
    return _RecordingRecipe(r.config, r.train)


def _moved(before, after):
    return [k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, after[k])]


@pytest.mark.slow
def test_recipe_trains_on_real_speech(shared_data, tmp_path):
    speech = shared_data("audio", "speech")
    out = tmp_path / "run"
    r = _recording()
    fit(r, speech, out, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r_ for r_ in rows if r_.get("split") == "train"]
    assert len(train_rows) == 2 and all(torch.isfinite(torch.tensor(r_["loss"])) for r_ in train_rows)
    assert {"d_loss", "mel_loss", "commit_loss"} <= set(train_rows[-1])
    assert all(r_["d_loss"] > 0 and r_["mel_loss"] > 0 for r_ in train_rows)
    # the codebook is logged over the window: its ids, the fraction of the 16 codes used, and the perplexity
    for r_ in train_rows:
        assert r_["codebook_ids"] == 2 * 1920 / 320  # batch 2 x 6 frames
        assert 1 / 16 <= r_["utilization"] <= 1 and 1 <= r_["perplexity"] <= 16 * r_["utilization"] + 1e-6
    evals = [r_ for r_ in rows if r_.get("split") == "eval"]
    assert [e["step"] for e in evals] == [0, 2] and all(e["recon_loss"] > 0 for e in evals)
    # every trained module moved: the generator, each discriminator (including DAC's), and the codebook
    state = torch.load(out / "checkpoints" / "step-00000002" / "state.pt", weights_only=True)["modules"]
    assert sorted(state) == ["dac", "model", "mpd", "mrd"]
    for name in state:
        assert _moved(r.initial[name], state[name]), f"{name} did not train"
    assert "quantizer.codebook.embed" in _moved(r.initial["model"], state["model"])


@pytest.mark.slow
def test_a_frozen_dac_discriminator_keeps_its_weights_while_the_others_train(shared_data, tmp_path):
    """``train_dac_discriminator: false`` (the released code's behaviour): the DAC discriminator is a frozen module
    of the loop (not DDP-wrapped, not optimised) and keeps its initial weights; the others train."""
    r = _recording(train_dac_discriminator=False)
    assert "dac" not in r.build_aux_modules() and "dac" in r.build_frozen_modules()
    r = _recording(train_dac_discriminator=False)
    out = tmp_path / "run"
    fit(r, shared_data("audio", "speech"), out, progress=False)
    state = torch.load(out / "checkpoints" / "step-00000002" / "state.pt", weights_only=True)
    assert sorted(state["modules"]) == ["dac", "model", "mpd", "mrd"]
    assert not _moved(r.initial["dac"], state["modules"]["dac"])
    for name in ("model", "mpd", "mrd"):
        assert _moved(r.initial[name], state["modules"][name]), name
    # the discriminator optimiser holds the MPD and MRD parameters only
    group = state["optimizers"]["disc"]["param_groups"][0]["params"]
    assert len(group) == sum(1 for n in ("mpd", "mrd") for _ in r.build_aux_modules()[n].parameters())
    info = json.loads((out / "training.json").read_text())
    assert any("DAC discriminator frozen" in n for n in info["notes"])


def test_one_bf16_mixed_precision_training_step_on_cpu(shared_data):
    """The GPU mixed-precision path, exercised on the CPU (accelerate's bf16 autocast): one full GAN step."""
    from accelerate import Accelerator

    from zoo.train import StepContext

    from accelerate.state import AcceleratorState

    r = _recipe()
    # accelerate keeps one process-wide state; earlier tests set it up in float32
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        acc = Accelerator(cpu=True, mixed_precision="bf16")
        torch.manual_seed(0)
        modules = {"model": r.build_model(), **r.build_aux_modules()}
        opts = r.build_optimizers(modules)
        prepared = acc.prepare(*modules.values(), *opts.values())
        ctx = StepContext(acc, dict(zip(modules, prepared[:len(modules)])),
                          dict(zip(opts, prepared[len(modules):])), {}, r.train)
        before = {k: v.detach().clone() for k, v in modules["model"].state_dict().items()}
        dtypes = []
        hook = modules["model"].head.out.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
        try:
            logs = r.training_step(ctx, {"x": _speech_batch(shared_data, 1920)})
        finally:
            hook.remove()
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert dtypes == [torch.bfloat16]  # autocast was on
    assert all(torch.isfinite(torch.tensor(float(v))) for k, v in logs.items() if k != "codebook")
    assert _moved(before, modules["model"].state_dict())


def test_recipe_forward_and_config_checks():
    r = _recipe(use_dac_discriminator=False)
    model = r.build_model()
    model.train()
    y, q = model(0.1 * torch.randn(2, 1, 960))  # k-means initialises the codebook on this first batch
    assert y.shape == (2, 1, 960) and "commitment" in q.losses and model.quantizer.initted
    with pytest.raises(ValueError, match="segment_samples"):
        WavTokenizerRecipeConfig(model=small_config(), segment_samples=3)
    with pytest.raises(ValueError, match="forward expects"):
        model(torch.zeros(2, 2, 960))


def test_warmup_options_validated():
    for field, bad in [("discriminator_start", -1), ("quantizer_start", 1.5), ("warmup_steps", True),
                       ("mpd_periods", [2, 0]), ("period_channels", "16"), ("dac_windows", [512.0])]:
        with pytest.raises(ValueError, match=field):
            WavTokenizerRecipeConfig(model=small_config(), segment_samples=960, **{field: bad})
    cfg = WavTokenizerRecipeConfig(model=small_config(), segment_samples=960, mpd_periods=[2, 3],
                                   period_channels=[4, 8, 8], dac_periods=[], dac_windows=[256])
    mods = WavTokenizerRecipe(cfg, TrainConfig(max_steps=1)).build_aux_modules()
    assert len(mods["mpd"].discriminators) == 2 and len(mods["dac"].discriminators) == 1
    # the requested widths are the ones built: far fewer parameters than the default widths
    from audio.discriminators import MultiPeriodDiscriminator

    small = sum(p.numel() for p in mods["mpd"].parameters())
    default = sum(p.numel() for p in MultiPeriodDiscriminator((2, 3), num_embeddings=4).parameters())
    assert small * 100 < default


def test_quantize_false_bypasses_the_codebook():
    r = _recipe()
    model = r.build_model()
    model.train()
    x = 0.1 * torch.randn(2, 1, 960)
    y, q = model(x, quantize=False)
    assert y.shape == (2, 1, 960) and q.ids.numel() == 0 and not q.losses and q.stats is None
    assert not model.quantizer.initted  # no k-means on a bypassed batch
    y.abs().mean().backward()
    assert all(p.grad is not None for p in model.encoder.parameters())  # the encoder trains through the bypass


@pytest.mark.slow
def test_generator_warmup_leaves_discriminators_alone(shared_data, tmp_path):
    """Before discriminator_start the discriminators are neither run nor updated; before quantizer_start the
    codebook stays uninitialised; after it the codebook is k-means initialised and ids are used."""
    speech = shared_data("audio", "speech")
    r = _recipe(discriminator_start=3, quantizer_start=1, warmup_steps=2)
    r.train.max_steps = 2
    r.train.checkpoint_every = 1
    out = tmp_path / "run"
    fit(r, speech, out, progress=False)
    state1 = torch.load(out / "checkpoints" / "step-00000001" / "state.pt", weights_only=True)
    state2 = torch.load(out / "checkpoints" / "step-00000002" / "state.pt", weights_only=True)
    for name in ("mpd", "mrd", "dac"):
        for k, v in state2["modules"][name].items():
            assert torch.equal(v, state1["modules"][name][k]), f"{name}.{k} changed during the warm-up"
    assert not bool(state1["modules"]["model"]["quantizer.codebook.initted"])
    assert bool(state2["modules"]["model"]["quantizer.codebook.initted"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r_ for r_ in rows if r_.get("split") == "train"]
    assert "d_loss" not in train_rows[0] and "utilization" in train_rows[-1]


def _speech_batch(shared_data, samples=6400):
    import soundfile as sf

    files = sorted(shared_data("audio", "speech").glob("*.wav"))[:4]
    return torch.stack([torch.from_numpy(sf.read(str(f), dtype="float32")[0][4000:4000 + samples])
                        for f in files])[:, None]


def test_lsuv_init_gives_unit_variance_layers_and_a_latent_that_follows_the_input(shared_data):
    from audio.wavtokenizer.model import SConv1d
    from audio.wavtokenizer.recipe import lsuv_init

    torch.manual_seed(0)
    model = _recipe().build_model()
    x = _speech_batch(shared_data)
    before = model.encoder(x).std(dim=-1).mean().item()
    directions = {n: p.clone() for n, p in model.encoder.named_parameters() if n.endswith("original1")}
    measured = lsuv_init(model.encoder, x)
    convs = [m for m in model.encoder.modules() if isinstance(m, SConv1d)]
    assert len(measured) == len(convs) > 5
    outs = []
    hooks = [c.register_forward_hook(lambda m, i, o: outs.append(o.std(dim=(0, 2)).mean().item())) for c in convs]
    with torch.no_grad():
        z = model.encoder(x)
    for h in hooks:
        h.remove()
    assert outs[-1] == pytest.approx(1.0, rel=1e-3)  # the last layer is rescaled after all the others
    assert all(0.5 < s < 2.0 for s in outs), outs
    # the default init shrinks the variance layer after layer: the latent barely varies over time before
    after = z.std(dim=-1).mean().item()
    assert after > 20 * before, (before, after)
    for n, p in model.encoder.named_parameters():  # only the gains changed
        if n.endswith("original1"):
            assert torch.equal(p, directions[n])


def test_encoder_init_option(shared_data, tmp_path):
    with pytest.raises(ValueError, match="encoder_init"):
        WavTokenizerRecipeConfig(model=small_config(), segment_samples=960, encoder_init="xavier")
    r = _recipe(encoder_init="lsuv", discriminator_start=5, quantizer_start=5)
    r.train.max_steps = 1
    r.train.checkpoint_every = 1
    ref = _recipe(discriminator_start=5, quantizer_start=5)
    ref.train.max_steps = 1
    ref.train.checkpoint_every = 1
    fit(r, shared_data("audio", "speech"), tmp_path / "lsuv", progress=False)
    fit(ref, shared_data("audio", "speech"), tmp_path / "default", progress=False)
    key = "encoder.model.0.conv.parametrizations.weight.original0"
    g_lsuv = torch.load(tmp_path / "lsuv" / "checkpoints" / "step-00000001" / "state.pt",
                        weights_only=True)["modules"]["model"][key]
    g_ref = torch.load(tmp_path / "default" / "checkpoints" / "step-00000001" / "state.pt",
                       weights_only=True)["modules"]["model"][key]
    # the first conv's gains were rescaled by the init (one optimiser step moves them by ~lr only)
    assert (g_lsuv - g_ref).abs().mean() > 10 * r.config.lr


def test_lsuv_is_not_applied_over_a_warm_started_encoder(shared_data, tmp_path):
    base = _recipe(encoder_init="lsuv", discriminator_start=5, quantizer_start=5)
    base.train.max_steps = 1
    base.train.checkpoint_every = 1
    fit(base, shared_data("audio", "speech"), tmp_path / "base", progress=False)
    ft = _recipe(encoder_init="lsuv", discriminator_start=5, quantizer_start=5, lr=0.0)
    ft.train.max_steps = 1
    ft.train.checkpoint_every = 1
    fit(ft, shared_data("audio", "speech"), tmp_path / "ft", progress=False, init=tmp_path / "base")
    from safetensors.torch import load_file

    a = load_file(tmp_path / "base" / "model.safetensors")
    b = load_file(tmp_path / "ft" / "model.safetensors")
    key = "encoder.model.0.conv.parametrizations.weight.original0"
    assert torch.equal(a[key], b[key])  # at lr 0 a re-run of LSUV would be the only change
    notes = json.loads((tmp_path / "ft" / "training.json").read_text())["notes"]
    assert any("lsuv not applied" in n for n in notes)
