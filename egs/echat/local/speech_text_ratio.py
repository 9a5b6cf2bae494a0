#!/usr/bin/env python3
"""Text ids per speech code of the replies of a data list: the figure ``model.speech_text_interleave: [N, M]``
is chosen by (``N / M`` above it keeps the fed text ahead of the speech; wenet_echat/text/interleave.py).

    python local/speech_text_ratio.py --data_list data/train/data.tok.list --spm data/lang/spm.model [--text 4]

Prints one JSON line: distinct replies, the ratio's percentiles, and for ``--text N`` the largest ``M`` whose
``N / M`` is at least the 95th percentile, with the share of replies whose text is used up before their speech
ends under that ``[N, M]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from wenet_echat.text.tokenizer import build_tokenizer
from wenet_echat.utils.fileio import read_jsonl


def reply_lengths(rows: list[dict], encode) -> list[tuple[int, int]]:
    """(text ids, speech codes) of each distinct reply text with speech tokens."""
    seen: dict[str, tuple[int, int]] = {}
    for row in rows:
        reply, codes = row.get("response"), row.get("response_tokens")
        if reply and codes and reply not in seen:
            seen[reply] = (len(encode(reply)), len(codes))
    return list(seen.values())


def summarize(lengths: list[tuple[int, int]], n_text: int) -> dict:
    if not lengths:
        raise ValueError("no record has both a response and response_tokens (run the speech-token stage first)")
    ratio = np.array([t / s for t, s in lengths])
    p95 = float(np.percentile(ratio, 95))
    m = max(1, math.floor(n_text / p95))
    # text used up before the speech ends: ceil(text / N) chunks are fed by code (chunks - 1) * M < codes
    used_up = float(np.mean([(math.ceil(t / n_text) - 1) * m < s for t, s in lengths]))
    return {"replies": len(lengths), "text_ids_per_code": {
        "p5": round(float(np.percentile(ratio, 5)), 4), "p50": round(float(np.median(ratio)), 4),
        "p95": round(p95, 4), "max": round(float(ratio.max()), 4)},
        "mean_text_ids": round(float(np.mean([t for t, _ in lengths])), 1),
        "mean_codes": round(float(np.mean([s for _, s in lengths])), 1),
        "suggested": [n_text, m], "text_used_up_before_speech_ends": round(used_up, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_list", required=True, help="a data list whose records carry response_tokens")
    ap.add_argument("--spm", required=True, help="the recipe's SentencePiece model (data/lang/spm.model)")
    ap.add_argument("--text", type=int, default=4, help="text ids per chunk (N)")
    args = ap.parse_args(argv)
    if args.text < 1:
        ap.error(f"--text must be >= 1, got {args.text}")
    tok = build_tokenizer({"type": "sentencepiece", "model": args.spm})
    try:
        print(json.dumps(summarize(reply_lengths(read_jsonl(args.data_list), tok.encode), args.text)))
    except ValueError as e:
        print(f"{args.data_list}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
