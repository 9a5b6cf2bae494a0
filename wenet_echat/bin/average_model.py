#!/usr/bin/env python3
"""Average the weights of several checkpoints of a model_dir into one ``model.pt``-format file.

Usage:
    python -m wenet_echat.bin.average_model --model_dir exp/x --num 5 --mode last --dst exp/x/avg_5.pt

``--mode last`` takes the checkpoints with the highest ``step`` in their ``info.yaml``; ``--mode best`` those with
the lowest ``cv_loss``. Only tags fully matching ``--tag_regex`` (``step_N`` / ``epoch_N`` by default) are
considered, so ``final`` (a copy of the last step) is not counted twice. The output is written atomically.
"""

from __future__ import annotations

import argparse
import sys

from wenet_echat.train.average import DEFAULT_TAG_REGEX, MODES, average_checkpoints, select_checkpoints
from wenet_echat.train.checkpoint import save_state_dict
from wenet_echat.utils.logging import setup_logging


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True, help="directory holding <tag>/model.pt + info.yaml checkpoints")
    p.add_argument("--num", type=int, default=5, help="number of checkpoints to average")
    p.add_argument("--mode", choices=MODES, default="last", help="last: highest step; best: lowest cv_loss")
    p.add_argument("--dst", required=True, help="output file (flat state dict)")
    p.add_argument("--tag_regex", default=DEFAULT_TAG_REGEX, help="checkpoint tags to consider (full match)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    setup_logging()
    try:
        records = select_checkpoints(args.model_dir, args.num, args.mode, args.tag_regex)
        for record in records:
            print(f"averaging {record.describe()}")
        save_state_dict(average_checkpoints([r.path for r in records]), args.dst)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"average_model: {e}", file=sys.stderr)
        return 1
    print(f"wrote the average of {len(records)} checkpoint(s) to {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
