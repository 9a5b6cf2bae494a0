"""EChat-eval-style scores of chat hypotheses, per category (the reference record's ``category``: emotion, age,
gender, event, multi, identity).

For every chat row of ``hyp.jsonl`` (tasks ``s2s_think``, ``s2s_chat``, ``s2t_chat``, ``t2t``) matched by key to
its reference record, :func:`score_chat` computes per item and summarises per category and over all items:

* ``reply_score`` / ``state`` / ``chrf`` / ``token_f1``: the offline reference-based reply score
  (:mod:`wenet_echat.eval.reply`); ``judge`` when an LLM judge scored the items (:mod:`wenet_echat.eval.judge`);
* ``cot``: per-cue accuracy of the labels read back from the dual-thinking CoT
  (:func:`wenet_echat.text.think.parse_think`; a cue the CoT does not state counts as wrong) and the WER/CER of
  the transcript the CoT quotes against the reference text (``cot_asr``; only rows with a CoT);
* ``reply_emotion``: accuracy of the reply emotion (the row's, else read from the CoT) against the gold
  ``response_emotion``, over
  the rows that state one (``n`` says how many; rows without a CoT have none);
* ``identity`` (category ``identity``): share of replies that are right by
  :func:`wenet_echat.text.identity.identity_answer_ok` (names EChat, no other assistant, no human claim).

:func:`understanding_by_category` breaks the ``asr`` and ``tag`` rows down the same way, and
:func:`latency_summary` aggregates the timing fields of the rows (mean / median / p90).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wenet_echat.eval.reply import CUE_LEXICON, ReplyWeights, score_reply
from wenet_echat.eval.understanding import cue_accuracy, error_rates, label_accuracy, pair_up, tag_accuracy
from wenet_echat.text.identity import IdentityFilter, identity_answer_ok
from wenet_echat.text.labels import CATEGORIES
from wenet_echat.text.prompts import TAG_ORDER
from wenet_echat.text.think import parse_think

CHAT_TASKS: tuple[str, ...] = ("s2s_think", "s2s_chat", "s2t_chat", "t2t")  # preference order of the summary
ALL = "all"
NO_CATEGORY = "(none)"
LATENCY_FIELDS: tuple[str, ...] = ("first_text_s", "first_speech_s", "first_audio_s", "total_s", "rtf", "rtf_e2e")


@dataclass
class ChatScoring:
    """What the chat scores are computed with."""

    weights: ReplyWeights = field(default_factory=ReplyWeights)
    lexicon: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: CUE_LEXICON)
    identity: IdentityFilter = field(default_factory=IdentityFilter)


def category_of(ref: Mapping[str, Any]) -> str:
    return str(ref.get("category") or NO_CATEGORY)


def ordered_categories(names: Iterable[str]) -> list[str]:
    """Known categories in EChat-eval order, then any others sorted."""
    names = set(names)
    return [c for c in CATEGORIES if c in names] + sorted(names - set(CATEGORIES))


def chat_rows(refs: Mapping[str, dict[str, Any]], hyps: list[dict[str, Any]], task: str) -> list[tuple[dict, dict]]:
    """(reference, row) pairs of ``task`` in reference order; a key missing from the references is an error."""
    by_key: dict[str, dict[str, Any]] = {}
    for i, h in enumerate(hyps, 1):
        if h.get("task") != task:
            continue
        if h.get("key") not in refs:
            raise KeyError(f"hypothesis {i} ({task}): key {h.get('key')!r} is not in the reference list")
        by_key[h["key"]] = h
    return [(refs[k], by_key[k]) for k in refs if k in by_key]


def score_item(ref: Mapping[str, Any], row: Mapping[str, Any], conf: ChatScoring) -> dict[str, Any]:
    """Per-item scores of one chat row (see the module docstring)."""
    key = ref.get("key")
    if not isinstance(ref.get("response"), str) or not ref["response"].strip():
        raise ValueError(f"reference {key!r}: a chat item needs the gold reply in 'response'")
    reply = str(row.get("reply") if row.get("reply") is not None else row.get("text") or "")
    labels = ref.get("labels") or {}
    category = category_of(ref)
    item: dict[str, Any] = {"key": key, "category": category,
                            **score_reply(reply, ref["response"], labels, ref.get("category"), conf.weights,
                                          conf.lexicon)}
    think = row.get("think") or ""
    item["has_think"] = bool(think)
    item["cot"] = parse_think(think) if think else {}
    item["reply_emotion"] = row.get("reply_emotion") or item["cot"].get("response_emotion")
    item["gold_reply_emotion"] = ref.get("response_emotion")
    if category == "identity":
        item["identity_ok"], item["identity_why"] = identity_answer_ok(reply, conf.identity)
    if row.get("judge_score") is not None:
        item["judge_score"] = float(row["judge_score"])
    return item


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None


def summarize_items(items: list[dict[str, Any]], refs: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Means and accuracies of a group of items (``refs`` are their reference records, same order)."""
    out: dict[str, Any] = {"n": len(items)}
    for name in ("reply_score", "chrf", "token_f1"):
        out[name] = _mean(it[name] for it in items)
    states = [it["state"] for it in items if it["state"] is not None]
    out["state"] = _mean(states)
    out["state_coverage"] = 100.0 * len(states) / len(items) if items else None
    judged = [it["judge_score"] for it in items if "judge_score" in it]
    if judged:
        out["judge"], out["judge_n"] = _mean(judged), len(judged)
    with_cot = [(r, it) for r, it in zip(refs, items, strict=True) if it["has_think"]]
    out["cot_n"] = len(with_cot)
    if with_cot:
        out["cot"] = cue_accuracy([r.get("labels") or {} for r, _ in with_cot], [it["cot"] for _, it in with_cot],
                                  TAG_ORDER)
        said = [(str(r.get("text")), it["cot"].get("transcript") or "") for r, it in with_cot if r.get("text")]
        # a CoT form that quotes no transcript (think_style cues) has no CoT WER; one that sometimes fails to is
        # scored with those rows as deletions
        if said and any(it["cot"].get("transcript") is not None for _, it in with_cot):
            out["cot_asr"] = error_rates([a for a, _ in said], [b for _, b in said])
    emo = [(it["gold_reply_emotion"], it["reply_emotion"]) for it in items
           if it["gold_reply_emotion"] and it["reply_emotion"]]
    if emo:
        out["reply_emotion"] = label_accuracy(emo)
    ident = [it["identity_ok"] for it in items if "identity_ok" in it]
    if ident:
        out["identity"] = {"n": len(ident), "accuracy": 100.0 * sum(ident) / len(ident)}
    return out


