"""Pre-train the text LLM on the corpus's text before the speech stages.

    python -m wenet_echat.bin.pretrain_llm --config conf/mini/pretrain_llm.yaml \\
        --data_list data/train/data.list --valid_list data/dev/data.list --out_dir exp/llm \\
        [--max_minutes 3] [--max_steps N] [--threads 2] [--override pretrain_conf.lr=1e-3 ...]

OSUM-EChat starts from Qwen2.5-3B-Instruct, a decoder that already writes fluent text, so its speech stages only
teach it to listen and to speak. The mini recipe builds its LLM from a config (no weights can be fetched); this
step gives it the same kind of head start on the corpus's own language: a causal LM over the distinct strings of
``pretrain_conf.fields`` of the training records (user sentences and replies by default), each followed by EOS,
shuffled per epoch and packed into contiguous ``block_size``-token blocks. The result is a Hugging Face model
directory (``config.json`` + ``model.safetensors``), the layout of a downloaded checkpoint, which
``bin/train.py --init_llm`` loads into the EChat model's LLM.

The config holds ``tokenizer`` and ``model`` (usually ``include: [model.yaml]``; the LLM must be built from
``model.llm_conf.config``) and ``pretrain_conf`` (keys and defaults in :data:`DEFAULTS`; the learning rate follows
:mod:`wenet_echat.train.budget`). Training stops after ``--max_minutes`` of this run or at step ``--max_steps``.

Output in ``--out_dir``: the model files (written at the end, each atomically), ``pretrain.train.pt`` (weights,
optimizer, step, data position, elapsed time; every ``save_interval_minutes`` and at the end, also on Ctrl-C; a
rerun resumes from it) and ``pretrain.json`` (loss history; validation loss and perplexity at the start and end).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wenet_echat.dataset.source import read_list
from wenet_echat.model.echat import build_llm
from wenet_echat.text.tokenizer import TextTokenizer, build_tokenizer
from wenet_echat.train.budget import budget_lr, check_budget_lr_conf, planned_progress
from wenet_echat.train.engine import AUTOCAST_DTYPES, check_dtype, resolve_dtype
from wenet_echat.utils.config import apply_override, load_config
from wenet_echat.utils.fileio import (
    JsonlError,
    atomic_open,
    atomic_path,
    current_umask,
    load_weights_only,
    parse_jsonl_line,
)
from wenet_echat.utils.logging import setup_logging

logger = logging.getLogger("pretrain_llm")
STATE_FILE = "pretrain.train.pt"
HISTORY_FILE = "pretrain.json"
DEFAULTS: dict[str, Any] = {
    "fields": ["text", "response"],  # record fields whose strings the LM reads
    "block_size": 128, "batch_size": 16, "lr": 1e-3, "warmup_steps": 50, "lr_decay": "cosine", "min_lr_ratio": 0.1,
    "weight_decay": 0.01, "betas": [0.9, 0.98], "grad_clip": 1.0, "dtype": "auto", "log_interval": 25,
    "save_interval_minutes": 2.0, "valid_blocks": 64, "seed": 777,
}


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--data_list", required=True, nargs="+", help="data.list file(s) whose text the LM reads")
    p.add_argument("--valid_list", default=None)
    p.add_argument("--out_dir", required=True)
    p.add_argument("--max_minutes", type=float, default=None, help="wall-clock limit of this run")
    p.add_argument("--max_steps", type=int, default=None, help="stop at this global step")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--override", nargs="*", action="extend", default=[],
                   help="config overrides, e.g. pretrain_conf.lr=5e-4")
    args = p.parse_args(argv)
    if args.max_minutes is None and args.max_steps is None:
        p.error("give --max_minutes and/or --max_steps")
    return args


def pretrain_conf(conf: dict[str, Any], source: str) -> dict[str, Any]:
    given = dict(conf.get("pretrain_conf") or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise KeyError(f"{source}: unknown pretrain_conf keys: {', '.join(unknown)} "
                       f"(known: {', '.join(sorted(DEFAULTS))})")
    out = {**DEFAULTS, **given}
    check_budget_lr_conf(out, "pretrain_conf")
    check_dtype(out["dtype"], "pretrain_conf.dtype")
    if not out["fields"] or not all(isinstance(f, str) for f in out["fields"]):
        raise ValueError(f"pretrain_conf.fields must be a non-empty list of record field names, got {out['fields']}")
    for key in ("block_size", "batch_size"):
        if int(out[key]) < 1:
            raise ValueError(f"pretrain_conf.{key} must be >= 1, got {out[key]}")
    return out


def collect_texts(paths: list[str], fields: list[str]) -> list[str]:
    """Distinct non-empty strings of ``fields`` over the records of ``paths``, in order of first appearance.
    A field that is present but not a string is an error naming the file, line and key."""
    seen: dict[str, None] = {}
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"data list {path} does not exist")
        for lineno, raw in read_list(path):
            rec = parse_jsonl_line(raw, path, lineno)
            for field in fields:
                value = rec.get(field)
                if value is None:
                    continue
                if not isinstance(value, str):
                    raise ValueError(f"{path}:{lineno}: key {rec.get('key', '?')}: field '{field}' must be a string, "
                                     f"got {type(value).__name__}")
                if value.strip():
                    seen.setdefault(value.strip(), None)
    if not seen:
        raise ValueError(f"no text in fields {fields} of {', '.join(paths)}")
    return list(seen)


def pack_blocks(docs: list[list[int]], order: np.ndarray, block_size: int) -> torch.Tensor:
    """The documents in ``order`` joined into one token stream and cut into ``[n, block_size + 1]`` blocks
    (inputs are ``[:, :-1]``, targets ``[:, 1:]``); the incomplete tail is dropped."""
    stream = [t for i in order for t in docs[i]]
    n = len(stream) // (block_size + 1)
    if n == 0:
        raise ValueError(f"the text has {len(stream)} tokens, fewer than one block of {block_size + 1}")
    return torch.tensor(stream[: n * (block_size + 1)], dtype=torch.long).view(n, block_size + 1)


class TextStream:
    """Batches of packed blocks, a new document order every epoch (from ``[seed, epoch]``), resumable by
    ``(epoch, position)``."""

    def __init__(self, docs: list[list[int]], conf: dict[str, Any]):
        self.docs, self.conf = docs, conf
        self.epoch, self.pos = 0, 0
        self._blocks = self._epoch_blocks()

    @property
    def blocks_per_epoch(self) -> int:
        return int(self._blocks.shape[0])

    def _epoch_blocks(self) -> torch.Tensor:
        order = np.random.default_rng([self.conf["seed"], self.epoch]).permutation(len(self.docs))
        return pack_blocks(self.docs, order, int(self.conf["block_size"]))

    def seek(self, epoch: int, pos: int) -> None:
        self.epoch, self.pos = epoch, pos
        self._blocks = self._epoch_blocks()

    def next_batch(self) -> torch.Tensor:
        bs = int(self.conf["batch_size"])
        if self.pos + bs > self._blocks.shape[0]:
            self.seek(self.epoch + 1, 0)
        batch = self._blocks[self.pos : self.pos + bs]
        self.pos += bs
        return batch


def lm_loss(llm: nn.Module, blocks: torch.Tensor) -> torch.Tensor:
    blocks = blocks.to(llm.device)
    logits = llm(input_ids=blocks[:, :-1]).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), blocks[:, 1:].reshape(-1))


def pretrainable_llm(conf: dict[str, Any], tokenizer: TextTokenizer, source: str) -> nn.Module:
    model = conf.get("model") or {}
    llm_conf = dict(model.get("llm_conf") or {})
    if llm_conf.get("path") or not llm_conf.get("config"):
        raise ValueError(f"{source}: model.llm_conf must build the LLM from 'config' to pre-train it "
                         "(an LLM loaded from 'path' is pre-trained already)")
    if llm_conf.get("lora"):
        raise ValueError(f"{source}: model.llm_conf.lora is set; pre-train the plain LLM (lora: null)")
    return build_llm(model, tokenizer.vocab_size)


def save_hf(llm: nn.Module, out_dir: Path) -> list[str]:
    """``save_pretrained`` into a temporary directory, then each file renamed into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".hf.", dir=out_dir) as tmp:
        llm.save_pretrained(tmp, safe_serialization=True)
        names = sorted(os.listdir(tmp))
        for name in names:
            os.chmod(os.path.join(tmp, name), 0o666 & ~current_umask())
            os.replace(os.path.join(tmp, name), out_dir / name)
    return names


