"""Checkpoints: layout, bit-exact resume, atomic replacement, weight initialisation, retention, error messages."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

import wenet_echat.train.checkpoint as ckpt
from wenet_echat.train.checkpoint import (
    keep_last,
    latest_checkpoint,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
)
from wenet_echat.train.optim import build_optimizer
from wenet_echat.train.scheduler import build_scheduler


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2))  # dropout draws from the torch RNG
        self.head = nn.Linear(8, 2)
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        return self.head(torch.relu(self.encoder(x)))


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _build():
    model = Net()
    opt = build_optimizer(model, "adamw", {"lr": 1e-2}, lr_groups={"head": 3e-3})
    return model, opt, build_scheduler(opt, "warmuplr", {"warmup_steps": 4})


def _train(model, opt, sched, steps: int) -> None:
    for _ in range(steps):  # data from all three generators, like a shuffling/augmenting data pipeline
        x = torch.randn(3, 4) + torch.from_numpy(np.random.randn(3, 4)).float() * random.random()
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        model.count += 1


def _files(path):
    return sorted(p.name for p in path.iterdir())


def test_exact_resume_matches_uninterrupted_run(tmp_path):
    _seed_all(7)
    ref_model, ref_opt, ref_sched = _build()
    _train(ref_model, ref_opt, ref_sched, 10)

    _seed_all(7)
    model, opt, sched = _build()
    _train(model, opt, sched, 5)
    save_checkpoint(tmp_path, "step_5", model, opt, sched, step=5, epoch=1, data_state={"shard": 3, "offset": 17},
                    extra={"best_cv": 1.5, "history": [1.0, torch.tensor(2.0)]}, info={"cv_loss": 1.25})

    _seed_all(999)  # a new process: different initial weights and generator states
    model, opt, sched = _build()
    state = load_checkpoint(tmp_path, model, opt, sched)
    assert state["path"] == tmp_path / "step_5"
    assert (state["step"], state["epoch"], state["data_state"]) == (5, 1, {"shard": 3, "offset": 17})
    assert state["extra"]["best_cv"] == 1.5 and torch.equal(state["extra"]["history"][1], torch.tensor(2.0))
    assert state["info"]["cv_loss"] == 1.25
    _train(model, opt, sched, 5)

    for (name, p), (ref_name, ref_p) in zip(model.state_dict().items(), ref_model.state_dict().items()):
        assert name == ref_name and torch.equal(p, ref_p), name
    assert sched.get_last_lr() == ref_sched.get_last_lr()
    got, ref = opt.state_dict(), ref_opt.state_dict()
    assert got["param_groups"] == ref["param_groups"]
    for idx, ref_state in ref["state"].items():
        for key, value in ref_state.items():
            assert torch.equal(got["state"][idx][key], value), (idx, key)


def test_layout_and_contents(tmp_path):
    model, opt, sched = _build()
    out = save_checkpoint(tmp_path / "exp", "epoch_3", model, opt, sched, step=40, epoch=3,
                          info={"cv_loss": torch.tensor(0.5), "lr": np.float32(0.25), "step": 999})
    assert out == tmp_path / "exp" / "epoch_3"
    assert _files(tmp_path / "exp") == ["epoch_3", "latest"]
    assert _files(out) == ["info.yaml", "model.pt", "train_state.pt"]
    assert (tmp_path / "exp" / "latest").read_text() == "epoch_3\n"
    weights = torch.load(out / "model.pt", weights_only=True)
    assert list(weights) == list(model.state_dict())
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    info = yaml.safe_load((out / "info.yaml").read_text())
    assert {k: info[k] for k in ("tag", "step", "epoch", "cv_loss", "lr")} == {
        "tag": "epoch_3", "step": 40, "epoch": 3, "cv_loss": 0.5, "lr": 0.25}
    assert "time" in info
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert set(state) >= {"optimizer", "scheduler", "step", "epoch", "data_state", "rng", "extra"}
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert latest_checkpoint(tmp_path / "exp") == out
    assert latest_checkpoint(tmp_path) is None


def test_half_precision_and_wrapped_models_are_saved_bare_in_fp32(tmp_path):
    model = Net().to(torch.bfloat16)
    save_checkpoint(tmp_path, "a", torch.compile(model))
    weights = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    assert list(weights) == list(Net().state_dict())  # no "_orig_mod." prefix
    assert weights["head.weight"].dtype == torch.float32 and weights["count"].dtype == torch.long
    assert torch.equal(weights["head.weight"], model.head.weight.float())


def test_failed_save_leaves_previous_checkpoint_and_latest(tmp_path, monkeypatch):
    model, opt, sched = _build()
    save_checkpoint(tmp_path, "step_1", model, opt, sched, step=1)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    real_save = ckpt._save_torch

    def crash_on_train_state(obj, path):
        real_save(obj, path)
        if path.name == "train_state.pt":
            raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_save_torch", crash_on_train_state)
    with torch.no_grad():
        model.head.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, "step_2", model, opt, sched, step=2)
    assert _files(tmp_path) == ["latest", "step_1"]  # no step_2, no temporary directory
    assert (tmp_path / "latest").read_text() == "step_1\n"
    fresh, fresh_opt, _ = _build()
    assert load_checkpoint(tmp_path, fresh, fresh_opt)["step"] == 1
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in saved.items())


def test_replacing_a_tag_is_atomic(tmp_path, monkeypatch):
    model, _, _ = _build()
    save_checkpoint(tmp_path, "final", model, step=1)
    first = model.head.weight.detach().clone()
    with torch.no_grad():
        model.head.weight.mul_(-1)

    real_rename = os.rename

    def fail_moving_new_in(src, dst):
        if os.path.basename(src).endswith(".tmp"):
            raise OSError("rename failed")
        real_rename(src, dst)

    monkeypatch.setattr(ckpt.os, "rename", fail_moving_new_in)
    with pytest.raises(OSError, match="rename failed"):
        save_checkpoint(tmp_path, "final", model, step=2)
    monkeypatch.undo()
    assert _files(tmp_path) == ["final", "latest"]  # the old copy is back in place, nothing left over
    probe = Net()
    assert load_model_weights(tmp_path / "final", probe)["loaded"] == 5
    assert torch.equal(probe.head.weight, first)

    save_checkpoint(tmp_path, "final", model, step=2)
    assert _files(tmp_path) == ["final", "latest"]
    load_model_weights(tmp_path / "final", probe)
    assert torch.equal(probe.head.weight, -first)
    assert yaml.safe_load((tmp_path / "final" / "info.yaml").read_text())["step"] == 2


def test_load_checkpoint_errors(tmp_path):
    model, opt, sched = _build()
    with pytest.raises(FileNotFoundError, match="neither a checkpoint directory"):
        load_checkpoint(tmp_path, model)
    save_checkpoint(tmp_path, "step_3", model)
    with pytest.raises(ValueError, match=r"train_state.pt: no optimizer state was saved"):
        load_checkpoint(tmp_path, model, opt)
    with pytest.raises(ValueError, match="no scheduler state was saved"):
        load_checkpoint(tmp_path / "step_3", model, scheduler=sched)
    with pytest.raises(RuntimeError, match="Unexpected key.*head.weight"):
        load_checkpoint(tmp_path, nn.Sequential())
    (tmp_path / "latest").write_text("step_9\n")
    with pytest.raises(FileNotFoundError, match="names 'step_9' but .*step_9 is not a complete checkpoint"):
        load_checkpoint(tmp_path, model)
    (tmp_path / "step_3" / "train_state.pt").unlink()
    with pytest.raises(FileNotFoundError, match="holds weights only"):
        load_checkpoint(tmp_path / "step_3", model)


def test_save_checkpoint_rejects_bad_tags_and_unloadable_state(tmp_path):
    model = Net()
    for tag in ["", "a/b", ".hidden", "latest"]:
        with pytest.raises(ValueError, match="invalid checkpoint tag"):
            save_checkpoint(tmp_path, tag, model)
    with pytest.raises(TypeError, match=r"extra\['sampler'\]\[1\]: object cannot be stored"):
        save_checkpoint(tmp_path, "x", model, extra={"sampler": [1, object()]})
    with pytest.raises(TypeError, match="data_state: key"):
        save_checkpoint(tmp_path, "x", model, data_state={(1, 2): 3})
    assert not tmp_path.exists() or _files(tmp_path) == []


class Bigger(Net):
    def __init__(self):
        super().__init__()
        self.adapter = nn.Linear(2, 2)


def test_load_model_weights_sources_prefixes_and_reports(tmp_path):
    src = Net()
    save_checkpoint(tmp_path / "exp", "step_1", src)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "w.safetensors")
    for path in (tmp_path / "exp" / "step_1", tmp_path / "exp" / "step_1" / "model.pt", tmp_path / "w.safetensors"):
        dst = Bigger()
        report = load_model_weights(path, dst)
        assert report == {"loaded": 5, "missing": ["adapter.weight", "adapter.bias"], "unexpected": []}
        assert torch.equal(dst.head.weight, src.head.weight)

    dst = Bigger()
    before = dst.head.weight.detach().clone()
    report = load_model_weights(tmp_path / "w.safetensors", dst, prefixes=["encoder"])
    assert report == {"loaded": 2, "missing": [], "unexpected": []}
    assert torch.equal(dst.encoder[0].weight, src.encoder[0].weight) and torch.equal(dst.head.weight, before)

    report = load_model_weights(tmp_path / "w.safetensors", nn.ModuleDict({"head": nn.Linear(8, 2)}))
    assert report["loaded"] == 2 and sorted(report["unexpected"]) == ["count", "encoder.0.bias", "encoder.0.weight"]


def test_load_model_weights_errors(tmp_path):
    save_file({"head.weight": torch.zeros(3, 8), "head.bias": torch.zeros(2)}, tmp_path / "bad.safetensors")
    mismatch = r"shape mismatch for 1 key\(s\): head.weight: file \(3, 8\) vs model \(2, 8\)"
    with pytest.raises(ValueError, match=mismatch):
        load_model_weights(tmp_path / "bad.safetensors", Net())
    save_file({"decoder.weight": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="none of its 1 keys fits the model"):
        load_model_weights(tmp_path / "other.safetensors", Net())
    with pytest.raises(ValueError, match=r"prefix 'encoder' matches no key; top-level names in the file: \['decoder'"):
        load_model_weights(tmp_path / "other.safetensors", Net(), prefixes=["encoder"])
    save_checkpoint(tmp_path, "s", Net())
    with pytest.raises(ValueError, match="strict load failed; missing: adapter.weight, adapter.bias"):
        load_model_weights(tmp_path / "s", Bigger(), strict=True)
    torch.save({"model": {"a": torch.zeros(1)}}, tmp_path / "nested.pt")
    with pytest.raises(ValueError, match=r"nested.pt: not a flat state dict of tensors \(top level: \['model'\]\)"):
        load_model_weights(tmp_path / "nested.pt", Net())
    with pytest.raises(FileNotFoundError, match="missing.pt: no such file"):
        load_model_weights(tmp_path / "missing.pt", Net())
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="checkpoint directory without model.pt"):
        load_model_weights(tmp_path / "empty", Net())


def test_keep_last(tmp_path):
    model = Net()
    for tag in ["step_100", "step_20", "step_300", "step_4000", "step_50000", "epoch_1", "final"]:
        save_checkpoint(tmp_path, tag, model)
    save_checkpoint(tmp_path, "step_3", model)  # latest: never deleted, though the oldest step
    removed = keep_last(tmp_path, 2, protect={"step_100"})
    assert sorted(p.name for p in removed) == ["step_20", "step_300"]
    assert _files(tmp_path) == ["epoch_1", "final", "latest", "step_100", "step_3", "step_4000", "step_50000"]
    assert keep_last(tmp_path, 2) == [tmp_path / "step_100"]
    assert [p.name for p in keep_last(tmp_path, 0)] == ["step_4000", "step_50000"]
    assert _files(tmp_path) == ["epoch_1", "final", "latest", "step_3"]
    with pytest.raises(ValueError, match="n must be >= 0"):
        keep_last(tmp_path, -1)
