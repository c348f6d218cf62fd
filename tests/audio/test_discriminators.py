import pytest
import torch

from audio import discriminators as D
from audio import losses as L


@pytest.mark.parametrize("cls,n_sub", [(D.MultiPeriodDiscriminator, 5), (D.MultiResolutionDiscriminator, 3),
                                       (D.DACDiscriminator, 8)])
def test_discriminators_shapes_and_gradients(cls, n_sub):
    torch.manual_seed(0)
    d = cls()
    x = (0.1 * torch.randn(2, 1, 3000)).requires_grad_()
    logits, feats = d(x)
    assert len(logits) == len(feats) == n_sub
    assert all(l.shape[0] == 2 and l.ndim == 2 for l in logits)
    loss = L.hinge_generator_loss(logits) + L.feature_matching_loss(feats, feats)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_conditioning_changes_the_logits_only_when_enabled():
    torch.manual_seed(0)
    d = D.MultiPeriodDiscriminator(num_embeddings=4)
    x = 0.1 * torch.randn(2, 1, 3000)
    a, _ = d(x, torch.tensor([0, 0]))
    b, _ = d(x, torch.tensor([1, 1]))
    assert not torch.allclose(a[0], b[0])
    plain = D.MultiPeriodDiscriminator()
    assert not hasattr(plain.discriminators[0].cond.emb, "weight")


def test_adversarial_losses_have_the_stated_values():
    real, fake = [torch.full((1, 4), 2.0)], [torch.full((1, 4), -2.0)]
    assert float(L.hinge_discriminator_loss(real, fake)) == 0.0  # both outside the margin
    assert float(L.hinge_generator_loss(fake)) == pytest.approx(3.0)
    assert float(L.lsgan_discriminator_loss([torch.ones(1, 4)], [torch.zeros(1, 4)])) == 0.0
    assert float(L.lsgan_generator_loss([torch.zeros(1, 4)])) == pytest.approx(1.0)
    fr = [[torch.ones(3), torch.zeros(2)]]
    ff = [[torch.zeros(3), torch.zeros(2)]]
    assert float(L.feature_matching_loss(fr, ff)) == pytest.approx(1.0)
    assert float(L.feature_matching_loss(fr, ff, skip_last=True)) == pytest.approx(1.0)
    assert float(L.feature_matching_loss([[torch.zeros(3), torch.ones(2)]], ff, skip_last=True)) == 0.0


def test_mel_loss_is_zero_for_identical_and_ranks_noise(shared_data):
    import soundfile as sf

    wav, sr = sf.read(shared_data("audio/speech") / "en_real_arctic_a0009.wav", dtype="float32")
    x = torch.from_numpy(wav)[None, None, :24000]
    mel = L.MelLoss()
    g = torch.Generator().manual_seed(0)
    n = torch.randn(x.shape, generator=g)
    assert float(mel(x, x)) == 0.0
    assert float(mel(x, x + 0.001 * n)) < float(mel(x, x + 0.05 * n))
    with pytest.raises(ValueError, match="differ"):
        mel(x, x[..., :-1])


def test_discriminators_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B, 1, T\]"):
        D.MultiPeriodDiscriminator()(torch.zeros(2, 3000))
