"""Learning-rate schedules: closed-form values, per-group base rates, exact state round-trips, config errors."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from wenet_echat.train.scheduler import SCHEDULERS, build_scheduler


def _optimizer(*lrs: float) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def _lrs_by_step(name: str, conf: dict, steps: int, *base: float) -> list[list[float]]:
    """lrs[k] = the param-group rates used by optimizer step k + 1."""
    opt = _optimizer(*base)
    sched = build_scheduler(opt, name, conf)
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return out


def test_registry_names_and_type():
    assert SCHEDULERS.names() == ["warmup_constant", "warmup_cosine", "warmuplr"]
    sched = build_scheduler(_optimizer(1.0), "warmuplr", {"warmup_steps": 3})
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)


def test_warmuplr_matches_noam_formula_and_peaks_at_warmup():
    base, warmup = 2e-3, 10
    lrs = [row[0] for row in _lrs_by_step("warmuplr", {"warmup_steps": warmup}, 40, base)]
    for step, lr in enumerate(lrs, 1):
        expected = base * warmup**0.5 * min(step**-0.5, step * warmup**-1.5)
        assert lr == pytest.approx(expected, rel=1e-12)
    assert lrs[0] == pytest.approx(base / warmup)
    assert max(lrs) == pytest.approx(base) and lrs.index(max(lrs)) == warmup - 1
    assert lrs[4 * warmup - 1] == pytest.approx(base / 2)  # inverse square-root decay: 4x the steps, half the rate


def test_warmup_cosine_values():
    base, conf = 1.0, {"warmup_steps": 4, "total_steps": 14, "min_lr_ratio": 0.1}
    lrs = [row[0] for row in _lrs_by_step("warmup_cosine", conf, 20, base)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[8] == pytest.approx(0.1 + 0.9 * 0.5)  # step 9: half way through the decay
    assert lrs[5] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.2)))
    assert lrs[13] == pytest.approx(0.1)  # step == total_steps
    assert lrs[13:] == pytest.approx([0.1] * 7)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))


def test_warmup_constant_values():
    lrs = [row[0] for row in _lrs_by_step("warmup_constant", {"warmup_steps": 4}, 8, 0.8)]
    assert lrs == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.8, 0.8, 0.8, 0.8])
    assert [row[0] for row in _lrs_by_step("warmup_constant", {}, 3, 0.5)] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("name,conf", [("warmuplr", {"warmup_steps": 5}),
                                       ("warmup_cosine", {"warmup_steps": 2, "total_steps": 9}),
                                       ("warmup_constant", {"warmup_steps": 3})])
def test_each_group_keeps_its_own_base_lr(name, conf):
    for a, b in _lrs_by_step(name, conf, 12, 1e-3, 1e-5):
        assert a == pytest.approx(100 * b, rel=1e-12)


@pytest.mark.parametrize("order", ["optimizer_first", "scheduler_first", "scheduler_only"])
@pytest.mark.parametrize("name,conf", [("warmuplr", {"warmup_steps": 5}),
                                       ("warmup_cosine", {"warmup_steps": 3, "total_steps": 11, "min_lr_ratio": 0.2}),
                                       ("warmup_constant", {"warmup_steps": 6})])
def test_state_dict_round_trip_resumes_exactly(name, conf, order):
    opt_a = _optimizer(1e-3, 3e-4)
    sched_a = build_scheduler(opt_a, name, conf)
    for _ in range(7):
        opt_a.step()
        sched_a.step()
    opt_b = _optimizer(1e-3, 3e-4)
    sched_b = build_scheduler(opt_b, name, conf)
    state = sched_a.state_dict()
    if order == "optimizer_first":
        opt_b.load_state_dict(opt_a.state_dict())
        sched_b.load_state_dict(state)
    elif order == "scheduler_first":
        sched_b.load_state_dict(state)
        opt_b.load_state_dict(opt_a.state_dict())
    else:
        sched_b.load_state_dict(state)
    for _ in range(6):
        assert [g["lr"] for g in opt_b.param_groups] == [g["lr"] for g in opt_a.param_groups]
        assert sched_b.get_last_lr() == sched_a.get_last_lr()
        for opt, sched in ((opt_a, sched_a), (opt_b, sched_b)):
            opt.step()
            sched.step()
    assert sched_b.last_epoch == sched_a.last_epoch == 13


def test_load_rejects_group_count_mismatch_and_warns_on_changed_config(caplog):
    sched = build_scheduler(_optimizer(1.0, 2.0), "warmuplr", {"warmup_steps": 4})
    with pytest.raises(ValueError, match="2 param groups, the optimizer has 1"):
        build_scheduler(_optimizer(1.0), "warmuplr", {"warmup_steps": 4}).load_state_dict(sched.state_dict())
    other = build_scheduler(_optimizer(1.0, 2.0), "warmuplr", {"warmup_steps": 9})
    with caplog.at_level(logging.WARNING):
        other.load_state_dict(sched.state_dict())
    assert other.warmup_steps == 4
    assert "warmup_steps=4 from the checkpoint replaces the configured 9" in caplog.text


def test_config_errors():
    opt = _optimizer(1.0)
    with pytest.raises(KeyError, match="unknown scheduler 'noam'; known: warmup_constant, warmup_cosine, warmuplr"):
        build_scheduler(opt, "noam", {})
    with pytest.raises(TypeError, match="bad config for scheduler 'warmuplr'.*warmup"):
        build_scheduler(opt, "warmuplr", {"warmup": 10})
    with pytest.raises(ValueError, match="warmup_steps must be an integer >= 1, got 0"):
        build_scheduler(opt, "warmuplr", {"warmup_steps": 0})
    with pytest.raises(ValueError, match="warmup_steps must be an integer >= 0, got 2.5"):
        build_scheduler(opt, "warmup_constant", {"warmup_steps": 2.5})
    with pytest.raises(ValueError, match="total_steps must be an integer >= 11, got 10"):
        build_scheduler(opt, "warmup_cosine", {"warmup_steps": 10, "total_steps": 10})
    with pytest.raises(ValueError, match="min_lr_ratio must be in"):
        build_scheduler(opt, "warmup_cosine", {"warmup_steps": 1, "total_steps": 10, "min_lr_ratio": 1.5})
