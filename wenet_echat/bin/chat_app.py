#!/usr/bin/env python3
"""Web demo (gradio): talk to a trained EChat model in the browser.

From egs/echat (needs the ``demo`` extra: ``pip install -e '.[demo]'``, installed by tools/install.sh)::

    python -m wenet_echat.bin.chat_app --model_dir exp/stage3 --token2wav_dir exp/token2wav
    # then open http://127.0.0.1:7860

Record with the microphone or upload a file (any rate; resampled to 16 kHz, at most 30 s), pick a task and send.
With silero-vad installed, the hands-free panel listens to the live microphone and answers each turn when the
speaker pauses (``--vad_silence_ms``). The chain of thought (in its own collapsible panel), the reply text and the
reply audio stream in while they are
generated; the reply audio plays as it is synthesised when ffmpeg is installed (gradio encodes the stream with it),
otherwise it appears when complete. Each browser tab holds its own conversation (the last ``--history`` exchanges
are the model's context); Stop ends the running answer, Reset forgets the conversation. The server binds
127.0.0.1 unless ``--host`` says otherwise: put it behind an authenticating proxy before exposing it.
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import logging
import os
import queue
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from wenet_echat.audio.io import save_audio
from wenet_echat.infer.session import (
    SPEAKING_TASKS,
    TEXT_INPUT_TASKS,
    ChatEngine,
    ChatEvent,
    ChatSession,
    InputAudioError,
    SessionBusyError,
    TurnResult,
)
from wenet_echat.infer.user_audio import load_user_audio, prepare_audio
from wenet_echat.utils.logging import setup_logging

log = logging.getLogger("chat_app")

TASK_CHOICES: list[tuple[str, str]] = [
    ("Empathetic spoken chat, with thinking", "s2s_think"),
    ("Spoken chat, no thinking", "s2s_chat"),
    ("Spoken question, text answer", "s2t_chat"),
    ("Transcribe (ASR)", "asr"),
    ("Who is speaking: age, gender, emotion, sound event", "tag"),
    ("Read text aloud (TTS)", "tts"),
    ("Text chat", "t2t"),
]
TASK_LABELS = {value: label for label, value in TASK_CHOICES}


def get_parser() -> argparse.ArgumentParser:
    from wenet_echat.bin.chat import get_parser as chat_parser

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[chat_parser()], conflict_handler="resolve", add_help=False)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--concurrency", type=int, default=2, help="answers computed at the same time")
    for name in ("--wav", "--text", "--out", "--interactive", "--vad", "--out_dir", "--log", "--quiet"):
        p.add_argument(name, help=argparse.SUPPRESS, default=None)
    return p


def pcm16(wav: np.ndarray) -> np.ndarray:
    return (np.clip(wav, -1.0, 1.0) * 32767).astype(np.int16)


def status_line(res: TurnResult) -> str:
    t = res.timings
    parts = [f"{label} {t[key] * 1000:.0f} ms" for key, label in
             (("first_text_s", "first text"), ("first_audio_s", "first audio"), ("total_s", "total")) if key in t]
    if "audio_s" in t:
        parts.append(f"{t['audio_s']:.1f} s of speech")
    if res.history_turns:
        parts.append(f"{res.history_turns} earlier turn(s) as context")
    state = "stopped" if res.cancelled else "done" if res.finished else "stopped at the token limit"
    return f"**{state}** · " + " · ".join(parts)


def drain(events: Iterator[ChatEvent]) -> Iterator[list[ChatEvent]]:
    """Run ``events`` in a worker thread; yield lists of the events that arrived since the last list (blocking
    until at least one is there). A slow consumer (the browser) thus never slows generation down."""
    q: queue.Queue[ChatEvent | BaseException | None] = queue.Queue()

    def work() -> None:
        try:
            for ev in events:
                q.put(ev)
        except BaseException as e:  # handed to the consumer
            q.put(e)
        q.put(None)

    threading.Thread(target=work, daemon=True, name="chat-turn").start()
    done = False
    while not done:
        items = [q.get()]
        while True:
            try:
                items.append(q.get_nowait())
            except queue.Empty:
                break
        batch = []
        for item in items:
            if item is None:
                done = True
            elif isinstance(item, BaseException):
                raise item
            else:
                batch.append(item)
        if batch:
            yield batch


def error_line(message: str) -> str:
    return f"**Error:** {html.escape(message)}"


class ChatApp:
    """The event handlers, separate from the gradio layout so they can be called directly."""

    def __init__(self, engine: ChatEngine, vad_silence_ms: int = 700):
        self.engine = engine
        self.stream_audio = shutil.which("ffmpeg") is not None and engine.token2wav is not None
        self.vad_silence_ms = vad_silence_ms
        self.turn_dir = tempfile.mkdtemp(prefix="echat_turns_")  # hands-free turns cut from the microphone

    def new_session(self) -> ChatSession:
        return self.engine.session()

    def respond(self, audio_path: str | None, text: str | None, task: str, session: ChatSession | None,
                messages: list[dict[str, Any]] | None) -> Iterator[tuple[Any, ...]]:
        """Yields (chatbot, think, reply, stream chunk, whole audio, status, session, messages)."""
        import gradio as gr

        session = session or self.new_session()
        messages = list(messages or [])
        skip = gr.skip()
        try:
            if task in TEXT_INPUT_TASKS:
                if not text or not text.strip():
                    raise InputAudioError(f"type the text for '{TASK_LABELS[task]}' first")
                events = session.stream(task, text=text)
                shown = text.strip()
            else:
                if not audio_path:
                    raise InputAudioError("record or upload some audio first")
                wav = load_user_audio(audio_path)
                events = session.stream(task, audio=(wav, 16000))
                shown = f"(spoken, {wav.size / 16000:.1f} s)"
            messages.append({"role": "user", "content": shown})
            think, reply, res = "", "", None
            yield messages, "", "", skip, None, "*thinking…*", session, messages
            for batch in drain(events):  # generation runs ahead in its own thread; the page gets coalesced updates
                chunks = []
                for ev in batch:
                    if ev.kind == "think_delta":
                        think += ev.text
                    elif ev.kind == "think_done":
                        think = ev.text
                    elif ev.kind == "reply_delta":
                        reply += ev.text
                    elif ev.kind == "reply_done":
                        reply = ev.text
                    elif ev.kind == "audio" and self.stream_audio:
                        chunks.append(ev.audio)
                    elif ev.kind == "done":
                        res = ev.result
                if chunks:
                    rate = self.engine.sample_rate
                    yield messages, think, reply, (rate, pcm16(np.concatenate(chunks))), skip, skip, session, messages
                else:
                    yield messages, think, reply, skip, skip, skip, session, messages
            assert res is not None
            answer = res.reply or ("(speech only)" if res.speech_tokens else "(no answer)")
            messages.append({"role": "assistant", "content": answer})
            whole = (res.sample_rate, pcm16(res.audio)) if res.audio is not None else None
            silent = res.audio is None and task in SPEAKING_TASKS
            note = " · no token2wav model loaded: no audio" if silent else ""
            yield messages, think, reply, skip, whole, status_line(res) + note, session, messages
        except (InputAudioError, ValueError, SessionBusyError) as e:
            yield messages, skip, skip, skip, skip, error_line(str(e)), session, messages

    def listen(self, chunk: tuple[int, np.ndarray] | None, detector: Any) -> tuple[Any, Any, Any]:
        """Hands-free mode: microphone chunks in; when silero-vad hears the end of a turn, the turn's wav path goes
        to the hidden ``turn`` box (whose change runs :meth:`respond`). Returns (turn path, detector, status)."""
        import gradio as gr

        skip = gr.skip()
        if chunk is None or np.asarray(chunk[1]).size == 0:
            return skip, detector, skip
        try:
            if detector is None:
                from wenet_echat.infer.vad import EndOfTurnDetector

                detector = EndOfTurnDetector(min_silence_ms=self.vad_silence_ms)
            wav = prepare_audio(chunk[1], int(chunk[0]), max_seconds=float("inf"), min_seconds=0.0, name="the mic")
        except (ImportError, InputAudioError) as e:
            return skip, detector, error_line(str(e))
        turns = detector.push(wav)
        if not turns:
            return skip, detector, ("*listening…*" if detector.in_speech else skip)
        fd, path = tempfile.mkstemp(prefix="turn_", suffix=".wav", dir=self.turn_dir)
        os.close(fd)
        save_audio(path, turns[-1], 16000)
        return path, detector, "*end of turn*"

    @staticmethod
    def stop(session: ChatSession | None) -> None:
        if session is not None:
            session.cancel()

    def reset(self, session: ChatSession | None) -> tuple[Any, ...]:
        try:
            if session is not None:
                session.reset()
        except SessionBusyError:
            session = None  # a turn that never ended: start over with a new session
        return [], "", "", None, None, "conversation cleared", session or self.new_session(), []


def has_vad() -> bool:
    return importlib.util.find_spec("silero_vad") is not None


def build_app(engine: ChatEngine, title: str = "wenet-echat: empathetic spoken chat", info: str = "",
              vad_silence_ms: int = 700, task: str = "s2s_think") -> Any:
    """The gradio Blocks of the demo (not launched). With silero-vad installed it has a hands-free panel: a live
    microphone whose turns end at a pause of ``vad_silence_ms``."""
    import gradio as gr

    app = ChatApp(engine, vad_silence_ms)
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"## {html.escape(title)}\n{html.escape(info)}")
        session = gr.State(None)
        messages = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                audio_in = gr.Audio(sources=["microphone", "upload"], type="filepath", label="Your voice",
                                    elem_id="user_audio")
                text_in = gr.Textbox(label="Text (for TTS and text chat)", lines=2, elem_id="user_text")
                task_in = gr.Dropdown(choices=TASK_CHOICES, value=task, label="Task", elem_id="task")
                if has_vad():
                    with gr.Accordion("Hands-free: answer when you stop talking", open=False):
                        live = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Live microphone",
                                        elem_id="live_mic")
                        turn = gr.Textbox(visible=False, elem_id="turn_path")
                        detector = gr.State(None)
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                    reset = gr.Button("Reset", elem_id="reset")
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="Conversation", height=260, elem_id="chatbot")
                with gr.Accordion("Chain of thought", open=True, elem_id="think_panel"):
                    think = gr.Textbox(show_label=False, lines=3, interactive=False, elem_id="think")
                reply = gr.Textbox(label="Reply", lines=2, interactive=False, elem_id="reply")
                stream = gr.Audio(label="Reply (streaming)", streaming=True, autoplay=True, interactive=False,
                                  visible=app.stream_audio, elem_id="reply_stream")
                whole = gr.Audio(label="Reply audio", type="numpy", interactive=False, elem_id="reply_audio")
                status = gr.Markdown("", elem_id="status")
        outputs = [chatbot, think, reply, stream, whole, status, session, messages]
        inputs = [audio_in, text_in, task_in, session, messages]
        send.click(app.respond, inputs, outputs)
        audio_in.stop_recording(app.respond, inputs, outputs)
        stop.click(app.stop, [session], None, queue=False)
        reset.click(app.reset, [session], outputs)
        if has_vad():
            live.stream(app.listen, [live, detector], [turn, detector, status], stream_every=0.5)
            turn.change(app.respond, [turn, text_in, task_in, session, messages], outputs)
    return demo


def main(argv: list[str] | None = None) -> int:
    from wenet_echat.bin.chat import chat_conf

    args = get_parser().parse_args(argv)
    setup_logging()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gradio  # noqa: F401
    except ImportError:
        sys.exit("error: the web demo needs gradio: pip install -e '.[demo]' (tools/install.sh installs it)")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        engine = ChatEngine.from_dirs(args.model_dir, args.token2wav_dir, args.checkpoint, args.device,
                                      chat_conf(args), args.recipe_dir)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: cannot load the model: {e}")
    info = f"model: {engine.loaded.checkpoint}; " + (
        f"voice: {args.token2wav_dir}" if engine.token2wav is not None else "no token2wav model: text replies only")
    demo = build_app(engine, info=info, vad_silence_ms=args.vad_silence_ms, task=args.task)
    demo.queue(default_concurrency_limit=args.concurrency)
    log.info("serving on http://%s:%d", args.host, args.port)
    demo.launch(server_name=args.host, server_port=args.port, ssr_mode=False, show_error=True,
                max_file_size="50mb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
