"""Kaldi data directories <-> data.list records (docs/data.md §2).

One ``<key> <value>`` file per field, sorted by key in C-locale order and written atomically. Conventions that
keep the round trip lossless:

- ``utt2spk`` holds the speaker, or the key itself when the record has none (read back: speaker == key -> absent);
- a label that is present but ``null`` (unknown) is written as ``null``; an absent label has no line;
- ``utt2task`` is space-separated; a single name reads back as a string, several as a list;
- ``response_tokens`` is space-separated ints; ``utt2dur`` a float; precomputed features go to ``feats.scp``.
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wenet_echat.text.labels import LABEL_VOCABS
from wenet_echat.utils.fileio import atomic_open, write_kv

# file name -> record field, for plain string fields
STR_FILES: dict[str, str] = {
    "wav.scp": "wav",
    "feats.scp": "feat",
    "text": "text",
    "utt2category": "category",
    "response": "response",
    "response_wav.scp": "response_wav",
    "utt2response_emotion": "response_emotion",
    "think": "think",
}
LABEL_FILES: dict[str, str] = {f"utt2{name}": name for name in LABEL_VOCABS}
NULL = "null"


class KaldiDirError(ValueError):
    """A bad line in a Kaldi data dir; the message names file:line."""


def _fmt_num(x: float) -> str:
    return repr(float(x)) if isinstance(x, float) else str(x)


def _check_value(key: str, field: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"{key}: field '{field}' holds a newline; it cannot go into a Kaldi dir")
    return value


def write_kaldi_dir(records: Iterable[dict[str, Any]], out_dir: str | os.PathLike) -> int:
    """Write ``records`` as a Kaldi data dir; returns the number of utterances. Files without any entry are not
    written (``utt2spk``/``spk2utt`` always are). Raises ``ValueError`` on duplicate/whitespace keys."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[tuple[str, str]]] = defaultdict(list)
    spk2utt: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for rec in records:
        key = rec.get("key")
        if not isinstance(key, str) or not key or any(c.isspace() for c in key):
            raise ValueError(f"bad key {key!r}: must be a non-empty string without whitespace")
        if key in seen:
            raise ValueError(f"duplicate key '{key}'")
        seen.add(key)
        spk = rec.get("speaker") or key
        if any(c.isspace() for c in spk):
            raise ValueError(f"{key}: speaker {spk!r} contains whitespace")
        files["utt2spk"].append((key, spk))
        spk2utt[spk].append(key)
        for fname, field in STR_FILES.items():
            if rec.get(field) is not None:
                files[fname].append((key, _check_value(key, field, str(rec[field]))))
        if rec.get("duration") is not None:
            files["utt2dur"].append((key, _fmt_num(rec["duration"])))
        labels = rec.get("labels") or {}
        for fname, name in LABEL_FILES.items():
            if name in labels:
                files[fname].append((key, NULL if labels[name] is None else str(labels[name])))
        task = rec.get("task")
        if task is not None:
            files["utt2task"].append((key, task if isinstance(task, str) else " ".join(task)))
        if rec.get("response_tokens") is not None:
            files["response_tokens"].append((key, " ".join(str(int(t)) for t in rec["response_tokens"])))
    for fname, items in files.items():
        write_kv(out / fname, items)
    with atomic_open(out / "spk2utt") as f:
        for spk in sorted(spk2utt, key=str.encode):
            f.write(f"{spk} {' '.join(sorted(spk2utt[spk], key=str.encode))}\n")
    if not files:
        write_kv(out / "utt2spk", [])
    return len(seen)


def read_kaldi_file(path: str | os.PathLike,
                    on_error: Callable[[str, int, str], None]) -> dict[str, tuple[int, str]]:
    """``key -> (line number, value)`` of one ``<key> <value>`` file; bad lines go to ``on_error(path, lineno,
    message)`` and are skipped."""
    path = Path(path)
    out: dict[str, tuple[int, str]] = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                on_error(str(path), lineno, f"not UTF-8 ({e.reason} at byte {e.start})")
                continue
            if not line.strip():
                continue
            key, _, value = line.partition(" ")
            if not key:
                on_error(str(path), lineno, "line starts with a space (no key)")
                continue
            if key in out:
                on_error(str(path), lineno, f"duplicate key '{key}' (first at line {out[key][0]})")
                continue
            out[key] = (lineno, value.strip())
    return out


