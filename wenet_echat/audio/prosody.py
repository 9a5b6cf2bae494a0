"""Prosody measures of speech: F0 (YIN), energy and speaking rate.

Used by the corpus report (to show that the paralinguistic cues are in the audio) and by scoring (prosody of
generated replies). Pure numpy, vectorised over frames.
"""

from __future__ import annotations

import numpy as np

from wenet_echat.audio.io import resample

ANALYSIS_SR = 16000


def _frames(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    if len(x) < length:
        x = np.pad(x, (0, length - len(x)))
    n = 1 + (len(x) - length) // hop
    return np.lib.stride_tricks.sliding_window_view(x, length)[::hop][:n]


def _to_analysis_rate(wav: np.ndarray, sr: int) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    return resample(wav, sr, ANALYSIS_SR) if sr != ANALYSIS_SR else wav


def f0_track(wav: np.ndarray, sr: int, fmin: float = 60.0, fmax: float = 500.0, hop_s: float = 0.01,
             threshold: float = 0.15) -> np.ndarray:
    """Per-frame F0 in Hz (0 = unvoiced) with the YIN cumulative-mean-normalised difference function."""
    x = _to_analysis_rate(wav, sr)
    tau_min = int(ANALYSIS_SR / fmax)
    tau_max = int(np.ceil(ANALYSIS_SR / fmin))
    width = tau_max + 1  # integration window
    frames = _frames(x, width + tau_max + 1, int(round(hop_s * ANALYSIS_SR))).astype(np.float64)
    n_fft = 1 << int(np.ceil(np.log2(frames.shape[1] + width)))
    # d(tau) = sum_j x_j^2 + sum_j x_{j+tau}^2 - 2 sum_j x_j x_{j+tau}, j over the window, via FFT correlation
    spec_full = np.fft.rfft(frames, n_fft)
    spec_head = np.fft.rfft(frames[:, :width], n_fft)
    cross = np.fft.irfft(spec_full * np.conj(spec_head), n_fft)[:, : tau_max + 1]
    sq = np.concatenate([np.zeros((len(frames), 1)), np.cumsum(frames**2, axis=1)], axis=1)
    energy_head = sq[:, width][:, None]
    taus = np.arange(tau_max + 1)
    energy_shift = sq[:, taus + width] - sq[:, taus]
    diff = np.maximum(energy_head + energy_shift - 2 * cross, 0.0)
    cum = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] * taus[1:] / np.maximum(cum, 1e-12)

    search = cmnd[:, tau_min : tau_max + 1]
    below = search < threshold
    has = below.any(axis=1)
    first = np.argmax(below, axis=1)
    # walk from the first dip below the threshold to its local minimum
    idx = first.copy()
    for _ in range(tau_max - tau_min):
        nxt = np.minimum(idx + 1, search.shape[1] - 1)
        move = has & (search[np.arange(len(idx)), nxt] < search[np.arange(len(idx)), idx])
        if not move.any():
            break
        idx = np.where(move, nxt, idx)
    tau = idx + tau_min
    # parabolic interpolation around the minimum for sub-sample precision
    left = cmnd[np.arange(len(tau)), np.maximum(tau - 1, 1)]
    mid = cmnd[np.arange(len(tau)), tau]
    right = cmnd[np.arange(len(tau)), np.minimum(tau + 1, tau_max)]
    denom = left - 2 * mid + right
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0.0)
    period = tau + np.clip(shift, -1, 1)
    rms = np.sqrt((frames[:, :width] ** 2).mean(axis=1))
    silent = rms < max(1e-4, 0.03 * float(np.percentile(rms, 95)) if len(rms) else 0.0)
    return np.where(has & ~silent, ANALYSIS_SR / period, 0.0).astype(np.float32)


def frame_energy_db(wav: np.ndarray, sr: int, win_s: float = 0.025, hop_s: float = 0.01) -> np.ndarray:
    """Frame power in dBFS (a full-scale sine reads about -3 dB)."""
    frames = _frames(np.asarray(wav, dtype=np.float64), int(win_s * sr), int(hop_s * sr))
    return 10 * np.log10(np.maximum((frames**2).mean(axis=1), 1e-12))


def prosody_stats(wav: np.ndarray, sr: int, n_words: int | None = None) -> dict[str, float]:
    """Summary prosody of one utterance.

    ``active_duration`` counts frames within 35 dB of the loudest frame (and above -60 dBFS); ``rms_db`` is the
    mean power of those frames; ``speaking_rate`` is ``n_words`` per second of active speech (NaN without words).
    """
    hop_s = 0.01
    energy = frame_energy_db(wav, sr, hop_s=hop_s)
    active = (energy > energy.max() - 35.0) & (energy > -60.0)
    active_duration = float(active.sum() * hop_s)
    rms_db = float(10 * np.log10(np.mean(10 ** (energy[active] / 10)))) if active.any() else float("-inf")
    f0 = f0_track(wav, sr, hop_s=hop_s)
    voiced = f0[f0 > 0]
    median = float(np.median(voiced)) if len(voiced) else float("nan")
    spread = float(np.std(12 * np.log2(voiced / median))) if len(voiced) > 1 else float("nan")
    return {
        "duration": len(wav) / sr,
        "median_f0": median,
        "f0_std_semitones": spread,
        "voiced_ratio": float(len(voiced) / max(int(active.sum()), 1)),
        "rms_db": rms_db,
        "speaking_rate": (n_words / active_duration) if n_words and active_duration > 0 else float("nan"),
        "active_duration": active_duration,
    }
