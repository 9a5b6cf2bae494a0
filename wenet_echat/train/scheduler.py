"""Step-based learning-rate schedules, named in YAML (``scheduler: warmuplr`` + ``scheduler_conf: {...}``).

Every schedule is a closed-form function ``factor(s)`` of the optimizer step ``s`` (counted from 1) that scales each
param group's own base learning rate, so per-module learning rates set by
:func:`wenet_echat.train.optim.param_groups` survive scheduling. The scheduler is stepped once after every optimizer
step: right after construction the groups hold the rate for step 1, after ``k`` calls to ``step()`` the rate for
step ``k + 1``.

Because the rate depends only on the step counter, resuming is exact: ``state_dict()`` holds the counter, the base
rates and the schedule parameters (the standard :class:`torch.optim.lr_scheduler.LRScheduler` contract), and
``load_state_dict`` also writes the restored rates back into the optimizer so the order in which optimizer and
scheduler are restored does not matter. If the checkpoint's schedule parameters differ from the configured ones the
checkpoint wins (as with every torch scheduler) and a warning names the difference.

Schedules:

* ``warmuplr`` -- the Noam schedule used by WeNet/ESPnet and OSUM:
  ``lr = base_lr * warmup**0.5 * min(s**-0.5, s * warmup**-1.5)``; it peaks at ``base_lr`` when ``s == warmup``
  and then decays as ``s**-0.5``.
* ``warmup_cosine`` -- linear warmup to ``base_lr`` over ``warmup_steps``, then half a cosine down to
  ``min_lr_ratio * base_lr`` at ``total_steps``; constant at the minimum afterwards.
* ``warmup_constant`` -- linear warmup, then ``base_lr``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from wenet_echat.utils.registry import Registry

logger = logging.getLogger(__name__)

SCHEDULERS: Registry[LRScheduler] = Registry("scheduler")


def cosine_decay(progress: float, min_ratio: float) -> float:
    """Half a cosine from 1 at ``progress`` 0 to ``min_ratio`` at 1 (``progress`` is clipped to [0, 1])."""
    progress = min(max(progress, 0.0), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class StepScheduler(LRScheduler):
    """Base class: ``lr = base_lr * factor(step)`` for every param group; subclasses define :meth:`factor`."""

    #: attribute names of the schedule parameters (compared when a state dict is loaded)
    config_keys: tuple[str, ...] = ()

    def factor(self, step: int) -> float:
        raise NotImplementedError

    @property
    def step_num(self) -> int:
        """The optimizer step (from 1) whose learning rate the param groups currently hold."""
        return self.last_epoch + 1

    def get_lr(self) -> list[float]:
        scale = self.factor(self.step_num)
        return [base * scale for base in self.base_lrs]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_lrs = state_dict.get("base_lrs", [])
        if len(saved_lrs) != len(self.optimizer.param_groups):
            raise ValueError(
                f"{type(self).__name__} state has {len(saved_lrs)} param groups, the optimizer has "
                f"{len(self.optimizer.param_groups)}"
            )
        for key in self.config_keys:
            if key in state_dict and state_dict[key] != getattr(self, key):
                logger.warning("%s: %s=%s from the checkpoint replaces the configured %s",
                               type(self).__name__, key, state_dict[key], getattr(self, key))
        super().load_state_dict(state_dict)
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr


def _check_steps(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"scheduler_conf.{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _linear_warmup(step: int, warmup_steps: int) -> float:
    return 1.0 if warmup_steps == 0 else min(1.0, step / warmup_steps)


@SCHEDULERS.register("warmuplr")
class WarmupLR(StepScheduler):
    """Noam schedule: ``base_lr * warmup**0.5 * min(step**-0.5, step * warmup**-1.5)``."""

    config_keys = ("warmup_steps",)

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 25000, last_epoch: int = -1):
        self.warmup_steps = _check_steps("warmup_steps", warmup_steps, 1)
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        w = self.warmup_steps
        return w**0.5 * min(step**-0.5, step * w**-1.5)


@SCHEDULERS.register("warmup_cosine")
class WarmupCosine(StepScheduler):
    """Linear warmup to ``base_lr``, cosine decay to ``min_lr_ratio * base_lr`` at ``total_steps``."""

    config_keys = ("warmup_steps", "total_steps", "min_lr_ratio")

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                 min_lr_ratio: float = 0.0, last_epoch: int = -1):
        self.warmup_steps = _check_steps("warmup_steps", warmup_steps, 0)
        self.total_steps = _check_steps("total_steps", total_steps, warmup_steps + 1)
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"scheduler_conf.min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")
        self.min_lr_ratio = float(min_lr_ratio)
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        if step <= self.warmup_steps:
            return _linear_warmup(step, self.warmup_steps)
        return cosine_decay((step - self.warmup_steps) / (self.total_steps - self.warmup_steps), self.min_lr_ratio)


@SCHEDULERS.register("warmup_constant")
class WarmupConstant(StepScheduler):
    """Linear warmup to ``base_lr`` over ``warmup_steps``, then constant."""

    config_keys = ("warmup_steps",)

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 0, last_epoch: int = -1):
        self.warmup_steps = _check_steps("warmup_steps", warmup_steps, 0)
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        return _linear_warmup(step, self.warmup_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, conf: dict[str, Any] | None = None) -> LRScheduler:
    """Build the scheduler registered as ``name`` with keyword arguments ``conf`` (``scheduler_conf`` in YAML)."""
    return SCHEDULERS.build(name, conf, optimizer=optimizer)