@torch.no_grad()
def validate(llm: nn.Module, blocks: torch.Tensor, conf: dict[str, Any], autocast: torch.dtype | None) -> float:
    llm.eval()
    bs, total, n = int(conf["batch_size"]), 0.0, 0
    with torch.autocast(llm.device.type, dtype=autocast, enabled=autocast is not None):
        for i in range(0, blocks.shape[0], bs):
            part = blocks[i : i + bs]
            total += float(lm_loss(llm, part)) * part.shape[0]
            n += part.shape[0]
    llm.train()
    return total / max(n, 1)


def save_state(out_dir: Path, llm: nn.Module, opt: torch.optim.Optimizer, step: int, stream: TextStream,
               elapsed: float, history: dict[str, Any]) -> None:
    state = {"model": {k: v.cpu() for k, v in llm.state_dict().items()}, "optimizer": opt.state_dict(),
             "step": step, "epoch": stream.epoch, "pos": stream.pos, "elapsed": elapsed}
    with atomic_path(out_dir / STATE_FILE) as tmp:
        torch.save(state, tmp)
    with atomic_open(out_dir / HISTORY_FILE) as f:
        json.dump(history, f, indent=1)


def train(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    conf = load_config(args.config)
    for ov in args.override:
        conf = apply_override(conf, ov, source=args.config)
    pconf = pretrain_conf(conf, args.config)
    torch.manual_seed(pconf["seed"])
    tokenizer = build_tokenizer(conf["tokenizer"])
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    llm = pretrainable_llm(conf, tokenizer, args.config).to(device).train()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def encode(texts: list[str]) -> list[list[int]]:
        return [[*tokenizer.encode(t), tokenizer.eos_id] for t in texts]

    docs = encode(collect_texts(args.data_list, pconf["fields"]))
    stream = TextStream(docs, pconf)
    valid = None
    if args.valid_list:
        vdocs = encode(collect_texts([args.valid_list], pconf["fields"]))
        valid = pack_blocks(vdocs, np.arange(len(vdocs)), int(pconf["block_size"]))[: int(pconf["valid_blocks"])]
    opt = torch.optim.AdamW(llm.parameters(), lr=pconf["lr"], betas=tuple(pconf["betas"]),
                            weight_decay=pconf["weight_decay"])
    step, elapsed0, history = 0, 0.0, {"log": [], "valid": []}
    state_path = out_dir / STATE_FILE
    if state_path.is_file():
        state = load_weights_only(state_path, RuntimeError, "a pre-training state")
        llm.load_state_dict(state["model"])  # the optimizer state follows the parameters' device
        opt.load_state_dict(state["optimizer"])
        step, elapsed0 = int(state["step"]), float(state["elapsed"])
        stream.seek(int(state["epoch"]), int(state["pos"]))
        if (out_dir / HISTORY_FILE).is_file():
            history = json.loads((out_dir / HISTORY_FILE).read_text(encoding="utf-8"))
    history["config"] = pconf
    logger.info("%s: %d distinct texts, %d tokens, %d blocks of %d per epoch, %d params, step %d",
                "resuming" if step else "training", len(docs), sum(map(len, docs)), stream.blocks_per_epoch,
                pconf["block_size"], sum(p.numel() for p in llm.parameters()), step)
    autocast = AUTOCAST_DTYPES[resolve_dtype(pconf["dtype"], device, "pretrain_conf.dtype")]

    def log_valid() -> None:
        if valid is not None:
            loss = validate(llm, valid, pconf, autocast)
            history["valid"].append({"step": step, "loss": round(loss, 5), "ppl": round(math.exp(min(loss, 50)), 3)})
            logger.info("valid step %d: loss %.4f ppl %.2f", step, loss, math.exp(min(loss, 50)))

    log_valid()
    start = last_save = time.time()
    limit = args.max_minutes * 60 if args.max_minutes is not None else math.inf
    window: list[float] = []
    try:
        while (args.max_steps is None or step < args.max_steps) and time.time() - start < limit:
            progress = planned_progress(args.max_minutes, args.max_steps, step, elapsed0, time.time() - start)
            lr = budget_lr(pconf["lr"], step, pconf, progress)
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                loss = lm_loss(llm, stream.next_batch())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(llm.parameters(), pconf["grad_clip"])
            opt.step()
            step += 1
            window.append(loss.item())
            if step % pconf["log_interval"] == 0:
                row = {"step": step, "loss": round(float(np.mean(window)), 5), "lr": lr, "epoch": stream.epoch,
                       "minutes": round((elapsed0 + time.time() - start) / 60, 3)}
                history["log"].append(row)
                logger.info("step %d loss %.4f lr %.2e epoch %d %.2f min", step, row["loss"], lr, stream.epoch,
                            row["minutes"])
                window = []
            if time.time() - last_save > pconf["save_interval_minutes"] * 60:
                save_state(out_dir, llm, opt, step, stream, elapsed0 + time.time() - start, history)
                last_save = time.time()
    except KeyboardInterrupt:
        logger.warning("interrupted at step %d: saving", step)
    log_valid()
    save_state(out_dir, llm, opt, step, stream, elapsed0 + time.time() - start, history)
    files = save_hf(llm, out_dir)
    logger.info("wrote %s (%s) at step %d, %.1f min this run", out_dir, ", ".join(files), step,
                (time.time() - start) / 60)
    return history


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    setup_logging()
    try:
        train(args)
    except (FileNotFoundError, KeyError, ValueError, JsonlError, RuntimeError) as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
