"""The token2wav mel front end, a HiFiGAN-style vocoder, its discriminators and its losses.

Mel definition (shared by the flow target, the vocoder input, Griffin-Lim and every loss here)
    :class:`MelConfig`: periodic Hann window of ``win_length`` zero-padded to ``n_fft``, centred STFT (reflect
    padding of ``n_fft // 2``), magnitude (not power), Slaney mel filterbank from 0 Hz to ``sample_rate / 2``
    (:func:`wenet_echat.audio.features.mel_filters`), natural log floored at ``log_floor`` (1e-5). The last STFT
    frame is dropped, so ``n`` samples give exactly ``n // hop_length`` frames, frame ``f`` centred on sample
    ``f * hop_length``, and a vocoder upsampling by ``hop_length`` turns ``F`` frames into ``F * hop_length``
    samples. Mini: 16 kHz, n_fft 1024, window 640, hop 160 (100 frames/s, 4 per 25 Hz token). Paper: 22.05 kHz,
    n_fft 1024, window 1024, hop 256 like CosyVoice, which differs in two details: its frames are padded by
    ``(n_fft - hop) / 2`` and not centred (a half-hop shift) and its filterbank stops at 8 kHz.

Generator (:class:`HiFiGANGenerator`)
    ``conv_pre`` (7-tap) -> for each upsampling rate: activation, ``ups.i`` (transposed conv, stride = rate,
    ``(kernel - rate)`` even so the length is exactly ``L * rate``), then the mean of ``len(resblock_kernel_sizes)``
    residual blocks (``resblocks.*``, HiFiGAN type 1: per dilation ``act -> dilated conv -> act -> conv`` + skip)
    -> activation -> ``conv_post`` (7-tap, one channel) -> tanh. Channels halve at every upsampling. Activations are
    leaky ReLU or Snake (``x + sin^2(alpha x) / alpha``, as in CosyVoice's HiFT); module names follow HiFT, so its
    ``conv_pre``/``ups``/``resblocks`` weights have a place here (see :mod:`wenet_echat.token2wav.cosyvoice`).
    Weight normalisation uses ``torch.nn.utils.parametrizations.weight_norm``.

Training losses
    ``regression`` mode (CPU warm start, no discriminator): L1 between log-mels of generated and real audio plus a
    multi-resolution STFT loss (spectral convergence + L1 of log magnitudes). ``gan`` mode: least-squares GAN
    losses of a multi-period (periods 2, 3, 5, 7, 11) and a multi-scale (3 scales, average pooling) discriminator,
    feature matching, and the mel L1 weighted 45 as in HiFiGAN.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from wenet_echat.audio.features import mel_filters

# ----------------------------------------------------------------------------------------------- mel front end


@dataclass(frozen=True)
class MelConfig:
    """The log-mel spectrogram of the token2wav models (see the module docstring)."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 160
    win_length: int = 640
    n_mels: int = 80
    log_floor: float = 1e-5

    def __post_init__(self) -> None:
        if not 0 < self.hop_length <= self.win_length <= self.n_fft:
            raise ValueError(f"mel config needs 0 < hop_length <= win_length <= n_fft, got {self}")
        if self.n_mels < 1 or self.sample_rate < 1:
            raise ValueError(f"mel config needs positive n_mels and sample_rate, got {self}")

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, conf: dict[str, Any] | None) -> MelConfig:
        try:
            return cls(**(conf or {}))
        except TypeError as e:
            raise TypeError(f"bad mel config {conf}: {e}") from None


def padded_window(n_fft: int, win_length: int, device: torch.device | None = None) -> torch.Tensor:
    """Periodic Hann window of ``win_length`` centred in ``n_fft`` points (where ``torch.stft`` puts it)."""
    left = (n_fft - win_length) // 2
    return F.pad(torch.hann_window(win_length, device=device), (left, n_fft - win_length - left))


