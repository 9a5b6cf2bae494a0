"""Confusion matrices of label predictions (tag outputs, CoT cues, reply emotions) as PNG files.

The input is the ``confusion`` mapping of :func:`wenet_echat.eval.understanding.label_accuracy`
(reference value -> hypothesis value -> count). Rows are reference values, columns hypothesis values (a
hypothesis outside the references, e.g. ``(none)`` for a cue the model did not state, gets its own column at the
end). Cells are coloured by the row-normalised rate and show the counts. Files are written atomically with the
Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wenet_echat.utils.fileio import atomic_path


def confusion_matrix(confusion: Mapping[str, Mapping[str, int]], order: Sequence[str] | None = None
                     ) -> tuple[list[str], list[str], np.ndarray]:
    """(row labels, column labels, counts) of a confusion mapping. ``order`` fixes the label order (labels not
    in it follow, sorted); columns are the row labels first, then hypothesis-only labels."""
    refs = set(confusion)
    hyps = {h for row in confusion.values() for h in row}
    known = [v for v in (order or []) if v in refs | hyps]
    rows = known + sorted(refs - set(known))
    rows = [r for r in rows if r in refs]
    cols = rows + [h for h in known if h not in rows and h in hyps] + sorted(hyps - set(rows) - set(known))
    counts = np.zeros((len(rows), len(cols)), dtype=np.int64)
    for i, r in enumerate(rows):
        for h, n in confusion[r].items():
            counts[i, cols.index(h)] += int(n)
    return rows, cols, counts


def plot_confusion(confusion: Mapping[str, Mapping[str, int]], path: str | Path, title: str,
                   order: Sequence[str] | None = None) -> Path:
    """Draw one confusion matrix to ``path`` (PNG); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols, counts = confusion_matrix(confusion, order)
    if not rows:
        raise ValueError(f"{title}: empty confusion matrix")
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(cols), 1.2 + 0.55 * len(rows)))
    ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("hypothesis")
    ax.set_ylabel("reference")
    acc = 100.0 * sum(counts[i, cols.index(r)] for i, r in enumerate(rows)) / max(int(counts.sum()), 1)
    ax.set_title(f"{title} (n={int(counts.sum())}, acc {acc:.1f}%)", fontsize=10)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if rates[i, j] > 0.6 else "black")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def confusion_plots(scores: Mapping[str, Any], out_dir: str | Path, orders: Mapping[str, Sequence[str]]
                    ) -> list[str]:
    """PNG per confusion in a score dict of ``bin/score.py``: tag cues, and per chat task the CoT cues and the
    reply emotion over all items. Returns the written paths."""
    out_dir = Path(out_dir)
    jobs: list[tuple[str, dict, str, str]] = []
    for cue, res in (scores.get("tag") or {}).items():
        jobs.append((f"tag_{cue}", res["confusion"], f"tag task: {cue}", cue))
    for task, chat in (scores.get("chat") or {}).items():
        summary = chat["all"]
        for cue, res in (summary.get("cot") or {}).items():
            jobs.append((f"{task}_cot_{cue}", res["confusion"], f"{task} CoT: {cue}", cue))
        if summary.get("reply_emotion"):
            jobs.append((f"{task}_reply_emotion", summary["reply_emotion"]["confusion"],
                         f"{task}: reply emotion", "response_emotion"))
    return [str(plot_confusion(conf, out_dir / f"{name}.png", title, orders.get(kind)))
            for name, conf, title, kind in jobs]


__all__ = ["confusion_matrix", "confusion_plots", "plot_confusion"]
