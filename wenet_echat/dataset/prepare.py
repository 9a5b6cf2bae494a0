"""Data preparation for real corpora: a Kaldi data dir (here) or a manifest (:mod:`wenet_echat.dataset.manifest`)
-> validated data.list records.

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

Manifests (CSV/TSV/JSONL) are read by :mod:`wenet_echat.dataset.manifest` and finished here the same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wenet_echat.audio.io import AudioError, audio_info, load_audio
from wenet_echat.dataset.kaldi import KaldiDirError, read_kaldi_dir_entries, read_kaldi_file
from wenet_echat.dataset.schema import check_record
from wenet_echat.text.labels import LABEL_VOCABS
from wenet_echat.utils.fileio import atomic_path

LABEL_NAMES: tuple[str, ...] = tuple(LABEL_VOCABS)
TAG_FIELDS: tuple[str, ...] = ("response_emotion", "category")
MAPPABLE: tuple[str, ...] = (*LABEL_NAMES, *TAG_FIELDS, "task")
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


def segment_bounds(start: Any, end: Any) -> tuple[float, float]:
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
            start, end = segment_bounds(parts[1], parts[2])
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


__all__ = ["Entry", "Issue", "PrepareError", "Prepared", "cut_segments", "finish", "load_value_map",
           "normalise_record", "normalise_tag", "prepare_kaldi_dir", "segment_bounds"]
