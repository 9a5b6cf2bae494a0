"""Markdown results of one or several systems from the score dicts that ``bin/score.py`` writes (``results.json``).

:func:`results_markdown` lays out

1. a summary shaped like OSUM-EChat's Table 1: one row per system; columns Emotion, Age, Gender, Event, Multi
   (the mean reply score of that category), Reply (all items) and Identity (% of identity questions answered
   right); the score is the offline reference-based reply score (:mod:`wenet_echat.eval.reply`), and a second
   table gives the LLM judge's scores when any system was judged;
2. one table per category comparing the systems: reply score, state match and its coverage, chrF, token F1,
   judge, reply-emotion accuracy, per-cue accuracy read from the CoT, the CoT transcript's WER, the ``asr``
   task's WER, identity accuracy, and the reply audio's intelligibility (WER), DNSMOS and speaker similarity
   (columns no system has are left out);
3. understanding (``asr`` WER/CER, ``tag`` accuracy per cue), latency (first text token, first speech token,
   first audio chunk, RTF) and reply-audio prosody, when present; links to the confusion-matrix plots.

A system's *main chat task* is the first of ``s2s_think``, ``s2s_chat``, ``s2t_chat``, ``t2t`` it has rows for.
Missing numbers print as ``-``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wenet_echat.eval.echat import ALL, CHAT_TASKS, ordered_categories
from wenet_echat.eval.prosody_stats import prosody_markdown
from wenet_echat.text.prompts import TAG_ORDER

TABLE1_CATEGORIES: tuple[str, ...] = ("emotion", "age", "gender", "event", "multi")


def fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.{digits}f}"


def main_task(score: Mapping[str, Any]) -> str | None:
    chat = score.get("chat") or {}
    return next((t for t in CHAT_TASKS if t in chat), None)


def _cat(score: Mapping[str, Any], category: str) -> dict[str, Any]:
    task = main_task(score)
    if task is None:
        return {}
    chat = score["chat"][task]
    return chat["all"] if category == ALL else chat["categories"].get(category, {})


def _speech(score: Mapping[str, Any], category: str) -> dict[str, Any]:
    task = main_task(score)
    sp = (score.get("speech") or {}).get(task or "")
    if not sp:
        return {}
    return sp["all"] if category == ALL else sp["categories"].get(category, {})


def _table(header: list[str], rows: list[list[str]], align: str = "---:") -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "|".join([align] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def drop_empty_columns(header: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Leave out the columns (after the first) that are ``-`` in every row, e.g. speech scores nobody ran."""
    keep = [0] + [j for j in range(1, len(header)) if any(r[j] != "-" for r in rows)]
    return [header[j] for j in keep], [[r[j] for j in keep] for r in rows]


def summary_rows(systems: Mapping[str, Mapping[str, Any]], field: str) -> list[list[str]]:
    rows = []
    for name, score in systems.items():
        cells = [fmt(_cat(score, c).get(field)) for c in (*TABLE1_CATEGORIES, ALL)]
        ident = _cat(score, "identity").get("identity") or {}
        rows.append([name, *cells, fmt(ident.get("accuracy"))])
    return rows


def summary_markdown(systems: Mapping[str, Mapping[str, Any]]) -> str:
    header = ["system", "Emotion", "Age", "Gender", "Event", "Multi", "Reply (all)", "Identity %"]
    lines = ["### Summary: offline reply score (0-100) per EChat-eval category", ""]
    lines += _table(header, summary_rows(systems, "reply_score"))
    if any(_cat(s, ALL).get("judge") is not None for s in systems.values()):
        lines += ["### Summary: LLM judge score (0-100) per category", ""]
        lines += _table(header, summary_rows(systems, "judge"))
    return "\n".join(lines)


