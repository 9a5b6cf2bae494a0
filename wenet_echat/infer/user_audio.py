"""User audio for a live chat: arrays or files of any rate and width → checked 16 kHz mono float32.

Uploads and microphone recordings arrive as int16 or float arrays, mono or (T, C), at the browser's rate. Every
problem gets :class:`InputAudioError` with a message meant for the person who sent the audio.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from wenet_echat.audio.io import AudioError, load_audio, resample

log = logging.getLogger(__name__)
SAMPLE_RATE = 16000
MAX_SECONDS = 30.0  # the Whisper encoder's position table
MIN_SECONDS = 0.1


class InputAudioError(ValueError):
    """User audio that cannot be answered: empty, too short or long, not audio, not finite."""


def prepare_audio(wav: np.ndarray, sample_rate: int, max_seconds: float = MAX_SECONDS,
                  min_seconds: float = MIN_SECONDS, name: str = "the audio") -> np.ndarray:
    """Mono float32 in [-1, 1] at 16 kHz; integer samples are scaled, channels averaged, other rates resampled."""
    arr = np.asarray(wav)
    if arr.size == 0:
        raise InputAudioError(f"{name} is empty (no samples)")
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise InputAudioError(f"{name}: bad sample rate {sample_rate!r}")
    if arr.ndim == 2:  # (T, C); a (C, T) array with C < T is what the browser never sends
        arr = arr.mean(axis=1) if arr.shape[1] > 1 else arr[:, 0]
    elif arr.ndim != 1:
        raise InputAudioError(f"{name}: expected samples of shape (T,) or (T, channels), got {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max + 1)
    elif not np.issubdtype(arr.dtype, np.floating):
        raise InputAudioError(f"{name}: samples of type {arr.dtype} are not audio")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InputAudioError(f"{name} has {int((~np.isfinite(arr)).sum())} NaN/inf samples")
    seconds = arr.size / sample_rate
    if seconds < min_seconds:
        raise InputAudioError(f"{name} is too short ({seconds * 1000:.0f} ms; at least {min_seconds * 1000:.0f} ms)")
    if seconds > max_seconds:
        raise InputAudioError(f"{name} is too long ({seconds:.1f} s; at most {max_seconds:g} s)")
    return resample(arr, int(sample_rate), SAMPLE_RATE)


def load_user_audio(path: str | os.PathLike, max_seconds: float = MAX_SECONDS,
                    min_seconds: float = MIN_SECONDS) -> np.ndarray:
    """Read an audio file (any format libsndfile decodes) and :func:`prepare_audio` it."""
    path = str(path)
    name = os.path.basename(path) or path
    if not os.path.isfile(path):
        raise InputAudioError(f"{path}: no such file")
    try:
        wav, sr = load_audio(path, mono=True)
    except AudioError as e:  # the decoder's message names server paths: log it, tell the user the gist
        log.info("cannot decode %s: %s", path, e)
        raise InputAudioError(f"{name} is not an audio file that can be read (wav, flac, ogg or mp3)") from None
    return prepare_audio(wav, sr, max_seconds, min_seconds, name)


__all__ = ["InputAudioError", "MAX_SECONDS", "MIN_SECONDS", "SAMPLE_RATE", "load_user_audio", "prepare_audio"]
