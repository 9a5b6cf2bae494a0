"""Render a plan: user audio (voice + emotion + event mix, 16 kHz) and cached reply audio, in parallel.

Work items are independent and seeded per item, so the output does not depend on ``nj`` or on the order in
which workers finish. Reply audio lives under ``wavs/reply/xx/<id>.wav`` where ``id`` hashes the reply text, its
reply emotion and the assistant's voice/style settings: identical replies are synthesised once, also across
re-runs. Replies are assembled from their sentences (event mention, opening, core, closing), each rendered once
per reply emotion, which keeps the (slow, clustergen) assistant voice off the critical path.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wenet_echat.audio.io import save_audio
from wenet_echat.text.think import build_tag_think

from .events import mix_event
from .plan import Example
from .voices import ASSISTANT, ASSISTANT_SR, EMOTION_STYLES, REPLY_STYLES, USER_SR, synthesize

TASKS: list[str] = ["asr", "tag", "s2t_chat", "t2t", "tts", "s2s_chat", "s2s_think"]


REPLY_GAP_S = 0.25  # pause between the sentences of a reply
_SEGMENTS: dict[tuple[str, str], np.ndarray] = {}  # (sentence, reply emotion) -> int16 audio; inherited by fork


def reply_id(text: str, emotion: str) -> str:
    style = REPLY_STYLES[emotion]
    return hashlib.md5(f"{text}|{emotion}|{ASSISTANT}|{style}|{REPLY_GAP_S}".encode()).hexdigest()[:16]


def user_wav_path(out_dir: Path, ex: Example) -> Path:
    return out_dir / "wavs" / ex.split / ex.voice.vid / f"{ex.key}.wav"


def reply_wav_path(out_dir: Path, text: str, emotion: str) -> Path:
    rid = reply_id(text, emotion)
    return out_dir / "wavs" / "reply" / rid[:2] / f"{rid}.wav"


def _render_user(item: tuple) -> tuple[str, float, dict]:
    key, path, text, voice, labels, seed = item
    rng = np.random.default_rng(seed)
    wav, sr = synthesize(text, voice, EMOTION_STYLES[labels["emotion"]], rng, out_sr=USER_SR)
    info: dict = {}
    if labels["event"] != "none":
        wav, info = mix_event(wav, labels["event"], rng)
    save_audio(path, wav, sr)
    return key, len(wav) / sr, info


def _render_segment(item: tuple[str, str]) -> tuple[tuple[str, str], np.ndarray]:
    text, emotion = item
    seed = int(reply_id(text, emotion)[:8], 16)  # the assistant adds no noise; seeded all the same
    wav, sr = synthesize(text, ASSISTANT, REPLY_STYLES[emotion], np.random.default_rng(seed), out_sr=None)
    assert sr == ASSISTANT_SR, f"assistant voice rate {sr} != {ASSISTANT_SR}"
    return item, np.round(wav * 32767).astype(np.int16)


def _render_reply(item: tuple) -> tuple[str, float, dict]:
    path, parts, emotion = item
    gap = np.zeros(int(REPLY_GAP_S * ASSISTANT_SR), dtype=np.int16)
    pieces = [gap[: len(gap) // 2]]
    for part in parts:
        pieces += [_SEGMENTS[(part, emotion)], gap]
    wav = np.concatenate(pieces[:-1] + [gap[: len(gap) // 2]]).astype(np.float32) / 32767
    save_audio(path, wav, ASSISTANT_SR)
    return str(path), len(wav) / ASSISTANT_SR, {}


def _run(job: tuple[str, tuple]) -> tuple[str, tuple]:
    kind, item = job
    if kind == "segment":
        return kind, _render_segment(item)
    return kind, (_render_user if kind == "user" else _render_reply)(item)


def _parallel(jobs: list, nj: int, desc: str, show_progress: bool):
    """Yield ``_run`` results of ``jobs`` (any order) with a tqdm bar on stderr."""
    bar = tqdm(total=len(jobs), desc=desc, unit="item", file=sys.stderr, disable=not show_progress,
               mininterval=1.0)
    pool = mp.get_context("fork").Pool(nj) if nj > 1 and len(jobs) > 1 else None
    try:
        results = pool.imap_unordered(_run, jobs, chunksize=4) if pool else map(_run, jobs)
        for res in results:
            bar.update()
            yield res
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()


def render(plan: dict[str, list[Example]], out_dir: Path, nj: int, show_progress: bool = True
           ) -> dict[str, list[dict]]:
    """Synthesise every example of ``plan`` under ``out_dir``; returns the data.list records per split.

    Phase 1 renders each distinct (reply sentence, reply emotion) once; phase 2 writes the user audio and
    assembles every distinct reply that is not on disk yet from those sentences.
    """
    replies: dict[Path, tuple[list[str], str]] = {}
    for examples in plan.values():
        for ex in examples:
            path = reply_wav_path(out_dir, ex.response, ex.response_emotion)
            if not path.exists():  # cache hit from an earlier run: reply_id hashes text + style
                replies.setdefault(path, (ex.response_parts, ex.response_emotion))
    segments = sorted({(p, e) for parts, e in replies.values() for p in parts})
    _SEGMENTS.clear()
    for _, (item, wav) in _parallel([("segment", s) for s in segments], nj, "reply sentences", show_progress):
        _SEGMENTS[item] = wav
    jobs: list[tuple[str, tuple]] = [("reply", (p, parts, e)) for p, (parts, e) in replies.items()]
    for examples in plan.values():
        jobs += [("user", (ex.key, user_wav_path(out_dir, ex), ex.sentence.text, ex.voice, ex.labels, ex.seed))
                 for ex in examples]
    durations: dict[str, float] = {}
    for kind, (key, dur, _info) in _parallel(jobs, nj, "utterances", show_progress):
        if kind == "user":
            durations[key] = dur
    _SEGMENTS.clear()
    return {split: [_record(ex, out_dir, durations[ex.key]) for ex in examples] for split, examples in plan.items()}


def _record(ex: Example, out_dir: Path, duration: float) -> dict:
    return {
        "key": ex.key,
        "wav": os.fspath(user_wav_path(out_dir, ex)),
        "duration": round(duration, 4),
        "task": list(TASKS),
        "text": ex.sentence.text,
        "labels": dict(ex.labels),
        "response": ex.response,
        "response_emotion": ex.response_emotion,
        "response_wav": os.fspath(reply_wav_path(out_dir, ex.response, ex.response_emotion)),
        "think": build_tag_think(ex.sentence.text, ex.labels, ex.response_emotion),
        "speaker": ex.voice.vid,
        "category": ex.category,
    }
