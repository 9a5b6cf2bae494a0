"""Acoustic features: Whisper log-mel (numerically equal to openai-whisper's) and Kaldi fbank."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from wenet_echat.utils.registry import Registry

FEATURES: Registry = Registry("features")


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's auditory mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), mel * f_sp)


@functools.lru_cache(maxsize=8)
def mel_filters(sample_rate: int = 16000, n_fft: int = 400, n_mels: int = 80) -> np.ndarray:
    """Triangular mel filterbank (n_mels, n_fft // 2 + 1): Slaney scale, Slaney area normalisation."""
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    out = weights.astype(np.float32)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=8)
def _whisper_consts(n_fft: int, n_mels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hann window and the transposed filterbank (bins, n_mels), built once per setting."""
    return torch.hann_window(n_fft), torch.from_numpy(np.array(mel_filters(16000, n_fft, n_mels)).T.copy())


def whisper_log_mel(wav: np.ndarray | torch.Tensor, n_mels: int = 80, n_fft: int = 400,
                    hop_length: int = 160) -> torch.Tensor:
    """Whisper's log-mel spectrogram of 16 kHz audio, time-major (frames, n_mels), without 30 s padding.

    Periodic Hann window, centred STFT with reflect padding, last frame dropped, power spectrum, mel, log10
    floored at 1e-10, dynamic range limited to 8 (log10 units) below the maximum, then (x + 4) / 4.
    """
    audio = torch.as_tensor(wav, dtype=torch.float32)
    window, filters_t = _whisper_consts(n_fft, n_mels)
    spec = torch.stft(audio, n_fft, hop_length, window=window, return_complex=True)
    power = spec.abs().square_()
    # (frames, bins) @ (bins, n_mels) gives time-major output with no transpose copy
    log_spec = torch.mm(power.T[:-1], filters_t).clamp_(min=1e-10).log10_()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return log_spec.add_(4.0).div_(4.0)


def kaldi_fbank(wav: np.ndarray | torch.Tensor, sample_rate: int = 16000, num_mel_bins: int = 80,
                frame_length: float = 25.0, frame_shift: float = 10.0, dither: float = 0.0) -> torch.Tensor:
    """Kaldi-compatible log mel filterbank (frames, num_mel_bins) on int16-scaled samples, as in WeNet."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = float(sample_rate)
    opts.frame_opts.frame_length_ms = float(frame_length)
    opts.frame_opts.frame_shift_ms = float(frame_shift)
    opts.frame_opts.dither = float(dither)
    opts.mel_opts.num_bins = int(num_mel_bins)
    fbank = knf.OnlineFbank(opts)
    samples = np.asarray(wav, dtype=np.float32) * 32768.0
    fbank.accept_waveform(float(sample_rate), samples.tolist())
    fbank.input_finished()
    n = fbank.num_frames_ready
    if n == 0:
        return torch.zeros(0, num_mel_bins)
    return torch.from_numpy(np.stack([fbank.get_frame(i) for i in range(n)]).astype(np.float32))


@FEATURES.register("whisper_log_mel")
def _whisper_feature(wav: np.ndarray, sample_rate: int, **conf: Any) -> torch.Tensor:
    if sample_rate != 16000:
        raise ValueError(f"whisper_log_mel needs 16000 Hz audio, got {sample_rate} Hz (set resample_rate: 16000)")
    return whisper_log_mel(wav, **conf)


@FEATURES.register("fbank")
def _fbank_feature(wav: np.ndarray, sample_rate: int, **conf: Any) -> torch.Tensor:
    return kaldi_fbank(wav, sample_rate=sample_rate, **conf)


def compute_features(name: str, wav: np.ndarray, sample_rate: int, conf: dict[str, Any] | None = None) -> torch.Tensor:
    """Features by registry name (``whisper_log_mel`` | ``fbank``) with keyword ``conf``."""
    return FEATURES.build(name, conf, wav=wav, sample_rate=sample_rate)
