"""Streaming spoken chat: a loaded model (+ token-to-wave) shared by sessions that each hold one conversation.

::

    engine = ChatEngine.from_dirs("exp/stage3", "exp/token2wav")
    session = engine.session()
    for ev in session.stream("s2s_think", audio=(wav, 16000)):
        if ev.kind == "think_delta": ...          # chain of thought, token by token
        elif ev.kind == "reply_delta": ...        # reply text, token by token
        elif ev.kind == "audio": play(ev.audio, ev.sample_rate)   # reply speech, chunk by chunk
        elif ev.kind == "done": print(ev.result.timings)

Events (:class:`ChatEvent`, ``t`` = seconds since the turn started): ``think_delta``, ``think_done`` (the whole CoT),
``reply_delta``, ``reply_done`` (whole reply text), ``speech_tokens`` (a chunk of codes, grouped as token-to-wave
consumes them), ``audio`` (a chunk of float32 samples at ``sample_rate``), ``done`` (the :class:`TurnResult`, also
after a cancel). For ``asr`` and ``tag`` the answer comes as the reply.

Tasks: ``s2s_think`` (empathetic speech-to-speech with dual thinking), ``s2s_chat`` (the same without thinking),
``s2t_chat`` (text reply), ``asr``, ``tag``, ``tts`` (text in, speech out) and ``t2t`` (text chat). The chat tasks
keep a history: the last ``max_history_turns`` (user audio or text, reply text) exchanges precede the new turn. The
conversation's KV cache is kept between turns, so a new turn costs only its own positions; when the oldest turn
drops out (or the task's system prompt changes) the context is rebuilt from the kept adapter frames, without
running the encoder again. ``cancel()`` (any thread) stops a running turn before its next token; the turn then
leaves the history as it was. A new turn interrupts a running one of the same session (barge-in).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wenet_echat.audio.features import compute_features
from wenet_echat.infer.decode import CHAT_TASKS, LoadedModel, load_model_dir, split_output, spoken_ids
from wenet_echat.infer.repetition import OSUM_OVERRIDES, SpeechRepetitionBlocker
from wenet_echat.infer.speech_out import speech_out
from wenet_echat.infer.stream import ContextBuilder, DecodeState, IncrementalDecoder, decode_steps
from wenet_echat.infer.user_audio import MAX_SECONDS, MIN_SECONDS, SAMPLE_RATE, InputAudioError, prepare_audio
from wenet_echat.model import GenerateConf
from wenet_echat.text.prompts import system_prompt, user_instruction
from wenet_echat.text.think import THINK_BEGIN, THINK_END
from wenet_echat.token2wav.model import Token2Wav, load_token2wav, to_numpy_wav
from wenet_echat.token2wav.streaming import StreamConfig

log = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("s2s_think", "s2s_chat", "s2t_chat", "asr", "tag", "tts", "t2t")
TEXT_INPUT_TASKS = frozenset({"tts", "t2t"})
SPEAKING_TASKS = frozenset({"s2s_think", "s2s_chat", "tts"})
EVENT_KINDS = ("think_delta", "think_done", "reply_delta", "reply_done", "speech_tokens", "audio", "done")


class SessionBusyError(RuntimeError):
    """A turn is still running in this session and did not stop in time."""


@dataclass
class ChatConf:
    """Session behaviour. ``stream_audio``: token-to-wave runs while speech tokens arrive (else once at the end),
    in a thread of its own with ``synth_thread``; ``vocoder``: ``neural`` or ``griffinlim`` (``neural`` falls back
    to Griffin-Lim when no vocoder is trained)."""

    max_history_turns: int = 3
    max_input_seconds: float = MAX_SECONDS
    min_input_seconds: float = MIN_SECONDS
    stream_audio: bool = True
    vocoder: str = "neural"
    busy_timeout_s: float = 30.0
    speech_blocking: bool = True  # OSUM-EChat's speech-code repetition blocking (S3 silence rule for 4096 codes)
    # streamed token-to-wave in its own thread, overlapping LLM decoding (pays off with spare cores or a GPU; on a
    # busy 2-core CPU the inline default gave the earlier first chunk: bench/latency.py)
    synth_thread: bool = False
    generate: GenerateConf = field(default_factory=GenerateConf)


@dataclass
class Turn:
    """One kept exchange: the user's adapter frames (audio turns) or text, and the reply text."""

    user_text: str
    frames: torch.Tensor | None
    reply: str


