#!/usr/bin/env python3
"""Convert a data.list into a Kaldi data dir.

Usage:
    python tools/list_to_kaldi.py data/train/data.list data/train_kaldi

Writes wav.scp, text, utt2spk, spk2utt, utt2dur and one file per extra field (docs/data.md §2), sorted in C-locale
order, atomically. A bad input line is reported as file:line and the run exits 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wenet_echat.dataset.kaldi import write_kaldi_dir  # noqa: E402
from wenet_echat.dataset.source import read_list  # noqa: E402
from wenet_echat.utils.fileio import JsonlError, parse_jsonl_line  # noqa: E402


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_list")
    p.add_argument("kaldi_dir")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    records, errors = [], []
    for lineno, line in read_list(args.data_list):
        try:
            records.append(parse_jsonl_line(line, args.data_list, lineno))
        except JsonlError as e:
            errors.append(str(e))
    if errors:
        print("\n".join(f"list_to_kaldi: {e}" for e in errors), file=sys.stderr)
        return 1
    try:
        n = write_kaldi_dir(records, args.kaldi_dir)
    except ValueError as e:
        print(f"list_to_kaldi: {args.data_list}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {n} utterances to {args.kaldi_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
