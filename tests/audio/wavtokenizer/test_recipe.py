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
        from audio.discriminators import DACDiscriminator, MultiPeriodDiscriminator, MultiResolutionDiscriminator

        n = self.config.model.adanorm_num_embeddings
        mods = {"mpd": MultiPeriodDiscriminator(periods=(2, 3), num_embeddings=n),
                "mrd": MultiResolutionDiscriminator(resolutions=((512, 128),), num_embeddings=n)}
        if self.config.use_dac_discriminator:
            mods["dac"] = DACDiscriminator(periods=(2,), windows=(512,))
        return mods


def _recipe(**kw):
    model = small_config(backbone_dim=32, pos_net_groups=32, ratios=(8, 5, 4, 2), hop_length=320, n_fft=1280,
                         vq_kmeans_iters=2)
    cfg = WavTokenizerRecipeConfig(model=model, segment_samples=1920, **kw)
    train = TrainConfig(max_steps=2, batch_size=2, log_every=1, eval_every=2, checkpoint_every=2, holdout_files=1,
                        seed=1, utilization_warning=0.0)
    return _SmallDiscRecipe(cfg, train)


@pytest.mark.slow
def test_recipe_trains_on_real_speech(shared_data, tmp_path):
    speech = shared_data("audio", "speech")
    out = tmp_path / "run"
    fit(_recipe(), speech, out, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r.get("split") == "train"]
    assert train_rows and all(torch.isfinite(torch.tensor(r["loss"])) for r in train_rows)
    assert {"d_loss", "mel_loss", "commit_loss"} <= set(train_rows[-1])
    assert any(r.get("split") != "train" and "recon_loss" in r for r in rows)


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
