#!/usr/bin/env python3
"""Talk to a trained EChat model from the command line: the chain of thought and the reply stream as they are
written, the spoken reply goes to a wav file.

One turn (from egs/echat)::

    python -m wenet_echat.bin.chat --model_dir exp/stage3 --token2wav_dir exp/token2wav --wav in.wav --out reply.wav
    python -m wenet_echat.bin.chat --model_dir exp/stage3 --token2wav_dir exp/token2wav --task tts \\
        --text "Nice to meet you." --out hello.wav

A conversation (``--interactive``): each line is a wav path (speech tasks) or text (``tts``, ``t2t``); replies go
to ``--out_dir/turn_NNN.wav``; the last ``--history`` exchanges are the context of the next. Commands:
``:task NAME``, ``:reset``, ``:quit``. Ctrl-C stops the running answer (the turn is dropped), Ctrl-C at the prompt
ends the chat. ``--vad`` cuts one long ``--wav`` recording into turns where the speaker pauses (silero-vad) and
answers them in order, as a live microphone would. ``--log chat.jsonl`` writes one JSON line per turn (input, CoT,
reply, reply wav, timings); ``wenet_echat.bin.make_gallery --session`` turns it into a demo page.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from wenet_echat.audio.io import save_audio
from wenet_echat.infer.session import (
    TASKS,
    TEXT_INPUT_TASKS,
    ChatConf,
    ChatEngine,
    ChatEvent,
    ChatSession,
    InputAudioError,
    TurnResult,
)
from wenet_echat.infer.user_audio import SAMPLE_RATE, load_user_audio
from wenet_echat.model import GenerateConf, SamplingConf
from wenet_echat.token2wav.model import VOCODERS
from wenet_echat.utils.fileio import atomic_open
from wenet_echat.utils.logging import setup_logging

log = logging.getLogger("chat")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True, help="directory written by bin/train.py (train.yaml + checkpoints)")
    p.add_argument("--checkpoint", default=None, help="tag under model_dir or a path (default: latest)")
    p.add_argument("--token2wav_dir", default=None, help="directory written by bin/train_token2wav.py (no audio "
                   "without it)")
    p.add_argument("--recipe_dir", default=None, help="where train.yaml's relative paths start (default: .)")
    p.add_argument("--task", default="s2s_think", choices=TASKS)
    p.add_argument("--wav", default=None, help="user audio (any rate; resampled to 16 kHz)")
    p.add_argument("--text", default=None, help="user text for tts / t2t")
    p.add_argument("--out", default=None, help="reply wav of a single turn")
    p.add_argument("--interactive", action="store_true", help="read turns from stdin (see above)")
    p.add_argument("--vad", action="store_true", help="split --wav into turns at pauses (silero-vad)")
    p.add_argument("--vad_silence_ms", type=int, default=700, help="pause that ends a turn")
    p.add_argument("--out_dir", default=None, help="reply wavs of --interactive / --vad (default: chat_out)")
    p.add_argument("--log", default=None, help="JSON lines, one per turn")
    p.add_argument("--history", type=int, default=3, help="exchanges kept as context (0: none)")
    p.add_argument("--no_stream", action="store_true", help="synthesise the reply audio after the last token")
    p.add_argument("--synth_thread", action="store_true", help="streamed token-to-wave in its own thread")
    p.add_argument("--vocoder", default="neural", choices=VOCODERS)
    p.add_argument("--max_text_tokens", type=int, default=256)
    p.add_argument("--max_speech_tokens", type=int, default=1000)
    for phase in ("text", "speech"):
        p.add_argument(f"--{phase}_temperature", type=float, default=0.0, help=f"{phase} phase; 0 = greedy")
        p.add_argument(f"--{phase}_top_k", type=int, default=0)
        p.add_argument(f"--{phase}_top_p", type=float, default=1.0)
    p.add_argument("--no_speech_blocking", action="store_true", help="no speech-code repetition blocking")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="print only the final think/reply lines")
    return p


def chat_conf(args: argparse.Namespace) -> ChatConf:
    gen = GenerateConf(max_text_tokens=args.max_text_tokens, max_speech_tokens=args.max_speech_tokens,
                       seed=args.seed,
                       text=SamplingConf(args.text_temperature, args.text_top_k, args.text_top_p),
                       speech=SamplingConf(args.speech_temperature, args.speech_top_k, args.speech_top_p))
    return ChatConf(max_history_turns=args.history, stream_audio=not args.no_stream, vocoder=args.vocoder,
                    speech_blocking=not args.no_speech_blocking, synth_thread=args.synth_thread, generate=gen)


class Printer:
    """Writes ``think: ...`` and ``reply: ...`` lines as the deltas arrive (or once at the end with ``quiet``)."""

    def __init__(self, out: TextIO, quiet: bool):
        self.out, self.quiet = out, quiet
        self.open: str | None = None

    def _start(self, label: str) -> None:
        if self.open != label:
            if self.open is not None:
                self.out.write("\n")
            self.out.write(f"{label}: ")
            self.open = label

    def __call__(self, ev: ChatEvent) -> None:
        if self.quiet:
            if ev.kind in ("think_done", "reply_done") and ev.text:
                self.out.write(f"{ev.kind[:-5]}: {ev.text}\n")
            return
        if ev.kind in ("think_delta", "reply_delta"):
            self._start(ev.kind[:-6])
            self.out.write(ev.text)
            self.out.flush()
        elif ev.kind == "reply_done" and self.open is None and ev.text:
            self._start("reply")
            self.out.write(ev.text)
        elif ev.kind == "done":
            if self.open is not None:
                self.out.write("\n")
            self.open = None
            self.out.flush()


def timing_line(res: TurnResult) -> str:
    t = res.timings
    parts = [f"{k[:-2].replace('_', ' ')} {t[k] * 1000:.0f} ms" for k in
             ("first_text_s", "first_speech_s", "first_audio_s", "total_s") if k in t]
    extra = f", {t['audio_s']:.2f} s of audio" if "audio_s" in t else ""
    state = " (cancelled)" if res.cancelled else "" if res.finished else " (hit a token limit)"
    return f"[{res.task}{state}] " + ", ".join(parts) + extra + f", {t.get('decode_tokens_per_s', 0):.0f} tokens/s"


def run_turn(session: ChatSession, task: str, printer: Printer, wav: np.ndarray | None = None,
             text: str | None = None) -> TurnResult:
    audio = (wav, SAMPLE_RATE) if wav is not None else None
    return session.respond(task, audio=audio, text=text, on_event=printer)


def save_turn(res: TurnResult, path: Path | None) -> str | None:
    if path is None or res.audio is None or res.audio.size == 0:
        return None
    save_audio(path, res.audio, res.sample_rate)
    return str(path)


class TurnLog:
    """``--log``: one JSON object per turn, rewritten atomically after every turn."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.rows: list[dict[str, Any]] = []

    def add(self, res: TurnResult, user: str, reply_wav: str | None) -> None:
        if self.path is None:
            return
        row = {"turn": len(self.rows) + 1, "input": user, **res.to_row(), "reply_wav": reply_wav}
        self.rows.append(row)
        with atomic_open(self.path) as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows)


