"""Reading, writing, resampling and checking audio without torchaudio (soundfile, kaldiio, soxr)."""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from wenet_echat.utils.fileio import atomic_path

STANDARD_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
PROBLEM_KINDS = (
    "missing", "unreadable", "empty", "too_short", "odd_sample_rate", "sample_rate_mismatch", "multi_channel",
    "too_long", "nan",
)
_ARK_RE = re.compile(r"^(?:ark:)?(.+\.ark):(\d+)$")
MIN_SECONDS = 0.025  # one 25 ms analysis window; anything shorter gives no feature frame


class AudioError(ValueError):
    """Audio that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


@dataclass(frozen=True)
class AudioProblem:
    kind: str
    message: str
    fatal: bool


def is_ark_spec(spec: str) -> bool:
    return bool(_ARK_RE.match(spec))


def _to_float(data: np.ndarray) -> np.ndarray:
    if np.issubdtype(data.dtype, np.integer):
        return (data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)).astype(np.float32)
    return data.astype(np.float32, copy=False)


def _read_raw(spec: str) -> tuple[np.ndarray, int]:
    """Decode to float32 of shape (T, C) at the file's own rate."""
    if is_ark_spec(spec):
        import kaldiio

        try:
            obj = kaldiio.load_mat(spec)
        except Exception as e:  # kaldiio raises many kinds on bad offsets / files
            raise AudioError(f"{spec}: cannot read ark entry ({e})") from None
        if not (isinstance(obj, tuple) and len(obj) == 2):
            raise AudioError(f"{spec}: ark entry is a matrix, not audio (rate, samples)")
        sr, data = obj
        data = _to_float(np.asarray(data))
        return (data[:, None] if data.ndim == 1 else data), int(sr)
    if not os.path.exists(spec):
        raise AudioError(f"{spec}: no such file")
    try:
        data, sr = sf.read(spec, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"{spec}: cannot decode audio ({e})") from None
    return data, int(sr)


def _finish(data: np.ndarray, sr: int, target_sr: int | None, mono: bool) -> tuple[np.ndarray, int]:
    if mono:
        data = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if target_sr is not None and target_sr != sr:
        data = resample(data, sr, target_sr)
        sr = target_sr
    return np.ascontiguousarray(data, dtype=np.float32), sr


def load_audio(spec: str, target_sr: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Load a file path or kaldiio ``x.ark:offset`` as float32 in [-1, 1]; (T,) if mono, else (T, C)."""
    data, sr = _read_raw(spec)
    return _finish(data, sr, target_sr, mono)


def load_audio_bytes(data: bytes, target_sr: int | None = None, mono: bool = True,
                     name: str = "<bytes>") -> tuple[np.ndarray, int]:
    """Decode an in-memory audio file (e.g. a tar member); ``name`` is used in error messages."""
    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"{name}: cannot decode audio ({e})") from None
    return _finish(wav, int(sr), target_sr, mono)


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """High-quality resampling (soxr HQ) along the first axis; float32 out."""
    if sr_in == sr_out:
        return wav.astype(np.float32, copy=False)
    return soxr.resample(wav.astype(np.float32, copy=False), sr_in, sr_out, quality="HQ").astype(np.float32)


def save_audio(path: str | os.PathLike, wav: np.ndarray, sr: int, subtype: str = "PCM_16") -> None:
    """Write audio atomically (parent folders created); PCM output is clipped to [-1, 1]."""
    wav = np.asarray(wav, dtype=np.float32)
    if subtype.startswith("PCM"):
        wav = np.clip(wav, -1.0, 1.0)
    fmt = {".flac": "FLAC", ".ogg": "OGG"}.get(os.path.splitext(str(path))[1].lower(), "WAV")
    with atomic_path(path) as tmp:
        sf.write(tmp, wav, sr, subtype=subtype, format=fmt)


def audio_info(spec: str) -> AudioInfo:
    """Rate, channels and length; reads only the header of files (ark entries are loaded)."""
    if is_ark_spec(spec):
        data, sr = _read_raw(spec)
        return AudioInfo(sr, data.shape[1], data.shape[0])
    if not os.path.exists(spec):
        raise AudioError(f"{spec}: no such file")
    try:
        info = sf.info(spec)
    except Exception as e:
        raise AudioError(f"{spec}: cannot read audio header ({e})") from None
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames))


def _wav_truncation(path: str) -> str | None:
    """For RIFF/WAVE files: a message if the ``data`` chunk declares more bytes than the file holds.

    libsndfile quietly shortens such files to what is there, so a cut-off download would pass unnoticed.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            if f.read(12)[8:12] != b"WAVE":
                return None
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                head = f.read(8)
                chunk, length = head[:4], int.from_bytes(head[4:8], "little")
                if chunk == b"data":
                    have = size - pos - 8
                    if length != 0xFFFFFFFF and length > have:
                        return f"{path}: truncated (data chunk declares {length} bytes, file holds {have})"
                    return None
                pos += 8 + length + (length & 1)
    except OSError:
        return None
    return None


def check_audio(spec: str, expected_sr: int = 16000, max_duration: float | None = 30.0,
                decode: bool = True) -> list[AudioProblem]:
    """Every problem of one audio file (empty list = usable as is). Never raises.

    Fatal problems make the audio unusable; ``sample_rate_mismatch`` and ``multi_channel`` are repaired by the
    pipeline (resampling, channel averaging) and reported as warnings.
    """
    if not is_ark_spec(spec) and not os.path.exists(spec):
        return [AudioProblem("missing", f"{spec}: no such file", True)]
    try:
        info = audio_info(spec)
    except AudioError as e:
        return [AudioProblem("unreadable", str(e), True)]
    problems: list[AudioProblem] = []
    if info.frames == 0:
        return [AudioProblem("empty", f"{spec}: no samples", True)]
    if info.sample_rate not in STANDARD_RATES:
        problems.append(AudioProblem(
            "odd_sample_rate", f"{spec}: sample rate {info.sample_rate} Hz is not a standard rate", True))
    elif info.sample_rate != expected_sr:
        problems.append(AudioProblem(
            "sample_rate_mismatch", f"{spec}: {info.sample_rate} Hz, will be resampled to {expected_sr} Hz", False))
    if info.channels > 1:
        problems.append(AudioProblem("multi_channel", f"{spec}: {info.channels} channels, will be averaged", False))
    if info.duration < MIN_SECONDS:
        problems.append(AudioProblem("too_short", f"{spec}: {info.duration * 1000:.1f} ms is shorter than "
                                     f"one {MIN_SECONDS * 1000:.0f} ms window", True))
    if max_duration is not None and info.duration > max_duration:
        problems.append(AudioProblem("too_long", f"{spec}: {info.duration:.2f} s > max {max_duration:g} s", True))
    if decode:
        try:
            data, _ = _read_raw(spec)
        except AudioError as e:
            return problems + [AudioProblem("unreadable", str(e), True)]
        truncated = None if is_ark_spec(spec) else _wav_truncation(spec)
        if truncated is None and data.shape[0] < info.frames:
            truncated = f"{spec}: truncated (header says {info.frames} frames, {data.shape[0]} readable)"
        if truncated:
            problems.append(AudioProblem("unreadable", truncated, True))
        if not np.isfinite(data).all():
            problems.append(AudioProblem("nan", f"{spec}: {int((~np.isfinite(data)).sum())} NaN/inf samples", True))
    return problems
