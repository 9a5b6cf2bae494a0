#!/usr/bin/env python3
"""Pack a data.list into tar shards and write the shard list.

Usage:
    python tools/make_shard_list.py --num_utts_per_shard 1000 --num_threads 8 \
        data/train/data.list data/train/shards data/train/shards.list

Each shard holds ``<key>.json`` (record without ``wav``), ``<key>.wav`` (16-bit PCM) and ``<key>.response.wav``
when the record has ``response_wav``. Every input line is checked first; any bad line is reported as
``file:line: ...`` and the run exits 1 without writing shards. Shards are written atomically and verified.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wenet_echat.dataset.shard import ShardError, make_shards  # noqa: E402
from wenet_echat.utils.fileio import atomic_open  # noqa: E402


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num_utts_per_shard", type=int, default=1000)
    p.add_argument("--num_threads", "--nj", dest="num_threads", type=int, default=1)
    p.add_argument("--prefix", default="shards", help="shard file name prefix")
    p.add_argument("data_list")
    p.add_argument("shards_dir")
    p.add_argument("shards_list")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    try:
        paths = make_shards(args.data_list, args.shards_dir, args.num_utts_per_shard, args.num_threads, args.prefix)
    except (ShardError, OSError) as e:
        print(f"make_shard_list: {e}", file=sys.stderr)
        return 1
    with atomic_open(args.shards_list) as f:
        for p in paths:
            f.write(str(Path(p).resolve()) + "\n")
    print(f"wrote {len(paths)} shards to {args.shards_dir} and {args.shards_list}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
