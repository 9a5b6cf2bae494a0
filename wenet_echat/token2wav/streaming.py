"""Streaming token-to-wave: audio chunks while the LLM is still emitting speech tokens.

Schedule (:meth:`StreamConfig.triggers`): the first chunk is produced when ``first_chunk`` (18) tokens have
arrived, then one per ``hop`` (12) more tokens, and :meth:`StreamingSynthesizer.finish` flushes the rest. With
``hop_growth`` > 1 each hop is that many times the previous one, up to ``max_hop`` (CosyVoice 2's stream scale
factor): the first chunk comes as early as before, later chunks are fewer and longer, so less left context is
recomputed while the LLM, far faster than real time, keeps ahead of playback. Chunk boundaries depend only on
token counts, never on how the tokens were grouped into :meth:`push` calls, so the output is reproducible.

One step at ``n`` received tokens
    1. Mel. Frames are emitted up to ``frames(n - lookahead)`` (all ``frames(n)`` at the end); the withheld
       ``lookahead`` tokens are right context. The flow runs on the tokens from a window start ``w0`` to ``n``
       and yields absolute frames ``[f0, frames(n))``; with ``context: null`` the window is the whole prefix
       (``f0 = 0``), otherwise ``f0`` lies ``context`` tokens worth of frames before the first new frame (rounded
       down to the U-Net's frame multiple) and ``w0 = floor(f0 / ratio) - 1``. The flow's initial noise is fixed
       per absolute frame (:meth:`FlowMatching.fixed_noise`), and all its layers are local, so new frames match
       whole-utterance synthesis except for the influence of the missing right context. Emitted frames are never
       recomputed.
    2. Audio. The new frames are vocoded together with up to ``vocoder_context`` already emitted frames on the
       left (their samples are dropped). The last ``overlap`` frames of audio are held back; the next step
       vocodes them again with right context and cross-fades (``hann`` or ``linear``) from the held-back version
       to the new one. Concatenated chunks therefore have exactly ``frames(T) * hop`` samples, the length of
       whole-utterance synthesis.

:attr:`StreamingSynthesizer.mel` holds the emitted mel so callers can compare it with whole-utterance synthesis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from wenet_echat.token2wav.flow import FlowMatching


@dataclass(frozen=True)
class StreamConfig:
    first_chunk: int = 18  # tokens before the first chunk
    hop: int = 12  # tokens per later chunk
    lookahead: int = 6  # tokens of right context withheld from each non-final chunk
    context: int | None = 24  # tokens of left context for the flow window (None: all tokens so far)
    vocoder_context: int = 24  # mel frames of left context when vocoding a chunk
    overlap: int = 12  # mel frames of audio held back and cross-faded (>= the vocoder's right reach)
    fade: str = "hann"  # cross-fade shape: hann | linear
    hop_growth: float = 1.0  # each later hop is this many times the previous one (1: a fixed hop)
    max_hop: int | None = None  # cap of the growing hop (None: no cap)

    def __post_init__(self) -> None:
        if self.first_chunk < 1 or self.hop < 1:
            raise ValueError(f"streaming first_chunk and hop must be >= 1, got {self.first_chunk}, {self.hop}")
        if self.hop_growth < 1.0:
            raise ValueError(f"streaming hop_growth must be >= 1, got {self.hop_growth}")
        if self.max_hop is not None and self.max_hop < self.hop:
            raise ValueError(f"streaming max_hop {self.max_hop} must be >= hop {self.hop} (or null)")
        if self.lookahead < 0 or self.vocoder_context < 0 or self.overlap < 0:
            raise ValueError("streaming lookahead, vocoder_context and overlap must be >= 0")
        if self.lookahead >= self.first_chunk:
            raise ValueError(f"lookahead {self.lookahead} must be smaller than first_chunk {self.first_chunk}")
        if self.context is not None and self.context < 0:
            raise ValueError(f"streaming context must be >= 0 or null, got {self.context}")
        if self.fade not in ("hann", "linear"):
            raise ValueError(f"streaming fade must be 'hann' or 'linear', got '{self.fade}'")

    def triggers(self) -> Iterator[int]:
        """The token counts at which chunks are produced, without end: ``first_chunk``, then one hop after the
        other, each hop ``hop_growth`` times the last (rounded down), capped at ``max_hop``."""
        n, hop, cap = self.first_chunk, float(self.hop), self.max_hop or math.inf
        while True:
            yield n
            n += int(hop)
            hop = min(hop * self.hop_growth, cap)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, conf: dict[str, Any] | None) -> StreamConfig:
        try:
            return cls(**(conf or {}))
        except TypeError as e:
            raise TypeError(f"bad streaming config {conf}: {e}") from None

    def updated(self, changes: dict[str, Any] | None) -> StreamConfig:
        """This schedule with some keys changed (checked like a config)."""
        return self.from_dict({**self.to_dict(), **(changes or {})})


def fade_in_curve(n: int, shape: str) -> torch.Tensor:
    """Weights rising from ~0 to ~1 over ``n`` samples (the fade-out is ``1 - fade_in``)."""
    x = (torch.arange(n, dtype=torch.float32) + 0.5) / max(n, 1)
    return 0.5 - 0.5 * torch.cos(math.pi * x) if shape == "hann" else x


class StreamingSynthesizer:
    """Incremental tokens -> audio chunks (1-D float tensors); see the module docstring."""

    def __init__(self, flow: FlowMatching, vocode: Callable[[torch.Tensor], torch.Tensor], hop_length: int,
                 config: StreamConfig | None = None, **flow_kwargs: Any):
        self.flow = flow
        self.vocode = vocode
        self.hop_length = hop_length
        self.config = config or StreamConfig()
        self.flow_kwargs = flow_kwargs
        self.tokens: list[int] = []
        self.mel = torch.zeros(flow.n_mels, 0)
        self.samples_out = 0
        self.chunks_out = 0
        self._tail: torch.Tensor | None = None
        self._triggers = self.config.triggers()
        self._next_trigger = next(self._triggers)
        self._finished = False

    @property
    def frames_emitted(self) -> int:
        return self.mel.shape[-1]

    def push(self, tokens: Iterable[int]) -> list[torch.Tensor]:
        """Add tokens; returns the chunks that became ready (possibly none)."""
        if self._finished:
            raise RuntimeError("push() after finish(): start a new StreamingSynthesizer for the next utterance")
        new = [int(t) for t in tokens]
        for t in new:
            if not 0 <= t < self.flow.codebook_size:
                raise ValueError(f"speech code {t} is outside [0, {self.flow.codebook_size})")
        self.tokens.extend(new)
        chunks = []
        while len(self.tokens) >= self._next_trigger:
            chunks += self._step(self._next_trigger, final=False)
            self._next_trigger = next(self._triggers)
        return chunks

    def finish(self) -> list[torch.Tensor]:
        """Flush everything left (all frames, no held-back audio); the synthesizer cannot be pushed to again."""
        if self._finished:
            return []
        self._finished = True
        return self._step(len(self.tokens), final=True)

    # ---- one step

    def _step(self, n_tokens: int, final: bool) -> list[torch.Tensor]:
        cfg = self.config
        target = self.flow.mel_frames(n_tokens if final else n_tokens - cfg.lookahead)
        if target > self.frames_emitted:
            self.mel = torch.cat([self.mel, self._new_frames(n_tokens, target)], dim=-1)
        elif not final:
            return []
        chunk = self._audio(final)
        if chunk is None or chunk.numel() == 0:
            return []
        self.samples_out += chunk.numel()
        self.chunks_out += 1
        return [chunk]

    def _new_frames(self, n_tokens: int, target: int) -> torch.Tensor:
        """Mel frames ``[frames_emitted, target)`` computed from the token window ending at ``n_tokens``."""
        flow, start = self.flow, self.frames_emitted
        if self.config.context is None:
            f0, w0 = 0, 0
        else:
            f0 = max(0, start - flow.mel_frames(self.config.context))
            f0 -= f0 % flow.frame_multiple
            w0 = max(0, int(math.floor(f0 / flow.ratio)) - 1)
        window = torch.tensor(self.tokens[w0:n_tokens], dtype=torch.long)
        mel = flow.inference(window, token_offset=w0, frame_start=f0, frame_end=flow.mel_frames(n_tokens),
                             **self.flow_kwargs)[0]
        return mel[:, start - f0 : target - f0].cpu()

    def _audio(self, final: bool) -> torch.Tensor | None:
        """Samples from ``samples_out`` on: vocode with left context, cross-fade the held-back tail, hold back."""
        cfg, hop = self.config, self.hop_length
        done = self.samples_out // hop  # frames whose audio is final
        end = self.frames_emitted
        if end <= done:
            return None
        a0 = max(0, done - cfg.vocoder_context)
        wav = self.vocode(self.mel[:, a0:end].unsqueeze(0)).reshape(-1).cpu()
        new = wav[(done - a0) * hop :]
        if self._tail is not None:
            n = min(self._tail.numel(), new.numel())
            w = fade_in_curve(n, cfg.fade)
            new = torch.cat([self._tail[:n] * (1 - w) + new[:n] * w, new[n:]])
        if final:
            self._tail = None
            return new
        keep = max(0, new.numel() - cfg.overlap * hop)
        self._tail = new[keep:]
        return new[:keep]
