"""Offline, reference-based reply score: does the reply address the user's state, and how close is it to the gold
reply? A deterministic stand-in for EChat-eval's GPT-4o judge (:mod:`wenet_echat.eval.judge` is the pluggable
LLM judge).

Per item (0-100)::

    reply_score = 100 x (w_state x state + w_sim x chrF / 100),   default w_state 0.6, w_sim 0.4

* **state** (0-1): the cues the item's EChat-eval category is about (``emotion`` / ``age`` / ``gender`` /
  ``event``: that cue; ``multi``: every cue whose label is not the default adult / neutral / none; no category:
  the same rule as ``multi``). A cue is *scorable* when the gold reply addresses its labelled value by the
  :data:`CUE_LEXICON` (e.g. a cough: "cough"; a sad user: "sorry", "hard", ...; an old man: "sir"). A scorable
  cue scores 1 when the hypothesis reply also addresses that value and addresses no *other* value of the same cue
  with words that value does not share (mentioning an alarm when the sound was a siren, "sir" to a woman,
  "wonderful news" to a sad user); else 0. ``state`` is the mean over scorable cues; an item without any is left
  out of the state mean and its reply score is the similarity part alone, rescaled to 0-100
  (``state_coverage`` reports the share of items with a scorable cue).
* **chrF** (0-100): character n-gram F-score (Popović 2015): n = 1..6 over the texts with whitespace removed,
  precision and recall averaged over the orders present, F-beta with beta = 2 (recall weighs more).
* **token F1** (reported, not in the score): F1 of the bags of normalised words
  (:func:`wenet_echat.eval.understanding.normalize_text`).

Keywords match case-insensitively at a word start, so "frustrat" matches "frustrating". The lexicon is written for
EChat-mini's English replies; :func:`load_cue_lexicon` reads another one from YAML (``{cue: {value: [words]}}``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from wenet_echat.eval.understanding import normalize_text
from wenet_echat.text.labels import LABEL_VOCABS

DEFAULTS: dict[str, str] = {"age": "adult", "emotion": "neutral", "event": "none"}
CUES: tuple[str, ...] = ("age", "gender", "emotion", "event")

CUE_LEXICON: dict[str, dict[str, tuple[str, ...]]] = {
    "emotion": {
        "happy": ("wonderful", "great", "exciting", "love hearing", "congratulations", "glad", "yay", "joy",
                  "lovely", "proud", "delighted", "enjoy", "good for you", "high five"),
        "sad": ("sorry", "hard", "weighing on you", "here if you", "here whenever", "not alone", "hug",
                "gentle with yourself", "take all the time", "feel sad"),
        "angry": ("frustrat", "annoy", "aggravat", "cross", "sorry", "understandable", "take a breath",
                  "big breath", "spoil your day", "deserved better"),
        "fear": ("scared", "afraid", "frighten", "worried", "you're safe", "safe now"),
        "disgust": ("gross", "disgust", "yuck", "unpleasant"),
        "surprise": ("wow", "surpris", "unexpected", "no way"),
    },
    "age": {
        "child": ("sweetheart", "grown-up", "high five", "buddy", "kiddo", "big breath", "splish", "ooh",
                  "doing great", "proud of you", "sounds interesting", "yay", "so great", "did your best",
                  "did really well"),
        "old": ("sir", "ma'am", "take your time", "no rush", "take all the time", "step by step",
                "without hurrying", "dear"),
    },
    "gender": {
        "male": ("sir",),
        "female": ("ma'am", "madam"),
    },
    "event": {
        "alarm": ("alarm",), "siren": ("siren",), "doorbell": ("doorbell", "door"), "knock": ("knock", "door"),
        "cough": ("cough",), "rain": ("rain",), "laugh": ("laugh",), "cry": ("cry", "crying", "tears"),
        "scream": ("scream",), "sigh": ("sigh",), "throat_clearing": ("throat",), "sneeze": ("sneez", "bless you"),
    },
}


@dataclass(frozen=True)
class ReplyWeights:
    state: float = 0.6
    similarity: float = 0.4

    def __post_init__(self) -> None:
        if self.state < 0 or self.similarity < 0 or self.state + self.similarity <= 0:
            raise ValueError(f"reply weights must be >= 0 with a positive sum, got {self}")


def load_cue_lexicon(path: str | Path) -> dict[str, dict[str, tuple[str, ...]]]:
    """A cue lexicon from YAML ``{cue: {value: [keyword, ...]}}``; cues and values must be known labels."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping cue -> value -> keywords")
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for cue, values in data.items():
        if cue not in LABEL_VOCABS or not isinstance(values, dict):
            raise ValueError(f"{path}: '{cue}' is not a cue ({', '.join(LABEL_VOCABS)}) mapping values to words")
        for value, words in values.items():
            if value not in LABEL_VOCABS[cue]:
                raise ValueError(f"{path}: {cue} value '{value}' not in {{{', '.join(LABEL_VOCABS[cue])}}}")
            if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
                raise ValueError(f"{path}: {cue}.{value} must be a list of non-empty strings")
        out[cue] = {v: tuple(w.lower() for w in ws) for v, ws in values.items()}
    return out


