"""Mel front end, HiFiGAN generator lengths, regression training, discriminators and losses."""

from __future__ import annotations

import pytest
import torch

from test.token2wav.fixtures import MEL, SR, vocoder_clip
from wenet_echat.token2wav.vocoder import (
    HiFiGANGenerator,
    MelConfig,
    MultiResolutionSTFTLoss,
    Snake,
    VocoderDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adv_loss,
    log_mel,
    mel_l1,
)

TINY = {"n_mels": 20, "channels": 16, "upsample_rates": (8, 5, 4), "upsample_kernel_sizes": (16, 11, 8),
        "resblock_kernel_sizes": (3,), "resblock_dilations": ((1, 3),)}


@pytest.mark.parametrize("n", [1, 159, 160, 1000, 16000])
def test_log_mel_gives_n_over_hop_frames(n):
    wav = torch.randn(n) * 0.1
    mel = log_mel(wav, MEL)
    assert mel.shape == (20, n // 160)
    assert torch.isfinite(mel).all() and (mel >= torch.log(torch.tensor(1e-5)) - 1e-6).all()
    assert log_mel(torch.stack([wav, wav]), MEL).shape == (2, 20, n // 160)


def test_log_mel_tracks_the_spectrum():
    t = torch.arange(SR) / SR
    low, high = log_mel(torch.sin(2 * torch.pi * 300 * t), MEL), log_mel(torch.sin(2 * torch.pi * 5000 * t), MEL)
    assert low.mean(1).argmax() < high.mean(1).argmax()
    assert abs(float(log_mel(torch.zeros(SR), MEL).max()) - float(torch.log(torch.tensor(1e-5)))) < 1e-4


def test_mel_config_validation():
    with pytest.raises(ValueError, match="hop_length <= win_length <= n_fft"):
        MelConfig(n_fft=256, win_length=400)
    with pytest.raises(TypeError, match="bad mel config"):
        MelConfig.from_dict({"hop": 160})
    assert MelConfig().frame_rate == 100.0


@pytest.mark.parametrize("frames", [1, 7, 32])
def test_generator_output_is_frames_times_hop(frames):
    gen = HiFiGANGenerator(**TINY)
    assert gen.hop == 160
    wav = gen(torch.randn(2, 20, frames))
    assert wav.shape == (2, frames * 160)
    assert wav.abs().max() <= 1.0


def test_generator_config_errors_and_snake():
    with pytest.raises(ValueError, match="kernel >= rate and \\(kernel - rate\\) even"):
        HiFiGANGenerator(**{**TINY, "upsample_kernel_sizes": (15, 11, 8)})
    with pytest.raises(ValueError, match="same length"):
        HiFiGANGenerator(**{**TINY, "upsample_rates": (8, 5)})
    with pytest.raises(ValueError, match="activation"):
        HiFiGANGenerator(**TINY, activation="relu")
    snake_gen = HiFiGANGenerator(**TINY, activation="snake")
    assert any(k.endswith("activations1.0.alpha") for k in snake_gen.state_dict())
    snake = Snake(3)
    x = torch.tensor([[[0.0], [1.0], [-2.0]]])
    torch.testing.assert_close(snake(x), x + torch.sin(x) ** 2)
    plain = HiFiGANGenerator(**TINY, weight_norm=False)
    assert "conv_pre.weight" in plain.state_dict()
    assert "conv_pre.parametrizations.weight.original0" in HiFiGANGenerator(**TINY).state_dict()


def test_regression_loss_falls():
    torch.manual_seed(0)
    gen = HiFiGANGenerator(**TINY)
    wav, mel, stft = vocoder_clip()
    opt = torch.optim.Adam(gen.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        fake = gen(mel)
        loss = mel_l1(fake, mel, MEL) + stft(fake, wav)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses


def test_stft_loss_is_zero_for_identical_signals():
    wav = torch.randn(2, 4000)
    stft = MultiResolutionSTFTLoss()
    assert float(stft(wav, wav)) < 1e-6
    assert float(stft(wav * 0.5, wav)) > 0.1
    with pytest.raises(ValueError, match="bad STFT resolution"):
        MultiResolutionSTFTLoss([[256, 300, 256]])


def test_discriminators_and_gan_losses():
    disc = VocoderDiscriminator(periods=(2, 3), n_scales=2, width=0.0625)
    real, fake = torch.randn(2, 3200) * 0.3, torch.randn(2, 3200) * 0.3
    out_r, out_f = disc(real), disc(fake)
    assert len(out_r) == 4
    for score, fmaps in out_r:
        assert score.dim() == 2 and score.shape[0] == 2 and len(fmaps) >= 6
    d = discriminator_loss(out_r, out_f)
    g = generator_adv_loss(out_f)
    fm = feature_matching_loss(out_r, out_f)
    assert all(torch.isfinite(x) and x > 0 for x in (d, g, fm))
    assert feature_matching_loss(out_r, out_r).item() == 0.0
    # one discriminator step lowers its loss on the same batch
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    before = d.item()
    for _ in range(3):
        loss = discriminator_loss(disc(real), disc(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert discriminator_loss(disc(real), disc(fake)).item() < before
