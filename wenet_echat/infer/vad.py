"""End-of-turn detection for live microphone input with silero-vad (optional: ``pip install 'wenet_echat[demo]'``).

:class:`EndOfTurnDetector` takes 16 kHz audio in pieces of any size (as a microphone delivers it) and returns each
user turn once the speaker has been silent for ``min_silence_ms``: the speech from the VAD's start mark to its end
mark, padded by ``speech_pad_ms``. The silero model ships inside the wheel; nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from wenet_echat.infer.user_audio import SAMPLE_RATE

WINDOW = 512  # samples per VAD decision at 16 kHz (32 ms)


class VadUnavailableError(ImportError):
    """silero-vad is not installed."""


def load_vad_model() -> Any:
    """The silero VAD model from the installed package (clear error when the package is missing)."""
    try:
        from silero_vad import load_silero_vad
    except ImportError:
        raise VadUnavailableError("end-of-turn detection needs the silero-vad package: "
                                  "pip install 'wenet_echat[demo]' (or pip install silero-vad)") from None
    return load_silero_vad()


class EndOfTurnDetector:
    """Streamed 16 kHz samples in, finished user turns (float32 arrays) out."""

    def __init__(self, min_silence_ms: int = 700, threshold: float = 0.5, speech_pad_ms: int = 100,
                 model: Any = None):
        from silero_vad import VADIterator  # after load_vad_model's check

        self.model = model if model is not None else load_vad_model()
        self.vad = VADIterator(self.model, threshold=threshold, sampling_rate=SAMPLE_RATE,
                               min_silence_duration_ms=min_silence_ms, speech_pad_ms=speech_pad_ms)
        self._buf = np.zeros(0, np.float32)  # every sample since the last reset
        self._fed = 0  # samples given to the VAD (whole windows)
        self._start: int | None = None  # start sample of the turn in progress

    def reset(self) -> None:
        self.vad.reset_states()
        self._buf, self._fed, self._start = np.zeros(0, np.float32), 0, None

    @property
    def in_speech(self) -> bool:
        return self._start is not None

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        """Add samples; returns the turns that ended inside them (usually none or one)."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._buf = np.concatenate([self._buf, x])
        turns = []
        while self._fed + WINDOW <= self._buf.size:
            window = self._buf[self._fed:self._fed + WINDOW]
            self._fed += WINDOW
            mark = self.vad(torch.from_numpy(window))
            if not mark:
                continue
            if "start" in mark:
                self._start = int(mark["start"])
            elif "end" in mark and self._start is not None:
                turns.append(self._buf[max(0, self._start):int(mark["end"])].copy())
                self._start = None
        return turns

    def flush(self) -> np.ndarray | None:
        """The turn in progress when the input stops (None when the speaker was silent)."""
        if self._start is None:
            return None
        turn = self._buf[max(0, self._start):].copy()
        self._start = None
        return turn


def split_turns(wav: np.ndarray, min_silence_ms: int = 700, chunk: int = 1600, **kwargs: Any) -> list[np.ndarray]:
    """The user turns of a 16 kHz recording, found by feeding it in ``chunk``-sample pieces as a live stream."""
    det = EndOfTurnDetector(min_silence_ms=min_silence_ms, **kwargs)
    turns: list[np.ndarray] = []
    for i in range(0, len(wav), chunk):
        turns += det.push(wav[i:i + chunk])
    last = det.flush()
    return turns + ([last] if last is not None and last.size else [])


__all__ = ["EndOfTurnDetector", "VadUnavailableError", "load_vad_model", "split_turns"]
