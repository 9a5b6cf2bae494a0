"""Checkpoint averaging: the element-wise mean of several checkpoints' weights.

Floating-point tensors are summed in float64 and cast back to their own dtype, so the result does not depend on
the order of the checkpoints and loses nothing to fp32/bf16 rounding. Integer and bool tensors (step counters such
as BatchNorm's ``num_batches_tracked``) cannot be averaged; the last checkpoint's value is kept. All checkpoints must
have the same keys, shapes and dtypes. ``.pt`` inputs are memory-mapped, so peak memory stays near one model plus
one float64 tensor even when averaging many large checkpoints.

:func:`select_checkpoints` picks the inputs from a ``model_dir`` by ``info.yaml``: the ``num`` highest steps
(``last``) or the ``num`` lowest ``cv_loss`` values (``best``); they are returned oldest first.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from wenet_echat.train.checkpoint import MODEL_FILE, StateDict, read_info, read_state_dict

logger = logging.getLogger(__name__)

DEFAULT_TAG_REGEX = r"(step|epoch)_\d+"
MODES = ("last", "best")


def _check_compatible(paths: Sequence[str | os.PathLike], states: list[StateDict]) -> None:
    ref_path, ref = paths[-1], states[-1]
    for path, state in zip(paths, states):
        if state.keys() != ref.keys():
            only_here = sorted(state.keys() - ref.keys())[:5]
            only_ref = sorted(ref.keys() - state.keys())[:5]
            raise ValueError(f"{path}: keys differ from {ref_path} (only in {path}: {only_here}; "
                             f"only in {ref_path}: {only_ref})")
        for key, tensor in state.items():
            if tensor.shape != ref[key].shape or tensor.dtype != ref[key].dtype:
                raise ValueError(f"{path}: '{key}' is {tensor.dtype}{tuple(tensor.shape)} but "
                                 f"{ref[key].dtype}{tuple(ref[key].shape)} in {ref_path}")


def average_checkpoints(paths: Sequence[str | os.PathLike]) -> StateDict:
    """Average the state dicts stored at ``paths`` (checkpoint dirs, ``.pt`` or ``.safetensors`` files)."""
    if not paths:
        raise ValueError("average_checkpoints: no checkpoints given")
    states = [read_state_dict(path, mmap=True) for path in paths]
    _check_compatible(paths, states)
    averaged: StateDict = {}
    for key, last in states[-1].items():
        if last.is_floating_point():
            total = torch.zeros(last.shape, dtype=torch.float64)
            for state in states:
                total += state[key]
            averaged[key] = (total / len(states)).to(last.dtype)
        else:
            if not all(torch.equal(state[key], last) for state in states):
                logger.debug("'%s' differs between checkpoints; keeping the last one's value", key)
            averaged[key] = last.clone()
    return averaged


@dataclass(frozen=True)
class CheckpointRecord:
    path: Path
    step: int
    cv_loss: float | None

    def describe(self) -> str:
        loss = "n/a" if self.cv_loss is None else f"{self.cv_loss:.6g}"
        return f"{self.path.name} (step {self.step}, cv_loss {loss})"


def list_checkpoints(model_dir: str | os.PathLike, tag_regex: str = DEFAULT_TAG_REGEX) -> list[CheckpointRecord]:
    """Every complete checkpoint in ``model_dir`` whose tag fully matches ``tag_regex``, oldest first."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such model_dir")
    pattern = re.compile(tag_regex)
    records = []
    for path in model_dir.iterdir():
        if not pattern.fullmatch(path.name) or not (path / MODEL_FILE).is_file():
            continue
        info = read_info(path)
        if not isinstance(info.get("step"), int):
            raise ValueError(f"{path}/info.yaml: missing integer 'step'")
        cv_loss = info.get("cv_loss")
        if cv_loss is not None and not isinstance(cv_loss, int | float):
            raise ValueError(f"{path}/info.yaml: cv_loss must be a number, got {cv_loss!r}")
        records.append(CheckpointRecord(path, info["step"], None if cv_loss is None else float(cv_loss)))
    return sorted(records, key=lambda r: (r.step, r.path.name))


def select_checkpoints(model_dir: str | os.PathLike, num: int, mode: str = "last",
                       tag_regex: str = DEFAULT_TAG_REGEX) -> list[CheckpointRecord]:
    """The ``num`` newest (``last``) or lowest-``cv_loss`` (``best``) checkpoints of ``model_dir``, oldest first."""
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    records = list_checkpoints(model_dir, tag_regex)
    if mode == "best":
        records = sorted((r for r in records if r.cv_loss is not None), key=lambda r: (r.cv_loss, -r.step))
    else:
        records = records[::-1]
    if not records:
        need = "with a cv_loss in info.yaml " if mode == "best" else ""
        raise ValueError(f"{model_dir}: no checkpoint matching '{tag_regex}' {need}found")
    if len(records) < num:
        logger.warning("%s: only %d checkpoint(s) available for mode '%s', wanted %d",
                       model_dir, len(records), mode, num)
    return sorted(records[:num], key=lambda r: (r.step, r.path.name))
