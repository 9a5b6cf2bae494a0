#!/usr/bin/env python3
"""Loss and accuracy curves of a training run as one PNG, from its ``train_log.jsonl``.

Usage: python local/plot_curves.py exp/stage1/train_log.jsonl exp/stage1/curves.png

Left: training loss per task (logged windows) and cross-validation loss; right: token accuracy per task (training
windows dashed, cross-validation solid). Several logs (e.g. stage 1, 2, 3) can be given; their steps are placed
one after the other.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from wenet_echat.utils.fileio import atomic_path, parse_jsonl_line  # noqa: E402


def read_log(path: str) -> list[dict]:
    with open(path, "rb") as f:
        return [parse_jsonl_line(line, path, i) for i, line in enumerate(f, 1) if line.strip()]


def series(rows: list[dict], kind: str, prefix: str, offset: int) -> dict[str, tuple[list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for r in rows:
        if r.get("kind") != kind:
            continue
        for key, value in r.items():
            if key.startswith(prefix) and isinstance(value, int | float):
                xs, ys = out[key[len(prefix):]]
                xs.append(r["step"] + offset)
                ys.append(value)
    return dict(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("logs", nargs="+", help="train_log.jsonl file(s), then the output PNG")
    args = p.parse_args(argv)
    *logs, out = args.logs
    if not logs:
        p.error("give at least one train_log.jsonl and the output PNG")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    offset = 0
    for log_path in logs:
        rows = read_log(log_path)
        if not rows:
            raise ValueError(f"{log_path}: empty log")
        name = Path(log_path).parent.name
        for task, (xs, ys) in series(rows, "train", "loss_", offset).items():
            ax_loss.plot(xs, ys, "--", alpha=0.6, label=f"{name} train {task}")
        for task, (xs, ys) in series(rows, "cv", "cv_loss_", offset).items():
            ax_loss.plot(xs, ys, "o-", label=f"{name} cv {task}")
        for task, (xs, ys) in series(rows, "train", "acc_", offset).items():
            ax_acc.plot(xs, ys, "--", alpha=0.6, label=f"{name} train {task}")
        for task, (xs, ys) in series(rows, "cv", "cv_acc_", offset).items():
            ax_acc.plot(xs, ys, "o-", label=f"{name} cv {task}")
        offset = max(r["step"] for r in rows) + offset
    ax_loss.set(xlabel="optimizer step", ylabel="cross-entropy per token", title="loss")
    ax_acc.set(xlabel="optimizer step", ylabel="token accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