def interactive(session: ChatSession, task: str, args: argparse.Namespace, printer: Printer, tlog: TurnLog,
                inp: TextIO | None = None, out: TextIO | None = None) -> int:
    inp, out = inp or sys.stdin, out or sys.stdout
    out_dir = Path(args.out_dir or "chat_out")
    n = 0
    previous = signal.getsignal(signal.SIGINT)

    def stop_answer(signum: int, frame: Any) -> None:
        session.cancel()

    out.write(f"task {task}; a wav path{' or text' if task in TEXT_INPUT_TASKS else ''} per line, "
              ":task NAME, :reset, :quit\n")
    while True:
        out.write("> ")
        out.flush()
        try:
            line = inp.readline()
        except KeyboardInterrupt:
            break
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if line in (":quit", ":q"):
            break
        if line == ":reset":
            session.reset()
            out.write("history cleared\n")
            continue
        if line.startswith(":task"):
            name = line[5:].strip()
            if name not in TASKS:
                out.write(f"unknown task {name!r}; known: {', '.join(TASKS)}\n")
            else:
                task = name
                out.write(f"task {task}\n")
            continue
        try:
            wav = None if task in TEXT_INPUT_TASKS else load_user_audio(line)
        except InputAudioError as e:
            out.write(f"error: {e}\n")
            continue
        signal.signal(signal.SIGINT, stop_answer)
        try:
            res = run_turn(session, task, printer, wav, line if wav is None else None)
        except (InputAudioError, ValueError) as e:
            out.write(f"error: {e}\n")
            continue
        finally:
            signal.signal(signal.SIGINT, previous)
        n += 1
        reply_wav = save_turn(res, out_dir / f"turn_{n:03d}.wav")
        tlog.add(res, line, reply_wav)
        out.write(timing_line(res) + (f" -> {reply_wav}" if reply_wav else "") + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging("WARNING" if args.quiet else "INFO")
    if args.threads:
        torch.set_num_threads(args.threads)
    text_task = args.task in TEXT_INPUT_TASKS
    if not args.interactive:
        if text_task and not args.text:
            sys.exit(f"error: task {args.task} needs --text")
        if not text_task and not args.wav:
            sys.exit(f"error: task {args.task} needs --wav (or use --interactive)")
    wavs: list[np.ndarray] = []
    try:
        if args.wav and not text_task:
            wav = load_user_audio(args.wav, max_seconds=3600.0 if args.vad else 30.0)
            if args.vad:
                from wenet_echat.infer.vad import split_turns

                wavs = split_turns(wav, args.vad_silence_ms)
                log.info("%s: %d turns found", args.wav, len(wavs))
            else:
                wavs = [wav]
    except (InputAudioError, ImportError) as e:
        sys.exit(f"error: {e}")
    try:
        engine = ChatEngine.from_dirs(args.model_dir, args.token2wav_dir, args.checkpoint, args.device,
                                      chat_conf(args), args.recipe_dir)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    if engine.token2wav is None and args.task in ("s2s_think", "s2s_chat", "tts"):
        log.warning("no --token2wav_dir: the reply is spoken as speech tokens only (no audio)")
    session = engine.session()
    printer = Printer(sys.stdout, args.quiet)
    tlog = TurnLog(args.log)
    if args.interactive:
        return interactive(session, args.task, args, printer, tlog)
    if text_task:
        res = run_turn(session, args.task, printer, text=args.text)
        reply_wav = save_turn(res, Path(args.out) if args.out else None)
        tlog.add(res, args.text, reply_wav)
        print(timing_line(res) + (f" -> {reply_wav}" if reply_wav else ""))
        return 0
    out_dir = Path(args.out_dir or (Path(args.out).parent if args.out else "chat_out"))
    for i, wav in enumerate(wavs):
        try:
            res = run_turn(session, args.task, printer, wav)
        except InputAudioError as e:
            print(f"turn {i + 1}: error: {e}")
            continue
        path = Path(args.out) if args.out and len(wavs) == 1 else out_dir / f"turn_{i + 1:03d}.wav"
        reply_wav = save_turn(res, path)
        user = args.wav
        if args.vad:  # the cut-out user turn, so the log (and a gallery made from it) can play it
            user = str(out_dir / f"user_{i + 1:03d}.wav")
            save_audio(user, wav, SAMPLE_RATE)
        tlog.add(res, user, reply_wav)
        print(timing_line(res) + (f" -> {reply_wav}" if reply_wav else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
