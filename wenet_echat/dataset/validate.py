"""Check a data.list or Kaldi data dir and report every problem with its location.

Each problem prints as ``path:line: key: kind: message``. Kinds: ``invalid_json``, ``not_utf8``, ``not_object``,
``missing_field``, ``unknown_task``, ``bad_label``, ``bad_record`` (other schema errors), ``duplicate_key``,
``bad_line`` (Kaldi dir), and the audio kinds of :func:`wenet_echat.audio.io.check_audio` (``missing``,
``unreadable``, ``empty``, ``too_short``, ``odd_sample_rate``, ``sample_rate_mismatch``, ``multi_channel``,
``too_long``, ``nan``). Problems in ``response_wav`` have the same kinds, with ``response_wav:`` in the message.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wenet_echat.dataset.kaldi import KaldiDirError, read_kaldi_dir_located
from wenet_echat.dataset.schema import check_record
from wenet_echat.dataset.source import read_list
from wenet_echat.utils.fileio import JsonlError, parse_jsonl_line

NO_KEY = "-"


@dataclass(frozen=True)
class Problem:
    path: str
    lineno: int
    key: str
    kind: str
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}: {self.key}: {self.kind}: {self.message}"


def record_problem_kind(message: str) -> str:
    """Kind of one :func:`check_record` phrase."""
    if "needs field" in message or message.startswith("missing field") or "serves no task" in message:
        return "missing_field"
    if message.startswith("unknown task"):
        return "unknown_task"
    if "label" in message or message.startswith(("response_emotion", "category")):
        return "bad_label"
    return "bad_record"


@dataclass
class _Entry:
    path: str
    lineno: int
    record: dict[str, Any]

    @property
    def key(self) -> str:
        key = self.record.get("key")
        return key if isinstance(key, str) and key else NO_KEY


def _check_entries(entries: list[_Entry], expected_sr: int | None, max_duration: float | None, audio: bool,
                   nj: int) -> list[Problem]:
    problems: list[Problem] = []
    first: dict[str, _Entry] = {}
    for e in entries:
        for msg in check_record(e.record):
            problems.append(Problem(e.path, e.lineno, e.key, record_problem_kind(msg), msg))
        if e.key != NO_KEY:
            if e.key in first:
                f = first[e.key]
                problems.append(Problem(e.path, e.lineno, e.key, "duplicate_key",
                                        f"key also at {f.path}:{f.lineno}"))
            else:
                first[e.key] = e
    if audio:
        problems += _check_audio_all(entries, expected_sr, max_duration, nj)
    return problems


def _check_audio_all(entries: list[_Entry], expected_sr: int | None, max_duration: float | None,
                     nj: int) -> list[Problem]:
    from wenet_echat.audio.io import check_audio

    jobs: list[tuple[_Entry, str, str]] = []
    for e in entries:
        for field in ("wav", "response_wav"):
            spec = e.record.get(field)
            if isinstance(spec, str) and spec:
                jobs.append((e, field, spec))

    def run(job: tuple[_Entry, str, str]) -> list[Problem]:
        e, field, spec = job
        kwargs: dict[str, Any] = {"expected_sr": expected_sr}
        if max_duration is not None:
            kwargs["max_duration"] = max_duration
        out = []
        for p in check_audio(spec, **kwargs):
            prefix = "" if field == "wav" else "response_wav: "
            out.append(Problem(e.path, e.lineno, e.key, p.kind, f"{prefix}{p.message}", bool(p.fatal)))
        return out

    with ThreadPoolExecutor(max_workers=max(1, nj)) as pool:
        return [p for ps in pool.map(run, jobs) for p in ps]


def validate_list(list_path: str | os.PathLike, expected_sr: int | None = 16000, max_duration: float | None = 30.0,
                  audio: bool = True, nj: int = 4) -> list[Problem]:
    """Every problem of a data.list, in line order."""
    path = str(list_path)
    problems: list[Problem] = []
    entries: list[_Entry] = []
    for lineno, line in read_list(path):
        try:
            rec = parse_jsonl_line(line, path, lineno)
        except JsonlError as e:
            if e.reason.startswith("not UTF-8"):
                kind = "not_utf8"
            elif e.reason.startswith("expected a JSON object"):
                kind = "not_object"
            else:
                kind = "invalid_json"
            problems.append(Problem(path, lineno, NO_KEY, kind, e.reason))
            continue
        entries.append(_Entry(path, lineno, rec))
    problems += _check_entries(entries, expected_sr, max_duration, audio, nj)
    return sorted(problems, key=lambda p: (p.path, p.lineno))


def validate_kaldi_dir(in_dir: str | os.PathLike, expected_sr: int | None = 16000,
                       max_duration: float | None = 30.0, audio: bool = True, nj: int = 4) -> list[Problem]:
    """Every problem of a Kaldi data dir (locations are the file:line where the key is anchored)."""
    problems: list[Problem] = []

    def on_error(path: str, lineno: int, message: str) -> None:
        key = NO_KEY
        kind = "duplicate_key" if message.startswith("duplicate key") else "bad_line"
        if kind == "duplicate_key" or "is not in" in message:
            key = message.split("'")[1]
        if message.startswith("not UTF-8"):
            kind = "not_utf8"
        problems.append(Problem(path, lineno, key, kind, message))

    try:
        located = read_kaldi_dir_located(in_dir, on_error)
    except KaldiDirError as e:
        return [Problem(str(in_dir), 0, NO_KEY, "bad_line", str(e))]
    entries = [_Entry(path, lineno, rec) for rec, path, lineno in located]
    problems += _check_entries(entries, expected_sr, max_duration, audio, nj)
    return sorted(problems, key=lambda p: (p.path, p.lineno))


def validate(target: str | os.PathLike, **kwargs: Any) -> list[Problem]:
    """Validate a data.list file or a Kaldi data dir (chosen by whether ``target`` is a directory)."""
    if Path(target).is_dir():
        return validate_kaldi_dir(target, **kwargs)
    return validate_list(target, **kwargs)


def summary_table(problems: Iterable[Problem]) -> str:
    """Counts per kind as an aligned table (fatal kinds marked)."""
    problems = list(problems)
    counts = Counter(p.kind for p in problems)
    fatal = {p.kind for p in problems if p.fatal}
    width = max([len(k) for k in counts] + [4])
    lines = [f"{'kind':<{width}}  {'count':>6}  severity"]
    for kind in sorted(counts):
        lines.append(f"{kind:<{width}}  {counts[kind]:>6}  {'error' if kind in fatal else 'warning'}")
    n_fatal = sum(p.fatal for p in problems)
    lines.append(f"{'total':<{width}}  {len(problems):>6}  ({n_fatal} errors, {len(problems) - n_fatal} warnings)")
    return "\n".join(lines)
