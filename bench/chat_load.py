#!/usr/bin/env python3
"""Load on the web demo: concurrent conversations against a running ``wenet_echat.bin.chat_app`` on loopback.

Usage (from the repository root):
    .venv/bin/python bench/chat_load.py [--url http://127.0.0.1:7860/] [--sessions 8] [--turns 3]
        [--max_seconds 300] [--task s2s_think] [--wav in.wav]
    .venv/bin/python bench/chat_load.py --serve_random [--concurrency 2] ...   # starts its own app first

Each session is one gradio client (its own browser-tab state, so its own conversation) sending ``--turns`` spoken
turns one after the other; all sessions run at once. The run stops early after ``--max_seconds`` (turns not
started by then are not sent). ``--serve_random`` serves the mini-recipe architecture with random weights
(bench/latency.py's model, turns cut at ``--text_tokens`` / ``--speech_tokens``) on a free loopback port. One line::

    load sessions=8 turns=24 errors=0 wall_s=... turns_per_s=... turn_p50_ms=... turn_p90_ms=... turn_p99_ms=...
         first_text_p50_ms=... first_text_p90_ms=... first_text_p99_ms=...

``turn`` is submit → final answer as the client sees it; ``first_text`` is submit → first visible chain-of-thought
or reply text. An error is an exception, a timeout or an answer whose status is neither "done" nor "stopped at
the token limit".
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:7860/")
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--turns", type=int, default=3, help="turns per session")
    p.add_argument("--max_seconds", type=float, default=300.0, help="no new turn after this")
    p.add_argument("--task", default="s2s_think")
    p.add_argument("--wav", default=None, help="user audio (default: the first recipe test utterance, else a tone)")
    p.add_argument("--serve_random", action="store_true", help="start an app with a random mini model first")
    p.add_argument("--concurrency", type=int, default=2, help="with --serve_random: answers computed at once")
    p.add_argument("--text_tokens", type=int, default=32)
    p.add_argument("--speech_tokens", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_random(args: argparse.Namespace, tmp: Path) -> tuple[str, Any]:
    import torch
    from latency import random_mini

    from wenet_echat.bin.chat_app import build_app
    from wenet_echat.infer.session import ChatConf, ChatEngine
    from wenet_echat.model import GenerateConf

    torch.set_num_threads(args.threads)
    loaded, t2w = random_mini(tmp)
    conf = ChatConf(generate=GenerateConf(max_text_tokens=args.text_tokens, max_speech_tokens=args.speech_tokens))
    demo = build_app(ChatEngine(loaded, t2w, conf), info="random mini model (load test)")
    demo.queue(default_concurrency_limit=args.concurrency)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, ssr_mode=False, quiet=True)
    return f"http://127.0.0.1:{port}/", demo


def input_wav(args: argparse.Namespace, tmp: Path) -> str:
    if args.wav:
        return args.wav
    test = ROOT / "egs" / "echat" / "data" / "test" / "data.list"
    if test.is_file():
        wav = json.loads(test.open().readline())["wav"]
        return wav if Path(wav).is_absolute() else str(ROOT / "egs" / "echat" / wav)
    import soundfile as sf

    t = np.arange(32000) / 16000
    path = tmp / "tone.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    return str(path)


def run_session(url: str, wav: str, task: str, turns: int, deadline: float, out: list[dict[str, Any]]) -> None:
    from gradio_client import Client, handle_file

    try:
        client = Client(url, verbose=False)
    except Exception as e:  # the app is not there: every turn of this session fails
        out += [{"error": f"connect: {e}"}] * turns
        return
    for _ in range(turns):
        if time.monotonic() > deadline:
            return
        row: dict[str, Any] = {}
        t0 = time.perf_counter()
        try:
            job = client.submit(handle_file(wav), "", task, api_name="/respond")
            final = None
            for update in job:
                if "first_text_s" not in row and any(isinstance(x, str) and x.strip() and not x.startswith("*")
                                                     for x in update[1:3]):
                    row["first_text_s"] = time.perf_counter() - t0
                final = update
            final = job.result(timeout=max(1.0, deadline + 60 - time.monotonic())) or final
            row["turn_s"] = time.perf_counter() - t0
            status = str(final[-1]) if final else ""
            if not status.startswith(("**done", "**stopped at the token limit")):
                row["error"] = f"status: {status[:80]}"
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"
        out.append(row)


def pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:.0f}" if values else "nan"


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        demo = None
        url = args.url
        if args.serve_random:
            url, demo = serve_random(args, Path(tmp))
        wav = input_wav(args, Path(tmp))
        results: list[list[dict[str, Any]]] = [[] for _ in range(args.sessions)]
        deadline = time.monotonic() + args.max_seconds
        t0 = time.perf_counter()
        threads = [threading.Thread(target=run_session, args=(url, wav, args.task, args.turns, deadline, results[i]))
                   for i in range(args.sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        if demo is not None:
            demo.close()
    rows = [r for rs in results for r in rs]
    errors = [r["error"] for r in rows if "error" in r]
    turn = [r["turn_s"] for r in rows if "turn_s" in r and "error" not in r]
    first = [r["first_text_s"] for r in rows if "first_text_s" in r and "error" not in r]
    line = (f"load sessions={args.sessions} turns={len(rows)} errors={len(errors)} wall_s={wall:.1f} "
            f"turns_per_s={len(turn) / wall:.2f} turn_p50_ms={pct(turn, 50)} turn_p90_ms={pct(turn, 90)} "
            f"turn_p99_ms={pct(turn, 99)} first_text_p50_ms={pct(first, 50)} first_text_p90_ms={pct(first, 90)} "
            f"first_text_p99_ms={pct(first, 99)}")
    print(line)
    for e in sorted(set(errors))[:5]:
        print(f"error x{errors.count(e)}: {e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"line": line, "rows": rows}, indent=1))
    return 1 if len(errors) == len(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
