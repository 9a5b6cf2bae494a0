"""Model inputs from a data-pipeline batch: records + one task → packed, padded id/kind/label tensors.

The data pipeline (:mod:`wenet_echat.dataset`) yields batches of samples with their features and record fields;
the training engine picks one task per batch (weighted per-batch task mixing). :func:`make_inputs` keeps the
samples that can serve that task (the task is in the record's ``task`` list and the record has the fields its
target needs), builds each example with :func:`wenet_echat.text.targets.build_example`, lays it out
contiguously with the adapter's frame count, and collates. Samples that cannot serve the task are dropped and
counted, never silently mis-trained.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import torch

from wenet_echat.dataset.schema import record_tasks
from wenet_echat.text.interleave import Interleave
from wenet_echat.text.targets import (
    AUDIO_TASKS,
    SPEECH_TASKS,
    Example,
    MissingFieldError,
    build_example,
    collate,
    flatten,
    has_target_fields,
)
from wenet_echat.text.tokenizer import TextTokenizer

RECORD_FIELDS = ("text", "labels", "response", "response_emotion", "response_tokens", "think", "history")


def batch_records(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The record fields of each sample of a pipeline batch, as dicts (``key``, ``task`` and the text fields)."""
    out = []
    for i, key in enumerate(batch["keys"]):
        rec: dict[str, Any] = {"key": key, "task": batch["tasks"][i]}
        for name in RECORD_FIELDS:
            if name in batch:
                rec[name] = batch[name][i]
        out.append(rec)
    return out


def lists_task(record: dict[str, Any], task: str) -> bool:
    """Whether the record's ``task`` field names ``task`` (a record without one serves what its fields allow)."""
    tasks = record.get("task")
    return tasks is None or task in (tasks if isinstance(tasks, list) else record_tasks(record))


def serves(record: dict[str, Any], task: str, think: bool = True, think_style: str = "auto") -> bool:
    """Whether ``record`` lists ``task`` and has the fields its target needs."""
    return lists_task(record, task) and has_target_fields(record, task, think, think_style)


def select_examples(records: list[dict[str, Any]], task: str, tokenizer: TextTokenizer, rng: random.Random | None,
                    think: bool, speech_bos: int, prompt_only: bool = False, dropped: Counter[str] | None = None,
                    think_style: str = "auto", interleave: Interleave | None = None) -> tuple[list[int], list[Example]]:
    """Indices of the records that serve ``task`` and their examples (prompts only if ``prompt_only``)."""
    keep: list[int] = []
    examples: list[Example] = []
    for i, rec in enumerate(records):
        if not lists_task(rec, task):
            if dropped is not None:
                dropped[f"{task}: task not listed"] += 1
            continue
        try:
            ex = build_example(rec, task, tokenizer, rng, think, speech_bos, think_style, interleave)
        except MissingFieldError as e:
            if dropped is not None:
                dropped[f"{task}: no {e.field}"] += 1
            continue
        keep.append(i)
        examples.append(ex.prompt() if prompt_only else ex)
    return keep, examples


def make_inputs(batch: dict[str, Any], task: str, tokenizer: TextTokenizer, audio_lengths: Any, speech_bos: int,
                rng: random.Random | None = None, think: bool = True, prompt_only: bool = False,
                dropped: Counter[str] | None = None, think_style: str = "auto",
                interleave: Interleave | None = None) -> dict[str, Any] | None:
    """Tensors for :meth:`EChatModel.forward` (or, with ``prompt_only``, left-padded prompts for ``generate``).

    ``audio_lengths`` maps log-mel lengths to adapter frames (``model.audio_lengths``); ``interleave`` lays out
    the speech phase (the model's ``speech_text_interleave``). Returns None when no
    sample of the batch serves ``task``. The result also holds ``keys``, ``task``, ``records`` (kept ones) and
    ``speak`` (per row: the task has a speech phase).
    """
    records = batch_records(batch)
    keep, examples = select_examples(records, task, tokenizer, rng, think, speech_bos, prompt_only, dropped,
                                     think_style, interleave)
    if not keep:
        return None
    out: dict[str, Any] = {}
    if task in AUDIO_TASKS:
        idx = torch.tensor(keep, dtype=torch.long)
        feats_lengths = batch["feats_lengths"][idx]
        longest = int(feats_lengths.max())
        out["feats"] = batch["feats"][idx, :longest]
        out["feats_lengths"] = feats_lengths
        frames = audio_lengths(feats_lengths).tolist()
        flats = [flatten(ex, int(n)) for ex, n in zip(examples, frames)]
    else:
        flats = [flatten(ex) for ex in examples]
    out.update(collate(flats, tokenizer.pad_id, padding_side="left" if prompt_only else "right"))
    if task == "asr" and not prompt_only:  # transcript ids for the optional auxiliary CTC: the target minus EOS
        ids = [next(seg.ids for seg in ex.segments if seg.name == "target")[:-1] for ex in examples]
        out["ctc_lengths"] = torch.tensor([len(x) for x in ids], dtype=torch.long)
        out["ctc_ids"] = torch.full((len(ids), max(1, max(len(x) for x in ids))), -1, dtype=torch.long)
        for row, x in enumerate(ids):
            out["ctc_ids"][row, : len(x)] = torch.tensor(x, dtype=torch.long)
    out["keys"] = [records[i]["key"] for i in keep]
    out["records"] = [records[i] for i in keep]
    out["task"] = task
    out["speak"] = [task in SPEECH_TASKS] * len(keep)
    out["speech_only"] = [task == "tts"] * len(keep)  # no text target: generation starts at the speech BOS
    return out


MODEL_KEYS = ("input_ids", "kinds", "labels", "attention_mask", "position_ids", "feats", "feats_lengths", "ctc_ids",
              "ctc_lengths", "cue_ids")


def to_device(inputs: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """The tensor entries the model takes, moved to ``device``, plus the batch's ``task`` name (a model whose
    losses depend on the task reads it; the others ignore it) and, with audio, ``audio_keys`` (the utterance keys
    of the audio items)."""
    out: dict[str, Any] = {k: inputs[k].to(device) for k in MODEL_KEYS if k in inputs}
    if "task" in inputs:
        out["task"] = inputs["task"]
    if "feats" in inputs and "keys" in inputs:  # one key per audio item: the model's encoder cache looks them up
        out["audio_keys"] = list(inputs["keys"])
    return out


__all__ = ["MODEL_KEYS", "RECORD_FIELDS", "batch_records", "make_inputs", "select_examples", "serves", "to_device"]
