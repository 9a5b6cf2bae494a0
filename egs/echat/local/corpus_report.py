#!/usr/bin/env python3
"""Corpus report for EChat-mini (or any data.list corpus with labels): counts, hours, plots, acoustic checks.

Usage (from egs/echat):
    python local/corpus_report.py --data_dir data --out_dir data/report [--sets "train dev test"]
                                  [--max_per_value 40] [--seed 0]

Writes (atomically) to --out_dir:
    report.md               hours and counts per split, per label value (age, gender, emotion, event,
                            category, response_emotion) per split, and how much of each held-out split's
                            transcript words train's transcripts (and replies) contain
    label_distribution.png  the same distributions as bar charts
    spectrograms.png        log-mel spectrograms of one sentence spoken in different states
    acoustic_stats.md       per-label acoustic statistics (median F0, F0 range, speaking rate, energy) over a
                            sample of user utterances, showing that the cues are in the audio

Acoustic rows compare like with like: emotion rows use adult speakers of one gender without a sound event, age
rows neutral speech of one gender without an event, gender rows adult neutral speech without an event, event
rows everything with that event (measured on the mixture). The tables are printed too.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # wenet_echat

from wenet_echat.audio.io import load_audio  # noqa: E402
from wenet_echat.audio.prosody import prosody_stats  # noqa: E402
from wenet_echat.eval.understanding import normalize_text  # noqa: E402
from wenet_echat.text.labels import AGES, CATEGORIES, EMOTIONS, EVENTS, GENDERS, REPLY_EMOTIONS  # noqa: E402
from wenet_echat.utils.fileio import atomic_open, atomic_path, parse_jsonl_line  # noqa: E402

FIELDS: dict[str, tuple[str, ...]] = {
    "age": AGES, "gender": GENDERS, "emotion": EMOTIONS, "event": EVENTS, "category": CATEGORIES,
    "response_emotion": REPLY_EMOTIONS,
}
# (label, filter on the other labels) for the acoustic tables: compare like with like
ACOUSTIC_FILTERS: tuple[tuple[str, dict[str, str]], ...] = (
    ("emotion", {"age": "adult", "gender": "female", "event": "none"}),
    ("emotion", {"age": "adult", "gender": "male", "event": "none"}),
    ("age", {"gender": "female", "emotion": "neutral", "event": "none"}),
    ("age", {"gender": "male", "emotion": "neutral", "event": "none"}),
    ("gender", {"age": "adult", "emotion": "neutral", "event": "none"}),
    ("event", {}),
)


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--out_dir", required=True)
    p.add_argument("--sets", default="train dev test", help="splits to read (missing ones are skipped)")
    p.add_argument("--max_per_value", type=int, default=40, help="utterances measured per label value")
    p.add_argument("--seed", type=int, default=0, help="seed of the acoustic sample")
    return p.parse_args(argv)


def value_of(rec: dict, field: str) -> str | None:
    return (rec.get("labels") or {}).get(field) if field in ("age", "gender", "emotion", "event") else rec.get(field)


def read_list(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [parse_jsonl_line(line, str(path), i) for i, line in enumerate(f, 1) if line.strip()]


def label(rec: dict, field: str) -> str:
    v = value_of(rec, field)
    return "unknown" if v is None else str(v)


def counts_table(data: dict[str, list[dict]]) -> list[str]:
    splits = list(data)
    lines = ["## Splits", "", "| split | utterances | hours | voices | sentences | distinct replies | mean dur (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for s, recs in data.items():
        dur = sum(r.get("duration", 0.0) for r in recs)
        lines.append(f"| {s} | {len(recs)} | {dur / 3600:.3f} | {len({r.get('speaker') for r in recs})} | "
                     f"{len({r.get('text') for r in recs})} | {len({r.get('response') for r in recs})} | "
                     f"{dur / max(len(recs), 1):.2f} |")
    for field, vocab in FIELDS.items():
        c = {s: Counter(label(r, field) for r in recs) for s, recs in data.items()}
        values = [v for v in (*vocab, "unknown") if any(c[s][v] for s in splits)]
        lines += ["", f"## {field}", "", "| value | " + " | ".join(f"{s} n | {s} h" for s in splits) + " |",
                  "|---|" + "---:|---:|" * len(splits)]
        for v in values:
            cells = []
            for s in splits:
                h = sum(r.get("duration", 0.0) for r in data[s] if label(r, field) == v) / 3600
                cells.append(f"{c[s][v]} | {h:.3f}")
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines


def words(texts) -> list[str]:
    """Normalised word tokens (as the ASR scoring sees them) of the non-empty ``texts``."""
    return [w for t in texts if t for w in normalize_text(str(t)).split()]


def vocabulary_table(data: dict[str, list[dict]]) -> list[str]:
    """Per held-out split: the share of its transcript word tokens whose word never occurs in train's transcripts,
    and in train's transcripts or replies (the ASR text with ``--reply_asr``). An ASR model can spell such words only
    from sound, so the shares bound how far a model that memorises train's words can go."""
    if "train" not in data or len(data) < 2:
        return []
    seen = set(words(r.get("text") for r in data["train"]))
    seen_reply = seen | set(words(r.get("response") for r in data["train"]))
    lines = ["## Transcript vocabulary", "",
             "Word tokens of each split's user transcripts whose word is not in train's transcripts (the ASR "
             "training text), or not in them nor in train's replies (the reply audio's ASR text).", "",
             "| split | word tokens | distinct words | unseen in train text % | unseen in train text and replies % |",
             "|---|---:|---:|---:|---:|"]
    for split, recs in data.items():
        if split == "train":
            continue
        tokens = words(r.get("text") for r in recs)
        n = max(len(tokens), 1)
        lines.append(f"| {split} | {len(tokens)} | {len(set(tokens))} | "
                     f"{100 * sum(w not in seen for w in tokens) / n:.1f} | "
                     f"{100 * sum(w not in seen_reply for w in tokens) / n:.1f} |")
    return lines


