"""Batching (static / dynamic) and padding of sample dicts into one batch dict.

A batch is a dict (see :func:`collate`): ``keys``, ``feats`` (B, T, D), ``feats_lengths`` (B,), optionally
``wav``/``wav_lengths``, ``text_ids``/``response_ids`` (padded with ``IGNORE_ID``) and their lengths, plus per-sample
lists (``text``, ``labels``, ``response``, ``response_emotion``, ``response_tokens``, ``think``, ``speaker``,
``category``, ``tasks``). Each batch also carries ``skipped``/``notes``: the skip/note counts of its reader since
the previous batch. The last item of a reader may be a *marker* ``{"keys": [], "skipped": ..., "notes": ...}`` with
no samples: consumers use it for the counts only (see :func:`is_marker`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from wenet_echat.dataset.processor import Sample, SkipStats, num_frames, sample_tokens

IGNORE_ID = -1
# record fields copied into per-sample lists (None where a record lacks the field)
LIST_FIELDS = ("text", "labels", "response", "response_emotion", "response_tokens", "think", "speaker",
               "category", "response_wav", "history")


def static_batch(data: Iterable[Sample], batch_size: int = 16) -> Iterator[list[Sample]]:
    """Groups of ``batch_size`` samples (the last may be smaller)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    buf: list[Sample] = []
    for s in data:
        buf.append(s)
        if len(buf) >= batch_size:
            yield buf
            buf = []
    if buf:
        yield buf


def dynamic_batch(data: Iterable[Sample], max_frames_in_batch: int = 12000,
                  max_tokens_in_batch: int | None = None) -> Iterator[list[Sample]]:
    """Groups whose padded size ``max(frames) * n`` stays within ``max_frames_in_batch`` (and whose summed
    :func:`sample_tokens` stays within ``max_tokens_in_batch``). A single sample over a limit gets its own batch."""
    if max_frames_in_batch < 1:
        raise ValueError(f"max_frames_in_batch must be >= 1, got {max_frames_in_batch}")
    buf: list[Sample] = []
    longest = 0
    tokens = 0
    for s in data:
        frames = num_frames(s)
        toks = sample_tokens(s)
        new_longest = max(longest, frames)
        over = new_longest * (len(buf) + 1) > max_frames_in_batch
        if max_tokens_in_batch is not None:
            over = over or tokens + toks > max_tokens_in_batch
        if buf and over:
            yield buf
            buf, longest, tokens = [], 0, 0
            new_longest = frames
        buf.append(s)
        longest, tokens = new_longest, tokens + toks
    if buf:
        yield buf


def pad_sequences(seqs: list[torch.Tensor], pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad tensors of shape (L_i, ...) to (B, max L, ...); returns (padded, lengths)."""
    lengths = torch.tensor([int(x.shape[0]) for x in seqs], dtype=torch.long)
    longest = int(lengths.max()) if len(seqs) else 0
    out = torch.full((len(seqs), longest, *seqs[0].shape[1:]), pad_value, dtype=seqs[0].dtype)
    for i, x in enumerate(seqs):
        out[i, : x.shape[0]] = x
    return out, lengths


def collate(samples: list[Sample]) -> dict[str, Any]:
    """Pad one group of samples into a batch dict (order kept)."""
    batch: dict[str, Any] = {"keys": [s["key"] for s in samples]}
    batch["feats"], batch["feats_lengths"] = pad_sequences([s["feats"] for s in samples])
    if all("wav" in s for s in samples):
        batch["wav"], batch["wav_lengths"] = pad_sequences([torch.from_numpy(s["wav"]) for s in samples])
    for name in ("text_ids", "response_ids"):
        if any(name in s for s in samples):
            seqs = [torch.tensor(s.get(name) or [], dtype=torch.long) for s in samples]
            batch[name], batch[f"{name}_lengths"] = pad_sequences(seqs, IGNORE_ID)
    for field in LIST_FIELDS:
        batch[field] = [s["record"].get(field) for s in samples]
    batch["tasks"] = [s["tasks"] for s in samples]
    batch["duration"] = [len(s["wav"]) / s["sample_rate"] if "wav" in s else s["record"].get("duration")
                         for s in samples]
    return batch


def padding(groups: Iterable[list[Sample]], stats: SkipStats) -> Iterator[dict[str, Any]]:
    """Collate each group and attach the reader's skip/note deltas; end with a marker if counts are left over."""
    for group in groups:
        batch = collate(group)
        batch["skipped"], batch["notes"] = stats.take_delta()
        yield batch
    skipped, notes = stats.take_delta()
    if skipped or notes:
        yield {"keys": [], "skipped": skipped, "notes": notes}


def is_marker(batch: dict[str, Any]) -> bool:
    """True for the sample-less end-of-reader item that only carries counts."""
    return len(batch["keys"]) == 0


def batch_frames(batch: dict[str, Any]) -> int:
    """Padded frames of a batch (B x T)."""
    return int(np.prod(batch["feats"].shape[:2])) if "feats" in batch else 0
