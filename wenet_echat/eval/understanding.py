"""Scores of the understanding tasks: ASR error rates and per-cue paralinguistic accuracy next to chance level.

Inputs are the reference records (data.list) and the hypotheses of ``bin/decode.py`` (``hyp.jsonl``: one JSON
object per line with ``key``, ``task`` and ``text``, the decoded output). Tag hypotheses are read back with
:func:`wenet_echat.text.prompts.parse_tag_string`; a tag the model did not produce counts as wrong.

Chance levels: ``majority`` = always answering the most frequent value of the *reference* set (the stronger of the
two baselines on unbalanced data), ``uniform`` = 1 / number of values seen in the references.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Any

import jiwer

from wenet_echat.text.prompts import TAG_ORDER, parse_tag_string

_PUNCT = re.compile(r"[^\w\s']+")
NO_LABEL = "(none)"


def normalize_text(text: str) -> str:
    """Lower case, NFKC, punctuation removed (apostrophes kept), whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    return " ".join(_PUNCT.sub(" ", text).split())


def error_rates(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """Corpus-level WER and CER (characters without spaces) over normalised text, in percent."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("no utterances to score")
    r = [normalize_text(x) for x in refs]
    h = [normalize_text(x) for x in hyps]
    if any(not x for x in r):
        raise ValueError("a reference is empty after normalisation")
    words = jiwer.process_words(r, h)
    chars = jiwer.process_characters([x.replace(" ", "") for x in r], [x.replace(" ", "") for x in h])
    n_words = sum(len(x.split()) for x in r)
    return {
        "wer": 100.0 * words.wer, "cer": 100.0 * chars.cer, "utts": len(r), "words": n_words,
        "sub": words.substitutions, "del": words.deletions, "ins": words.insertions,
        "sentence_error": 100.0 * sum(a != b for a, b in zip(r, h)) / len(r),
    }


def label_accuracy(pairs: list[tuple[str, str | None]]) -> dict[str, Any]:
    """Accuracy, chance levels, per-value accuracy and the confusion counts of (reference, hypothesis) label pairs;
    a hypothesis of None (nothing recognised) counts as wrong and appears as ``(none)`` in the confusion."""
    if not pairs:
        raise ValueError("no labelled pairs to score")
    counts = Counter(ref for ref, _ in pairs)
    confusion: dict[str, Counter] = {}
    for ref, hyp in pairs:
        confusion.setdefault(ref, Counter())[hyp if hyp is not None else NO_LABEL] += 1
    return {
        "n": len(pairs),
        "accuracy": 100.0 * sum(ref == hyp for ref, hyp in pairs) / len(pairs),
        "chance_majority": 100.0 * counts.most_common(1)[0][1] / len(pairs),
        "chance_uniform": 100.0 / len(counts),
        "per_value": {v: 100.0 * confusion[v][v] / n for v, n in sorted(counts.items())},
        "confusion": {v: dict(c) for v, c in sorted(confusion.items())},
    }


def tag_accuracy(refs: list[dict[str, Any]], hyps: list[str]) -> dict[str, dict[str, Any]]:
    """Per-cue accuracy of tag outputs; cues whose reference label is unknown (None) are not counted."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    parsed = [parse_tag_string(h) for h in hyps]
    return cue_accuracy(refs, parsed)


def cue_accuracy(refs: list[dict[str, Any]], hyps: list[dict[str, str | None]],
                 cues: tuple[str, ...] = TAG_ORDER) -> dict[str, dict[str, Any]]:
    """:func:`label_accuracy` per cue of reference label dicts and parsed hypothesis dicts (same order); cues
    whose reference label is unknown (None) are not counted, cues with no known reference are left out."""
    out: dict[str, dict[str, Any]] = {}
    for cue in cues:
        pairs = [(r.get(cue), h.get(cue)) for r, h in zip(refs, hyps, strict=True) if r.get(cue) is not None]
        if pairs:
            out[cue] = label_accuracy(pairs)
    return out


def pair_up(refs: dict[str, dict[str, Any]], hyps: list[dict[str, Any]], task: str) -> tuple[list, list[str]]:
    """Reference records and hypothesis texts of ``task``, matched by key, in reference order. A hypothesis whose
    key is not in the references is an error naming it; references without a hypothesis are left out (decoding
    a subset is allowed; the tables print how many utterances were scored)."""
    by_key: dict[str, str] = {}
    for i, h in enumerate(hyps, 1):
        if h.get("task") != task:
            continue
        if h.get("key") not in refs:
            raise KeyError(f"hypothesis {i} ({task}): key {h.get('key')!r} is not in the reference list")
        by_key[h["key"]] = h.get("text", "")
    keys = [k for k in refs if k in by_key]
    return [refs[k] for k in keys], [by_key[k] for k in keys]


def score_understanding(refs: dict[str, dict[str, Any]], hyps: list[dict[str, Any]]) -> dict[str, Any]:
    """ASR and tag scores of every task present in ``hyps``."""
    result: dict[str, Any] = {}
    tasks = {h.get("task") for h in hyps}
    if "asr" in tasks:
        recs, texts = pair_up(refs, hyps, "asr")
        result["asr"] = error_rates([r["text"] for r in recs], texts)
    if "tag" in tasks:
        recs, texts = pair_up(refs, hyps, "tag")
        result["tag"] = tag_accuracy([r.get("labels") or {} for r in recs], texts)
    return result


def understanding_markdown(scores: dict[str, Any], title: str = "Understanding") -> str:
    """Markdown tables of :func:`score_understanding` results."""
    lines = [f"## {title}", ""]
    if "asr" in scores:
        a = scores["asr"]
        lines += ["| ASR | utts | words | WER % | CER % | sub | del | ins | sentence err % |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
                  f"| | {a['utts']} | {a['words']} | {a['wer']:.2f} | {a['cer']:.2f} | {a['sub']} | {a['del']} | "
                  f"{a['ins']} | {a['sentence_error']:.1f} |", ""]
    if "tag" in scores:
        lines += ["| cue | n | accuracy % | chance (majority) % | chance (uniform) % | per value % |",
                  "|---|---:|---:|---:|---:|---|"]
        for cue, t in scores["tag"].items():
            per = ", ".join(f"{v} {acc:.0f}" for v, acc in t["per_value"].items())
            lines.append(f"| {cue} | {t['n']} | {t['accuracy']:.1f} | {t['chance_majority']:.1f} | "
                         f"{t['chance_uniform']:.1f} | {per} |")
        lines.append("")
    return "\n".join(lines)
