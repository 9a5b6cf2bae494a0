"""The data.list record: its fields and a checker that names every problem of one record.

A record is one JSON object (DESIGN §3). Only ``key`` is always required; each task needs the fields listed in
:data:`wenet_echat.text.labels.TASK_FIELDS`. ``task`` may be a string or a list of the tasks a record serves;
without it, a record serves every task whose fields it has.
"""

from __future__ import annotations

from typing import Any

from wenet_echat.text.labels import CATEGORIES, LABEL_VOCABS, REPLY_EMOTIONS, TASK_FIELDS, check_label

# field -> accepted JSON types
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "wav": (str,),
    "feat": (str,),
    "duration": (int, float),
    "task": (str, list),
    "text": (str,),
    "labels": (dict,),
    "response": (str,),
    "response_emotion": (str,),
    "response_wav": (str,),
    "response_tokens": (list,),
    "think": (str,),
    "speaker": (str,),
    "category": (str,),
    "history": (list,),
}


def record_tasks(rec: dict[str, Any]) -> list[str]:
    """The tasks a record declares (``task`` as str or list), or all tasks its fields allow."""
    task = rec.get("task")
    if task is None:
        return [t for t in TASK_FIELDS if not missing_fields(rec, t)]
    return [task] if isinstance(task, str) else list(task)


def missing_fields(rec: dict[str, Any], task: str) -> list[str]:
    """Fields ``task`` needs that ``rec`` lacks (a ``a|b`` entry means one of them is needed)."""
    missing = []
    for need in TASK_FIELDS[task]:
        options = need if isinstance(need, tuple) else (need,)
        if not any(rec.get(f) not in (None, "", [], {}) for f in options):
            missing.append("|".join(options))
    return missing


def check_record(rec: dict[str, Any]) -> list[str]:
    """Return every schema problem of one record as a short phrase (empty list = valid).

    Audio is not opened here; see :func:`wenet_echat.audio.io.check_audio`.
    """
    problems: list[str] = []
    for field, types in FIELD_TYPES.items():
        if field in rec and rec[field] is not None and not isinstance(rec[field], types):
            names = "/".join(t.__name__ for t in types)
            problems.append(f"field '{field}' must be {names}, got {type(rec[field]).__name__}")
    if not rec.get("key") or not isinstance(rec.get("key"), str):
        problems.append("missing field 'key'")
    elif any(c.isspace() for c in rec["key"]):
        problems.append(f"key {rec['key']!r} contains whitespace")
    if problems:
        return problems

    if "duration" in rec and not (rec["duration"] > 0):
        problems.append(f"duration must be > 0, got {rec['duration']}")
    tasks = record_tasks(rec)
    if not tasks:
        problems.append("record serves no task (no task field and no task's fields are present)")
    for task in tasks:
        if task not in TASK_FIELDS:
            problems.append(f"unknown task {task!r} (known: {', '.join(TASK_FIELDS)})")
            continue
        for field in missing_fields(rec, task):
            problems.append(f"task '{task}' needs field '{field}'")
    for name, value in (rec.get("labels") or {}).items():
        problem = check_label(name, value)
        if problem:
            problems.append(problem)
    emo = rec.get("response_emotion")
    if emo is not None and emo not in REPLY_EMOTIONS:
        problems.append(f"response_emotion {emo!r} not in {{{', '.join(REPLY_EMOTIONS)}}}")
    cat = rec.get("category")
    if cat is not None and cat not in CATEGORIES:
        problems.append(f"category {cat!r} not in {{{', '.join(CATEGORIES)}}}")
    toks = rec.get("response_tokens")
    if toks is not None and not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in toks):
        problems.append("response_tokens must be a list of non-negative integers")
    problems += history_problems(rec.get("history"))
    for field in ("text", "response", "think"):
        if isinstance(rec.get(field), str) and "\ufffd" in rec[field]:
            problems.append(f"field '{field}' holds U+FFFD (text was not valid UTF-8)")
    return problems


def history_problems(history: Any) -> list[str]:
    """Problems of a ``history`` field: a list of earlier turns, oldest first, each ``{"text": what the user
    said, "response": what the assistant answered}`` with non-empty strings."""
    if history is None:
        return []
    if not isinstance(history, list):
        return [f"field 'history' must be a list of turns, got {type(history).__name__}"]
    problems = []
    for i, turn in enumerate(history):
        if not isinstance(turn, dict):
            problems.append(f"history[{i}] must be an object with 'text' and 'response', got {type(turn).__name__}")
            continue
        for key in ("text", "response"):
            if not isinstance(turn.get(key), str) or not turn[key].strip():
                problems.append(f"history[{i}].{key} must be a non-empty string")
    return problems


__all__ = ["FIELD_TYPES", "LABEL_VOCABS", "check_record", "history_problems", "missing_fields", "record_tasks"]
