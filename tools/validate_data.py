#!/usr/bin/env python3
"""Check a data.list or a Kaldi data dir and list every problem.

Usage:
    python tools/validate_data.py data/train/data.list [--expected_sr 16000] [--max_duration 30] [--no_audio] [--nj 8]
    python tools/validate_data.py data/train            # a Kaldi data dir

Prints one line per problem (``path:line: key: kind: message``), then a table of counts per kind.
Exit status: 1 if any error (fatal problem), 0 otherwise (warnings such as multi_channel are printed only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wenet_echat.dataset.validate import summary_table, validate  # noqa: E402


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="data.list file or Kaldi data dir")
    p.add_argument("--expected_sr", type=int, default=16000, help="expected sample rate of the audio")
    p.add_argument("--max_duration", type=float, default=30.0, help="longest allowed audio in seconds")
    p.add_argument("--no_audio", action="store_true", help="check the records only, do not open audio")
    p.add_argument("--nj", type=int, default=8, help="parallel audio checks")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    if not Path(args.target).exists():
        print(f"{args.target}: no such file or directory", file=sys.stderr)
        return 1
    problems = validate(args.target, expected_sr=args.expected_sr, max_duration=args.max_duration,
                        audio=not args.no_audio, nj=args.nj)
    for p in problems:
        print(f"{p}" if p.fatal else f"{p} (warning)")
    print(summary_table(problems))
    return 1 if any(p.fatal for p in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
