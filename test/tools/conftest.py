"""Helpers for the CLI tests: load a tools/*.py script as a module, write synthetic wavs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_wav(path, seconds: float, sr: int = 16000, channels: int = 1, subtype: str = "PCM_16", value=None):
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    wav = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    if value is not None:
        wav[:] = value
    if channels > 1:
        wav = np.stack([wav] * channels, axis=1)
    sf.write(str(path), wav, sr, subtype=subtype)
    return str(path)