def plot_distribution(data: dict[str, list[dict]], path: Path) -> None:
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (field, vocab) in zip(axes.flat, FIELDS.items(), strict=True):
        c = {s: Counter(label(r, field) for r in recs) for s, recs in data.items()}
        values = [v for v in vocab if any(c[s][v] for s in data)]
        x = np.arange(len(values))
        w = 0.8 / max(len(data), 1)
        for i, s in enumerate(data):
            total = max(len(data[s]), 1)
            ax.bar(x + i * w, [100 * c[s][v] / total for v in values], w, label=s)
        ax.set_xticks(x + w * (len(data) - 1) / 2, values, rotation=35, ha="right", fontsize=8)
        ax.set_title(field)
        ax.set_ylabel("% of split")
    axes.flat[0].legend()
    fig.suptitle("EChat-mini label distribution")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def pick_spectrogram_examples(recs: list[dict], n: int = 4) -> list[dict]:
    """One sentence in as many different states as possible (prefer different emotions/ages/events)."""
    by_text: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(recs, key=lambda r: r["key"]):
        by_text[r.get("text", "")].append(r)

    def diversity(group: list[dict]) -> tuple[int, int]:
        states = {tuple(label(r, f) for f in ("age", "emotion", "event")) for r in group}
        return len(states), len(group)

    text = max(sorted(by_text), key=lambda t: diversity(by_text[t]))
    group = by_text[text]
    fields = ("age", "gender", "emotion", "event")
    chosen = [min(group, key=lambda r: (label(r, "emotion") != "neutral") + (label(r, "event") != "none"))]
    while len(chosen) < n:  # greedily add the example that differs most from those chosen
        def novelty(r):
            return sum(label(r, f) not in {label(c, f) for c in chosen} for f in fields)
        best = max(group, key=novelty)
        if novelty(best) == 0:
            break
        chosen.append(best)
    return chosen


