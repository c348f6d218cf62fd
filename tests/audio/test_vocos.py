"""audio/vocos.py: the shared Vocos pieces (used by WavTokenizer's decoder and TaDiCodec's vocoder)."""

import pytest
import torch
import torch.nn.functional as F

from audio.vocos import AdaLayerNorm, ConvNeXtBlock, ISTFT, ISTFTHead, VocosBackbone, as_condition_id


pytestmark = pytest.mark.usefixtures("one_thread")  # full CPU forwards: one thread is faster here


@pytest.mark.parametrize("n_fft,hop", [(16, 4), (32, 8), (24, 6), (1280, 320)])
def test_same_istft_inverts_a_same_padded_stft(n_fft, hop):
    """Frames t start at t * hop - (n_fft - hop) / 2: the "same" ISTFT gives T * hop samples and inverts them."""
    T = 20
    x = torch.randn(2, T * hop, dtype=torch.float64)
    pad = (n_fft - hop) // 2
    window = torch.hann_window(n_fft, dtype=torch.float64)
    frames = F.pad(x, (pad, pad)).unfold(-1, n_fft, hop) * window  # [B, T, n_fft]
    spec = torch.fft.rfft(frames, dim=-1).transpose(1, 2)
    istft = ISTFT(n_fft, hop).double()
    y = istft(spec)
    assert y.shape == (2, T * hop) and istft.output_length(T) == T * hop
    assert torch.allclose(y, x, atol=1e-9)


def test_center_istft_matches_torch():
    x = torch.randn(1, 800)
    spec = torch.stft(x, 64, 16, window=torch.hann_window(64), return_complex=True)
    y = ISTFT(64, 16, padding="center")(spec)
    assert torch.allclose(y, x[:, :y.shape[-1]], atol=1e-5)


def test_head_clips_magnitude_and_splits_channels():
    head = ISTFTHead(dim=4, n_fft=16, hop_length=4)
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.zero_()
        head.out.bias[:9] = 10.0  # exp(10) > 100 -> clipped
    spec = head.spectrum(torch.zeros(1, 3, 4))
    assert spec.shape == (1, 9, 3)
    assert torch.allclose(spec.abs(), torch.full((1, 9, 3), 100.0))
    assert head(torch.zeros(1, 3, 4)).shape == (1, 12)


def test_backbone_without_adanorm_uses_the_release_key_names():
    """TaDiCodec/Amphion Vocos layout: plain LayerNorms, no pos_net."""
    bb = VocosBackbone(input_channels=8, dim=16, intermediate_dim=32, num_layers=2)
    keys = set(bb.state_dict())
    assert {"embed.weight", "norm.weight", "norm.bias", "convnext.0.dwconv.weight", "convnext.0.norm.weight",
            "convnext.0.pwconv1.weight", "convnext.1.gamma", "final_layer_norm.weight"} <= keys
    assert not any(k.startswith("pos_net") for k in keys)
    assert bb(torch.randn(2, 8, 5)).shape == (2, 5, 16)
    assert torch.allclose(bb.convnext[0].gamma, torch.full((16,), 0.5))


def test_backbone_with_adanorm_and_pos_net():
    torch.manual_seed(0)
    bb = VocosBackbone(8, 32, 64, 1, adanorm_num_embeddings=3, pos_net=True).eval()
    with torch.no_grad():
        bb.norm.scale.weight.normal_()
    keys = set(bb.state_dict())
    assert {"norm.scale.weight", "norm.shift.weight", "pos_net.2.q.weight", "pos_net.5.weight",
            "pos_net.0.norm1.weight", "convnext.0.norm.scale.weight"} <= keys
    x = torch.randn(2, 8, 7)
    both = bb(x, torch.tensor([0, 2]))
    with torch.no_grad():
        assert torch.allclose(both[0:1], bb(x[0:1], 0), atol=1e-5)  # per-item condition ids [B]
        assert torch.allclose(both[1:2], bb(x[1:2], 2), atol=1e-5)
    assert not torch.allclose(bb(x, 0), bb(x, 2))


def test_attention_block_matches_the_explicit_formula():
    torch.manual_seed(0)
    bb = VocosBackbone(4, 32, 8, 1, pos_net=True).eval()
    attn = bb.pos_net[2]
    x = torch.randn(1, 32, 9)
    h = attn.norm(x)
    q, k, v = attn.q(h), attn.k(h), attn.v(h)
    w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * 32 ** -0.5, dim=2)
    ref = x + attn.proj_out(torch.bmm(v, w.transpose(1, 2)))
    assert torch.allclose(attn(x), ref, atol=1e-5)


def test_convnext_and_adanorm_shapes_and_errors():
    block = ConvNeXtBlock(8, 16, 0.1, adanorm_num_embeddings=2)
    with pytest.raises(ValueError, match="condition id"):
        block(torch.randn(1, 8, 5))
    assert block(torch.randn(1, 8, 5), torch.tensor([1])).shape == (1, 8, 5)
    assert ConvNeXtBlock(8, 16, None).gamma is None
    ln = AdaLayerNorm(2, 8)
    assert torch.allclose(ln(torch.randn(1, 3, 8), torch.tensor([0])).mean(-1), torch.zeros(1, 3), atol=1e-5)
    with pytest.raises(ValueError, match="lie in"):
        as_condition_id(2, 2)
    with pytest.raises(TypeError):
        as_condition_id(0.5, 2)
    with pytest.raises(ValueError, match="expects"):
        VocosBackbone(8, 16, 32, 1)(torch.randn(1, 7, 5))
    with pytest.raises(ValueError, match="padding"):
        ISTFT(16, 4, padding="valid")
    with pytest.raises(ValueError, match="groups"):
        VocosBackbone(8, 20, 32, 1, pos_net=True)
