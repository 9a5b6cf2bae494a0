"""Scores of generated reply audio (the ``reply_wav`` of decoded rows), per category and over all replies.

* intelligibility: corpus WER/CER of an independent ASR (``pocketsphinx_asr``) on the reply audio against the
  text the reply should speak: the decoded ``reply`` for chat tasks, the reference ``response`` for ``tts``;
* quality: DNSMOS P.835 ``dnsmos_sig`` / ``dnsmos_bak`` / ``dnsmos_ovrl`` means;
* speaker similarity (``spk_sim``) to the assistant voice (the metric's reference voice, e.g. the mean d-vector of
  gold reply wavs of the train set);
* prosody against the gold style: per gold reply emotion, the generated replies' F0 / speaking rate / energy next
  to those of the gold reply audio (``response_wav``) of the same items
  (:func:`wenet_echat.eval.prosody_stats.compare_by_class`).

Metrics are :class:`~wenet_echat.eval.speech.SpeechMetric` objects passed in by name (any subset of
``pocketsphinx_asr``, ``dnsmos``, ``speaker_similarity``, ``prosody``); rows without a wav are counted as
``no_audio``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wenet_echat.eval.echat import category_of, ordered_categories
from wenet_echat.eval.prosody_stats import compare_by_class
from wenet_echat.eval.speech import MetricPool, SpeechMetric, summarize_rows


def reply_audio_items(pairs: list[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> tuple[list[dict], int]:
    """(metric items for the rows with a reply wav and a text to compare with, rows left out)."""
    items, left_out = [], 0
    for ref, row in pairs:
        text = ref.get("response") if row.get("task") == "tts" else row.get("reply")
        if not row.get("reply_wav") or not text or not str(text).strip():
            left_out += 1
            continue
        items.append({"key": row["key"], "path": row["reply_wav"], "ref_text": str(text),
                      "category": category_of(ref), "gold_emotion": ref.get("response_emotion"),
                      "gold_wav": ref.get("response_wav"), "gold_text": ref.get("response")})
    return items, left_out


def score_reply_audio(pairs: list[tuple[Mapping[str, Any], Mapping[str, Any]]],
                      metrics: Mapping[str, SpeechMetric] | MetricPool) -> dict[str, Any] | None:
    """``{"categories": {...}, "all": {...}, "prosody": {...}, "items": [...], "no_audio": n}`` (None when no
    row has audio). ``prosody`` is present when a ``prosody`` metric is given and gold reply wavs exist. A
    :class:`~wenet_echat.eval.speech.MetricPool` scores in its worker processes; a mapping, in this process."""
    items, left_out = reply_audio_items(pairs)
    if not items:
        return None
    pool = metrics if isinstance(metrics, MetricPool) else MetricPool(metrics)
    main = [k for k in pool.metrics if k != "prosody"]
    rows = pool.score([{k: it[k] for k in ("key", "path", "ref_text")} for it in items], main)
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it["category"], []).append(i)
    out: dict[str, Any] = {
        "categories": {c: summarize_rows([rows[i] for i in groups[c]], [items[i]["ref_text"] for i in groups[c]])
                       for c in ordered_categories(groups)},
        "all": summarize_rows(rows, [it["ref_text"] for it in items]), "no_audio": left_out, "items": rows,
    }
    if "prosody" in pool.metrics:
        with_gold = [it for it in items if it["gold_emotion"] and it["gold_wav"] and it["gold_text"]]
        if with_gold:
            gen = pool.score([{"path": it["path"], "ref_text": it["ref_text"]} for it in with_gold], ["prosody"])
            ref = pool.score([{"path": it["gold_wav"], "ref_text": it["gold_text"]} for it in with_gold], ["prosody"])
            out["prosody"] = compare_by_class([{**g, "emotion": it["gold_emotion"]} for g, it in zip(gen, with_gold)],
                                              [{**r, "emotion": it["gold_emotion"]} for r, it in zip(ref, with_gold)])
    return out


__all__ = ["reply_audio_items", "score_reply_audio"]
