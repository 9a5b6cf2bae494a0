#!/usr/bin/env python3
"""Convert a Kaldi data dir into a data.list.

Usage:
    python tools/kaldi_to_list.py data/train data/train/data.list

Reads wav.scp, text, utt2spk, utt2dur, utt2{age,gender,emotion,event,category,task,response_emotion}, response,
response_wav.scp, think, response_tokens (and feats.scp) per docs/data.md. A bad line is reported as file:line
and the run exits 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wenet_echat.dataset.kaldi import KaldiDirError, read_kaldi_dir  # noqa: E402
from wenet_echat.utils.fileio import write_jsonl  # noqa: E402


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kaldi_dir")
    p.add_argument("data_list")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    try:
        records = read_kaldi_dir(args.kaldi_dir)
    except (KaldiDirError, OSError) as e:
        print(f"kaldi_to_list: {e}", file=sys.stderr)
        return 1
    n = write_jsonl(args.data_list, records)
    print(f"wrote {n} records to {args.data_list}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
