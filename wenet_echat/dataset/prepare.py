"""Data preparation for real corpora: a Kaldi data dir or a CSV/TSV/JSONL manifest -> validated data.list records.

Both paths end in the same steps:

1. **normalise** tag values: ``labels.*``, ``response_emotion`` and ``category`` are stripped of ``<>`` and
   spaces, lower-cased, inner spaces/hyphens become ``_`` (``<Throat Clearing>`` -> ``throat_clearing``), then an
   optional value map renames corpus values to ours (``{emotion: {ang: angry, hap: happy, xxx: null}}``; ``null``
   = unknown, loss-masked). ``task`` names may be mapped the same way (without the case folding);
2. **segments**: utterances given as ``(recording, start, end)`` (a Kaldi ``segments`` file or ``start``/``end``
   manifest columns) are cut once into a kaldiio wav ark (16-bit PCM, mono), so ``wav`` becomes ``x.ark:offset``
   and every later tool reads them like files;
3. **durations** missing from the input are read from the audio headers (``--nj`` threads);
4. **validation** with :func:`wenet_echat.dataset.schema.check_record` and a duplicate-key check. Every problem
   is reported as ``file:line: key: message`` where ``file:line`` is where the offending value was read (the label
   file for a bad ``utt2emotion`` value, the manifest row otherwise).

Manifests map our fields to their columns (``columns={"text": "transcript", "emotion": "emo"}``; unmapped fields
use columns of the same name; dotted names reach into JSON objects, ``extra.question``). Field names are those of
``docs/data.md``; the four labels are addressed by their own names (``age``, ``gender``, ``emotion``, ``event``).
The ``osum_echat`` preset reads the JSONL layout of OSUM-EChat's own data lists (:func:`osum_echat_row`).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wenet_echat.audio.io import AudioError, audio_info, is_ark_spec, load_audio
from wenet_echat.dataset.kaldi import KaldiDirError, read_kaldi_dir_entries, read_kaldi_file
from wenet_echat.dataset.schema import FIELD_TYPES, check_record
from wenet_echat.text.labels import LABEL_VOCABS
from wenet_echat.utils.fileio import JsonlError, atomic_path, parse_jsonl_line

LABEL_NAMES: tuple[str, ...] = tuple(LABEL_VOCABS)
TAG_FIELDS: tuple[str, ...] = ("response_emotion", "category")
MAPPABLE: tuple[str, ...] = (*LABEL_NAMES, *TAG_FIELDS, "task")
# fields a manifest may fill: the record schema's (labels by their own names) plus segment bounds
MANIFEST_FIELDS: tuple[str, ...] = (*(f for f in FIELD_TYPES if f != "labels"), *LABEL_NAMES, "start", "end")
AUDIO_FIELDS = ("wav", "response_wav")
NO_KEY = "-"

ValueMap = dict[str, dict[str, Any]]


class PrepareError(ValueError):
    """Bad command-line level input (an unknown column, a bad value map); per-record problems are :class:`Issue`."""


@dataclass(frozen=True)
class Issue:
    path: str
    lineno: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}: {self.key}: {self.message}"


@dataclass
class Entry:
    """A record with where it starts and where each field came from (``field`` or ``labels.<name>``)."""

    record: dict[str, Any]
    path: str
    lineno: int
    where: dict[str, tuple[str, int]] = field(default_factory=dict)
    segment: tuple[str, float, float] | None = None  # (source audio, start s, end s; end < 0 = to the end)
    bad: bool = False  # a problem was found: the record is not written

    @property
    def key(self) -> str:
        key = self.record.get("key")
        return key if isinstance(key, str) and key else NO_KEY

    def flag(self, name: str, message: str) -> Issue:
        """Mark the entry bad; the issue is located where field ``name`` was read (else at the entry's start)."""
        self.bad = True
        path, lineno = self.where.get(name, (self.path, self.lineno))
        return Issue(path, lineno, self.key, message)


@dataclass
class Prepared:
    records: list[dict[str, Any]]
    issues: list[Issue]
    n_input: int


# ----------------------------------------------------------------------------------------------- normalisation
def normalise_tag(value: str) -> str:
    """``" <Throat Clearing> "`` -> ``"throat_clearing"``."""
    return re.sub(r"[\s\-]+", "_", value.strip().strip("<>").strip().lower())


def load_value_map(path: str | os.PathLike) -> ValueMap:
    """A YAML/JSON mapping ``{field: {corpus value: our value or null}}`` for the fields in :data:`MAPPABLE`."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise PrepareError(f"{path}: cannot read the value map ({e})") from None
    if not isinstance(data, dict):
        raise PrepareError(f"{path}: the value map must be a mapping of field -> {{from: to}}")
    out: ValueMap = {}
    for name, table in data.items():
        if name not in MAPPABLE:
            raise PrepareError(f"{path}: cannot map field '{name}' (mappable: {', '.join(MAPPABLE)})")
        if not isinstance(table, dict):
            raise PrepareError(f"{path}: '{name}' must map corpus values to ours")
        norm = (lambda s: str(s).strip()) if name == "task" else (lambda s: normalise_tag(str(s)))
        out[name] = {norm(k): (None if v is None else norm(v)) for k, v in table.items()}
    return out


def _map(name: str, value: str, value_map: ValueMap) -> Any:
    table = value_map.get(name, {})
    return table.get(value, value)


def normalise_record(rec: dict[str, Any], value_map: ValueMap | None = None) -> None:
    """Normalise and map the tag values of ``rec`` in place (see the module docstring)."""
    value_map = value_map or {}
    labels = rec.get("labels")
    if isinstance(labels, dict):
        for name, value in list(labels.items()):
            if isinstance(value, str):
                labels[name] = _map(name, normalise_tag(value), value_map)
    for name in TAG_FIELDS:
        if isinstance(rec.get(name), str):
            mapped = _map(name, normalise_tag(rec[name]), value_map)
            if mapped is None:
                del rec[name]
            else:
                rec[name] = mapped
    task = rec.get("task")
    if "task" in value_map and task is not None:
        names = [task] if isinstance(task, str) else task
        mapped_names = [_map("task", str(t), value_map) for t in names]
        mapped_names = [t for t in mapped_names if t is not None]
        rec["task"] = mapped_names[0] if len(mapped_names) == 1 else mapped_names


# ---------------------------------------------------------------------------------------------------- segments
def cut_segments(entries: list[Entry], ark_path: str | os.PathLike) -> list[Issue]:
    """Cut every entry with a ``segment`` out of its source audio into one wav ark (written atomically); the
    entry's ``wav`` becomes ``<ark>:<offset>`` and its ``duration`` the cut length. Returns the problems."""
    import kaldiio

    issues: list[Issue] = []
    by_source: dict[str, list[Entry]] = {}
    for e in entries:
        if e.segment is not None:
            by_source.setdefault(e.segment[0], []).append(e)
    if not by_source:
        return issues
    ark_path = Path(ark_path)
    with atomic_path(ark_path) as tmp, open(tmp, "wb") as f:
        for source, group in by_source.items():
            try:
                wav, sr = load_audio(source)
            except AudioError as err:
                issues += [e.flag("wav", f"cannot read audio: {err}") for e in group]
                continue
            for e in group:
                _, start, end = e.segment  # type: ignore[misc]
                a = int(round(start * sr))
                b = wav.shape[0] if end < 0 else int(round(end * sr))
                if b > wav.shape[0] + int(0.01 * sr):
                    issues.append(e.flag("segment", f"segment ends at {end} s but {source} lasts "
                                                  f"{wav.shape[0] / sr:.3f} s"))
                    continue
                piece = np.clip(wav[a:min(b, wav.shape[0])], -1.0, 1.0)
                pcm = np.round(piece * 32767).astype(np.int16)
                key = e.record["key"]
                offset = f.tell() + len(key.encode()) + 1
                kaldiio.save_ark(f, {key: (sr, pcm)})
                e.record["wav"] = f"{ark_path}:{offset}"
                e.record["duration"] = round(pcm.shape[0] / sr, 4)
    return issues


def _segment_bounds(start: Any, end: Any) -> tuple[float, float]:
    """``(start, end)`` seconds; ``end`` -1 (Kaldi) or empty = to the end of the recording."""
    s = float(start) if start not in (None, "") else 0.0
    t = float(end) if end not in (None, "") else -1.0
    if s < 0 or (t >= 0 and t <= s):
        raise ValueError(f"bad segment bounds start={start} end={end}")
    return s, t


# -------------------------------------------------------------------------------------------- common finishing
def _fill_durations(entries: list[Entry], nj: int) -> list[Issue]:
    todo = [e for e in entries if e.record.get("wav") and e.record.get("duration") is None]

    def one(e: Entry) -> Issue | None:
        try:
            info = audio_info(e.record["wav"])
        except AudioError as err:
            return e.flag("wav", f"cannot read audio: {err}")
        e.record["duration"] = round(info.duration, 4)
        return None

    with ThreadPoolExecutor(max(1, nj)) as pool:
        return [i for i in pool.map(one, todo) if i is not None]


_PROBLEM_FIELD = [
    (re.compile(r"^label (\w+)="), lambda m: f"labels.{m.group(1)}"),
    (re.compile(r"^unknown label '(\w+)'"), lambda m: f"labels.{m.group(1)}"),
    (re.compile(r"^field '(\w+)'"), lambda m: m.group(1)),
    (re.compile(r"^(response_emotion|category|response_tokens|duration)\b"), lambda m: m.group(1)),
    (re.compile(r"^unknown task"), lambda m: "task"),
]


def _where(problem: str) -> str:
    for pattern, name in _PROBLEM_FIELD:
        m = pattern.match(problem)
        if m:
            return name(m)
    return ""


def finish(entries: list[Entry], issues: list[Issue], value_map: ValueMap | None, task: str | list[str] | None,
           seg_ark: str | os.PathLike | None, durations: bool, nj: int) -> Prepared:
    """Normalise, cut segments, fill durations, validate; records with a problem are left out of the result."""
    for e in entries:
        if task is not None and e.record.get("task") is None:
            e.record["task"] = task
        normalise_record(e.record, value_map)
    if any(e.segment is not None for e in entries):
        if seg_ark is None:
            raise PrepareError("the input has segments: give an ark path for the cut audio (--segments_ark)")
        issues += cut_segments(entries, seg_ark)
    if durations:
        issues += _fill_durations(entries, nj)
    first: dict[str, Entry] = {}
    for e in entries:
        issues += [e.flag(_where(p), p) for p in check_record(e.record)]
        if e.key != NO_KEY:
            if e.key in first:
                f = first[e.key]
                issues.append(e.flag("key", f"duplicate key (first at {f.path}:{f.lineno})"))
            else:
                first[e.key] = e
    records = [e.record for e in entries if not e.bad]
    issues.sort(key=lambda i: (i.path, i.lineno))
    return Prepared(records, issues, len(entries))


# ------------------------------------------------------------------------------------------------------- kaldi
def read_segments(path: Path, on_error: Callable[[str, int, str], None]) -> dict[str, tuple[int, str, float, float]]:
    """Kaldi ``segments``: ``utt -> (line, recording, start, end)``."""
    out: dict[str, tuple[int, str, float, float]] = {}
    for utt, (lineno, value) in read_kaldi_file(path, on_error).items():
        parts = value.split()
        if len(parts) != 3:
            on_error(str(path), lineno, "expected '<utt> <recording> <start> <end>'")
            continue
        try:
            start, end = _segment_bounds(parts[1], parts[2])
        except ValueError as e:
            on_error(str(path), lineno, str(e))
            continue
        out[utt] = (lineno, parts[0], start, end)
    return out


def prepare_kaldi_dir(in_dir: str | os.PathLike, value_map: ValueMap | None = None,
                      task: str | list[str] | None = None, seg_ark: str | os.PathLike | None = None,
                      durations: bool = True, nj: int = 4) -> Prepared:
    """Records of a Kaldi data dir (``docs/data.md`` §2, plus an optional ``segments`` file)."""
    d = Path(in_dir)
    issues: list[Issue] = []

    def on_error(path: str, lineno: int, message: str) -> None:
        issues.append(Issue(path, lineno, NO_KEY, message))

    has_segments = (d / "segments").is_file()
    if has_segments and not (d / "utt2spk").is_file():
        raise KaldiDirError(f"{d}: a data dir with 'segments' needs 'utt2spk' (wav.scp is keyed by recording)")
    raw = read_kaldi_dir_entries(d, on_error, skip=("wav.scp",) if has_segments else ())
    entries = [Entry(r.record, r.path, r.lineno, r.where) for r in raw]
    if has_segments:
        recordings = read_kaldi_file(d / "wav.scp", on_error)
        segs = read_segments(d / "segments", on_error)
        keys = {e.key for e in entries}
        issues += [Issue(str(d / "segments"), line, utt, "utterance is not in utt2spk")
                   for utt, (line, *_) in segs.items() if utt not in keys]
        for e in entries:
            if e.key not in segs:
                issues.append(e.flag("", "utterance has no line in segments"))
                continue
            line, reco, start, end = segs[e.key]
            e.where["segment"] = e.where["wav"] = (str(d / "segments"), line)
            if reco not in recordings:
                issues.append(e.flag("segment", f"recording '{reco}' is not in wav.scp"))
                continue
            e.segment = (recordings[reco][1], start, end)
            e.record["wav"] = recordings[reco][1]
    for e in entries:
        if str(e.record.get("wav", "")).rstrip().endswith("|"):
            issues.append(e.flag("wav", "pipe commands in wav.scp are not supported: write the audio to files "
                                      "(or a wav ark) first"))
            e.segment = None
    return finish(entries, issues, value_map, task, seg_ark, durations, nj)


# ---------------------------------------------------------------------------------------------------- manifests
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
            start, end = _segment_bounds(bounds.get("start"), bounds.get("end"))
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


__all__ = ["Entry", "Issue", "MANIFEST_FIELDS", "OSUM_TASKS", "PRESETS", "PrepareError", "Prepared",
           "cut_segments", "load_value_map", "manifest_entry", "normalise_record", "normalise_tag",
           "osum_echat_row", "parse_columns", "prepare_kaldi_dir", "prepare_manifest", "read_manifest"]