def plot_spectrograms(recs: list[dict], path: Path) -> None:
    from wenet_echat.audio.features import whisper_log_mel

    chosen = pick_spectrogram_examples(recs)
    fig, axes = plt.subplots(len(chosen), 1, figsize=(11, 2.4 * max(len(chosen), 1)), squeeze=False,
                             sharex=True)
    for ax, r in zip(axes[:, 0], chosen, strict=True):
        wav, _ = load_audio(r["wav"], target_sr=16000)
        mel = whisper_log_mel(wav).numpy()
        ax.imshow(mel.T, origin="lower", aspect="auto", cmap="magma",
                  extent=(0, mel.shape[0] / 100, 0, mel.shape[1]))
        lab = r.get("labels", {})
        ax.set_title(f"{r['key']}: {lab.get('age')}/{lab.get('gender')}/{lab.get('emotion')}/event={lab.get('event')}",
                     fontsize=9)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(f"\"{chosen[0].get('text', '') if chosen else ''}\" in different states", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def measure(rec: dict) -> dict[str, float]:
    wav, sr = load_audio(rec["wav"], target_sr=16000)
    return prosody_stats(wav, sr, n_words=len(rec.get("text", "").split()) or None)


def acoustic_stats(recs: list[dict], max_per_value: int, seed: int) -> tuple[list[str], dict]:
    """Median over sampled utterances of each prosody measure, per label value."""
    rng = np.random.default_rng(seed)
    recs = sorted(recs, key=lambda r: r["key"])
    cache: dict[str, dict[str, float]] = {}
    table: dict[str, dict[str, dict[str, float]]] = {}
    lines = ["# Acoustic statistics per label", "",
             "Medians over a sample of user utterances (`wenet_echat.audio.prosody.prosody_stats`). To compare like "
             "with like, emotion rows use adult speakers of one gender without a sound event, age rows neutral "
             "speech of one gender without an event, gender rows adult neutral speech without an event; event rows are "
             "measured on the mixture (F0 and rate there include the event sound).", ""]
    for field, flt in ACOUSTIC_FILTERS:
        pool = [r for r in recs if all(label(r, k) == v for k, v in flt.items())]
        cond = ", ".join(f"{k}={v}" for k, v in flt.items())
        lines += [f"## {field} ({cond or 'all'})", "",
                  "| value | n | median F0 (Hz) | F0 range (st, std) | rate (words/s) | energy (dB) | duration (s) |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        name = f"{field} ({cond})"
        table[name] = {}
        for v in FIELDS[field]:
            group = [r for r in pool if label(r, field) == v]
            if not group:
                continue
            if len(group) > max_per_value:
                group = [group[i] for i in sorted(rng.choice(len(group), max_per_value, replace=False))]
            stats = []
            for r in group:
                if r["key"] not in cache:
                    cache[r["key"]] = measure(r)
                stats.append(cache[r["key"]])

            def med(k, stats=stats):
                vals = [s[k] for s in stats if s[k] is not None and math.isfinite(s[k])]
                return float(np.median(vals)) if vals else float("nan")

            row = {k: med(k) for k in ("median_f0", "f0_std_semitones", "speaking_rate", "rms_db", "duration")}
            row["n"] = len(stats)
            table[name][v] = row
            lines.append(f"| {v} | {len(stats)} | {row['median_f0']:.1f} | {row['f0_std_semitones']:.2f} | "
                         f"{row['speaking_rate']:.2f} | {row['rms_db']:.1f} | {row['duration']:.2f} |")
        lines.append("")
    return lines, table


def main(argv=None) -> int:
    args = get_args(argv)
    data_dir, out = Path(args.data_dir), Path(args.out_dir)
    data = {s: read_list(data_dir / s / "data.list") for s in args.sets.split()
            if (data_dir / s / "data.list").exists()}
    if not data:
        print(f"error: no {{{args.sets}}}/data.list under {data_dir}", file=sys.stderr)
        return 2
    lines = ["# EChat-mini corpus report", "", f"Data: `{data_dir}`; splits: {', '.join(data)}.", "",
             *counts_table(data), "", *vocabulary_table(data), ""]
    meta = data_dir / "meta.json"
    if meta.exists():
        m = json.loads(meta.read_text(encoding="utf-8"))
        lines += ["## Synthesis", "", f"seed {m.get('seed')}, wall time {m.get('wall_time_s')} s "
                  f"(nj={m.get('nj')}), tools: {m.get('tools')}", ""]
    with atomic_open(out / "report.md") as f:
        f.write("\n".join(lines) + "\n")
    plot_distribution(data, out / "label_distribution.png")
    all_recs = [r for recs in data.values() for r in recs]
    plot_spectrograms(data.get("train") or all_recs, out / "spectrograms.png")
    ac_lines, table = acoustic_stats(all_recs, args.max_per_value, args.seed)
    with atomic_open(out / "acoustic_stats.md") as f:
        f.write("\n".join(ac_lines) + "\n")
    with atomic_open(out / "acoustic_stats.json") as f:
        json.dump(table, f, indent=1, allow_nan=True)
    print("\n".join(lines))
    print("\n".join(ac_lines))
    print(f"report written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
