#!/usr/bin/env python3
"""Training-step speed of a stage config on a data list: ms per optimizer step, share of time waiting for data,
share of padded positions (LLM sequence and log-mel frames), tokens and audio seconds per second.

Usage (from egs/echat, after stages 0-4):
    ../../.venv/bin/python ../../bench/train_step.py --config conf/mini/train_stage1.yaml \\
        --data_list data/train/data.list [--steps 30] [--threads 2] [--override train_conf.dtype=fp32]

It runs the real executor (:class:`wenet_echat.train.trainer.Trainer`, the same engine and data pipeline as
``bin/train.py``) for ``2 x steps`` optimizer steps in a temporary model_dir, times the second half and prints
one line::

    train_step config=... dtype=... steps=N ms_per_step=... samples_per_s=... data_share=... pad_share=...
        feat_pad_share=... rss_mb=... peak_rss_mb=... params=... wall_s=...

(``rss_mb``: the process's resident memory at the last measured step; ``peak_rss_mb``: its peak.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wenet_echat.dataset import EChatDataset  # noqa: E402
from wenet_echat.model import build_model  # noqa: E402
from wenet_echat.text.tokenizer import build_tokenizer  # noqa: E402
from wenet_echat.train.engine import build_engine  # noqa: E402
from wenet_echat.train.optim import apply_freeze, build_optimizer  # noqa: E402
from wenet_echat.train.scheduler import build_scheduler  # noqa: E402
from wenet_echat.train.trainer import TrainConf, Trainer  # noqa: E402
from wenet_echat.utils.config import apply_override, load_config  # noqa: E402
from wenet_echat.utils.memory import peak_rss_mb  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--data_list", required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--override", nargs="*", action="extend", default=[])
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    conf = load_config(args.config)
    conf["train_conf"] = {**asdict(TrainConf.from_dict(conf["train_conf"])), **conf["train_conf"]}
    for ov in args.override:
        conf = apply_override(conf, ov, source=args.config)
    # two logging windows of --steps each: the first warms up (allocator, caches), the second is measured
    conf["train_conf"].update({"max_steps": 2 * args.steps, "log_interval": args.steps, "save_interval": None,
                               "max_epoch": 1000})
    tconf = TrainConf.from_dict(conf["train_conf"])
    torch.manual_seed(tconf.seed)
    tok = build_tokenizer(conf["tokenizer"])
    model = build_model(conf["model"], tok.vocab_size, tok.eos_id, tok.pad_id)
    if tconf.freeze:
        apply_freeze(model, tconf.freeze)
    opt = build_optimizer(model, tconf.optim, tconf.optim_conf, tconf.lr_groups)
    sched = build_scheduler(opt, tconf.scheduler, tconf.scheduler_conf)
    engine = build_engine(tconf.train_engine, model, opt, sched, conf["train_conf"], torch.device("cpu"))
    data = EChatDataset("raw", args.data_list, conf.get("dataset_conf"), train=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        Trainer(engine, tok, tconf, tmp, data, None, tensorboard=False).train()
        wall = time.perf_counter() - t0
        rows = [json.loads(x) for x in (Path(tmp) / "train_log.jsonl").read_text().splitlines()]
    measured = [r for r in rows if r["kind"] == "train"][1:]
    if not measured:
        raise SystemExit("not enough steps to measure; raise --steps")
    ms = sum(r["ms_per_step"] for r in measured) / len(measured)
    sps = sum(r["samples_per_s"] for r in measured) / len(measured)
    data_share = sum(r["data_share"] for r in measured) / len(measured)
    pad = sum(r["pad_share"] for r in measured) / len(measured)
    feat_pad = sum(r["feat_pad_share"] for r in measured) / len(measured)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"train_step config={args.config} dtype={engine.dtype} threads={args.threads} steps={args.steps} "
          f"ms_per_step={ms:.0f} samples_per_s={sps:.1f} data_share={data_share:.3f} pad_share={pad:.3f} "
          f"feat_pad_share={feat_pad:.3f} rss_mb={measured[-1]['rss_mb']:.0f} peak_rss_mb={peak_rss_mb():.0f} "
          f"params={n_params} wall_s={wall:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