@cache
def _keyword_re(word: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w'])" + re.escape(word.lower()).replace("'", "['’]"))


def mentions(text: str, words: Sequence[str]) -> set[str]:
    """The keywords of ``words`` found in ``text`` (word-start match, case-insensitive)."""
    low = text.lower()
    return {w for w in words if _keyword_re(w).search(low)}


def scored_cues(labels: Mapping[str, Any], category: str | None) -> list[str]:
    """The cues an item of ``category`` is about (see the module docstring)."""
    if category in CUES:
        return [category] if labels.get(category) is not None else []
    if category == "identity":
        return []
    return [c for c in ("age", "emotion", "event") if labels.get(c) is not None and labels[c] != DEFAULTS[c]]


def cue_state(reply: str, gold: str, cue: str, value: str,
              lexicon: Mapping[str, Mapping[str, Sequence[str]]] = CUE_LEXICON) -> float | None:
    """1/0 for one cue (None when the gold reply does not address ``value`` by the lexicon: not scorable)."""
    own = tuple(lexicon.get(cue, {}).get(value, ()))
    if not own or not mentions(gold, own):
        return None
    if not mentions(reply, own):
        return 0.0
    for other, words in lexicon.get(cue, {}).items():
        if other == value:
            continue
        exclusive = [w for w in words if w not in own]
        if exclusive and mentions(reply, exclusive) - mentions(gold, exclusive):
            return 0.0
    return 1.0


def _ngrams(text: str, n: int) -> Counter[str]:
    return Counter(text[i:i + n] for i in range(len(text) - n + 1))


def chrf(hyp: str, ref: str, max_n: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF in 0-100 (see the module docstring); 0 for an empty hypothesis or reference."""
    h, r = "".join(hyp.split()), "".join(ref.split())
    precisions, recalls = [], []
    for n in range(1, max_n + 1):
        hn, rn = _ngrams(h, n), _ngrams(r, n)
        if not hn or not rn:
            continue
        match = sum((hn & rn).values())
        precisions.append(match / sum(hn.values()))
        recalls.append(match / sum(rn.values()))
    if not precisions:
        return 0.0
    p, rec = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if p + rec == 0:
        return 0.0
    return 100.0 * (1 + beta**2) * p * rec / (beta**2 * p + rec)


def token_f1(hyp: str, ref: str) -> float:
    """F1 (0-100) of the bags of normalised words."""
    h, r = Counter(normalize_text(hyp).split()), Counter(normalize_text(ref).split())
    common = sum((h & r).values())
    if not common:
        return 0.0
    p, rec = common / sum(h.values()), common / sum(r.values())
    return 100.0 * 2 * p * rec / (p + rec)


def score_reply(reply: str, gold: str, labels: Mapping[str, Any], category: str | None,
                weights: ReplyWeights = ReplyWeights(),
                lexicon: Mapping[str, Mapping[str, Sequence[str]]] = CUE_LEXICON) -> dict[str, Any]:
    """Per-item scores: ``reply_score``, ``state`` (None if no scorable cue), ``state_cues`` (cue -> 0/1),
    ``chrf``, ``token_f1``."""
    states = {}
    for cue in scored_cues(labels, category):
        s = cue_state(reply or "", gold, cue, str(labels[cue]), lexicon)
        if s is not None:
            states[cue] = s
    state = sum(states.values()) / len(states) if states else None
    sim = chrf(reply or "", gold)
    if state is None:
        score = sim
    else:
        total = weights.state + weights.similarity
        score = 100.0 * (weights.state * state + weights.similarity * sim / 100.0) / total
    return {"reply_score": score, "state": state, "state_cues": states, "chrf": sim,
            "token_f1": token_f1(reply or "", gold)}


__all__ = ["CUES", "CUE_LEXICON", "DEFAULTS", "ReplyWeights", "chrf", "cue_state", "load_cue_lexicon", "mentions",
           "score_reply", "scored_cues", "token_f1"]
