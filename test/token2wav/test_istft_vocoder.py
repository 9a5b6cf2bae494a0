"""iSTFT vocoder: exact overlap-add inverse, output lengths, phase losses, training, registry, streaming."""

from __future__ import annotations

import math

import pytest
import torch

from test.token2wav.fixtures import MEL, tiny_model, tokens, vocoder_clip, voiced
from wenet_echat.token2wav import VOCODER_NETS, ISTFTVocoder
from wenet_echat.token2wav.istft_vocoder import anti_wrap, overlap_add, phase_losses
from wenet_echat.token2wav.vocoder import centred_stft, mel_l1, padded_window

TINY = {"n_mels": 20, "hop_length": 160, "n_fft": 512, "dim": 32, "intermediate_dim": 64, "layers": 2, "kernel": 5}
TINY_T2W = {"vocoder_type": "istft", "vocoder": {"n_fft": 512, "dim": 16, "intermediate_dim": 32, "layers": 2,
                                                 "kernel": 3}}


@pytest.mark.parametrize(("n_fft", "win", "n"), [(640, 640, 16000), (1024, 640, 4800), (512, 480, 1600)])
def test_overlap_add_inverts_the_centred_stft(n_fft, win, n):
    wav = torch.randn(2, n) * 0.3
    window = padded_window(n_fft, win)
    spec = centred_stft(wav, 160, window)
    assert spec.shape == (2, n_fft // 2 + 1, n // 160)
    torch.testing.assert_close(overlap_add(spec, 160, window), wav, atol=1e-5, rtol=1e-5)
    # weighted overlap-add is exact for any run of frames: frames 3..7 give samples 480..1279
    torch.testing.assert_close(overlap_add(spec[..., 3:8], 160, window), wav[:, 480:1280], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("frames", [1, 7, 32])
def test_output_is_frames_times_hop_and_bounded_at_inference(frames):
    voc = ISTFTVocoder(**TINY)
    with torch.no_grad():
        voc.head.bias[: voc.bins].fill_(6.0)  # loud enough to clip
    voc.eval()
    wav = voc(torch.randn(2, 20, frames))
    assert wav.shape == (2, frames * 160) and wav.abs().max() <= 1.0
    voc.train()
    assert voc(torch.randn(1, 20, frames)).abs().max() > 1.0  # no clipping in training (gradients pass)
    log_mag, phase = voc.log_magnitude_and_phase(torch.randn(1, 20, frames))
    assert log_mag.shape == phase.shape == (1, 257, frames) and log_mag.max() <= math.log(1000.0) + 1e-6


def test_config_errors():
    with pytest.raises(ValueError, match="at least 3 \\* hop_length"):
        ISTFTVocoder(**{**TINY, "win_length": 320})
    with pytest.raises(ValueError, match="odd kernel"):
        ISTFTVocoder(**{**TINY, "kernel": 4})
    with pytest.raises(ValueError, match="hop_length <= win_length <= n_fft"):
        ISTFTVocoder(**{**TINY, "win_length": 600})
    with pytest.raises(ValueError, match="even n_fft"):
        ISTFTVocoder(**{**TINY, "n_fft": 513, "win_length": 480})


def test_phase_losses():
    real = centred_stft(torch.from_numpy(voiced(0.3, 140.0)).unsqueeze(0), 160, padded_window(512, 512))
    exact = torch.angle(real)
    zero = phase_losses(exact + 2 * math.pi, real)  # a whole turn is no error
    assert all(float(v) < 1e-4 for v in zero.values()), zero
    noisy = phase_losses(torch.rand_like(exact) * 2 * math.pi, real)
    assert all(float(v) > 0.5 for v in noisy.values()), noisy  # random phase: ~pi/2 on average
    # a constant offset leaves group delay and instantaneous frequency unchanged
    shifted = phase_losses(exact + 1.0, real)
    assert float(shifted["ip"]) == pytest.approx(1.0, abs=1e-3) and float(shifted["gd"]) < 1e-4
    # errors where the real spectrum is silent do not count
    silent = real.clone()
    silent[:, 100:] = 0
    wrong_high = exact.clone()
    wrong_high[:, 100:] += 2.0
    assert float(phase_losses(wrong_high, silent)["ip"]) < 1e-4
    assert float(anti_wrap(torch.tensor(2 * math.pi - 0.1))) == pytest.approx(0.1, abs=1e-5)
    with pytest.raises(ValueError, match="differ"):
        phase_losses(exact[..., 1:], real)


def test_regression_with_phase_losses_learns_a_clip():
    torch.manual_seed(0)
    voc = ISTFTVocoder(**TINY)
    wav, mel, stft = vocoder_clip()
    opt = torch.optim.Adam(voc.parameters(), lr=3e-3)
    first = last = None
    for _ in range(60):
        log_mag, phase = voc.log_magnitude_and_phase(mel)
        fake = voc.synthesize(log_mag, phase)
        ph = phase_losses(phase, voc.real_spectrum(wav))
        loss = mel_l1(fake, mel, MEL) + stft(fake, wav) + sum(ph.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else (loss.item(), ph["iaf"].item())
        last = (loss.item(), ph["iaf"].item())
    assert last[0] < 0.6 * first[0] and last[1] < first[1], (first, last)


def test_registry_builds_it_with_the_mel_hop():
    assert {"hifigan", "istft"} <= set(VOCODER_NETS.names())
    voc = VOCODER_NETS.build("istft", {"n_fft": 512}, mel=MEL)
    assert isinstance(voc, ISTFTVocoder) and voc.hop == 160 and voc.n_mels == 20
    with pytest.raises(ValueError, match="upsamples by 320"):
        tiny_model(vocoder_type="istft", vocoder={"hop_length": 320, "n_fft": 1024})
    with pytest.raises(KeyError, match="unknown vocoder_type 'wavenet'"):
        tiny_model(vocoder_type="wavenet")


def test_token2wav_with_istft_streams_to_the_whole_length():
    # overlap / vocoder_context cover the vocoder's reach: 3 (embed) + 2 layers * 1 + 2 (overlap-add) frames
    stream = {"first_chunk": 6, "hop": 4, "lookahead": 2, "context": 8, "vocoder_context": 12, "overlap": 8}
    model = tiny_model(**TINY_T2W, streaming=stream)
    assert isinstance(model.vocoder, ISTFTVocoder)
    toks = tokens(37, seed=3)
    whole = model.synthesize(toks)
    streamed = torch.cat(list(model.stream([toks[i : i + 5] for i in range(0, 37, 5)])))
    assert whole.shape == streamed.shape == (model.expected_samples(37),)
    assert (streamed - whole).abs().mean() < 0.05 * whole.abs().mean() + 1e-4