def score_chat(refs: Mapping[str, dict[str, Any]], hyps: list[dict[str, Any]], task: str,
               conf: ChatScoring | None = None) -> dict[str, Any] | None:
    """``{"categories": {category: summary}, "all": summary, "items": [...]}`` for ``task`` (None: no rows)."""
    conf = conf or ChatScoring()
    pairs = chat_rows(refs, hyps, task)
    if not pairs:
        return None
    items = [score_item(ref, row, conf) for ref, row in pairs]
    ref_list = [ref for ref, _ in pairs]
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it["category"], []).append(i)
    cats = {c: summarize_items([items[i] for i in groups[c]], [ref_list[i] for i in groups[c]])
            for c in ordered_categories(groups)}
    return {"categories": cats, "all": summarize_items(items, ref_list), "items": items}


def understanding_by_category(refs: Mapping[str, dict[str, Any]], hyps: list[dict[str, Any]]) -> dict[str, Any]:
    """ASR error rates and tag accuracy of the ``asr``/``tag`` rows per reference category."""
    out: dict[str, Any] = {}
    for task in ("asr", "tag"):
        recs, texts = pair_up(dict(refs), hyps, task)
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(recs):
            groups.setdefault(category_of(r), []).append(i)
        for cat in ordered_categories(groups):
            idx = groups[cat]
            if task == "asr":
                res = error_rates([recs[i]["text"] for i in idx], [texts[i] for i in idx])
            else:
                res = tag_accuracy([recs[i].get("labels") or {} for i in idx], [texts[i] for i in idx])
            out.setdefault(cat, {})[task] = res
    return out


def latency_summary(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per timing field present in the rows: n, mean, median and 90th percentile (seconds, or a ratio for RTF)."""
    rows = list(rows)
    out: dict[str, dict[str, float]] = {}
    for name in LATENCY_FIELDS:
        vals = np.array([float(r[name]) for r in rows if isinstance(r.get(name), int | float)], dtype=np.float64)
        if len(vals):
            out[name] = {"n": int(len(vals)), "mean": float(vals.mean()), "median": float(np.median(vals)),
                         "p90": float(np.percentile(vals, 90))}
    if any("latency_estimated" in r for r in rows):
        out["estimated_share"] = {"n": len(rows), "mean": float(np.mean([bool(r.get("latency_estimated"))
                                                                         for r in rows]))}
    return out


__all__ = ["ALL", "CHAT_TASKS", "ChatScoring", "LATENCY_FIELDS", "NO_CATEGORY", "category_of", "chat_rows",
           "latency_summary", "ordered_categories", "score_chat", "score_item", "summarize_items",
           "understanding_by_category"]
