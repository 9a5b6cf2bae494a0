"""CSV/TSV/JSONL manifests -> data.list records, finished (normalised, cut, validated) by
:func:`wenet_echat.dataset.prepare.finish`.

A manifest maps our fields to its columns (``columns={"text": "transcript", "emotion": "emo"}``); unmapped fields
use columns of the same name, dotted names reach into JSON objects (``extra.question``). Field names are those of
``docs/data.md``; the four labels are addressed by their own names (``age``, ``gender``, ``emotion``, ``event``);
``start``/``end`` columns cut segments. The ``osum_echat`` preset reads the JSONL layout of OSUM-EChat's own data
lists (:func:`osum_echat_row`).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from wenet_echat.audio.io import is_ark_spec
from wenet_echat.dataset.prepare import (
    LABEL_NAMES,
    NO_KEY,
    Entry,
    Issue,
    Prepared,
    PrepareError,
    ValueMap,
    finish,
    segment_bounds,
)
from wenet_echat.dataset.schema import FIELD_TYPES
from wenet_echat.utils.fileio import JsonlError, parse_jsonl_line

# fields a manifest may fill: the record schema's (labels by their own names) plus segment bounds
MANIFEST_FIELDS: tuple[str, ...] = (*(f for f in FIELD_TYPES if f != "labels"), *LABEL_NAMES, "start", "end")
AUDIO_FIELDS = ("wav", "response_wav")


def manifest_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """``csv``, ``tsv`` or ``jsonl``: ``fmt`` if given, else from the file name."""
    fmt = fmt or {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".list": "jsonl"}.get(
        Path(path).suffix.lower())
    if fmt not in ("csv", "tsv", "jsonl"):
        raise PrepareError(f"{path}: cannot tell the manifest format from the name; give --format csv|tsv|jsonl")
    return fmt


def read_manifest(path: str | os.PathLike, fmt: str | None = None) -> Iterator[tuple[int, dict[str, Any] | Issue]]:
    """``(line, row)`` of a CSV/TSV (header row) or JSONL file; a bad line yields ``(line, Issue)``."""
    path = str(path)
    fmt = manifest_format(path, fmt)
    if fmt == "jsonl":
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, parse_jsonl_line(line, path, lineno)
                except JsonlError as e:
                    yield lineno, Issue(path, lineno, NO_KEY, e.reason)
        return
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter="," if fmt == "csv" else "\t")
        start = 2
        for row in reader:
            if None in row:
                yield start, Issue(path, start, NO_KEY, f"{len(reader.fieldnames or [])} columns in the header but "
                                                        f"more in this row")
            elif any(v is None for v in row.values()):
                yield start, Issue(path, start, NO_KEY, "fewer columns than the header")
            else:
                yield start, row
            start = reader.line_num + 1


def _get(row: dict[str, Any], name: str) -> Any:
    """``row[name]``, or a dotted path into nested objects (``extra.question``)."""
    if name in row:
        return row[name]
    value: Any = row
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _convert(name: str, value: Any) -> Any:
    """A manifest cell as the record field ``name`` wants it (raises ValueError with the reason)."""
    if name in ("duration", "start", "end"):
        return float(value)
    if name == "task":
        if isinstance(value, list):
            return [str(v) for v in value]
        names = re.split(r"[\s,]+", str(value).strip())
        return names[0] if len(names) == 1 else names
    if name == "response_tokens":
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else text.split()
        if not isinstance(value, list):
            raise ValueError("response_tokens must be a list or space-separated integers")
        return [int(v) for v in value]
    if name == "history":
        return json.loads(value) if isinstance(value, str) else value
    if name in LABEL_NAMES:
        return None if str(value).strip().lower() == "null" else str(value)
    return value if isinstance(value, (list, dict)) else str(value).strip()


def manifest_entry(row: dict[str, Any], columns: dict[str, str], path: str, lineno: int,
                   audio_root: str | None = None) -> tuple[Entry, list[Issue]]:
    """One manifest row as an :class:`Entry` (segment bounds kept aside for :func:`cut_segments`)."""
    rec: dict[str, Any] = {}
    entry = Entry(rec, path, lineno)
    issues: list[Issue] = []
    if isinstance(row.get("labels"), dict) and "labels" not in columns:
        rec["labels"] = {k: _convert(k, v) if v is not None else None for k, v in row["labels"].items()}
    bounds: dict[str, float] = {}
    for name in MANIFEST_FIELDS:
        value = _get(row, columns.get(name, name))
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        try:
            converted = _convert(name, value)
        except (ValueError, TypeError) as e:
            issues.append(entry.flag("", f"column '{columns.get(name, name)}' ({name}): {value!r}: {e}"))
            continue
        if name in ("start", "end"):
            bounds[name] = converted
        elif name in LABEL_NAMES:
            rec.setdefault("labels", {})[name] = converted
        else:
            rec[name] = converted
    if audio_root:
        for name in AUDIO_FIELDS:
            spec = rec.get(name)
            if isinstance(spec, str) and not os.path.isabs(spec) and not is_ark_spec(spec):
                rec[name] = os.path.join(audio_root, spec)
    if bounds and rec.get("wav"):
        try:
            start, end = segment_bounds(bounds.get("start"), bounds.get("end"))
            entry.segment = (rec["wav"], start, end)
        except ValueError as e:
            issues.append(entry.flag("", str(e)))
    return entry, issues


def check_columns(columns: dict[str, str]) -> None:
    unknown = sorted(set(columns) - set(MANIFEST_FIELDS))
    if unknown:
        raise PrepareError(f"unknown field(s) {unknown} in the column map; fields: {', '.join(MANIFEST_FIELDS)}")


def prepare_manifest(path: str | os.PathLike, columns: dict[str, str] | None = None, fmt: str | None = None,
                     value_map: ValueMap | None = None, task: str | list[str] | None = None,
                     audio_root: str | None = None, preset: str | None = None,
                     seg_ark: str | os.PathLike | None = None, durations: bool = True, nj: int = 4) -> Prepared:
    """Records of a CSV/TSV/JSONL manifest (see the module docstring)."""
    columns = dict(columns or {})
    check_columns(columns)
    if preset is not None and preset not in PRESETS:
        raise PrepareError(f"unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    transform = PRESETS[preset] if preset else None
    fmt = manifest_format(path, fmt)
    entries: list[Entry] = []
    issues: list[Issue] = []
    header_checked = fmt == "jsonl"
    for lineno, row in read_manifest(path, fmt):
        if isinstance(row, Issue):
            issues.append(row)
            continue
        if not header_checked:
            absent = sorted(f"{c} (for {f})" for f, c in columns.items() if c not in row)
            if absent:
                raise PrepareError(f"{path}: column(s) {', '.join(absent)} not in the header: {', '.join(row)}")
            header_checked = True
        if transform is not None:
            try:
                row = transform(row)
            except ValueError as e:
                issues.append(Issue(str(path), lineno, str(row.get("key") or NO_KEY), str(e)))
                continue
        entry, row_issues = manifest_entry(row, columns, str(path), lineno, audio_root)
        issues += row_issues
        entries.append(entry)
    return finish(entries, issues, value_map, task, seg_ark, durations, nj)


# ------------------------------------------------------------------------------------------------------ presets
# OSUM-EChat task tags (space-joined in its ``task`` field) -> our task names
OSUM_TASKS: dict[str, str] = {
    "<TRANSCRIBE>": "asr",
    "<S2TCHAT>": "s2t_chat",
    "<S2TCHAT> <THINKER>": "s2t_chat",
    "<TEXT2TEXT>": "t2t",
    "<TEXT2TOKEN>": "tts",
    "<S2TCHAT> <TEXT2TOKEN>": "s2s_chat",
    "<S2TCHAT> <TEXT2TOKEN> <THINK>": "s2s_think",
}


def osum_echat_row(obj: dict[str, Any]) -> dict[str, Any]:
    """One line of an OSUM-EChat data list (``key``, ``wav``, ``txt``, ``task`` tag string, ``extra`` with
    ``question``, ``age``, ``gender``, ``q_emotion``, ``caption``, ``think_str``, ``speech_token``,
    ``a_wav_path``, ``duration``; optional ``start``/``end``) in our field names. ``txt`` is the transcript for
    ``<TRANSCRIBE>`` and the reply otherwise (then ``extra.question`` is the transcript)."""
    extra = obj.get("extra") or {}
    if not isinstance(extra, dict):
        raise ValueError("'extra' must be a JSON object")
    tag = " ".join(str(obj.get("task") or "").split())
    if tag not in OSUM_TASKS:
        raise ValueError(f"OSUM task tag {tag!r} has no counterpart here (known: {', '.join(OSUM_TASKS)})")
    task = OSUM_TASKS[tag]
    row: dict[str, Any] = {"key": obj.get("key"), "wav": obj.get("wav"), "task": task,
                           "duration": extra.get("duration", obj.get("duration")),
                           "start": obj.get("start"), "end": obj.get("end")}
    if task == "asr":
        row["text"] = obj.get("txt")
    else:
        row["text"] = extra.get("question", extra.get("q_txt"))
        row["response"] = obj.get("txt")
    for ours, theirs in (("age", "age"), ("gender", "gender"), ("emotion", "q_emotion"), ("event", "caption"),
                         ("think", "think_str"), ("response_tokens", "speech_token"), ("response_wav", "a_wav_path")):
        if extra.get(theirs) is not None:
            row[ours] = extra[theirs]
    if task == "t2t":
        row.pop("wav", None)
    return {k: v for k, v in row.items() if v is not None}


PRESETS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"osum_echat": osum_echat_row}


def parse_columns(items: Iterable[str]) -> dict[str, str]:
    """``["text=transcript", "emotion=emo"]`` -> ``{"text": "transcript", "emotion": "emo"}``."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, column = item.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise PrepareError(f"column mapping {item!r} must look like FIELD=COLUMN")
        out[name.strip()] = column.strip()
    check_columns(out)
    return out


__all__ = ["MANIFEST_FIELDS", "OSUM_TASKS", "PRESETS", "manifest_entry", "manifest_format", "osum_echat_row",
           "parse_columns", "prepare_manifest", "read_manifest"]