@dataclass
class TurnResult:
    task: str
    think: str = ""
    reply: str = ""
    text: str = ""  # the whole text phase, markers included
    speech_tokens: list[int] = field(default_factory=list)
    audio: np.ndarray | None = None
    sample_rate: int = 0
    finished: bool = False
    cancelled: bool = False
    history_turns: int = 0  # turns of history the answer was conditioned on
    timings: dict[str, float] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        """JSON-ready fields (no audio samples)."""
        return {"task": self.task, "think": self.think, "reply": self.reply, "text": self.text,
                "speech_tokens": self.speech_tokens, "finished": self.finished, "cancelled": self.cancelled,
                "history_turns": self.history_turns, "audio_s": self.timings.get("audio_s", 0.0),
                "timings": self.timings}


@dataclass
class ChatEvent:
    kind: str
    t: float
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    audio: np.ndarray | None = None
    sample_rate: int = 0
    result: TurnResult | None = None


class ThinkSplitter:
    """Cumulative text → think and reply deltas while tokens arrive.

    Text that may still turn into a marker (a partial ``<think>`` at the start, a partial ``<think end>`` at the
    end of the CoT) is held back, so every delta is final; ``final()`` gives the authoritative split
    (:func:`~wenet_echat.infer.decode.split_output`)."""

    def __init__(self) -> None:
        self.think_out = ""
        self.reply_out = ""
        self.think_closed = False

    @staticmethod
    def _held(text: str, marker: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
        for n in range(min(len(marker) - 1, len(text)), 0, -1):
            if marker.startswith(text[-n:]):
                return n
        return 0

    def split(self, text: str) -> tuple[str, str, bool]:
        """(think so far, reply so far, think closed) with undecided text held back."""
        body = text.lstrip()
        if not body.startswith(THINK_BEGIN):
            if THINK_BEGIN.startswith(body):
                return "", "", False
            return "", body, False
        inner = body[len(THINK_BEGIN):]
        think, sep, reply = inner.partition(THINK_END)
        if sep:
            return think.strip(), reply.lstrip(), True
        return inner[: len(inner) - self._held(inner, THINK_END)].lstrip(), "", False

    def push(self, text: str) -> list[tuple[str, str]]:
        """Events ``(kind, text)`` for the new cumulative ``text``: think/reply deltas and ``think_done``."""
        think, reply, closed = self.split(text)
        out: list[tuple[str, str]] = []
        if not self.think_closed and think.startswith(self.think_out) and len(think) > len(self.think_out):
            out.append(("think_delta", think[len(self.think_out):]))
            self.think_out = think
        if closed and not self.think_closed:
            self.think_closed = True
            out.append(("think_done", think))
        if reply.startswith(self.reply_out) and len(reply) > len(self.reply_out):
            out.append(("reply_delta", reply[len(self.reply_out):]))
            self.reply_out = reply
        return out


class ChatEngine:
    """A loaded EChat model, an optional token-to-wave model and the feature settings of the model's training."""

    def __init__(self, loaded: LoadedModel, token2wav: Token2Wav | None = None, conf: ChatConf | None = None):
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.conf = conf or ChatConf()
        ds = loaded.conf.get("dataset_conf") or {}
        self.feats_type = ds.get("feats_type", "whisper_log_mel")
        self.feats_conf = dict(ds.get("feats_conf") or {})
        self.token2wav = token2wav
        self.vocoder = self.conf.vocoder
        if token2wav is not None:
            if self.model.speech_codes > token2wav.codebook_size:
                raise ValueError(f"the model speaks {self.model.speech_codes} speech codes but the token2wav model "
                                 f"knows {token2wav.codebook_size}: they were trained on different speech tokens")
            if self.vocoder == "neural" and "vocoder" not in token2wav.trained_parts and token2wav.trained_parts:
                log.warning("no trained vocoder in the token2wav model: using Griffin-Lim")
                self.vocoder = "griffinlim"
        self.device = next(self.model.parameters()).device
        self.speech_processors: list[SpeechRepetitionBlocker] = []
        if self.conf.speech_blocking:
            s3 = self.model.speech_codes == 4096
            self.speech_processors.append(SpeechRepetitionBlocker(overrides=OSUM_OVERRIDES if s3 else None))

    @classmethod
    def from_dirs(cls, model_dir: str | os.PathLike, token2wav_dir: str | os.PathLike | None = None,
                  checkpoint: str | None = None, device: str = "cpu", conf: ChatConf | None = None,
                  recipe_dir: str | os.PathLike | None = None) -> ChatEngine:
        """Load ``model_dir`` (written by ``bin/train.py``) and ``token2wav_dir`` (``bin/train_token2wav.py``).

        ``train.yaml`` names the tokenizer by a path relative to the recipe directory; ``recipe_dir`` (default:
        the current directory) is where such paths are resolved."""
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"model directory '{model_dir}' does not exist (train one with "
                                    "egs/echat/run.sh, or pass --model_dir)")
        model_dir, t2w_dir = model_dir.resolve(), Path(token2wav_dir).resolve() if token2wav_dir else None
        with contextlib.chdir(recipe_dir or os.getcwd()):
            loaded = load_model_dir(model_dir, checkpoint, device)
        t2w = None
        if t2w_dir is not None:
            t2w = load_token2wav(t2w_dir, require=("flow",), device=device)
        return cls(loaded, t2w, conf)

    @property
    def sample_rate(self) -> int:
        return self.token2wav.sample_rate if self.token2wav is not None else 0

    def session(self, conf: ChatConf | None = None) -> ChatSession:
        return ChatSession(self, conf or self.conf)

    @torch.inference_mode()
    def encode(self, wav16k: np.ndarray) -> torch.Tensor:
        """Adapter frames ``(F, H)`` of 16 kHz mono audio."""
        feats = compute_features(self.feats_type, wav16k, SAMPLE_RATE, self.feats_conf).to(torch.float32)
        lengths = torch.tensor([feats.size(0)], dtype=torch.long, device=self.device)
        out, out_lens = self.model.encode_audio(feats.unsqueeze(0).to(self.device), lengths)
        return out[0, : int(out_lens[0])]


