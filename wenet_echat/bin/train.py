"""Train one stage of the EChat model.

    python -m wenet_echat.bin.train --config conf/mini/train_stage1.yaml \\
        --train_data data/train/data.list --cv_data data/dev/data.list --model_dir exp/stage1 \\
        [--init exp/stage0/final] [--data_type raw|shard] [--override train_conf.max_epoch=2 ...]

    torchrun --nproc_per_node 8 -m wenet_echat.bin.train ...          # DDP / DeepSpeed on one node
    torchrun --nnodes 4 --node_rank $R --rdzv_backend c10d --rdzv_endpoint $HOST:29400 \\
        --nproc_per_node 8 -m wenet_echat.bin.train ...                # several nodes (tools/slurm_train.sh)

The config holds ``tokenizer``, ``model``, ``dataset_conf`` and ``train_conf`` (:class:`TrainConf`), usually
through ``include:`` of the shared data/model files. A ``model_dir`` with a ``latest`` checkpoint is resumed
exactly (``--no_resume`` to refuse); otherwise ``--init`` (a checkpoint dir, ``model.pt`` or safetensors)
initialises the weights, e.g. from the previous stage, and ``--init_llm`` (a Hugging Face model directory, such as
the text-pretrained mini LLM of ``bin/pretrain_llm.py``) then the LLM's. The resolved config is saved as
``model_dir/train.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from wenet_echat.dataset import EChatDataset
from wenet_echat.model import build_model
from wenet_echat.text.tokenizer import build_tokenizer
from wenet_echat.train.checkpoint import init_llm_weights, latest_checkpoint, load_model_weights
from wenet_echat.train.engine import build_engine, init_distributed
from wenet_echat.train.optim import apply_freeze, build_optimizer, trainable_summary
from wenet_echat.train.scheduler import build_scheduler
from wenet_echat.train.trainer import TrainConf, Trainer
from wenet_echat.utils.config import apply_override, load_config, save_config
from wenet_echat.utils.logging import setup_logging

log = logging.getLogger("train")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", required=True, help="stage config (YAML)")
    p.add_argument("--train_data", required=True, nargs="+", help="data.list / shard list(s); several are joined")
    p.add_argument("--cv_data", default=None, help="cross-validation list")
    p.add_argument("--data_type", default="raw", choices=["raw", "shard"])
    p.add_argument("--model_dir", required=True)
    p.add_argument("--init", default=None, help="initial weights: checkpoint dir, model.pt or .safetensors")
    p.add_argument("--init_prefixes", nargs="*", default=None, help="load only these parameter prefixes")
    p.add_argument("--init_llm", default=None,
                   help="a Hugging Face model directory (e.g. from bin/pretrain_llm.py) whose weights initialise the "
                        "LLM, after --init")
    p.add_argument("--no_resume", action="store_true", help="fail instead of resuming an existing model_dir")
    p.add_argument("--override", nargs="*", action="extend", default=[],
                   help="config overrides, e.g. train_conf.max_epoch=2 dataset_conf.batch_conf.batch_size=8")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    return p


def joined_list(paths: list[str], model_dir: Path, rank: int) -> str:
    """One list file for several lists (written by rank 0 into model_dir)."""
    if len(paths) == 1:
        return paths[0]
    for p in paths:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"train list not found: {p}")
    out = model_dir / "train.joined.list"
    if rank == 0:
        from wenet_echat.utils.fileio import atomic_open

        with atomic_open(out) as f:
            for p in paths:
                with open(p, encoding="utf-8") as src:
                    for line in src:
                        f.write(line if line.endswith("\n") else line + "\n")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return str(out)


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    rank, local_rank, world = init_distributed()
    setup_logging("INFO" if rank == 0 else "WARNING")
    if args.threads:
        torch.set_num_threads(args.threads)
    conf = load_config(args.config)
    for key in ("tokenizer", "model", "train_conf"):
        if key not in conf:
            raise KeyError(f"{args.config}: missing '{key}' (include the shared data/model configs)")
    # every train_conf key exists (with its default) so overrides can set any of them, and train.yaml shows all
    conf["train_conf"] = {**asdict(TrainConf.from_dict(conf["train_conf"])), **conf["train_conf"]}
    for ov in args.override:
        conf = apply_override(conf, ov, source=args.config)
    tconf = TrainConf.from_dict(conf["train_conf"])
    torch.manual_seed(tconf.seed)
    model_dir = Path(args.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    if args.device:
        device = torch.device(args.device)
    else:
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")

    tokenizer = build_tokenizer(conf["tokenizer"])
    model = build_model(conf["model"], tokenizer.vocab_size, tokenizer.eos_id, tokenizer.pad_id)
    resume = latest_checkpoint(model_dir)
    if resume is not None and args.no_resume:
        raise SystemExit(f"{model_dir} already holds checkpoints (latest: {resume}); --no_resume refuses")
    if resume is None and args.init:
        res = load_model_weights(args.init, model, args.init_prefixes)
        log.info("initialised %d tensors from %s (missing %d, unexpected %d)", res["loaded"], args.init,
                 len(res["missing"]), len(res["unexpected"]))
    if resume is None and args.init_llm:
        n = init_llm_weights(model, args.init_llm)
        log.info("initialised the LLM's %d tensors from %s", n, args.init_llm)
    if tconf.freeze:
        apply_freeze(model, tconf.freeze)
    if rank == 0:
        log.info("parameters:\n%s", trainable_summary(model))
        save_config(conf, model_dir / "train.yaml")
    optimizer = build_optimizer(model, tconf.optim, tconf.optim_conf, tconf.lr_groups)
    scheduler = build_scheduler(optimizer, tconf.scheduler, tconf.scheduler_conf)
    engine = build_engine(tconf.train_engine, model, optimizer, scheduler, conf["train_conf"], device)

    dataset_conf = dict(conf.get("dataset_conf") or {})
    train_list = joined_list(args.train_data, model_dir, rank)
    train_set = EChatDataset(args.data_type, train_list, dataset_conf, train=True)
    cv_set = EChatDataset(args.data_type, args.cv_data, dataset_conf, train=False) if args.cv_data else None
    trainer = Trainer(engine, tokenizer, tconf, model_dir, train_set, cv_set, rank=rank)
    if resume is not None:
        trainer.resume(resume)
    result = trainer.train()
    if rank == 0:
        log.info("done: %s", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()})
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
