"""Reply audio for decoded speech tokens: streaming token-to-wave, atomic wav files, latency and real-time factor.

:class:`ReplyAudio` wraps a trained token2wav model directory (``bin/train_token2wav.py``). For one row of
``hyp.jsonl`` it pushes the speech tokens through :class:`~wenet_echat.token2wav.StreamingSynthesizer` in the
order the LLM produced them, writes the concatenated chunks to ``<wav_dir>/<task>/<key>.wav`` (atomically) and
adds to the row::

    reply_wav       path of the wav
    audio_s         seconds of reply audio
    t2w_s           token-to-wave compute seconds for the whole reply
    first_chunk_tokens  tokens that had arrived when the first audio chunk came out (18 by default, fewer for a
                    shorter reply, which is flushed whole)
    first_audio_s   seconds from the start of generation to the first audio chunk: the time the LLM had produced
                    ``first_chunk_tokens`` speech tokens plus the token-to-wave compute of that first chunk
    rtf             t2w_s / audio_s (token-to-wave alone)
    rtf_e2e         (LLM total_s + t2w_s) / audio_s (the whole reply)
    latency_estimated  true when the LLM's per-token times were not reported and the arrival time of token k
                    was interpolated as first_speech_s + (k - 1) x the mean time per speech token

Times from :meth:`EChatModel.generate` are per *batch* (every row of a batch shares the clock): decode with
``--batch_size 1`` when the latency numbers matter.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import torch

from wenet_echat.audio.io import save_audio
from wenet_echat.token2wav import StreamConfig, Token2Wav, load_token2wav
from wenet_echat.token2wav.model import to_numpy_wav

_SAFE_NAME = re.compile(r"^[\w.\-]+$")


def token_arrival_s(row: dict[str, Any], k: int) -> tuple[float, bool]:
    """Seconds from the start of generation until the ``k``-th speech token (1-based) existed, and whether that
    was estimated. Uses ``speech_times`` when the row has them, else interpolates between ``first_speech_s`` and
    ``total_s`` (the last token)."""
    times = row.get("speech_times")
    if times:
        return float(times[min(k, len(times)) - 1]), False
    first, total = row.get("first_speech_s"), row.get("total_s")
    n = len(row.get("speech_tokens") or [])
    if first is None or total is None or n == 0:
        raise ValueError(f"row {row.get('key')!r}: no first_speech_s/total_s/speech_tokens to time the reply")
    step = (float(total) - float(first)) / max(n - 1, 1) if n > 1 else 0.0
    return float(first) + (min(k, n) - 1) * step, True


class ReplyAudio:
    """Speech tokens -> reply wavs with streaming timings (see the module docstring)."""

    def __init__(self, model: Token2Wav, wav_dir: str | Path, vocoder: str = "neural",
                 stream: StreamConfig | None = None, **flow_kwargs: Any):
        self.model = model
        self.wav_dir = Path(wav_dir)
        self.vocoder = vocoder
        self.stream = stream or model.streaming
        self.flow_kwargs = flow_kwargs
        model.vocoder_fn(vocoder)  # unknown vocoder names fail here, before any decoding

    @classmethod
    def from_dir(cls, model_dir: str | Path, wav_dir: str | Path, vocoder: str = "neural", device: str = "cpu",
                 **flow_kwargs: Any) -> ReplyAudio:
        require = ("flow", "vocoder") if vocoder == "neural" else ("flow",)
        return cls(load_token2wav(model_dir, require=require, device=device), wav_dir, vocoder, **flow_kwargs)

    def wav_path(self, row: dict[str, Any]) -> Path:
        key, task = str(row.get("key")), str(row.get("task"))
        for what, name in (("key", key), ("task", task)):
            if not _SAFE_NAME.match(name):
                raise ValueError(f"row {key!r}: {what} {name!r} is not a safe file name (letters, digits, . - _)")
        return self.wav_dir / task / f"{key}.wav"

    def synthesize(self, tokens: list[int]) -> tuple[torch.Tensor, int, float, float]:
        """(wav, tokens at the first chunk, compute seconds until the first chunk, total compute seconds)."""
        synth = self.model.streamer(self.vocoder, self.stream, **self.flow_kwargs)
        chunks: list[torch.Tensor] = []
        first_tokens, first_s = 0, 0.0
        t0 = time.perf_counter()
        for i, tok in enumerate(tokens, 1):
            ready = synth.push([tok])
            if ready and not chunks:
                first_tokens, first_s = i, time.perf_counter() - t0
            chunks += ready
        tail = synth.finish()
        if tail and not chunks:
            first_tokens, first_s = len(tokens), time.perf_counter() - t0
        chunks += tail
        total = time.perf_counter() - t0
        wav = torch.cat(chunks) if chunks else torch.zeros(0)
        return wav, first_tokens, first_s, total

    def add_to_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """Synthesise ``row['speech_tokens']`` (if any), write the wav and add the fields listed above."""
        tokens = row.get("speech_tokens") or []
        if not tokens:
            return row
        bad = [t for t in tokens if not 0 <= int(t) < self.model.codebook_size]
        if bad:
            raise ValueError(f"row {row.get('key')!r}: speech codes {bad[:3]} are outside the token2wav codebook "
                             f"[0, {self.model.codebook_size}): do the LLM and token2wav share a speech tokenizer?")
        wav, first_tokens, first_s, total = self.synthesize([int(t) for t in tokens])
        path = self.wav_path(row)
        save_audio(path, to_numpy_wav(wav), self.model.sample_rate)
        audio_s = wav.numel() / self.model.sample_rate
        arrival, estimated = token_arrival_s(row, first_tokens)
        row.update({
            "reply_wav": str(path), "audio_s": round(audio_s, 4), "t2w_s": round(total, 4),
            "first_chunk_tokens": first_tokens, "first_audio_s": round(arrival + first_s, 4),
            "rtf": round(total / audio_s, 4) if audio_s else None,
            "rtf_e2e": round((float(row.get("total_s") or 0.0) + total) / audio_s, 4) if audio_s else None,
            "latency_estimated": estimated,
        })
        return row


__all__ = ["ReplyAudio", "token_arrival_s"]
