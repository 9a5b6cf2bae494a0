"""Drop data.list records whose reply names another assistant or model (identity hygiene for training data).

    python -m wenet_echat.bin.filter_identity --in_list data/train/data.list --out_list data/train/data.id.list \\
        [--names my_names.txt] [--fields response think]

Names come from ``wenet_echat/text/other_assistants.txt`` (or ``--names``, same format: one per line, ``#``
comments); they match case-insensitively as whole words (:mod:`wenet_echat.text.identity`). Writes the kept
records atomically and prints the counts, also written to ``<out_list>.stats.json``. Lines that are not JSON
objects are errors naming the file and line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wenet_echat.text.identity import DEFAULT_FIELDS, IdentityFilter, filter_records
from wenet_echat.utils.fileio import atomic_open, read_jsonl, write_jsonl


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--in_list", required=True)
    p.add_argument("--out_list", required=True)
    p.add_argument("--names", default=None, help="names file (default: the packaged list)")
    p.add_argument("--fields", nargs="+", default=list(DEFAULT_FIELDS), help="record fields to check")
    args = p.parse_args(argv)
    if Path(args.in_list).resolve() == Path(args.out_list).resolve():
        p.error("--out_list must differ from --in_list")
    flt = IdentityFilter.from_file(args.names)
    records = read_jsonl(args.in_list)
    kept, dropped = filter_records(records, flt, args.fields)
    write_jsonl(args.out_list, kept)
    stats = {"in": len(records), "kept": len(kept), "dropped": sum(dropped.values()),
             "dropped_by_name": dict(dropped.most_common()), "fields": args.fields}
    with atomic_open(args.out_list + ".stats.json") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
