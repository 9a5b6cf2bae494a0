#!/usr/bin/env python3
"""Synthesise EChat-mini, a small empathetic spoken-dialogue corpus, with espeak-ng, flite and numpy.

Usage (from egs/echat):
    python local/synth_echat_mini.py --out_dir data [--hours 3.0] [--dev_hours 0.2] [--test_hours 0.3]
                                     [--seed 777] [--nj 2] [--tiny] [--overwrite]

Writes
    <out_dir>/{train,dev,test}/data.list     one JSON record per utterance (docs/data.md), check_record-valid
    <out_dir>/{train,dev,test}/<kaldi files> wav.scp, text, utt2spk, utt2age, ..., think
    <out_dir>/wavs/<split>/<voice>/<key>.wav user audio, 16 kHz mono 16-bit
    <out_dir>/wavs/reply/xx/<id>.wav         reply audio (assistant voice, flite slt, 16 kHz), cached by text+style
    <out_dir>/meta.json                      seed, hours, counts, tool versions, wall time
    <out_dir>/.done                          written last; holds the arguments

The same seed gives byte-identical data.list files and audio. A finished run with the same arguments is skipped;
different arguments are an error unless --overwrite is given (then the splits and user audio are rebuilt).
--tiny makes a corpus of a few dozen utterances (for tests). Dev and test use sentences and voice settings that
train never saw. Each split also holds identity turns (category ``identity``: "who are you?", "what can you do?",
"are you a person?" in held-out phrasings for dev/test, answered as EChat, the wenet-echat assistant). Every
record passes the identity filter (:mod:`wenet_echat.text.identity`: no reply names another assistant or model);
what it drops is counted in meta.json (``identity_filter``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # echat_mini
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # wenet_echat

from echat_mini import VERSION  # noqa: E402
from echat_mini.plan import SPLITS, make_plan  # noqa: E402
from echat_mini.render import render  # noqa: E402
from echat_mini.voices import VOICES, engine_versions  # noqa: E402

from wenet_echat.dataset.kaldi import write_kaldi_dir  # noqa: E402
from wenet_echat.dataset.schema import check_record  # noqa: E402
from wenet_echat.text.identity import IdentityFilter, filter_records  # noqa: E402
from wenet_echat.utils.fileio import atomic_open, write_jsonl  # noqa: E402

TINY_HOURS = {"train": 0.02, "dev": 0.006, "test": 0.006}


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out_dir", required=True, help="output folder (data)")
    p.add_argument("--hours", type=float, default=3.0, help="train hours of user audio")
    p.add_argument("--dev_hours", type=float, default=0.2)
    p.add_argument("--test_hours", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--nj", type=int, default=2, help="parallel jobs")
    p.add_argument("--tiny", action="store_true", help=f"tiny corpus for tests ({TINY_HOURS} h)")
    p.add_argument("--overwrite", action="store_true", help="rebuild even if a run with other arguments exists")
    p.add_argument("--no_progress", action="store_true", help="no tqdm bar")
    args = p.parse_args(argv)
    for name in ("hours", "dev_hours", "test_hours"):
        if getattr(args, name) < 0:
            p.error(f"--{name} must be >= 0")
    if args.hours <= 0 and not args.tiny:
        p.error("--hours must be > 0")
    return args


def done_args(args: argparse.Namespace) -> dict:
    """The arguments that determine the output (not nj, not progress)."""
    hours = split_hours(args)
    return {"version": VERSION, "seed": args.seed, "hours": hours, "tiny": args.tiny}


def split_hours(args: argparse.Namespace) -> dict[str, float]:
    if args.tiny:
        return dict(TINY_HOURS)
    return {"train": args.hours, "dev": args.dev_hours, "test": args.test_hours}


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    out = Path(args.out_dir)
    done = out / ".done"
    want = done_args(args)
    if done.exists():
        have = json.loads(done.read_text(encoding="utf-8"))
        if have == want and not args.overwrite:
            print(f"{out}: already synthesised with these arguments ({done}); nothing to do", file=sys.stderr)
            return 0
        if have != want and not args.overwrite:
            print(f"error: {out} holds a corpus made with other arguments:\n  have {have}\n  want {want}\n"
                  "use --overwrite to rebuild it, or another --out_dir", file=sys.stderr)
            return 2
    if args.overwrite:  # user audio and splits are rebuilt; the reply cache is keyed by content and kept
        done.unlink(missing_ok=True)
        for sub in [*SPLITS, "report"]:
            shutil.rmtree(out / sub, ignore_errors=True)
        for split in SPLITS:
            shutil.rmtree(out / "wavs" / split, ignore_errors=True)
    t0 = time.time()
    hours = split_hours(args)
    plan = make_plan(args.seed, hours)
    n_plan = sum(len(v) for v in plan.values())
    print(f"plan: {n_plan} utterances ({', '.join(f'{s} {len(v)}' for s, v in plan.items())}), "
          f"{len(VOICES)} voice settings, nj={args.nj}", file=sys.stderr)
    records = render(plan, out, args.nj, show_progress=not args.no_progress)
    t_synth = time.time() - t0

    stats: dict[str, dict] = {}
    identity_filter = IdentityFilter()
    filtered: dict[str, dict] = {}
    for split, recs in records.items():
        recs, dropped = filter_records(recs, identity_filter)
        filtered[split] = {"dropped": sum(dropped.values()), "by_name": dict(sorted(dropped.items()))}
        for rec in recs:
            problems = check_record(rec)
            if problems:
                raise RuntimeError(f"{rec['key']}: invalid record: {'; '.join(problems)}")
        write_jsonl(out / split / "data.list", recs)
        write_kaldi_dir(recs, out / split)
        stats[split] = {
            "utterances": len(recs),
            "hours": round(sum(r["duration"] for r in recs) / 3600, 4),
            "speakers": len({r["speaker"] for r in recs}),
            "sentences": len({r["text"] for r in recs}),
            "distinct_replies": len({r["response"] for r in recs}),
            "category": dict(sorted(Counter(r["category"] for r in recs).items())),
        }
    n_reply = len({r["response_wav"] for recs in records.values() for r in recs})
    user_hours = sum(s["hours"] for s in stats.values())
    wall = time.time() - t0
    meta = {
        "corpus": "EChat-mini", "version": VERSION, "seed": args.seed, "hours_requested": hours, "tiny": args.tiny,
        "nj": args.nj, "splits": stats, "identity_filter": filtered, "reply_audio_files": n_reply,
        "voice_settings": len(VOICES),
        "tools": engine_versions(), "python": sys.version.split()[0],
        "wall_time_s": round(wall, 1), "synthesis_time_s": round(t_synth, 1),
    }
    with atomic_open(out / "meta.json") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    with atomic_open(done) as f:
        json.dump(want, f, sort_keys=True)
        f.write("\n")
    for split, s in stats.items():
        print(f"{split:5s}: {s['utterances']:5d} utts {s['hours']:.3f} h, {s['speakers']} voices, "
              f"{s['sentences']} sentences, {s['distinct_replies']} distinct replies", file=sys.stderr)
    print(f"synthesised {user_hours:.3f} h of user audio + {n_reply} reply files in {wall:.1f} s "
          f"(nj={args.nj}, {user_hours * 3600 / max(wall, 1e-9):.0f}x real time)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
