"""Prosody of spoken replies (pitch, speaking rate, loudness) and its comparison with reference speech per class.

Per wav, :func:`wav_prosody` reports

* ``f0_median_hz`` / ``f0_std_st``: median F0 of the voiced frames and its spread in semitones, from the YIN
  tracker of :mod:`wenet_echat.audio.prosody` (60-500 Hz, 10 ms hop; NaN when nothing is voiced);
* ``speaking_rate``: words of the reply text per second of *speech span*, i.e. the wav with leading and trailing
  silence trimmed (pauses inside the reply count, as in the usual definition of speaking rate);
* ``articulation_rate``: words per second of active frames only (pauses left out);
* ``rms_db``: mean power of the active frames in dBFS (a full-scale sine reads about -3 dB).

"Active" frames are those within :data:`ACTIVE_RANGE_DB` of the loudest frame and above :data:`SILENCE_FLOOR_DB`,
the rule :func:`wenet_echat.audio.prosody.prosody_stats` uses, so the two rates and the loudness agree on what
speech is. Words are counted after :func:`wenet_echat.eval.understanding.normalize_text`, the normalisation of
the WER scores.

For the report, :func:`compare_by_class` groups generated and reference rows by a class label (the reply emotion)
and gives per-class means and generated-minus-reference differences; rows are matched by class only, so the
reference can be the ground-truth replies of the same test set or any other recording of the target voice.
:func:`prosody_markdown` prints the comparison as a table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from wenet_echat.audio import prosody as audio_prosody
from wenet_echat.eval.understanding import normalize_text

ACTIVE_RANGE_DB = 35.0
SILENCE_FLOOR_DB = -60.0
HOP_S = 0.01
COMPARED_FIELDS: tuple[str, ...] = ("f0_median_hz", "speaking_rate", "rms_db")
ALL_CLASSES = "(all)"


def count_words(text: str) -> int:
    """Number of words after WER normalisation (punctuation does not count)."""
    return len(normalize_text(text).split())


def speech_span(wav: np.ndarray, sr: int) -> float:
    """Seconds from the first to the last active frame (0.0 for silence)."""
    energy = audio_prosody.frame_energy_db(wav, sr, hop_s=HOP_S)
    if not len(energy):
        return 0.0
    active = np.flatnonzero((energy > energy.max() - ACTIVE_RANGE_DB) & (energy > SILENCE_FLOOR_DB))
    if not len(active):
        return 0.0
    return float((active[-1] - active[0] + 1) * HOP_S)


def _per_second(n_words: int | None, seconds: float) -> float:
    return n_words / seconds if n_words and seconds > 0 else math.nan


def wav_prosody(wav: np.ndarray, sr: int, text: str | None = None) -> dict[str, float]:
    """Prosody summary of one mono wav; the rates are NaN without ``text``."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1 or not len(wav):
        raise ValueError(f"wav_prosody expects a non-empty mono wav, got shape {wav.shape}")
    n_words = count_words(text) if text is not None else None
    base = audio_prosody.prosody_stats(wav, sr, n_words=n_words)
    span = speech_span(wav, sr)
    return {
        "f0_median_hz": base["median_f0"],
        "f0_std_st": base["f0_std_semitones"],
        "rms_db": base["rms_db"],
        "speaking_rate": _per_second(n_words, span),
        "articulation_rate": _per_second(n_words, base["active_duration"]),
        "speech_s": span,
        "duration_s": base["duration"],
        "n_words": float(n_words) if n_words is not None else math.nan,
    }


def _finite_mean(values: Iterable[float]) -> float:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if len(arr) else math.nan


def _group(rows: Iterable[Mapping[str, Any]], class_key: str, what: str) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for i, row in enumerate(rows, 1):
        if row.get(class_key) is None:
            raise KeyError(f"{what} row {i} has no '{class_key}' class label")
        groups.setdefault(str(row[class_key]), []).append(row)
    return groups


def _compare_group(gen: Sequence[Mapping[str, Any]], ref: Sequence[Mapping[str, Any]],
                   fields: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {"n_gen": float(len(gen)), "n_ref": float(len(ref))}
    for field in fields:
        g = _finite_mean(r.get(field, math.nan) for r in gen)
        r = _finite_mean(r.get(field, math.nan) for r in ref)
        out[f"{field}_gen"], out[f"{field}_ref"], out[f"{field}_diff"] = g, r, g - r
    if "f0_median_hz" in fields:
        g, r = out["f0_median_hz_gen"], out["f0_median_hz_ref"]
        out["f0_diff_st"] = 12 * math.log2(g / r) if g > 0 and r > 0 else math.nan
    return out


def compare_by_class(
    generated: Iterable[Mapping[str, Any]], reference: Iterable[Mapping[str, Any]], class_key: str = "emotion",
    fields: Sequence[str] = COMPARED_FIELDS,
) -> dict[str, dict[str, float]]:
    """Per-class means of ``fields`` for generated and reference rows (:func:`wav_prosody` output plus a
    ``class_key`` label) and their differences (generated - reference; ``f0_diff_st`` in semitones).

    Classes are sorted; the pooled row :data:`ALL_CLASSES` comes last. A class seen on one side only gets NaN
    differences. NaN values (an unvoiced wav, a reply without text) are left out of the means.
    """
    gen, ref = list(generated), list(reference)
    gen_groups = _group(gen, class_key, "generated")
    ref_groups = _group(ref, class_key, "reference")
    out = {c: _compare_group(gen_groups.get(c, []), ref_groups.get(c, []), fields)
           for c in sorted(set(gen_groups) | set(ref_groups))}
    out[ALL_CLASSES] = _compare_group(gen, ref, fields)
    return out


def _num(value: float, digits: int = 1, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def prosody_markdown(comparison: Mapping[str, Mapping[str, float]], title: str = "Reply prosody vs reference") -> str:
    """Markdown table of :func:`compare_by_class` with the default fields; '-' marks a missing value."""
    lines = [f"## {title}", "",
             "| class | n gen | n ref | F0 gen Hz | F0 ref Hz | ΔF0 st | rate gen w/s | rate ref w/s | Δrate | "
             "energy gen dB | energy ref dB | Δenergy dB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for cls, c in comparison.items():
        cells = [_num(c["f0_median_hz_gen"]), _num(c["f0_median_hz_ref"]), _num(c["f0_diff_st"], signed=True),
                 _num(c["speaking_rate_gen"], 2), _num(c["speaking_rate_ref"], 2),
                 _num(c["speaking_rate_diff"], 2, signed=True), _num(c["rms_db_gen"]), _num(c["rms_db_ref"]),
                 _num(c["rms_db_diff"], signed=True)]
        lines.append(f"| {cls} | {int(c['n_gen'])} | {int(c['n_ref'])} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)
