"""Merge several systems' scores (``results.json`` of ``bin/score.py``) into one Markdown results page.

    python -m wenet_echat.bin.report --systems full=exp/stage3/decode_test_think/results.json \\
        no_think=exp/stage3/decode_test_nothink/results.json no_understanding=exp/x/decode_test/results.json \\
        --out exp/RESULTS.md [--title "EChat-mini test"] [--print summary|all|none]

The page (:mod:`wenet_echat.eval.report`) starts with a summary shaped like OSUM-EChat's Table 1 (rows = systems;
columns = Emotion, Age, Gender, Event, Multi, Reply (all), Identity), then one table per category comparing the
systems, then understanding, latency and prosody. Written atomically to ``--out``, with the summary numbers in
the same path with ``.json``; the summary table (or the whole page) is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from wenet_echat.eval.echat import ALL
from wenet_echat.eval.report import TABLE1_CATEGORIES, main_task, results_markdown, summary_markdown
from wenet_echat.utils.fileio import write_report


def parse_systems(specs: list[str]) -> dict[str, dict[str, Any]]:
    """``NAME=results.json`` pairs -> {name: score dict}; names must be unique."""
    systems: dict[str, dict[str, Any]] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--systems {spec!r}: expected NAME=results.json")
        if name in systems:
            raise ValueError(f"--systems: system name {name!r} given twice")
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"--systems {name}: {file} does not exist (run bin/score.py first)")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{file}: not JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{file}: expected the JSON object written by bin/score.py")
        systems[name] = data
    return systems


def summary_numbers(systems: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, score in systems.items():
        task = main_task(score)
        if task is None:
            out[name] = {"task": None}
            continue
        chat = score["chat"][task]
        row: dict[str, Any] = {"task": task}
        for cat in (*TABLE1_CATEGORIES, "identity", ALL):
            s = chat["all"] if cat == ALL else chat["categories"].get(cat)
            if s:
                row[cat] = {k: s.get(k) for k in ("n", "reply_score", "judge")}
                if "identity" in s:
                    row[cat]["identity"] = s["identity"]["accuracy"]
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--systems", nargs="+", required=True, metavar="NAME=results.json")
    p.add_argument("--out", required=True, help="RESULTS.md")
    p.add_argument("--title", default="Results")
    p.add_argument("--print", dest="show", default="summary", choices=["summary", "all", "none"])
    args = p.parse_args(argv)
    systems = parse_systems(args.systems)
    out = Path(args.out)
    text = results_markdown(systems, args.title, out.parent)
    write_report(out, text, summary_numbers(systems))
    if args.show == "all":
        print(text)
    elif args.show == "summary":
        print(summary_markdown(systems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
