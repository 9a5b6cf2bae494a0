"""Decode a data list with a trained EChat model, task by task, into ``hyp.jsonl``.

    python -m wenet_echat.bin.decode --model_dir exp/stage1 --data_list data/test/data.list \\
        --tasks asr tag --out exp/stage1/decode_test/hyp.jsonl [--checkpoint final] [--batch_size 16]
        [--max_text_tokens 200] [--text_temperature 0] [--speech_temperature 0] [--no_think]

Every record that serves a task is decoded for it (greedy by default; sampling with --*_temperature/top_k/top_p,
set apart for the text and the speech phase). Rows are written atomically when decoding ends; ``--limit`` decodes
the first N records only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time

import torch

from wenet_echat.dataset import EChatDataset, iterate_batches
from wenet_echat.infer import decode_batch, load_model_dir
from wenet_echat.model import GenerateConf, SamplingConf
from wenet_echat.text.targets import TARGET_TASKS
from wenet_echat.text.think import THINK_STYLES
from wenet_echat.utils.fileio import atomic_open
from wenet_echat.utils.logging import setup_logging

log = logging.getLogger("decode")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--checkpoint", default=None, help="tag under model_dir or a path (default: latest)")
    p.add_argument("--data_list", required=True)
    p.add_argument("--data_type", default="raw", choices=["raw", "shard"])
    p.add_argument("--tasks", nargs="+", default=["asr", "tag"], choices=TARGET_TASKS)
    p.add_argument("--out", required=True, help="hyp.jsonl to write")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--limit", type=int, default=None, help="decode only the first N records")
    p.add_argument("--no_think", action="store_true", help="s2s_think without the chain of thought (ablation)")
    p.add_argument("--think_style", default=None, choices=THINK_STYLES,
                   help="CoT form of the prompt's task (default: the model's train_conf.think_style)")
    p.add_argument("--max_text_tokens", type=int, default=256)
    p.add_argument("--max_speech_tokens", type=int, default=1000)
    for phase in ("text", "speech"):
        p.add_argument(f"--{phase}_temperature", type=float, default=0.0, help=f"{phase} phase; 0 = greedy")
        p.add_argument(f"--{phase}_top_k", type=int, default=0)
        p.add_argument(f"--{phase}_top_p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model_dir(args.model_dir, args.checkpoint, args.device)
    gen = GenerateConf(
        max_text_tokens=args.max_text_tokens, max_speech_tokens=args.max_speech_tokens, seed=args.seed,
        text=SamplingConf(args.text_temperature, args.text_top_k, args.text_top_p),
        speech=SamplingConf(args.speech_temperature, args.speech_top_k, args.speech_top_p))
    dataset_conf = {**(loaded.conf.get("dataset_conf") or {}), "spec_aug": False, "shuffle": False,
                    "sort": False, "batch_conf": {"batch_type": "static", "batch_size": args.batch_size}}
    dataset = EChatDataset(args.data_type, args.data_list, dataset_conf, train=False)
    think_style = args.think_style or (loaded.conf.get("train_conf") or {}).get("think_style", "auto")
    rows: list[dict] = []
    t0 = time.perf_counter()
    n_utts = 0
    batches = iterate_batches(dataset)
    if args.limit is not None:
        batches = itertools.islice(batches, (args.limit + args.batch_size - 1) // args.batch_size)
    for batch in batches:
        n_utts += len(batch["keys"])
        for task in args.tasks:
            rows += decode_batch(loaded, batch, task, gen, think=not args.no_think, think_style=think_style)
        log.info("%d utterances, %d hypotheses, %.1f s", n_utts, len(rows), time.perf_counter() - t0)
    with atomic_open(args.out) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    log.info("wrote %d hypotheses (%s) for %d utterances to %s in %.1f s", len(rows), " ".join(args.tasks), n_utts,
             args.out, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
