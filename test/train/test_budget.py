import pytest

from wenet_echat.train.budget import budget_lr, check_budget_lr_conf, planned_progress
from wenet_echat.train.scheduler import cosine_decay


def test_cosine_decay_ends():
    assert cosine_decay(0.0, 0.1) == pytest.approx(1.0)
    assert cosine_decay(0.5, 0.1) == pytest.approx(0.55)
    assert cosine_decay(1.0, 0.1) == cosine_decay(3.0, 0.1) == pytest.approx(0.1)
    assert cosine_decay(-1.0, 0.1) == pytest.approx(1.0)


def test_budget_lr_warms_up_then_follows_the_plan():
    conf = {"warmup_steps": 10, "lr_decay": "cosine", "min_lr_ratio": 0.1}
    assert budget_lr(1.0, 4, conf, 0.0) == pytest.approx(0.5)  # warmup
    assert budget_lr(1.0, 50, conf, 0.0) == pytest.approx(1.0)
    assert budget_lr(1.0, 50, conf, 0.5) == pytest.approx(0.55)
    assert budget_lr(1.0, 50, conf, 1.0) == pytest.approx(0.1)
    assert budget_lr(2.0, 50, {**conf, "lr_decay": "none"}, 1.0) == pytest.approx(2.0)


def test_planned_progress_counts_earlier_runs_and_steps():
    assert planned_progress(2.0, None, 0, 0.0, 60.0) == pytest.approx(0.5)
    assert planned_progress(2.0, None, 0, 120.0, 60.0) == pytest.approx(0.75)  # resumed: before + this run
    assert planned_progress(2.0, 10, 9, 0.0, 1.0) == pytest.approx(0.9)  # the steps are further along
    assert planned_progress(None, 10, 5, 0.0, 999.0) == pytest.approx(0.5)
    assert planned_progress(1.0, None, 0, 0.0, 120.0) == 1.0


def test_budget_conf_errors_name_the_section():
    with pytest.raises(ValueError, match="train.flow.lr_decay must be one of none, cosine, got 'step'"):
        check_budget_lr_conf({"lr_decay": "step", "min_lr_ratio": 0.1}, "train.flow")
    with pytest.raises(ValueError, match=r"pretrain_conf.min_lr_ratio must be in \[0, 1\], got 1.5"):
        check_budget_lr_conf({"lr_decay": "cosine", "min_lr_ratio": 1.5}, "pretrain_conf")
