#!/usr/bin/env python3
"""Turn a DeepSpeed (ZeRO 1/2/3) checkpoint into a flat fp32 ``model.pt`` of the bare module.

Usage:
    python -m wenet_echat.bin.convert_deepspeed --ds_dir exp/x/step_1000_ds --out exp/x/step_1000/model.pt [--tag T]

``--ds_dir`` is the ``save_dir`` passed to ``engine.save_checkpoint``; without ``--tag`` its ``latest`` file picks
the tag. The result loads with ``wenet_echat.train.checkpoint.load_model_weights`` and averages with
``wenet_echat.bin.average_model``. The output is written atomically.
"""

from __future__ import annotations

import argparse
import sys

from wenet_echat.train.checkpoint import deepspeed_to_state_dict, save_state_dict
from wenet_echat.utils.logging import setup_logging


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ds_dir", required=True, help="DeepSpeed checkpoint directory (engine save_dir)")
    p.add_argument("--tag", default=None, help="checkpoint tag inside --ds_dir (default: its 'latest' file)")
    p.add_argument("--out", required=True, help="output model.pt path")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    setup_logging()
    try:
        state = deepspeed_to_state_dict(args.ds_dir, args.tag)
    except (OSError, ValueError) as e:
        print(f"convert_deepspeed: {e}", file=sys.stderr)
        return 1
    save_state_dict(state, args.out)
    n_elements = sum(t.numel() for t in state.values())
    print(f"wrote {len(state)} tensors ({n_elements:,} elements) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
