#!/usr/bin/env python3
"""Multi-turn dialogues from a single-turn list: each record gets the speaker's earlier turns as ``history``.

Usage: python local/make_dialogue_list.py data/test/data.list data/test_dialogue/data.list [--max_turns 2]

EChat-mini records are single exchanges. Chaining the exchanges of one speaker (in list order) gives dialogues
whose later turns carry ``history = [{"text": what was said, "response": the reply}, ...]`` of up to
``--max_turns`` earlier exchanges, oldest first; the chat tasks put them in the prompt (docs/data.md). Records
without a ``speaker`` or a ``response`` are copied unchanged; a record's own ``history`` is kept (not
overwritten). Decode the list like any other, e.g.
``python -m wenet_echat.bin.decode --model_dir exp/stage3 --tasks s2s_think --data_list data/test_dialogue/data.list``.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from wenet_echat.dataset.schema import history_problems  # noqa: E402
from wenet_echat.utils.fileio import read_jsonl, write_jsonl  # noqa: E402


def chain_dialogues(records: list[dict], max_turns: int) -> tuple[list[dict], int]:
    """The records with ``history`` filled from each speaker's earlier exchanges; also how many got one."""
    if max_turns < 1:
        raise ValueError(f"--max_turns must be >= 1, got {max_turns}")
    earlier: dict[str, list[dict[str, str]]] = defaultdict(list)
    out, n = [], 0
    for rec in records:
        spk, text, reply = rec.get("speaker"), rec.get("text"), rec.get("response")
        if not spk or not text or not reply:
            out.append(rec)
            continue
        past = earlier[spk][-max_turns:]
        if past and not rec.get("history"):
            rec = dict(rec, history=[dict(t) for t in past])
            n += 1
        out.append(rec)
        earlier[spk].append({"text": text, "response": reply})
    return out, n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_list")
    p.add_argument("out_list")
    p.add_argument("--max_turns", type=int, default=2, help="earlier exchanges kept per record (default 2)")
    args = p.parse_args(argv)
    records = read_jsonl(args.data_list)
    for i, rec in enumerate(records, 1):
        problems = history_problems(rec.get("history"))
        if problems:
            raise SystemExit(f"{args.data_list}:{i}: key {rec.get('key')!r}: {'; '.join(problems)}")
    out, n = chain_dialogues(records, args.max_turns)
    Path(args.out_list).parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out_list, out)
    print(f"{args.out_list}: {len(out)} records, {n} with history (up to {args.max_turns} earlier turns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
