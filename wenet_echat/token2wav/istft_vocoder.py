"""A frame-rate vocoder with an inverse-STFT head (Vocos-style) and the phase losses that train it without a GAN.

Generator (:class:`ISTFTVocoder`)
    ``embed`` (7-tap conv, n_mels -> dim) -> LayerNorm -> ``layers`` ConvNeXt blocks (depthwise ``kernel``-tap conv,
    LayerNorm, pointwise dim -> intermediate -> dim with GELU, a learned per-channel layer scale, residual) ->
    LayerNorm -> ``head`` (linear, dim -> 2 * (n_fft / 2 + 1)): log-magnitude (clamped at ``log(max_magnitude)``)
    and phase of one STFT frame per mel frame. Every layer runs at the mel frame rate (100 Hz in the mini
    recipe), not at the sample rate, so a step costs a small fraction of an upsampling HiFiGAN's and CPU training
    gets many more updates per minute. The receptive field is ``3 + layers * (kernel // 2)`` frames to each side
    plus ``n_fft / hop / 2`` frames of overlap-add.

Inverse STFT (:func:`overlap_add`)
    Frame ``f`` is centred on sample ``f * hop``, as in the token2wav mel (``MelConfig``,
    :func:`~wenet_echat.token2wav.vocoder.centred_stft`): inverse real FFT of ``n_fft`` points, times the periodic
    Hann window of ``win_length`` zero-padded to ``n_fft`` (``torch.stft``'s placement), overlap-added and divided
    by the summed squared window. ``F`` frames give exactly ``F * hop`` samples, and
    ``overlap_add(centred_stft(x))`` returns ``x`` (to float precision) because the division by the
    window envelope makes weighted overlap-add exact for any run of frames that covers every sample (the vocoder
    asks for ``win_length >= 3 * hop`` so the last samples, which only the last frames reach, are well covered).

Phase losses (:func:`phase_losses`, from APNet: Ai & Ling, 2023)
    With the anti-wrapping function ``a(x) = |x - 2 pi round(x / 2 pi)|``: instantaneous phase ``a(p - phi)``,
    group delay ``a(d_f p - d_f phi)`` (difference along frequency) and instantaneous angular frequency
    ``a(d_t p - d_t phi)`` (along time), between the predicted phase ``p`` and the phase ``phi`` of the real
    audio's STFT at the vocoder's own resolution. Each is averaged with weights proportional to the real
    magnitude, so the phase of silence and of empty bins (noise) does not dominate. Magnitude-only losses leave
    the phase free; these make it learnable by regression.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from wenet_echat.token2wav.vocoder import centred_stft, padded_window


def overlap_add(spec: torch.Tensor, hop: int, window: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`~wenet_echat.token2wav.vocoder.centred_stft` with the same (n_fft-long) ``window``:
    complex (B, n_fft / 2 + 1, F) -> waveform (B, F * hop); see the module docstring."""
    n_fft = window.numel()
    n_frames = spec.shape[-1]
    frames = torch.fft.irfft(spec, n=n_fft, dim=1) * window[None, :, None]  # (B, n_fft, F)
    total = (n_frames - 1) * hop + n_fft
    fold = dict(output_size=(1, total), kernel_size=(1, n_fft), stride=(1, hop))
    signal = F.fold(frames, **fold)[:, 0, 0]
    envelope = F.fold((window**2)[None, :, None].expand(1, n_fft, n_frames), **fold)[0, 0, 0]
    start = n_fft // 2
    return signal[:, start : start + n_frames * hop] / envelope[start : start + n_frames * hop].clamp(min=1e-8)


