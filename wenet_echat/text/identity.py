"""Self-awareness: who the assistant is, a training-data filter against other assistants' names, and the rule that
decides whether a reply to an identity question is right.

The assistant is :data:`wenet_echat.text.prompts.ASSISTANT_NAME` ("EChat", the wenet-echat assistant; the system
prompts say so). As in OSUM-EChat, training data must never teach it another identity: :class:`IdentityFilter`
finds names of other assistants and models (the list in ``other_assistants.txt`` next to this module, or any file
of the same format) and :func:`filter_records` drops every record whose reply names one, counting the drops per
name. ``python -m wenet_echat.bin.filter_identity`` applies it to any data.list.

Identity answers are scored by :func:`identity_answer_ok`: a reply is right when it (1) names the assistant
("EChat" or "wenet-echat", any case), (2) names no other assistant or model from the list and (3) does not claim
to be a human ("I am a person", "I'm human"; a negated "I'm not a person" is fine).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from wenet_echat.text.prompts import ASSISTANT_NAME

NAMES_FILE = "other_assistants.txt"
DEFAULT_FIELDS: tuple[str, ...] = ("response",)
_SELF = re.compile(rf"(?<![\w-])(?:wenet[\s-]?)?{re.escape(ASSISTANT_NAME)}(?![\w-])", re.IGNORECASE)
_HUMAN_CLAIM = re.compile(r"\bI(?:\s+am|'m|’m)\s+(?:a\s+|an\s+)?(?:real\s+|living\s+)?"
                          r"(?:human(?:\s+being)?|person|man|woman|people)\b", re.IGNORECASE)


def read_names(path: str | Path | None = None) -> list[str]:
    """Names from a list file (one per line, ``#`` comments); the packaged list when ``path`` is None."""
    if path is None:
        text = resources.files("wenet_echat.text").joinpath(NAMES_FILE).read_text(encoding="utf-8")
        where = NAMES_FILE
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such names file (one assistant/model name per line)")
        text, where = path.read_text(encoding="utf-8"), str(path)
    names = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise ValueError(f"{where}: no names in the file")
    return names


def _name_pattern(name: str) -> str:
    """A whole-word pattern for ``name``; a space or hyphen inside it matches a space, a hyphen or nothing."""
    parts = [re.escape(p) for p in re.split(r"[\s-]+", name.strip()) if p]
    return r"(?<![\w])" + r"[\s-]?".join(parts) + r"(?![\w])"


class IdentityFilter:
    """Finds other assistants' or models' names in text (case-insensitive, whole words)."""

    def __init__(self, names: Sequence[str] | None = None):
        self.names = list(names) if names is not None else read_names()
        if not self.names:
            raise ValueError("IdentityFilter needs at least one name")
        # longest first, so "GPT-4o" is reported rather than "GPT-4"
        order = sorted(set(self.names), key=lambda n: (-len(n), n))
        self._regex = re.compile("|".join(f"({_name_pattern(n)})" for n in order), re.IGNORECASE)
        self._by_group = order

    @classmethod
    def from_file(cls, path: str | Path | None = None) -> IdentityFilter:
        return cls(read_names(path))

    def find(self, text: str | None) -> str | None:
        """The listed name ``text`` mentions first (as spelled in the list), or None."""
        if not text:
            return None
        m = self._regex.search(text)
        return self._by_group[m.lastindex - 1] if m and m.lastindex else None

    def record_hit(self, record: dict[str, Any], fields: Sequence[str] = DEFAULT_FIELDS) -> str | None:
        """The first listed name in the record's ``fields`` (string fields; others are ignored)."""
        for field in fields:
            value = record.get(field)
            hit = self.find(value) if isinstance(value, str) else None
            if hit:
                return hit
        return None


def filter_records(records: Iterable[dict[str, Any]], flt: IdentityFilter | None = None,
                   fields: Sequence[str] = DEFAULT_FIELDS) -> tuple[list[dict[str, Any]], Counter[str]]:
    """(records whose ``fields`` name no other assistant, drop counts per name)."""
    flt = flt or IdentityFilter()
    kept: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    for rec in records:
        hit = flt.record_hit(rec, fields)
        if hit:
            dropped[hit] += 1
        else:
            kept.append(rec)
    return kept, dropped


def names_self(text: str | None) -> bool:
    """Whether ``text`` names the assistant ("EChat", "wenet-echat")."""
    return bool(text and _SELF.search(text))


def claims_human(text: str | None) -> bool:
    return bool(text and _HUMAN_CLAIM.search(text))


def identity_answer_ok(reply: str | None, flt: IdentityFilter | None = None) -> tuple[bool, str]:
    """(right, why) for a reply to an identity question, by the rule in the module docstring."""
    if not reply or not reply.strip():
        return False, "empty reply"
    other = (flt or IdentityFilter()).find(reply)
    if other:
        return False, f"names {other}"
    if claims_human(reply):
        return False, "claims to be human"
    if not names_self(reply):
        return False, f"does not name {ASSISTANT_NAME}"
    return True, "ok"


__all__ = ["DEFAULT_FIELDS", "IdentityFilter", "claims_human", "filter_records", "identity_answer_ok", "names_self",
           "read_names"]
