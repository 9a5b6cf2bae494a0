#!/usr/bin/env python3
"""Prepare a real corpus: a Kaldi data dir or a CSV/TSV/JSONL manifest -> a validated data.list (and shards).

Usage (from egs/echat):
    python local/prepare_data.py kaldi data/mycorpus/train_kaldi data/mycorpus/train/data.list \\
        [--value_map conf/my_labels.yaml] [--task asr tag] [--nj 8] [--skip_bad] \\
        [--shards_dir data/mycorpus/train/shards --num_utts_per_shard 1000]
    python local/prepare_data.py manifest corpus/train.csv data/mycorpus/train/data.list \\
        --column key=utt_id wav=path text=transcript emotion=emo gender=sex --audio_root corpus/audio
    python local/prepare_data.py manifest echat200k/train.jsonl data/echat200k/train/data.list --preset osum_echat

Kaldi dirs hold wav.scp, text, utt2spk and optionally segments, utt2dur, utt2{age,gender,emotion,event},
response, response_wav.scp, utt2response_emotion, think, utt2task, utt2category, response_tokens (docs/data.md).
A segments file cuts the utterances out of the recordings of wav.scp into ``<out dir>/segments.ark``
(``--segments_ark`` to change). Manifest fields default to columns of the same name; ``--column FIELD=COLUMN``
renames (dotted columns reach into JSON objects). Label values are normalised (``<Happy>`` -> ``happy``) and
mapped by ``--value_map`` (YAML ``{emotion: {ang: angry, xxx: null}}``) before they are checked against the
vocabularies of docs/data.md.

Every problem is printed as ``file:line: key: message``. Without ``--skip_bad`` any problem means exit status 1
and no output; with it the good records are written and the bad ones counted. Outputs are written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from wenet_echat.dataset.kaldi import KaldiDirError  # noqa: E402
from wenet_echat.dataset.manifest import PRESETS, parse_columns, prepare_manifest  # noqa: E402
from wenet_echat.dataset.prepare import Prepared, PrepareError, load_value_map, prepare_kaldi_dir  # noqa: E402
from wenet_echat.dataset.shard import ShardError, make_shards  # noqa: E402
from wenet_echat.utils.fileio import atomic_open, write_jsonl  # noqa: E402


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="source", required=True)
    kaldi = sub.add_parser("kaldi", help="a Kaldi data dir")
    kaldi.add_argument("kaldi_dir")
    manifest = sub.add_parser("manifest", help="a CSV/TSV/JSONL manifest")
    manifest.add_argument("manifest")
    manifest.add_argument("--format", choices=["csv", "tsv", "jsonl"], default=None, help="default: from the name")
    manifest.add_argument("--column", nargs="*", default=[], metavar="FIELD=COLUMN",
                          help="map a record field to a manifest column, e.g. text=transcript emotion=emo")
    manifest.add_argument("--preset", choices=sorted(PRESETS), default=None,
                          help="read a known layout (osum_echat: OSUM-EChat's JSONL with txt/task/extra)")
    manifest.add_argument("--audio_root", default=None, help="prefix for relative wav/response_wav paths")
    for sp in (kaldi, manifest):
        sp.add_argument("data_list", help="data.list to write")
        sp.add_argument("--value_map", default=None, help="YAML {field: {corpus value: ours or null}}")
        sp.add_argument("--task", nargs="*", default=None, help="task(s) for records that name none")
        sp.add_argument("--segments_ark", default=None, help="ark for cut segments (default: next to data_list)")
        sp.add_argument("--no_duration", action="store_true", help="do not read durations from the audio")
        sp.add_argument("--nj", type=int, default=4, help="threads reading audio headers")
        sp.add_argument("--skip_bad", action="store_true", help="write the good records, count the bad ones")
        sp.add_argument("--shards_dir", default=None, help="also pack the list into tar shards here")
        sp.add_argument("--num_utts_per_shard", type=int, default=1000)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> Prepared:
    value_map = load_value_map(args.value_map) if args.value_map else None
    task = None
    if args.task:
        task = args.task[0] if len(args.task) == 1 else list(args.task)
    seg_ark = args.segments_ark or str(Path(args.data_list).parent / "segments.ark")
    common = {"value_map": value_map, "task": task, "seg_ark": seg_ark, "durations": not args.no_duration,
              "nj": args.nj}
    if args.source == "kaldi":
        return prepare_kaldi_dir(args.kaldi_dir, **common)
    return prepare_manifest(args.manifest, parse_columns(args.column), args.format, audio_root=args.audio_root,
                            preset=args.preset, **common)


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    try:
        res = run(args)
    except (PrepareError, KaldiDirError, OSError) as e:
        print(f"prepare_data: {e}", file=sys.stderr)
        return 1
    for issue in res.issues:
        print(f"prepare_data: {issue}", file=sys.stderr)
    n_bad = res.n_input - len(res.records)
    if res.issues and not args.skip_bad:
        print(f"prepare_data: {len(res.issues)} problem(s) in {n_bad} of {res.n_input} records; nothing written "
              "(fix them, or --skip_bad to leave the bad records out)", file=sys.stderr)
        return 1
    n = write_jsonl(args.data_list, res.records)
    print(f"wrote {n} records to {args.data_list} ({res.n_input} read, {n_bad} left out, "
          f"{len(res.issues)} problem(s))")
    if args.shards_dir:
        try:
            paths = make_shards(args.data_list, args.shards_dir, args.num_utts_per_shard, args.nj)
        except (ShardError, OSError) as e:
            print(f"prepare_data: {e}", file=sys.stderr)
            return 1
        shard_list = Path(args.data_list).with_suffix(".shards.list")
        with atomic_open(shard_list) as f:
            f.writelines(str(Path(p).resolve()) + "\n" for p in paths)
        print(f"wrote {len(paths)} shards to {args.shards_dir} and {shard_list}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