def category_markdown(systems: Mapping[str, Mapping[str, Any]], category: str) -> str:
    header = ["system", "n", "reply score", "state %", "state coverage %", "chrF", "token F1", "judge",
              "reply emotion %", *(f"CoT {c} %" for c in TAG_ORDER), "CoT WER %", "ASR WER %"]
    identity = category == "identity"
    if identity:
        header.append("identity %")
    header += ["speech WER %", "DNSMOS", "spk sim"]
    rows = []
    for name, score in systems.items():
        s, sp = _cat(score, category), _speech(score, category)
        if not s:
            continue
        cot = s.get("cot") or {}
        row = [name, fmt(s.get("n")), fmt(s.get("reply_score")),
               fmt(100 * s["state"] if s.get("state") is not None else None), fmt(s.get("state_coverage"), 0),
               fmt(s.get("chrf")), fmt(s.get("token_f1")), fmt(s.get("judge")),
               fmt((s.get("reply_emotion") or {}).get("accuracy")),
               *(fmt((cot.get(c) or {}).get("accuracy")) for c in TAG_ORDER),
               fmt((s.get("cot_asr") or {}).get("wer"), 2),
               fmt(((score.get("understanding_by_category") or {}).get(category, {}).get("asr") or {}).get("wer"), 2)]
        if identity:
            row.append(fmt((s.get("identity") or {}).get("accuracy")))
        row += [fmt(sp.get("wer")), fmt(sp.get("dnsmos_ovrl"), 2), fmt(sp.get("spk_sim"), 3)]
        rows.append(row)
    title = "all items" if category == ALL else category.capitalize()
    return "\n".join([f"### {title}", "", *_table(*drop_empty_columns(header, rows))])


def understanding_markdown(systems: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for name, score in systems.items():
        asr, tag = score.get("asr") or {}, score.get("tag") or {}
        if not asr and not tag:
            continue
        rows.append([name, fmt(asr.get("utts")), fmt(asr.get("wer"), 2), fmt(asr.get("cer"), 2),
                     *(fmt((tag.get(c) or {}).get("accuracy")) for c in TAG_ORDER)])
    if not rows:
        return ""
    header = ["system", "ASR utts", "WER %", "CER %", *(f"tag {c} %" for c in TAG_ORDER)]
    return "\n".join(["### Understanding (asr and tag tasks)", "", *_table(header, rows)])


def latency_markdown(systems: Mapping[str, Mapping[str, Any]]) -> str:
    fields = ("first_text_s", "first_speech_s", "first_audio_s", "rtf", "rtf_e2e")
    rows = []
    for name, score in systems.items():
        lat = (score.get("latency") or {}).get(main_task(score) or "", {})
        if lat:
            est = lat.get("estimated_share", {}).get("mean")
            rows.append([name, *(fmt((lat.get(f) or {}).get("median"), 3) for f in fields),
                         "yes" if est else ("-" if est is None else "no")])
    if not rows:
        return ""
    header = ["system", "first text s", "first speech s", "first audio s", "RTF t2w", "RTF e2e", "interpolated"]
    return "\n".join(["### Latency (medians; per batch unless decoded with batch size 1)", "",
                      *_table(header, rows)])


def results_markdown(systems: Mapping[str, Mapping[str, Any]], title: str, base_dir: str | Path | None = None,
                     understanding: bool = True) -> str:
    """The whole report (see the module docstring); plot links are made relative to ``base_dir``;
    ``understanding=False`` leaves the understanding table out (a caller that prints its own)."""
    if not systems:
        raise ValueError("no system to report")
    lines = [f"## {title}", ""]
    if any(main_task(s) for s in systems.values()):
        lines.append(summary_markdown(systems))
    cats: set[str] = set()
    for score in systems.values():
        task = main_task(score)
        if task:
            cats |= set(score["chat"][task]["categories"])
    for cat in [*ordered_categories(cats), ALL] if cats else []:
        lines.append(category_markdown(systems, cat))
    for part in (understanding_markdown(systems) if understanding else "", latency_markdown(systems)):
        if part:
            lines.append(part)
    for name, score in systems.items():
        sp = (score.get("speech") or {}).get(main_task(score) or "") or {}
        if sp.get("prosody"):
            lines.append(prosody_markdown(sp["prosody"], f"Reply prosody vs gold style by reply emotion: {name}"))
        plots = score.get("plots") or []
        if plots:
            links = [os.path.relpath(p, base_dir) if base_dir else p for p in plots]
            lines += [f"Confusion matrices ({name}): " + ", ".join(f"[{Path(p).stem}]({p})" for p in links), ""]
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["TABLE1_CATEGORIES", "category_markdown", "fmt", "latency_markdown", "main_task", "results_markdown",
           "summary_markdown", "understanding_markdown"]
