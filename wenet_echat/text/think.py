"""The tag-form linguistic-paralinguistic dual-thinking chain of thought (English rendering).

``build_tag_think`` writes the gold CoT from a transcript and labels; ``parse_tag_think`` reads cue values back
from a (possibly generated) CoT so scoring can measure per-cue accuracy. Unknown labels are written as
:data:`MASK_TAG`; the training target builder loss-masks that span.
"""

from __future__ import annotations

import re

from wenet_echat.text.labels import LABEL_VOCABS, REPLY_EMOTIONS

THINK_BEGIN = "<think>"
THINK_END = "<think end>"
MASK_TAG = "<&&>"
CLOSING = "I should combine the meaning and the paralinguistic cues to give a fitting, caring reply."

# (label key, phrase in the CoT) in the fixed OSUM order: transcript, age, gender, emotion, event, reply emotion
_FIELDS: tuple[tuple[str, str], ...] = (
    ("age", "age"),
    ("gender", "gender"),
    ("emotion", "emotion"),
    ("event", "sound event"),
    ("response_emotion", "predicted reply emotion"),
)


def _tag(value: str | None) -> str:
    return MASK_TAG if value is None else f"<{value}>"


def build_tag_think(transcript: str, labels: dict[str, str | None], response_emotion: str | None) -> str:
    """Render the tag-form CoT body (without the ``<think>`` markers)."""
    values = dict(labels, response_emotion=response_emotion)
    cues = ", ".join(f"{phrase}: {_tag(values.get(key))}" for key, phrase in _FIELDS)
    return f"the user said: {transcript.strip()}, {cues}; {CLOSING}"


def wrap_think(body: str) -> str:
    return f"{THINK_BEGIN}{body}{THINK_END}"


_CUE_RE = {key: re.compile(re.escape(phrase) + r":\s*<([^<>]*)>") for key, phrase in _FIELDS}
_SAID_RE = re.compile(r"the user said:\s*(.*?),\s*age:", re.S)


def parse_tag_think(text: str) -> dict[str, str | None]:
    """Extract ``transcript`` and cue values from a tag-form CoT; absent or invalid values become ``None``."""
    out: dict[str, str | None] = {}
    m = _SAID_RE.search(text)
    out["transcript"] = m.group(1).strip() if m else None
    vocabs = dict(LABEL_VOCABS, response_emotion=REPLY_EMOTIONS)
    for key, rx in _CUE_RE.items():
        m = rx.search(text)
        value = m.group(1).strip() if m else None
        out[key] = value if value in vocabs[key] else None
    return out
