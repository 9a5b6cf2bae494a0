"""Griffin-Lim: a training-free mel -> wave path (baseline and fallback for the neural vocoder).

1. log-mel -> mel magnitudes (``exp``) -> linear-frequency magnitudes with the pseudo-inverse of the mel
   filterbank of :class:`~wenet_echat.token2wav.vocoder.MelConfig`, clamped at 0;
2. fast Griffin-Lim (Perraudin et al. 2013): alternate ``istft`` and ``stft`` (``torch.stft``/``torch.istft`` with
   the same window, hop and centring as the mel front end), keep the target magnitude and the rebuilt phase, with
   momentum (0.99 by default; 0 gives classic Griffin-Lim). The initial phase is random from ``seed`` (or zero),
   so the output is deterministic.

The front end drops the last STFT frame (``n // hop`` frames for ``n`` samples); the inverse appends a copy of the
last frame and trims to ``frames * hop`` samples, so lengths match the neural vocoder exactly.
"""

from __future__ import annotations

import functools

import torch

from wenet_echat.token2wav.vocoder import MelConfig, magnitude, mel_basis, stft, stft_window


@functools.lru_cache(maxsize=8)
def _inverse_basis(cfg: MelConfig) -> torch.Tensor:
    return torch.linalg.pinv(mel_basis(cfg).double()).float()


def mel_to_linear(logmel: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """Linear magnitudes (..., n_fft // 2 + 1, F) from a log-mel (..., n_mels, F)."""
    if logmel.shape[-2] != cfg.n_mels:
        raise ValueError(f"expected {cfg.n_mels} mel bins in dim -2, got shape {tuple(logmel.shape)}")
    mel = torch.exp(logmel.float())
    return torch.matmul(_inverse_basis(cfg).to(mel.device), mel).clamp_(min=0.0)


def istft(spec: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """Inverse of :func:`~wenet_echat.token2wav.vocoder.stft`: (..., bins, F) complex -> (..., F * hop) samples."""
    shape = spec.shape
    flat = spec.reshape(-1, *shape[-2:])
    flat = torch.cat([flat, flat[..., -1:]], dim=-1)  # the frame the front end dropped
    wav = torch.istft(flat, cfg.n_fft, cfg.hop_length, window=stft_window(cfg, spec.device), center=True,
                      length=shape[-1] * cfg.hop_length)
    return wav.reshape(*shape[:-2], wav.shape[-1])


def griffin_lim(mag: torch.Tensor, cfg: MelConfig, n_iter: int = 32, momentum: float = 0.99,
                seed: int | None = 0) -> torch.Tensor:
    """Waveform (..., F * hop) whose STFT magnitude approximates ``mag`` (..., bins, F)."""
    if n_iter < 0 or not 0.0 <= momentum < 1.0:
        raise ValueError(f"griffin_lim needs n_iter >= 0 and 0 <= momentum < 1, got {n_iter}, {momentum}")
    mag = mag.float()
    if seed is None:
        angles = torch.ones_like(mag, dtype=torch.complex64)
    else:
        gen = torch.Generator().manual_seed(seed)
        phase = torch.rand(mag.shape, generator=gen) * (2 * torch.pi)
        angles = torch.polar(torch.ones_like(phase), phase).to(mag.device)
    prev = torch.zeros_like(angles)
    for _ in range(n_iter):
        rebuilt = stft(istft(mag * angles, cfg), cfg)
        angles = rebuilt - prev * (momentum / (1 + momentum)) if momentum else rebuilt
        angles = angles / angles.abs().clamp(min=1e-16)
        prev = rebuilt
    return istft(mag * angles, cfg)


def spectral_convergence(wav: torch.Tensor, ref_mag: torch.Tensor, cfg: MelConfig) -> float:
    """``|| ref - |STFT(wav)| ||_F / || ref ||_F`` (0 is perfect)."""
    est = magnitude(stft(wav, cfg))
    n = min(est.shape[-1], ref_mag.shape[-1])
    return float(torch.linalg.norm(ref_mag[..., :n] - est[..., :n]) / torch.linalg.norm(ref_mag[..., :n]))


class GriffinLimVocoder:
    """Callable log-mel (..., n_mels, F) -> waveform (..., F * hop); a drop-in for the neural vocoder."""

    def __init__(self, mel: MelConfig, n_iter: int = 32, momentum: float = 0.99, seed: int | None = 0):
        self.mel = mel
        self.n_iter = n_iter
        self.momentum = momentum
        self.seed = seed

    @torch.inference_mode()
    def __call__(self, logmel: torch.Tensor) -> torch.Tensor:
        return griffin_lim(mel_to_linear(logmel, self.mel), self.mel, self.n_iter, self.momentum, self.seed)
