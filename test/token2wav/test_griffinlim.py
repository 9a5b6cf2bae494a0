"""Griffin-Lim: STFT inversion, magnitude reconstruction (spectral convergence) and the mel -> wave path."""

from __future__ import annotations

import pytest
import torch

from test.token2wav.fixtures import SR, voiced
from wenet_echat.token2wav.griffinlim import GriffinLimVocoder, griffin_lim, istft, mel_to_linear, spectral_convergence
from wenet_echat.token2wav.vocoder import MelConfig, log_mel, magnitude, mel_basis, stft

MEL = MelConfig(sample_rate=SR, n_fft=1024, hop_length=160, win_length=640, n_mels=80)


def signal() -> torch.Tensor:
    t = torch.arange(SR) / SR
    chirp = 0.3 * torch.sin(2 * torch.pi * (200 * t + 900 * t**2))
    return torch.from_numpy(voiced(1.0, 140.0)) + chirp


def test_istft_inverts_stft_and_keeps_the_length():
    x = signal()
    spec = stft(x, MEL)
    assert spec.shape == (513, SR // 160)
    y = istft(spec, MEL)
    assert y.shape == (SR // 160 * 160,)
    torch.testing.assert_close(y[:-512], x[: y.numel() - 512], rtol=1e-4, atol=1e-4)


def test_griffin_lim_reconstructs_a_known_magnitude():
    x = signal()
    mag = magnitude(stft(x, MEL))
    wav = griffin_lim(mag, MEL, n_iter=60)
    assert wav.shape == (mag.shape[-1] * 160,)
    sc = spectral_convergence(wav, mag, MEL)
    assert sc < 0.15, sc
    assert sc < 0.5 * spectral_convergence(griffin_lim(mag, MEL, n_iter=0), mag, MEL)
    # deterministic for a seed, different for another initial phase
    torch.testing.assert_close(griffin_lim(mag, MEL, n_iter=3, seed=1), griffin_lim(mag, MEL, n_iter=3, seed=1))


def test_mel_to_linear_and_the_mel_round_trip():
    x = signal()
    mel = log_mel(x, MEL)
    lin = mel_to_linear(mel, MEL)
    assert lin.shape == (513, mel.shape[-1]) and (lin >= 0).all()
    # the pseudo-inverse is consistent: projecting back onto the mel basis gives the mel again (where it is above
    # the log floor)
    back = torch.log(torch.clamp(mel_basis(MEL) @ lin, min=1e-5))
    assert (back - mel).abs().mean() < 0.3
    wav = GriffinLimVocoder(MEL, n_iter=32)(mel)
    assert wav.shape == (mel.shape[-1] * 160,)
    err = (log_mel(wav, MEL) - mel).abs().mean()
    assert err < 0.5, err
    with pytest.raises(ValueError, match="80 mel bins"):
        mel_to_linear(torch.zeros(40, 10), MEL)
    with pytest.raises(ValueError, match="momentum"):
        griffin_lim(lin, MEL, momentum=1.0)