@functools.lru_cache(maxsize=8)
def _analysis_consts(cfg: MelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Window (n_fft, zero-padded) and filterbank (n_mels, bins) of a config, built once."""
    window = padded_window(cfg.n_fft, cfg.win_length)
    fb = torch.from_numpy(np.array(mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels)))
    return window, fb


def stft_window(cfg: MelConfig, device: torch.device | None = None) -> torch.Tensor:
    return _analysis_consts(cfg)[0].to(device or "cpu")


def mel_basis(cfg: MelConfig, device: torch.device | None = None) -> torch.Tensor:
    return _analysis_consts(cfg)[1].to(device or "cpu")


def centred_stft(wav: torch.Tensor, hop_length: int, window: torch.Tensor) -> torch.Tensor:
    """Complex STFT (..., n_fft / 2 + 1, n // hop) of (..., n) samples, n_fft = ``len(window)``: frame ``f``
    centred on sample ``f * hop`` (reflect padding), the last frame dropped."""
    n_fft = window.numel()
    shape = wav.shape
    flat = wav.reshape(-1, shape[-1])
    pad_mode = "reflect" if shape[-1] > n_fft // 2 else "constant"
    spec = torch.stft(flat, n_fft, hop_length, window=window, center=True, pad_mode=pad_mode,
                      return_complex=True)[..., :-1]
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def stft(wav: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """Complex STFT (..., bins, n // hop) of (..., n) samples with the config's window and centring."""
    return centred_stft(wav, cfg.hop_length, stft_window(cfg, wav.device))


def magnitude(spec: torch.Tensor) -> torch.Tensor:
    """|spec| with a tiny floor so the gradient stays finite at zero."""
    return torch.sqrt(spec.real.square() + spec.imag.square() + 1e-9)


def log_mel(wav: torch.Tensor | np.ndarray, cfg: MelConfig) -> torch.Tensor:
    """Log-mel spectrogram (..., n_mels, n // hop_length) of float samples (..., n)."""
    wav = torch.as_tensor(wav, dtype=torch.float32)
    mag = magnitude(stft(wav, cfg))
    mel = torch.matmul(mel_basis(cfg, wav.device), mag)
    return torch.log(torch.clamp(mel, min=cfg.log_floor))


def mel_frames_for_samples(n_samples: int, cfg: MelConfig) -> int:
    return n_samples // cfg.hop_length


# ----------------------------------------------------------------------------------------------- generator


class Snake(nn.Module):
    """Snake activation ``x + sin^2(alpha x) / alpha`` with one learned ``alpha`` per channel (input (B, C, T))."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.view(1, -1, 1)
        return x + torch.sin(alpha * x).square() / (alpha + 1e-9)


def make_activation(name: str, channels: int, slope: float) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(slope)
    if name == "snake":
        return Snake(channels)
    raise ValueError(f"vocoder activation must be 'leaky_relu' or 'snake', got '{name}'")


def _maybe_wn(module: nn.Module, enabled: bool) -> nn.Module:
    return _weight_norm(module) if enabled else module


def _same_padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock(nn.Module):
    """HiFiGAN type-1 residual block: for each dilation ``x += conv2(act(conv1_d(act(x))))``."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], activation: str = "leaky_relu",
                 slope: float = 0.1, weight_norm: bool = True):
        super().__init__()
        self.convs1 = nn.ModuleList(
            _maybe_wn(nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_same_padding(kernel_size, d)),
                      weight_norm) for d in dilations)
        self.convs2 = nn.ModuleList(
            _maybe_wn(nn.Conv1d(channels, channels, kernel_size, padding=_same_padding(kernel_size)), weight_norm)
            for _ in dilations)
        self.activations1 = nn.ModuleList(make_activation(activation, channels, slope) for _ in dilations)
        self.activations2 = nn.ModuleList(make_activation(activation, channels, slope) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            x = x + c2(a2(c1(a1(x))))
        return x


class HiFiGANGenerator(nn.Module):
    """Log-mel (B, n_mels, F) -> waveform (B, F * hop) in [-1, 1]; see the module docstring."""

    def __init__(self, n_mels: int = 80, channels: int = 128, upsample_rates: Sequence[int] = (5, 4, 4, 2),
                 upsample_kernel_sizes: Sequence[int] = (11, 8, 8, 4),
                 resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
                 resblock_dilations: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
                 activation: str = "leaky_relu", lrelu_slope: float = 0.1, weight_norm: bool = True):
        super().__init__()
        if len(upsample_rates) != len(upsample_kernel_sizes):
            raise ValueError(f"upsample_rates {list(upsample_rates)} and upsample_kernel_sizes "
                             f"{list(upsample_kernel_sizes)} must have the same length")
        for u, k in zip(upsample_rates, upsample_kernel_sizes):
            if k < u or (k - u) % 2:
                raise ValueError(f"upsample kernel {k} for rate {u}: need kernel >= rate and (kernel - rate) even")
        if channels % (2 ** len(upsample_rates)):
            raise ValueError(f"vocoder channels {channels} must be divisible by 2**{len(upsample_rates)}")
        if len(resblock_kernel_sizes) != len(resblock_dilations):
            raise ValueError("resblock_kernel_sizes and resblock_dilations must have the same length")
        self.n_mels = n_mels
        self.hop = int(np.prod(upsample_rates))
        self.num_kernels = len(resblock_kernel_sizes)
        self.conv_pre = _maybe_wn(nn.Conv1d(n_mels, channels, 7, padding=3), weight_norm)
        self.ups = nn.ModuleList()
        self.up_acts = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        ch = channels
        for u, k in zip(upsample_rates, upsample_kernel_sizes):
            self.up_acts.append(make_activation(activation, ch, lrelu_slope))
            self.ups.append(_maybe_wn(nn.ConvTranspose1d(ch, ch // 2, k, u, padding=(k - u) // 2), weight_norm))
            ch //= 2
            for rk, rd in zip(resblock_kernel_sizes, resblock_dilations):
                self.resblocks.append(ResBlock(ch, rk, rd, activation, lrelu_slope, weight_norm))
        self.post_act = make_activation(activation, ch, 0.01)
        self.conv_post = _maybe_wn(nn.Conv1d(ch, 1, 7, padding=3), weight_norm)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)
        for i, (act, up) in enumerate(zip(self.up_acts, self.ups)):
            x = up(act(x))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            x = sum(block(x) for block in blocks) / self.num_kernels
        return torch.tanh(self.conv_post(self.post_act(x))).squeeze(1)


# ----------------------------------------------------------------------------------------------- discriminators


def _width(c: int, width: float) -> int:
    """Channels scaled by ``width``, a multiple of 16 (so every group count used below divides it)."""
    return max(16, int(round(c * width / 16)) * 16)


class PeriodDiscriminator(nn.Module):
    """HiFiGAN's period discriminator: the wave folded into (T / p, p) and 2-D convs along time."""

    def __init__(self, period: int, width: float = 1.0):
        super().__init__()
        self.period = period
        chans = [1] + [_width(c, width) for c in (32, 128, 512, 1024, 1024)]
        self.convs = nn.ModuleList(
            _weight_norm(nn.Conv2d(cin, cout, (5, 1), (3 if i < 4 else 1, 1), padding=(2, 0)))
            for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])))
        self.conv_post = _weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, t = wav.shape
        pad = (-t) % self.period
        x = F.pad(wav, (0, pad), mode="reflect" if pad < t else "constant")
        return _conv_stack(self.convs, self.conv_post, x.view(b, 1, -1, self.period))


def _conv_stack(convs: nn.ModuleList, post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A discriminator's conv stack: leaky-ReLU convs, then the output conv; returns (scores, feature maps)."""
    fmaps = []
    for conv in convs:
        x = F.leaky_relu(conv(x), 0.1)
        fmaps.append(x)
    x = post(x)
    fmaps.append(x)
    return x.flatten(1), fmaps


class ScaleDiscriminator(nn.Module):
    """HiFiGAN's scale discriminator: grouped strided 1-D convs over the (possibly pooled) wave."""

    LAYERS = ((128, 15, 1, 1), (128, 41, 2, 4), (256, 41, 2, 16), (512, 41, 4, 16), (1024, 41, 4, 16),
              (1024, 41, 1, 16), (1024, 5, 1, 1))  # (channels, kernel, stride, groups)

    def __init__(self, width: float = 1.0):
        super().__init__()
        self.convs = nn.ModuleList()
        cin = 1
        for c, k, s, g in self.LAYERS:
            cout = _width(c, width)
            self.convs.append(_weight_norm(nn.Conv1d(cin, cout, k, s, groups=g if cin % g == 0 else 1,
                                                     padding=(k - 1) // 2)))
            cin = cout
        self.conv_post = _weight_norm(nn.Conv1d(cin, 1, 3, padding=1))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return _conv_stack(self.convs, self.conv_post, wav.unsqueeze(1))


class VocoderDiscriminator(nn.Module):
    """Multi-period + multi-scale discriminator; ``forward(wav)`` gives per-discriminator (score, feature maps)."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), n_scales: int = 3, width: float = 1.0):
        super().__init__()
        self.period_discs = nn.ModuleList(PeriodDiscriminator(p, width) for p in periods)
        self.scale_discs = nn.ModuleList(ScaleDiscriminator(width) for _ in range(n_scales))

    def forward(self, wav: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        outs = [d(wav) for d in self.period_discs]
        x = wav
        for i, d in enumerate(self.scale_discs):
            if i:
                x = F.avg_pool1d(x.unsqueeze(1), 4, 2, padding=2).squeeze(1)
            outs.append(d(x))
        return outs


def discriminator_loss(real: list[tuple[torch.Tensor, list]], fake: list[tuple[torch.Tensor, list]]) -> torch.Tensor:
    """Least-squares loss pushing real scores to 1 and fake scores to 0 (summed over discriminators)."""
    return sum(torch.mean((1 - r) ** 2) + torch.mean(f**2) for (r, _), (f, _) in zip(real, fake))


def generator_adv_loss(fake: list[tuple[torch.Tensor, list]]) -> torch.Tensor:
    return sum(torch.mean((1 - f) ** 2) for f, _ in fake)


def feature_matching_loss(real: list[tuple[torch.Tensor, list]], fake: list[tuple[torch.Tensor, list]]) -> torch.Tensor:
    """L1 between discriminator feature maps of real (detached) and generated audio, times 2 as in HiFiGAN."""
    total = sum(torch.mean(torch.abs(r.detach() - g)) for (_, fr), (_, fg) in zip(real, fake) for r, g in zip(fr, fg))
    return 2.0 * total


# ----------------------------------------------------------------------------------------------- regression losses


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over resolutions (n_fft, hop, win) of spectral convergence + L1 of log magnitudes."""

    def __init__(self, resolutions: Sequence[Sequence[int]] = ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200))):
        super().__init__()
        self.resolutions = [tuple(int(v) for v in r) for r in resolutions]
        for n_fft, hop, win in self.resolutions:
            if not 0 < hop <= win <= n_fft:
                raise ValueError(f"bad STFT resolution (n_fft {n_fft}, hop {hop}, win {win})")

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        total = fake.new_zeros(())
        for n_fft, hop, win in self.resolutions:
            window = torch.hann_window(win, device=fake.device)
            specs = [magnitude(torch.stft(x, n_fft, hop, win, window=window, return_complex=True))
                     for x in (fake, real)]
            sc = torch.linalg.norm(specs[1] - specs[0]) / torch.linalg.norm(specs[1]).clamp(min=1e-7)
            mag = F.l1_loss(torch.log(specs[0].clamp(min=1e-5)), torch.log(specs[1].clamp(min=1e-5)))
            total = total + sc + mag
        return total / len(self.resolutions)


def mel_l1(fake_wav: torch.Tensor, real_mel: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """L1 between the log-mel of generated audio and a target log-mel (frames cropped to the shorter)."""
    fake_mel = log_mel(fake_wav, cfg)
    n = min(fake_mel.shape[-1], real_mel.shape[-1])
    return F.l1_loss(fake_mel[..., :n], real_mel[..., :n])

