"""Outputs of a frozen encoder, computed once per utterance and reused by every later batch that holds it.

When a stage freezes the encoder (``train_conf.freeze: [encoder]``) and feeds it the same features every epoch
(no SpecAugment), its output for an utterance never changes, yet a plain training step recomputes it for every
batch, every epoch and every cross-validated task. Without it a mini stage-1 step takes 36 % less time.
``train_conf.encoder_cache: true`` makes :class:`wenet_echat.train.trainer.Trainer` fill an :class:`EncoderCache`
before training (one pass over the train and cv lists, length-sorted so little of it is padding) and attach it to
the model; :meth:`EChatModel.encode_audio` then takes a batch's encoder output from the cache when every item is
in it, and runs (and stores) the encoder otherwise.

The cached forward is the frozen encoder in eval mode, the mode the trainer keeps frozen modules in, under the
same autocast as the training step, so a step with the cache computes what the step without it computes. Entries
are keyed by utterance key and checked against the item's feature length: a batch whose audio differs from the
cached one is an error, not a silent mix-up.

Memory: frames x encoder width per utterance in the autocast dtype (EChat-mini's 3 h of train audio at 50 Hz
and width 256 in bf16: ~0.3 GB). It is meant for corpora of that size; at paper scale the encoder is trained and
there is nothing to cache.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from wenet_echat.dataset.batch import pad_sequences

log = logging.getLogger(__name__)


class EncoderCacheError(ValueError):
    """A batch item does not match its cached entry (same key, other audio)."""


class EncoderCache:
    """Per-utterance encoder outputs ``(T', D)`` keyed by utterance key (see the module docstring)."""

    def __init__(self) -> None:
        self._out: dict[str, torch.Tensor] = {}
        self._feat_len: dict[str, int] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._out)

    def __contains__(self, key: str) -> bool:
        return key in self._out

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._out.values())

    def add(self, keys: list[str], feats_lengths: torch.Tensor, out: torch.Tensor, out_lengths: torch.Tensor) -> None:
        """Store each item's valid frames of a batched encoder output ``out`` (B, T', D)."""
        if len(keys) != out.size(0) or feats_lengths.shape != (out.size(0),):
            raise ValueError(f"{len(keys)} keys and feats_lengths {tuple(feats_lengths.shape)} for an encoder "
                             f"output of {out.size(0)} items")
        for i, key in enumerate(keys):
            self._check(key, int(feats_lengths[i]))
            self._out[key] = out[i, : int(out_lengths[i])].detach().clone()
            self._feat_len[key] = int(feats_lengths[i])

    def _check(self, key: str, feat_len: int) -> None:
        known = self._feat_len.get(key)
        if known is not None and known != feat_len:
            raise EncoderCacheError(f"utterance '{key}' has {feat_len} feature frames, its cached encoder output "
                                    f"came from {known}: two records share the key or the features changed")

    def lookup(self, keys: list[str], feats_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The batch's encoder output ``(B, max T', D)`` (zero-padded) and lengths, or None unless every item is
        cached (the caller then runs the encoder, :meth:`add` stores the result)."""
        for i, key in enumerate(keys):
            if key not in self._out:
                self.misses += 1
                return None
            self._check(key, int(feats_lengths[i]))
        self.hits += 1
        return pad_sequences([self._out[k] for k in keys])

    @torch.no_grad()
    def fill(self, encoder: nn.Module, batches: Iterable[dict[str, Any]],
             autocast: contextlib.AbstractContextManager[Any] | None = None,
             device: torch.device | str = "cpu") -> dict[str, float]:
        """Run ``encoder`` (put in eval mode) over ``batches`` (pipeline batch dicts with ``keys``, ``feats``,
        ``feats_lengths``) and store every item not cached yet. Returns counts and the time taken."""
        t0 = time.perf_counter()
        was_training = encoder.training
        encoder.eval()
        added = 0
        try:
            for batch in batches:
                keys = list(batch["keys"])
                todo = [i for i, k in enumerate(keys) if k not in self._out]
                if not todo:
                    continue
                idx = torch.tensor(todo, dtype=torch.long)
                lens = batch["feats_lengths"][idx]
                feats = batch["feats"][idx, : int(lens.max())].to(device)
                with autocast if autocast is not None else contextlib.nullcontext():
                    out, out_lens = encoder(feats, lens.to(device))
                self.add([keys[i] for i in todo], lens, out.cpu(), out_lens.cpu())
                added += len(todo)
        finally:
            encoder.train(was_training)
        return {"utterances": added, "cached": len(self), "megabytes": self.nbytes / 2**20,
                "seconds": time.perf_counter() - t0}


__all__ = ["EncoderCache", "EncoderCacheError"]