class ChatSession:
    """One conversation; see the module docstring. ``stream`` yields events, ``respond`` returns the result."""

    def __init__(self, engine: ChatEngine, conf: ChatConf):
        if conf.max_history_turns < 0:
            raise ValueError(f"max_history_turns must be >= 0, got {conf.max_history_turns}")
        self.engine = engine
        self.conf = conf
        self.turns: list[Turn] = []
        self._dec: IncrementalDecoder | None = None  # cache of system + self.turns for self._ctx_task
        self._ctx_task: str | None = None
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._gen: torch.Generator | None = None
        if conf.generate.seed is not None:
            self._gen = torch.Generator(device=engine.device).manual_seed(int(conf.generate.seed))

    # ----------------------------------------------------------------------------------------------- control
    def cancel(self) -> None:
        """Stop the running turn before its next token (thread-safe; no effect when idle)."""
        self._cancel.set()

    def reset(self) -> None:
        """Forget the conversation (a running turn is cancelled first)."""
        with self._acquire():
            self.turns.clear()
            self._dec, self._ctx_task = None, None

    @contextlib.contextmanager
    def _acquire(self) -> Iterator[None]:
        if not self._lock.acquire(blocking=False):
            self.cancel()  # barge-in: the running turn stops at its next token
            if not self._lock.acquire(timeout=self.conf.busy_timeout_s):
                raise SessionBusyError(f"a reply is still running after {self.conf.busy_timeout_s:g} s")
        self._cancel.clear()
        try:
            yield
        finally:
            self._lock.release()

    def context_length(self) -> int:
        """Positions in the cached conversation (0 when nothing is cached)."""
        return self._dec.length if self._dec is not None else 0

    # ----------------------------------------------------------------------------------------------- context
    def _history_builder(self, task: str) -> ContextBuilder:
        b = ContextBuilder(self.engine.tokenizer, self.engine.model.speech_bos)
        for i, turn in enumerate(self.turns):
            b.user_turn(system_prompt(task) if i == 0 else None, turn.user_text, turn.frames)
            b.assistant_turn(turn.reply)
        return b

    def _context(self, task: str) -> IncrementalDecoder:
        """The decoder holding exactly the kept history (rebuilt when missing or made for another task)."""
        if self._dec is None or self._ctx_task != task:
            self._dec = IncrementalDecoder(self.engine.model, self.conf.generate.kv_cache)
            self._history_builder(task).feed(self._dec)
            self._ctx_task = task
        return self._dec

    # ----------------------------------------------------------------------------------------------- turns
    def respond(self, task: str, audio: tuple[np.ndarray, int] | None = None, text: str | None = None,
                on_event: Callable[[ChatEvent], None] | None = None) -> TurnResult:
        """Run a turn to its end; ``on_event`` sees every event. Returns the turn's result."""
        result: TurnResult | None = None
        for ev in self.stream(task, audio, text):
            if on_event is not None:
                on_event(ev)
            if ev.kind == "done":
                result = ev.result
        assert result is not None
        return result

    def _check_input(self, task: str, audio: tuple[np.ndarray, int] | None,
                     text: str | None) -> tuple[np.ndarray | None, str]:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
        if task in TEXT_INPUT_TASKS:
            if not text or not text.strip():
                raise ValueError(f"task {task} needs text input")
            return None, text.strip()
        if audio is None:
            raise InputAudioError(f"task {task} needs audio input (a recording or an uploaded file)")
        wav, sr = audio
        c = self.conf
        return prepare_audio(wav, sr, c.max_input_seconds, c.min_input_seconds), user_instruction(task)

    def stream(self, task: str, audio: tuple[np.ndarray, int] | None = None,
               text: str | None = None) -> Iterator[ChatEvent]:
        """Events of one turn (see the module docstring). Input errors raise before the first event."""
        wav, user_text = self._check_input(task, audio, text)
        return self._run(task, wav, user_text)

    def _run(self, task: str, wav: np.ndarray | None, user_text: str) -> Iterator[ChatEvent]:
        with self._acquire():
            yield from self._turn(task, wav, user_text)

    def _turn(self, task: str, wav: np.ndarray | None, user_text: str) -> Iterator[ChatEvent]:
        eng, conf = self.engine, self.conf
        t0 = time.perf_counter()
        timings: dict[str, float] = {}

        def now() -> float:
            return time.perf_counter() - t0

        frames = None
        if wav is not None:
            frames = eng.encode(wav)
            timings["encode_s"] = now()
            timings["input_s"] = wav.size / SAMPLE_RATE
        keep = task in CHAT_TASKS and conf.max_history_turns > 0
        if keep:
            cached = self._dec
            dec = self._context(task)
            fed0 = dec.fed if dec is cached else 0
            start = dec.length
            history = len(self.turns)
        else:
            dec, start, history, fed0 = IncrementalDecoder(eng.model, self.conf.generate.kv_cache), 0, 0, 0
        ContextBuilder(eng.tokenizer, eng.model.speech_bos).user_turn(
            system_prompt(task) if start == 0 else None, user_text, frames).feed(dec)
        prompt_end = dec.length
        timings["prefill_s"] = now()
        timings["prompt_tokens"] = float(prompt_end)  # history + this turn's prompt
        timings["fed_tokens"] = float(dec.fed - fed0)  # positions computed for it (the rest came from the cache)

        result = TurnResult(task=task, history_turns=history, sample_rate=eng.sample_rate)
        state = DecodeState()
        splitter = ThinkSplitter()
        speak = task in SPEAKING_TASKS
        out = None
        if speak and eng.token2wav is not None:
            out = speech_out(eng.token2wav, eng.vocoder, conf.stream_audio, conf.synth_thread)
        schedule = eng.token2wav.streaming if eng.token2wav is not None else StreamConfig()
        groups = schedule.triggers()  # speech codes are reported in the groups the synthesizer consumes
        next_group = next(groups)
        pending: list[int] = []
        chunks: list[np.ndarray] = []
        ok = False
        try:
            procs = [*eng.speech_processors, *conf.generate.speech_processors]
            steps = decode_steps(dec, speak, conf.generate, state, self._cancel.is_set, self._gen, procs,
                                 text=task != "tts", spoken=lambda ids: spoken_ids(
                                     eng.tokenizer, ids, user_text if task == "tts" else None))
            for phase, tok in steps:
                if phase == "text":
                    timings.setdefault("first_text_s", now())
                    for kind, delta in splitter.push(eng.tokenizer.decode(state.text_ids)):
                        if kind == "reply_delta":
                            timings.setdefault("first_reply_s", now())
                        yield ChatEvent(kind, now(), text=delta)
                    continue
                if "text_done_s" not in timings:
                    yield from self._text_done(result, state, splitter, timings, now)
                timings.setdefault("first_speech_s", now())
                pending.append(tok)
                ready = out.push(tok) if out is not None else []
                if len(state.speech_ids) >= next_group:
                    yield ChatEvent("speech_tokens", now(), tokens=pending)
                    pending, next_group = [], next(groups)
                for chunk in ready:
                    yield self._audio_event(chunk, chunks, timings, now)
            if "text_done_s" not in timings and not state.cancelled:
                yield from self._text_done(result, state, splitter, timings, now)
            if not state.cancelled:
                if pending:
                    yield ChatEvent("speech_tokens", now(), tokens=pending)
                if out is not None:
                    for chunk in [*out.ready(), *out.finish()]:
                        yield self._audio_event(chunk, chunks, timings, now)
            ok = not state.cancelled
        finally:
            if out is not None:
                out.close()
            if keep:
                dec.crop(prompt_end if ok else start)
                if ok:
                    self._remember(dec, user_text, frames, result.reply or split_output(result.text)[1])
                elif start == 0:
                    self._dec, self._ctx_task = None, None
        result.speech_tokens = list(state.speech_ids)
        result.finished, result.cancelled = state.finished, state.cancelled
        if not result.text:
            result.text = eng.tokenizer.decode(state.text_ids).strip()
            result.think, result.reply = self._split(task, result.text)
        if chunks:
            result.audio = np.concatenate(chunks)
            timings["audio_s"] = result.audio.size / max(1, result.sample_rate)
        timings["total_s"] = now()
        timings["text_tokens"] = float(len(state.text_ids))
        timings["speech_tokens"] = float(len(state.speech_ids))
        decode_s = timings["total_s"] - timings["prefill_s"]
        timings["decode_tokens_per_s"] = (len(state.text_ids) + len(state.speech_ids)) / max(decode_s, 1e-9)
        result.timings = timings
        yield ChatEvent("done", now(), result=result)

    @staticmethod
    def _split(task: str, text: str) -> tuple[str, str]:
        return split_output(text) if task in CHAT_TASKS else ("", text)

    def _text_done(self, result: TurnResult, state: DecodeState, splitter: ThinkSplitter,
                   timings: dict[str, float], now: Callable[[], float]) -> Iterator[ChatEvent]:
        """Close the text phase: flush held-back text, then ``think_done`` (when a CoT was written), ``reply_done``."""
        timings["text_done_s"] = now()
        result.text = self.engine.tokenizer.decode(state.text_ids).strip()
        result.think, result.reply = self._split(result.task, result.text)
        if result.think and not splitter.think_closed:  # an unclosed CoT: what was held back, then its end
            rest = result.think[len(splitter.think_out):] if result.think.startswith(splitter.think_out) else ""
            if rest:
                yield ChatEvent("think_delta", now(), text=rest)
            yield ChatEvent("think_done", now(), text=result.think)
        if result.reply.startswith(splitter.reply_out) and len(result.reply) > len(splitter.reply_out):
            timings.setdefault("first_reply_s", now())
            yield ChatEvent("reply_delta", now(), text=result.reply[len(splitter.reply_out):])
        yield ChatEvent("reply_done", now(), text=result.reply)

    def _audio_event(self, chunk: torch.Tensor, chunks: list[np.ndarray], timings: dict[str, float],
                     now: Callable[[], float]) -> ChatEvent:
        samples = to_numpy_wav(chunk)
        chunks.append(samples)
        timings.setdefault("first_audio_s", now())
        return ChatEvent("audio", now(), audio=samples, sample_rate=self.engine.sample_rate)

    def _remember(self, dec: IncrementalDecoder, user_text: str, frames: torch.Tensor | None, reply: str) -> None:
        """Append the finished turn to the cache and the history; drop the oldest beyond the limit."""
        ContextBuilder(self.engine.tokenizer, self.engine.model.speech_bos).assistant_turn(reply).feed(dec)
        self.turns.append(Turn(user_text, frames, reply))
        if len(self.turns) > self.conf.max_history_turns:
            del self.turns[: len(self.turns) - self.conf.max_history_turns]
            self._dec, self._ctx_task = None, None  # rebuilt from the kept frames at the next turn


__all__ = ["CHAT_TASKS", "ChatConf", "ChatEngine", "ChatEvent", "ChatSession", "EVENT_KINDS", "InputAudioError",
           "SPEAKING_TASKS", "SessionBusyError", "TASKS", "TEXT_INPUT_TASKS", "ThinkSplitter", "Turn", "TurnResult"]
