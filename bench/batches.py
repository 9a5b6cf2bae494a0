#!/usr/bin/env python3
"""What a stage config's batching makes of a data list, without a model: batches per epoch, utterances per batch
and the log-mel padding share (the LLM sequence's padding needs the model: ``bench/train_step.py``).

Usage (from egs/echat, after stage 7 for the stage 2-3 configs):
    ../../.venv/bin/python ../../bench/batches.py --config conf/mini/train_stage2.yaml \\
        --data_list data/train/data.tok.list [--override dataset_conf.batch_conf.max_frames_in_batch=9000]

Prints one line::

    batches config=... batches=N utts=N utts_per_batch=... max_utts=N feat_pad_share=... wall_s=...
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wenet_echat.dataset import EChatDataset, iterate_batches  # noqa: E402
from wenet_echat.dataset.batch import batch_frames  # noqa: E402
from wenet_echat.text.tokenizer import build_tokenizer  # noqa: E402
from wenet_echat.utils.config import apply_override, load_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--data_list", required=True)
    p.add_argument("--override", nargs="*", action="extend", default=[])
    args = p.parse_args(argv)
    conf = load_config(args.config)
    for ov in args.override:
        conf = apply_override(conf, ov, source=args.config)
    # the training pipeline (shuffle, sort, batch) of epoch 0, tokenised as training does (the sort key counts ids)
    data = EChatDataset("raw", args.data_list, conf.get("dataset_conf"), train=True,
                        tokenizer=build_tokenizer(conf["tokenizer"]))
    t0 = time.perf_counter()
    batches = utts = most = frames = padded = 0
    for batch in iterate_batches(data):
        n = len(batch["keys"])
        batches, utts, most = batches + 1, utts + n, max(most, n)
        frames += int(batch["feats_lengths"].sum())
        padded += batch_frames(batch)
    if not batches:
        raise SystemExit(f"{args.data_list}: no batch (every record filtered out?)")
    print(f"batches config={args.config} overrides={','.join(args.override) or '-'} batches={batches} utts={utts} "
          f"utts_per_batch={utts / batches:.1f} max_utts={most} feat_pad_share={1 - frames / padded:.3f} "
          f"wall_s={time.perf_counter() - t0:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
