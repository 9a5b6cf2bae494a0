"""Fixtures for the data pipeline tests: short synthetic wavs and data.lists built in tmp_path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf


def tone(seconds: float, sr: int = 16000, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    f0 = 120 + 40 * rng.random()
    wav = sum(0.2 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 5)) + 0.01 * rng.standard_normal(t.size)
    wav = wav.astype(np.float32)
    return np.stack([wav] * channels, axis=1) if channels > 1 else wav


def write_wav(path, seconds: float, sr: int = 16000, channels: int = 1, seed: int = 0) -> str:
    sf.write(str(path), tone(seconds, sr, channels, seed), sr, subtype="PCM_16")
    return str(path)


def record(key: str, wav: str | None, **extra) -> dict:
    rec = {"key": key, "task": "asr", "text": f"hello {key}"}
    if wav is not None:
        rec["wav"] = wav
    rec.update(extra)
    return rec


def write_list(path, lines) -> str:
    """Write a data.list; each item is a dict (JSON-encoded) or raw bytes/str (written as is)."""
    with open(path, "wb") as f:
        for item in lines:
            if isinstance(item, dict):
                item = json.dumps(item, ensure_ascii=False)
            if isinstance(item, str):
                item = item.encode("utf-8")
            f.write(item + b"\n")
    return str(path)


@pytest.fixture
def corpus(tmp_path):
    """A clean data.list of ``n`` records with wavs of varied length: ``corpus(n) -> (list_path, records)``."""

    def make(n: int = 10, sr: int = 16000, durations=None, name: str = "data.list", **extra):
        (tmp_path / "wav").mkdir(exist_ok=True)
        recs = []
        for i in range(n):
            dur = durations[i] if durations is not None else 0.3 + 0.1 * (i % 7)
            wav = write_wav(tmp_path / "wav" / f"{name}_u{i:03d}.wav", dur, sr, seed=i)
            recs.append(record(f"u{i:03d}", wav, duration=dur, **extra))
        return write_list(tmp_path / name, recs), recs

    return make
