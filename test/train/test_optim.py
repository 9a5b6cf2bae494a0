"""Freezing, parameter groups and optimizer construction."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from wenet_echat.train.optim import (
    OPTIMIZERS,
    apply_freeze,
    build_optimizer,
    frozen_children,
    param_groups,
    trainable_summary,
)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))  # 15 + 6 elements
        self.encoder2 = nn.Linear(3, 2)  # 8
        self.embed = nn.Embedding(5, 3)  # 15
        self.llm = nn.Linear(3, 3, bias=False)  # 9
        self.scale = nn.Parameter(torch.ones(1))  # 1


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_freeze_matches_at_dot_boundary_and_counts_elements():
    model = Toy()
    assert apply_freeze(model, ["encoder", "llm."]) == {"encoder": 21, "llm": 9}
    frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad)
    assert frozen == ["encoder.0.bias", "encoder.0.weight", "encoder.1.bias", "encoder.1.weight", "llm.weight"]
    assert apply_freeze(Toy(), ["encoder.1"]) == {"encoder.1": 6}


def test_frozen_children_are_the_wholly_frozen_top_modules():
    model = Toy()
    assert frozen_children(model) == []
    apply_freeze(model, ["encoder.0", "llm"])
    assert frozen_children(model) == ["llm"]  # encoder.1 still trains
    apply_freeze(model, ["encoder"])
    assert frozen_children(model) == ["encoder", "llm"]


def test_freeze_unknown_prefix_names_it_and_lists_modules_and_changes_nothing():
    model = Toy()
    with pytest.raises(ValueError, match=re.escape("freeze: prefix 'decoder' matches no parameter; "
                                                   "top-level modules: encoder, encoder2, embed, llm, scale")):
        apply_freeze(model, ["encoder", "decoder"])
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="matches no parameter"):
        apply_freeze(model, ["enc"])  # not a dot-boundary prefix of "encoder"
    with pytest.raises(ValueError, match="empty or non-string prefix"):
        apply_freeze(model, [""])


def test_trainable_summary_counts():
    model = Toy()
    apply_freeze(model, ["encoder"])
    rows = {line.split()[0]: line.split()[1:] for line in trainable_summary(model).splitlines()[1:]}
    assert rows["encoder"] == ["21", "0"]
    assert rows["encoder2"] == ["8", "8"]
    assert rows["scale"] == ["1", "1"]
    assert rows["total"] == ["54", "33"]


def test_param_groups_split_by_prefix_and_dimension():
    model = Toy()
    apply_freeze(model, ["encoder2"])
    groups = param_groups(model, lr=1e-3, weight_decay=0.05, lr_groups={"encoder.1": 1e-5, "encoder": 1e-4})
    by_name = {g["name"]: g for g in groups}
    assert list(by_name) == ["encoder.1/no_decay", "encoder/decay", "encoder/no_decay", "default/decay",
                             "default/no_decay"]
    assert _ids(by_name["encoder.1/no_decay"]["params"]) == _ids(model.encoder[1].parameters())  # first match wins
    assert _ids(by_name["encoder/decay"]["params"]) == {id(model.encoder[0].weight)}
    assert _ids(by_name["encoder/no_decay"]["params"]) == {id(model.encoder[0].bias)}
    assert _ids(by_name["default/decay"]["params"]) == {id(model.embed.weight), id(model.llm.weight)}
    assert _ids(by_name["default/no_decay"]["params"]) == {id(model.scale)}
    assert [g["lr"] for g in groups] == [1e-5, 1e-4, 1e-4, 1e-3, 1e-3]
    assert [g["weight_decay"] for g in groups] == [0.0, 0.05, 0.0, 0.05, 0.0]
    everything = [id(p) for g in groups for p in g["params"]]
    assert len(everything) == len(set(everything)) == sum(1 for p in model.parameters() if p.requires_grad)


def test_param_groups_errors():
    model = Toy()
    apply_freeze(model, ["llm"])
    with pytest.raises(ValueError, match="lr_groups: prefix 'llm' matches no trainable parameter"):
        param_groups(model, 1e-3, 0.0, {"llm": 1e-4})
    with pytest.raises(ValueError, match="lr_groups: prefix 'enc' matches no trainable"):
        param_groups(model, 1e-3, 0.0, {"enc": 1e-4})
    apply_freeze(model, ["encoder", "encoder2", "embed", "scale"])
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(model, 1e-3, 0.0)


def test_build_adamw_paper_defaults_and_overrides():
    opt = build_optimizer(Toy(), "adamw", {"lr": 2e-4})
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.99) and opt.defaults["eps"] == 1e-6
    assert {g["name"]: g["weight_decay"] for g in opt.param_groups} == {"default/decay": 0.01,
                                                                        "default/no_decay": 0.0}
    opt = build_optimizer(Toy(), "adamw", {"lr": 2e-4, "betas": [0.8, 0.9], "weight_decay": 0.1}, {"llm": 1e-5})
    assert opt.defaults["betas"] == (0.8, 0.9)
    assert {g["name"]: (g["lr"], g["weight_decay"]) for g in opt.param_groups} == {
        "llm/decay": (1e-5, 0.1), "default/decay": (2e-4, 0.1), "default/no_decay": (2e-4, 0.0)}


def test_build_adam_and_sgd():
    assert OPTIMIZERS.names() == ["adam", "adamw", "sgd"]
    adam = build_optimizer(Toy(), "adam", {"lr": 1e-3})
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["weight_decay"] == 0.0
    sgd = build_optimizer(Toy(), "sgd", {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4})
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.9
    assert [g["weight_decay"] for g in sgd.param_groups] == [1e-4, 0.0]


def test_groups_act_as_configured_in_a_step():
    torch.manual_seed(0)
    model = Toy()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, "adamw", {"lr": 0.1, "weight_decay": 0.5}, lr_groups={"encoder2": 0.0})
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no gradient signal: only weight decay can move a parameter
    opt.step()
    after = dict(model.named_parameters())
    assert torch.equal(after["encoder2.weight"], before["encoder2.weight"])  # lr 0
    assert torch.equal(after["scale"], before["scale"])  # 1-D: no decay
    assert torch.equal(after["encoder.0.bias"], before["encoder.0.bias"])
    assert torch.allclose(after["llm.weight"], before["llm.weight"] * (1 - 0.1 * 0.5))  # decoupled decay


def test_build_optimizer_errors():
    with pytest.raises(KeyError, match="unknown optimizer 'lamb'; known: adam, adamw, sgd"):
        build_optimizer(Toy(), "lamb", {"lr": 1.0})
    with pytest.raises(ValueError, match="optim_conf for 'adamw' needs 'lr'"):
        build_optimizer(Toy(), "adamw", {"betas": [0.9, 0.99]})
    with pytest.raises(TypeError, match="bad config for optimizer 'adamw'.*momentum"):
        build_optimizer(Toy(), "adamw", {"lr": 1.0, "momentum": 0.9})
