"""Score ``hyp.jsonl`` against the reference data list: ASR WER/CER and per-cue tag accuracy next to chance.

    python -m wenet_echat.bin.score --ref data/test/data.list --hyp exp/stage1/decode_test/hyp.jsonl \\
        --out exp/stage1/decode_test/results.md [--title "stage 1, test"]

Writes the Markdown tables to ``--out`` and the numbers to the same path with ``.json``; prints the tables.
"""

from __future__ import annotations

import argparse
import sys

from wenet_echat.eval.understanding import score_understanding, understanding_markdown
from wenet_echat.utils.fileio import read_jsonl, write_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", required=True, help="reference data.list")
    p.add_argument("--hyp", required=True, help="hyp.jsonl from bin/decode.py")
    p.add_argument("--out", required=True, help="results.md")
    p.add_argument("--title", default="Understanding")
    args = p.parse_args(argv)
    refs = {}
    for i, rec in enumerate(read_jsonl(args.ref), 1):
        if "key" not in rec:
            raise KeyError(f"{args.ref}:{i}: record has no 'key'")
        refs[rec["key"]] = rec
    scores = score_understanding(refs, read_jsonl(args.hyp))
    text = understanding_markdown(scores, args.title)
    write_report(args.out, text, scores)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