class ConvNeXtBlock(nn.Module):
    """Depthwise conv -> LayerNorm -> pointwise MLP (GELU) -> layer scale, with a residual connection."""

    def __init__(self, dim: int, intermediate_dim: int, kernel: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, dim, F)
        y = self.dwconv(x).transpose(1, 2)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class ISTFTVocoder(nn.Module):
    """Log-mel (B, n_mels, F) -> waveform (B, F * hop_length); see the module docstring."""

    def __init__(self, n_mels: int = 80, hop_length: int = 160, n_fft: int = 640, win_length: int | None = None,
                 dim: int = 256, intermediate_dim: int = 768, layers: int = 8, kernel: int = 7,
                 max_magnitude: float = 1000.0):
        super().__init__()
        win_length = n_fft if win_length is None else win_length
        if not 0 < hop_length <= win_length <= n_fft or n_fft % 2:
            raise ValueError(f"iSTFT vocoder needs 0 < hop_length <= win_length <= n_fft and an even n_fft, got "
                             f"hop_length {hop_length}, win_length {win_length}, n_fft {n_fft}")
        if win_length < 3 * hop_length:
            raise ValueError(f"iSTFT vocoder win_length {win_length} must be at least 3 * hop_length "
                             f"({3 * hop_length}) so that the last samples of an output lie well inside a window")
        if kernel % 2 == 0 or layers < 1:
            raise ValueError(f"iSTFT vocoder needs an odd kernel and >= 1 layer, got kernel {kernel}, "
                             f"layers {layers}")
        if max_magnitude <= 0:
            raise ValueError(f"iSTFT vocoder max_magnitude must be > 0, got {max_magnitude}")
        self.n_mels = n_mels
        self.hop = hop_length
        self.n_fft = n_fft
        self.win_length = win_length
        self.log_max = math.log(max_magnitude)
        self.register_buffer("window", padded_window(n_fft, win_length), persistent=False)
        self.embed = nn.Conv1d(n_mels, dim, 7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim, intermediate_dim, kernel, 1.0 / layers)
                                    for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, n_fft + 2)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    def log_magnitude_and_phase(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, bins, F) each: the log-magnitude (clamped) and phase the head predicts for each mel frame."""
        x = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        out = self.head(self.final_norm(x.transpose(1, 2))).transpose(1, 2)
        log_mag, phase = out.split(self.bins, dim=1)
        return log_mag.clamp(max=self.log_max), phase

    def synthesize(self, log_mag: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """Waveform (B, F * hop) of a predicted log-magnitude and phase."""
        mag = torch.exp(log_mag)
        wav = overlap_add(torch.complex(mag * torch.cos(phase), mag * torch.sin(phase)), self.hop, self.window)
        return wav if self.training else wav.clamp(-1.0, 1.0)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.synthesize(*self.log_magnitude_and_phase(mel))

    def real_spectrum(self, wav: torch.Tensor) -> torch.Tensor:
        """The STFT of real audio at this vocoder's resolution, frame for frame with its output."""
        return centred_stft(wav, self.hop, self.window)


def anti_wrap(x: torch.Tensor) -> torch.Tensor:
    """``|x - 2 pi round(x / 2 pi)|``: the distance of a phase difference from the nearest multiple of 2 pi."""
    return torch.abs(x - 2 * math.pi * torch.round(x / (2 * math.pi)))


def phase_losses(phase: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
    """Magnitude-weighted instantaneous phase, group delay and instantaneous frequency losses (module docstring).

    ``phase``: predicted phase (B, bins, F); ``real``: complex STFT of the real audio, same shape.
    """
    if phase.shape != real.shape:
        raise ValueError(f"predicted phase {tuple(phase.shape)} and real spectrum {tuple(real.shape)} differ")
    target = torch.angle(real)
    weight = real.abs()
    weight = weight / weight.mean(dim=(1, 2), keepdim=True).clamp(min=1e-8)

    def mean(err: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (err * w).sum() / w.sum().clamp(min=1e-8)

    w_f = torch.minimum(weight[:, 1:], weight[:, :-1])
    w_t = torch.minimum(weight[..., 1:], weight[..., :-1])
    return {
        "ip": mean(anti_wrap(phase - target), weight),
        "gd": mean(anti_wrap(phase.diff(dim=1) - target.diff(dim=1)), w_f),
        "iaf": mean(anti_wrap(phase.diff(dim=2) - target.diff(dim=2)), w_t),
    }