@dataclass
class KaldiEntry:
    """One utterance of a Kaldi dir: its record, where it starts (the anchor file's line) and where each field came
    from (``field`` or ``labels.<name>`` -> ``(file, line)``)."""

    record: dict[str, Any]
    path: str
    lineno: int
    where: dict[str, tuple[str, int]] = dataclasses.field(default_factory=dict)


def read_kaldi_dir_entries(in_dir: str | os.PathLike, on_error: Callable[[str, int, str], None] | None = None,
                           skip: Iterable[str] = ()) -> list[KaldiEntry]:
    """Every utterance of a Kaldi dir with the location of each field, sorted by key.

    Bad lines call ``on_error(file, line, message)`` (default: raise :class:`KaldiDirError`) and are skipped.
    Files named in ``skip`` are not read (e.g. ``wav.scp`` keyed by recording when a ``segments`` file exists).
    """
    d = Path(in_dir)
    skipped = set(skip)

    def _raise(path: str, lineno: int, msg: str) -> None:
        raise KaldiDirError(f"{path}:{lineno}: {msg}")

    err = on_error or _raise
    candidates = [n for n in ("utt2spk", "wav.scp") if n not in skipped and (d / n).exists()]
    if not candidates:
        raise KaldiDirError(f"{d}: not a Kaldi data dir (no utt2spk or wav.scp)")
    anchor_name = candidates[0]
    entries: dict[str, KaldiEntry] = {}
    for key, (lineno, value) in read_kaldi_file(d / anchor_name, err).items():
        entry = entries[key] = KaldiEntry({"key": key}, str(d / anchor_name), lineno)
        if anchor_name == "utt2spk" and value and value != key:
            entry.record["speaker"] = value
            entry.where["speaker"] = (entry.path, lineno)

    def each(fname: str, where: str):
        path = d / fname
        if fname in skipped or not path.exists():
            return
        for key, (lineno, value) in read_kaldi_file(path, err).items():
            if key not in entries:
                err(str(path), lineno, f"key '{key}' is not in {anchor_name}")
                continue
            entries[key].where[where] = (str(path), lineno)
            yield str(path), lineno, entries[key].record, value

    for fname, name in STR_FILES.items():
        for _, _, rec, value in each(fname, name):
            rec[name] = value
    for path, lineno, rec, value in each("utt2dur", "duration"):
        try:
            rec["duration"] = float(value) if any(c in value for c in ".eEn") else int(value)
        except ValueError:
            err(path, lineno, f"duration {value!r} is not a number")
    for fname, name in LABEL_FILES.items():
        for _, _, rec, value in each(fname, f"labels.{name}"):
            rec.setdefault("labels", {})[name] = None if value == NULL else value
    for _, _, rec, value in each("utt2task", "task"):
        names = value.split()
        rec["task"] = names[0] if len(names) == 1 else names
    for path, lineno, rec, value in each("response_tokens", "response_tokens"):
        try:
            rec["response_tokens"] = [int(t) for t in value.split()]
        except ValueError:
            err(path, lineno, "response_tokens must be space-separated integers")
    return [entries[k] for k in sorted(entries, key=str.encode)]


def read_kaldi_dir_located(in_dir: str | os.PathLike,
                           on_error: Callable[[str, int, str], None] | None = None
                           ) -> list[tuple[dict[str, Any], str, int]]:
    """Records of a Kaldi dir with where each starts: ``(record, file, line)`` sorted by key.

    Bad lines call ``on_error(file, line, message)`` (default: raise :class:`KaldiDirError`) and are skipped.
    """
    return [(e.record, e.path, e.lineno) for e in read_kaldi_dir_entries(in_dir, on_error)]


def read_kaldi_dir(in_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a Kaldi data dir, sorted by key; raises :class:`KaldiDirError` naming file:line on a bad line."""
    return [rec for rec, _, _ in read_kaldi_dir_located(in_dir)]
