"""Learning rates of time-budgeted training (``--max_minutes``), where the number of steps is not known ahead.

The rate warms up linearly over ``warmup_steps`` and then, with ``lr_decay: cosine``, follows half a cosine to
``min_lr_ratio`` of the peak over the *planned* training: the time earlier runs of the same model trained plus this
run's ``--max_minutes`` (or ``--max_steps``, whichever is further along), so a budgeted run ends on a low rate and a
run resumed with more minutes decays over the new plan. ``lr_decay: none`` keeps the peak after the warmup.
"""

from __future__ import annotations

from typing import Any

from wenet_echat.train.scheduler import cosine_decay

LR_DECAYS = ("none", "cosine")


def check_budget_lr_conf(conf: dict[str, Any], where: str) -> None:
    """``lr_decay`` and ``min_lr_ratio`` of a training section; errors name ``where`` (e.g. ``train.vocoder``)."""
    if conf["lr_decay"] not in LR_DECAYS:
        raise ValueError(f"{where}.lr_decay must be one of {', '.join(LR_DECAYS)}, got '{conf['lr_decay']}'")
    if not 0.0 <= conf["min_lr_ratio"] <= 1.0:
        raise ValueError(f"{where}.min_lr_ratio must be in [0, 1], got {conf['min_lr_ratio']}")


def planned_progress(max_minutes: float | None, max_steps: int | None, step: int, elapsed0_s: float,
                     run_s: float) -> float:
    """Share (0-1) of the planned training done after ``step`` steps, ``elapsed0_s`` seconds of earlier runs and
    ``run_s`` seconds of this one."""
    done = 0.0
    if max_minutes is not None:
        done = (elapsed0_s + run_s) / max(elapsed0_s + max_minutes * 60, 1e-9)
    if max_steps is not None:
        done = max(done, step / max(max_steps, 1))
    return min(done, 1.0)


def budget_lr(base: float, step: int, conf: dict[str, Any], progress: float) -> float:
    """The rate of step ``step`` (from 0): ``conf`` has ``warmup_steps``, ``lr_decay`` and ``min_lr_ratio``."""
    lr = base * min(1.0, (step + 1) / max(conf["warmup_steps"], 1))
    if conf["lr_decay"] == "cosine":
        lr *= cosine_decay(progress, conf["min_lr_ratio"])
    return lr
