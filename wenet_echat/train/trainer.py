"""The training executor: epochs of weighted per-batch task mixing, cross-validation, logging, checkpoints.

One batch of the data pipeline serves one task. The task is drawn per batch from ``train_conf.tasks``
(``{task: weight}``) among the tasks the batch can serve, from a generator seeded by ``(seed, epoch, batch)``,
so the choice needs no saved state and a resumed run draws the same tasks. ``train_conf.task_schedule`` makes
a curriculum: until a given optimizer step the weights of that entry apply instead (e.g. tags alone first, so the
LLM learns to read the audio before ASR's text prior dominates). Records that cannot serve the drawn task are
left out of that batch (counted in the log).

Checkpoints (``<model_dir>/step_N``, ``epoch_N``, ``final``; :mod:`wenet_echat.train.checkpoint`) hold the
model, optimizer, scheduler, step, RNG states and the data position (epoch and batches consumed). A resumed run
re-reads the epoch's batches up to that position without training on them (the pipeline is deterministic
for a seed and epoch), then continues exactly where the killed run stopped.

Logs: a console line every ``log_interval`` steps, TensorBoard scalars under ``<model_dir>/tensorboard`` and
``<model_dir>/train_log.jsonl`` (one JSON object per logged step and per cross-validation), which
``local/plot_curves.py`` turns into PNG curves. Each line reports the time spent waiting for data and the
padding share of the batch, the two things that make a CPU recipe slow.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from wenet_echat.dataset import EChatDataset, iterate_batches, make_dataloader
from wenet_echat.dataset.processor import SkipStats
from wenet_echat.model import EChatModel, EncoderPretrainModel, to_device
from wenet_echat.model.encoder_cache import EncoderCache
from wenet_echat.model.inputs import batch_records, serves
from wenet_echat.text.targets import TARGET_TASKS
from wenet_echat.text.think import THINK_STYLES
from wenet_echat.text.tokenizer import TextTokenizer
from wenet_echat.train.checkpoint import keep_last, load_checkpoint, save_checkpoint
from wenet_echat.train.engine import all_reduce, distributed
from wenet_echat.train.optim import frozen_children
from wenet_echat.utils.memory import rss_mb

log = logging.getLogger(__name__)


@dataclass
class TrainConf:
    """``train_conf:`` of a stage config. Unknown keys are errors."""

    tasks: dict[str, float] = field(default_factory=lambda: {"asr": 1.0})
    # curriculum: [{until_step: N, tasks: {...}}, ...] in rising order; steps before N draw from that entry's
    # weights, steps after the last entry from ``tasks``
    task_schedule: list[dict[str, Any]] = field(default_factory=list)
    think: bool = True  # s2s_think with the chain of thought (False = the no-thinking ablation)
    think_style: str = "auto"  # auto (record's think, else tag form) | tag | natural | cues (text/think.py)
    train_engine: str = "torch_ddp"
    deepspeed_config: str | None = None
    dtype: str = "fp32"  # fp32 | bf16 | fp16 (autocast; DeepSpeed: its bf16/fp16 switch) | auto (engine.resolve_dtype)
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes, e.g. [llama_model]
    optim: str = "adamw"
    optim_conf: dict[str, Any] = field(default_factory=lambda: {"lr": 1e-3})
    lr_groups: dict[str, float] = field(default_factory=dict)  # prefix -> lr
    scheduler: str = "warmuplr"
    scheduler_conf: dict[str, Any] = field(default_factory=lambda: {"warmup_steps": 1000})
    max_epoch: int = 10
    max_steps: int | None = None
    accum_grad: int = 1
    grad_clip: float = 5.0
    log_interval: int = 20
    save_interval: int | None = None  # steps between step_N checkpoints (None: epoch ends only)
    keep_last: int = 3
    cv_interval: int | None = None  # steps between cross-validations (None: each epoch end)
    cv_max_batches: int | None = None
    num_workers: int = 0
    prefetch: int = 2
    seed: int = 777
    # keep the frozen encoder's output per utterance (model/encoder_cache.py): needs freeze: [encoder] and no
    # SpecAugment; filled once before training from the train and cv lists
    encoder_cache: bool = False
    encoder_cache_dropout: float = 0.0  # dropout on the cached encoder output in training steps (noise like the
    # frozen encoder's own dropout gave before it ran in eval mode)
    # fully frozen submodules run in eval mode (no dropout); false: in train mode like the rest (their dropout
    # then acts as noise on what the trained parts read; no encoder_cache with it)
    frozen_eval: bool = True

    @classmethod
    def from_dict(cls, conf: dict[str, Any] | None) -> TrainConf:
        conf = dict(conf or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(conf) - known)
        if unknown:
            raise ValueError(f"unknown train_conf key(s) {unknown}; known: {', '.join(sorted(known))}")
        out = cls(**conf)
        _check_task_weights(out.tasks, "train_conf.tasks")
        if out.think_style not in THINK_STYLES:
            raise ValueError(f"train_conf.think_style must be one of {', '.join(THINK_STYLES)}, "
                             f"got {out.think_style!r}")
        last = 0
        for i, entry in enumerate(out.task_schedule):
            where = f"train_conf.task_schedule[{i}]"
            if not isinstance(entry, dict) or set(entry) != {"until_step", "tasks"}:
                raise ValueError(f"{where} must be a mapping with exactly until_step and tasks, got {entry!r}")
            until = entry["until_step"]
            if not isinstance(until, int) or until <= last:
                raise ValueError(f"{where}.until_step must be an integer above {last} (rising order), got {until!r}")
            _check_task_weights(entry["tasks"], f"{where}.tasks")
            last = until
        return out

    def tasks_at(self, step: int) -> dict[str, float]:
        """Task weights for the batch that makes optimizer step ``step + 1`` (``step`` steps done)."""
        for entry in self.task_schedule:
            if step < entry["until_step"]:
                return entry["tasks"]
        return self.tasks

    @property
    def weight_sets(self) -> list[dict[str, float]]:
        """``tasks`` and the weights of every ``task_schedule`` entry."""
        return [self.tasks, *(e["tasks"] for e in self.task_schedule)]

    @property
    def all_tasks(self) -> list[str]:
        """Every task named in :attr:`weight_sets`, in first-seen order (what cross-validation scores)."""
        return list(dict.fromkeys(t for w in self.weight_sets for t in w))


def _check_task_weights(tasks: Any, where: str) -> None:
    if not isinstance(tasks, dict) or not tasks:
        raise ValueError(f"{where} must map tasks ({', '.join(TARGET_TASKS)}) to weights, got {tasks!r}")
    bad = [t for t in tasks if t not in TARGET_TASKS]
    if bad:
        raise ValueError(f"{where} must map tasks ({', '.join(TARGET_TASKS)}) to weights, got {tasks}")
    if any(not isinstance(w, int | float) or w < 0 for w in tasks.values()) or sum(tasks.values()) <= 0:
        raise ValueError(f"{where} weights must be >= 0 with a positive sum, got {tasks}")


def choose_task(records: list[dict[str, Any]], weights: dict[str, float], rng: random.Random,
                think: bool = True, think_style: str = "auto") -> str | None:
    """Weighted draw among the tasks at least one record of the batch can serve (None if none can)."""
    servable = [t for t, w in weights.items() if w > 0 and any(serves(r, t, think, think_style) for r in records)]
    if not servable:
        return None
    return rng.choices(servable, weights=[weights[t] for t in servable])[0]


class MetricTracker:
    """Token-weighted running sums per task (loss, accuracy) plus step timings."""

    def __init__(self) -> None:
        self.sums: dict[str, Counter[str]] = defaultdict(Counter)
        self.timing: Counter[str] = Counter()

    def add(self, task: str, out: dict[str, torch.Tensor]) -> None:
        n = float(out["n_tokens"])
        s = self.sums[task]
        s["tokens"] += n
        s["loss"] += float(out["loss"].detach()) * n
        acc = float(out["acc"])
        if not math.isnan(acc):  # e.g. a cue-accuracy batch with no labelled cue
            s["correct"] += acc * n
            s["acc_tokens"] += n
        s["batches"] += 1
        if "ctc" in out:
            s["ctc"] += float(out["ctc"]) * n
            s["ctc_tokens"] += n
        if "ctc_errs" in out:  # greedy CTC errors (evaluation only)
            s["ctc_errs"] += float(out["ctc_errs"])
            s["ctc_units"] += float(out["ctc_units"])

    def reduce(self, tasks: Iterable[str] = ()) -> None:
        """Sum over ranks. Every rank reduces ``tasks`` plus its own tasks in one sorted order, so ranks whose
        batches served different tasks still make the same collective calls (pass every task that may occur)."""
        if not distributed():
            return
        for task in sorted(set(tasks) | set(self.sums)):
            s = self.sums[task]
            keys = ("tokens", "loss", "correct", "acc_tokens", "batches", "ctc", "ctc_tokens", "ctc_errs", "ctc_units")
            t = torch.tensor([s[k] for k in keys], dtype=torch.float64)
            all_reduce(t)
            for k, v in zip(keys, t.tolist()):
                s[k] = v

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for task, s in sorted(self.sums.items()):
            if s["tokens"]:
                out[task] = {"loss": s["loss"] / s["tokens"],
                             "acc": s["correct"] / s["acc_tokens"] if s["acc_tokens"] else math.nan,
                             "tokens": s["tokens"], "batches": s["batches"]}
                if s["ctc_tokens"]:
                    out[task]["ctc"] = s["ctc"] / s["ctc_tokens"]
                if s["ctc_units"]:
                    out[task]["ctc_err"] = s["ctc_errs"] / s["ctc_units"]
        return out

    def overall(self, weights: dict[str, float] | None = None) -> float:
        summ = self.summary()
        if not summ:
            return math.nan
        if weights:
            w = {t: weights.get(t, 0.0) for t in summ}
            total = sum(w.values())
            if total > 0:
                return sum(summ[t]["loss"] * w[t] for t in summ) / total
        return sum(s["loss"] * s["tokens"] for s in summ.values()) / sum(s["tokens"] for s in summ.values())


class Trainer:
    """Runs the epochs of one training stage (see the module docstring)."""

    def __init__(self, engine: Any, tokenizer: TextTokenizer, conf: TrainConf, model_dir: str | Path,
                 train_set: EChatDataset, cv_set: EChatDataset | None = None, rank: int = 0,
                 tensorboard: bool = True):
        self.engine, self.tok, self.conf = engine, tokenizer, conf
        self.model_dir = Path(model_dir)
        self.train_set, self.cv_set = train_set, cv_set
        self.rank = rank
        self.model: EChatModel | EncoderPretrainModel = engine.module
        self.step, self.epoch, self.skip_batches = 0, 0, 0
        self.dropped: Counter[str] = Counter()
        self._cv_cache: tuple[int, dict[str, Any]] | None = None
        self.writer = None
        if rank == 0:
            self.model_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self.writer = SummaryWriter(str(self.model_dir / "tensorboard"))
                except ImportError:  # tensorboard is a dependency; stay usable without it
                    log.warning("tensorboard is not installed: no TensorBoard logs")

    # -------------------------------------------------------------------------------------- state
    def resume(self, path: str | Path) -> None:
        state = load_checkpoint(path, self.model, self.engine.optimizer_for_checkpoint,
                                self.engine.scheduler_for_checkpoint, restore_rng=True)
        ckpt = Path(state["path"])
        self.engine.load(ckpt, "deepspeed")
        self.step = int(state["step"])
        data = state["data_state"] or {}
        self.epoch = int(data.get("epoch", state["epoch"]))
        self.skip_batches = int(data.get("batch", 0))
        log.info("resumed from %s: step %d, epoch %d, %d batches of it done", ckpt, self.step, self.epoch,
                 self.skip_batches)

    def save(self, tag: str, epoch: int, batch_in_epoch: int, info: dict[str, Any] | None = None) -> None:
        """Checkpoint ``tag``; (``epoch``, ``batch_in_epoch``) is where a resumed run picks up the data."""
        ckpt = self.model_dir / tag
        data_state = {"epoch": epoch, "batch": batch_in_epoch}
        if self.rank == 0:
            save_checkpoint(self.model_dir, tag, self.model, self.engine.optimizer_for_checkpoint,
                            self.engine.scheduler_for_checkpoint, step=self.step, epoch=self.epoch,
                            data_state=data_state, info=info)
        if distributed():
            dist.barrier()
        if self.engine.name == "deepspeed":
            self.engine.save(ckpt, "deepspeed")
            if distributed():
                dist.barrier()
        if self.rank == 0 and tag.startswith("step_"):
            keep_last(self.model_dir, self.conf.keep_last)

    # --------------------------------------------------------------------------------------- loop
    def _loader(self, dataset: EChatDataset, epoch: int) -> Any:
        dataset.set_epoch(epoch)
        gen = torch.Generator().manual_seed(self.conf.seed * 1000 + epoch)  # worker seeds off the global RNG
        return make_dataloader(dataset, self.conf.num_workers, self.conf.prefetch, generator=gen)

    def _more(self, have: bool) -> bool:
        """True while every rank still has a batch (ranks stop an epoch together)."""
        if not distributed():
            return have
        t = torch.tensor([1 if have else 0], dtype=torch.long)
        all_reduce(t, dist.ReduceOp.MIN)
        return bool(t.item())

    def _log(self, kind: str, row: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        row = {"kind": kind, "step": self.step, "epoch": self.epoch, "time": round(time.time(), 3), **row}
        with open(self.model_dir / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, int | float) and key not in ("step", "epoch", "time"):
                    self.writer.add_scalar(f"{kind}/{key}", value, self.step)
            self.writer.flush()

    def train(self) -> dict[str, Any]:
        c = self.conf
        done = False
        last_cv: dict[str, Any] = {}
        if c.encoder_cache:
            self.fill_encoder_cache()
        while self.epoch < c.max_epoch and not done:
            done, last_cv = self._train_epoch()
            if not done:
                self.epoch += 1
                self.skip_batches = 0
        self.save("final", self.epoch, self.skip_batches if done else 0, {"cv_loss": last_cv.get("cv_loss")})
        if self.writer is not None:
            self.writer.close()
        return {"step": self.step, "epoch": self.epoch, **last_cv}

    def _train_mode(self) -> None:
        """``model.train()``, except the fully frozen submodules, which stay in eval mode (no dropout) unless
        ``frozen_eval`` is off."""
        self.model.train()
        if self.conf.frozen_eval:
            for name in frozen_children(self.model):
                getattr(self.model, name).eval()

    def fill_encoder_cache(self) -> None:
        """Attach an :class:`EncoderCache` to the model and fill it from the train and cv lists (each read once,
        length-sorted, without shuffling or augmentation)."""
        model = self.model
        if not isinstance(model, EChatModel):
            raise ValueError("train_conf.encoder_cache applies to the EChat stages, not to encoder pre-training")
        if "encoder" not in frozen_children(model):
            raise ValueError("train_conf.encoder_cache needs a frozen encoder (train_conf.freeze: [encoder]): a "
                             "trained encoder's output changes every step")
        if not self.conf.frozen_eval:
            raise ValueError("train_conf.encoder_cache needs train_conf.frozen_eval: true: with dropout the frozen "
                             "encoder's output changes every step")
        if self.train_set.conf["spec_aug"]:
            raise ValueError("train_conf.encoder_cache needs dataset_conf.spec_aug: false: SpecAugment gives the "
                             "encoder other features every epoch")
        if not 0.0 <= self.conf.encoder_cache_dropout < 1.0:
            raise ValueError(f"train_conf.encoder_cache_dropout must lie in [0, 1), got "
                             f"{self.conf.encoder_cache_dropout}")
        model.encoder_cache_dropout = float(self.conf.encoder_cache_dropout)
        cache = model.encoder_cache = EncoderCache()
        for dataset in (self.train_set, self.cv_set):
            if dataset is None:
                continue
            stats = cache.fill(model.encoder, iterate_batches(dataset.single_pass()), self.engine.eval_context(),
                               self.engine.device)
            log.info("encoder cache: %d utterances of %s in %.1f s (%d cached, %.0f MB)", stats["utterances"],
                     dataset.source.list_path, stats["seconds"], stats["cached"], stats["megabytes"])

    def _train_epoch(self) -> tuple[bool, dict[str, Any]]:
        c = self.conf
        self._train_mode()
        stats = SkipStats()
        window = MetricTracker()
        loader = iter(iterate_batches(self._loader(self.train_set, self.epoch), stats))
        batch_idx = 0
        last_cv: dict[str, Any] = {}
        drawn: Counter[str] = Counter()
        offered: set[str] = set()  # tasks with a positive weight at some step of this epoch
        t_prev = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            batch = next(loader, None)
            if not self._more(batch is not None):
                break
            assert batch is not None
            if batch_idx < self.skip_batches:  # resuming: these were trained on before the checkpoint
                batch_idx += 1
                t_prev = time.perf_counter()
                continue
            t_data = time.perf_counter() - t0
            rng = random.Random(f"{c.seed}/{self.epoch}/{batch_idx}")
            weights = c.tasks_at(self.step)
            offered.update(t for t, w in weights.items() if w > 0)
            task = choose_task(batch_records(batch), weights, rng, c.think, c.think_style)
            inputs = None
            if task is not None:
                inputs = self.model.make_inputs(batch, task, self.tok, rng, c.think, dropped=self.dropped,
                                                think_style=c.think_style)
            if inputs is None:
                if distributed():
                    raise RuntimeError(f"batch {batch['keys'][:3]}... serves none of the tasks "
                                       f"{list(c.tasks_at(self.step))}; "
                                       "fix the data list or train_conf.tasks")
                self.dropped["batch serves no task"] += 1
                batch_idx += 1
                continue
            out, stepped, norm = self.engine.train_step(to_device(inputs, self.engine.device))
            window.add(task, out)
            drawn[task] += 1
            batch_idx += 1
            t_now = time.perf_counter()
            window.timing["data_s"] += t_data
            window.timing["total_s"] += t_now - t_prev
            window.timing["samples"] += len(inputs["keys"])
            window.timing["pad"] += float((inputs["attention_mask"] == 0).sum())
            window.timing["positions"] += float(inputs["attention_mask"].numel())
            if "feats_lengths" in inputs:
                window.timing["feat_pad"] += float(inputs["feats"].shape[0] * inputs["feats"].shape[1]
                                                   - inputs["feats_lengths"].sum())
                window.timing["feat_frames"] += float(inputs["feats"].shape[0] * inputs["feats"].shape[1])
            t_prev = t_now
            if not stepped:
                continue
            self.step += 1
            if self.step % c.log_interval == 0:
                self._log_window(window, norm)
                window = MetricTracker()
            if c.cv_interval and self.step % c.cv_interval == 0:
                last_cv = self.cross_validate()
                self._train_mode()
            if c.save_interval and self.step % c.save_interval == 0:
                self.save(f"step_{self.step}", self.epoch, batch_idx, last_cv)
            if c.max_steps and self.step >= c.max_steps:
                self.skip_batches = batch_idx
                return True, last_cv or self.cross_validate()
        if self.rank == 0:
            log.info("epoch %d done: %d batches, %s; batches per task: %s; records left out: %s", self.epoch,
                     batch_idx, stats.summary(), dict(drawn), dict(self.dropped) or "none")
            never = [t for t in c.all_tasks if t in offered and not drawn[t]]
            if never and batch_idx > self.skip_batches:
                log.warning("tasks %s got no batch this epoch: no record serves them (a speech task needs "
                            "response_tokens: run the speech-token stage); trained only %s", never, sorted(drawn))
        last_cv = self.cross_validate()
        self.save(f"epoch_{self.epoch}", self.epoch + 1, 0, last_cv)  # resumes at the next epoch's start
        return False, last_cv

    def _log_window(self, window: MetricTracker, norm: float | None) -> None:
        summ = window.summary()
        t = window.timing
        row: dict[str, Any] = {"lr": self.engine.lr, "grad_norm": norm,
                               "loss": window.overall(),
                               "ms_per_step": 1000 * t["total_s"] / max(1, self.conf.log_interval),
                               "samples_per_s": t["samples"] / t["total_s"] if t["total_s"] else 0.0,
                               "data_share": t["data_s"] / t["total_s"] if t["total_s"] else 0.0,
                               "pad_share": t["pad"] / t["positions"] if t["positions"] else 0.0,
                               "feat_pad_share": t["feat_pad"] / t["feat_frames"] if t["feat_frames"] else 0.0,
                               "rss_mb": round(rss_mb(), 1)}
        for task, s in summ.items():
            row[f"loss_{task}"], row[f"acc_{task}"] = s["loss"], s["acc"]
            if "ctc" in s:
                row[f"ctc_{task}"] = s["ctc"]
        self._log("train", row)
        if self.rank == 0:
            per_task = " ".join(f"{k}={s['loss']:.3f}/{s['acc']:.3f}" for k, s in summ.items())
            log.info("epoch %d step %d lr %.3g loss %.4f [%s] grad %.3g %.0f ms/step data %.0f%% pad %.0f%% "
                     "rss %.0f MB", self.epoch, self.step, row["lr"], row["loss"], per_task, norm or 0.0,
                     row["ms_per_step"], 100 * row["data_share"], 100 * row["pad_share"], row["rss_mb"])

    @torch.no_grad()
    def cross_validate(self) -> dict[str, Any]:
        """Loss and accuracy per task on the cv set (every task of ``train_conf.tasks`` on every batch)."""
        if self.cv_set is None:
            return {}
        if self._cv_cache is not None and self._cv_cache[0] == self.step:  # e.g. cv_interval hit at an epoch end
            return self._cv_cache[1]
        c = self.conf
        self.model.eval()
        tracker = MetricTracker()
        loader = iter(iterate_batches(self._loader(self.cv_set, 0)))
        n = 0
        while True:
            batch = next(loader, None)
            if c.cv_max_batches is not None and n >= c.cv_max_batches:
                batch = None
            if not self._more(batch is not None):
                break
            assert batch is not None
            n += 1
            for task in c.all_tasks:
                inputs = self.model.make_inputs(batch, task, self.tok, None, c.think, think_style=c.think_style)
                if inputs is None:
                    continue
                with self.engine.eval_context():
                    out = self.model(**to_device(inputs, self.engine.device))
                tracker.add(task, out)
        tracker.reduce(c.all_tasks)
        summ = tracker.summary()
        result: dict[str, Any] = {"cv_loss": tracker.overall(c.tasks)}
        for task, s in summ.items():
            result[f"cv_loss_{task}"], result[f"cv_acc_{task}"] = s["loss"], s["acc"]
            for key in ("ctc", "ctc_err"):
                if key in s:
                    result[f"cv_{key}_{task}"] = s[key]
        self._log("cv", result)
        if self.rank == 0:
            per_task = " ".join(f"{k}={s['loss']:.3f}/{s['acc']:.3f}"
                                + (f" (ctc err {s['ctc_err']:.3f})" if "ctc_err" in s else "")
                                for k, s in summ.items())
            log.info("cv epoch %d step %d: loss %.4f [%s]", self.epoch, self.step, result["cv_loss"], per_task)
        self._cv_cache = (self.step, result)
        return result


__all__ = ["MetricTracker", "TrainConf", "Trainer", "choose_task"]
