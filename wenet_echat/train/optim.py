"""Freezing, parameter groups and optimizers, named in YAML (``optim: adamw`` + ``optim_conf: {...}``).

Parameters are selected by *name prefix at a dot boundary*: ``encoder`` selects ``encoder`` and ``encoder.x.weight``
but not ``encoder2.weight``. A prefix that selects nothing is always an error, because a typo there would silently
train (or freeze) the wrong modules.

:func:`param_groups` splits the trainable parameters into one group per learning-rate prefix (``lr_groups``, first
match wins, the rest use the base ``lr``) and, inside each, into a decayed part (matrices, ``ndim >= 2``) and a
non-decayed part (biases, norm scales and other ``ndim < 2`` tensors). Every group carries a ``name`` such as
``encoder/decay`` for logging. Group order is deterministic, which optimizer state dicts rely on when resuming.

:func:`build_optimizer` combines both with a registered optimizer. The defaults of ``adamw`` follow the OSUM-EChat
paper: ``betas=(0.9, 0.99)``, ``eps=1e-6``, ``weight_decay=0.01``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from wenet_echat.utils.registry import Registry

OPTIMIZERS: Registry[torch.optim.Optimizer] = Registry("optimizer")

DEFAULT_GROUP = "default"


def name_matches(name: str, prefix: str) -> bool:
    """True when ``name`` lies under ``prefix``: ``"a.b"`` matches ``"a.b"`` and ``"a.b.c"``, not ``"a.bc"``."""
    return name == prefix or name.startswith(prefix + ".")


def _clean_prefixes(prefixes: Iterable[str], what: str) -> list[str]:
    out = []
    for prefix in prefixes:
        if not isinstance(prefix, str) or not prefix.strip(". "):
            raise ValueError(f"{what}: empty or non-string prefix {prefix!r}")
        out.append(prefix.strip(". "))
    return out


def top_level_names(model: nn.Module) -> list[str]:
    """Names of the model's direct children and of parameters registered directly on it."""
    names = [name for name, _ in model.named_children()]
    names += [name for name, _ in model.named_parameters(recurse=False)]
    return names


def _no_match_error(what: str, prefix: str, model: nn.Module, kind: str = "parameter") -> ValueError:
    known = ", ".join(top_level_names(model)) or "(none)"
    return ValueError(f"{what}: prefix '{prefix}' matches no {kind}; top-level modules: {known}")


def apply_freeze(model: nn.Module, prefixes: Sequence[str]) -> dict[str, int]:
    """Set ``requires_grad=False`` on every parameter under one of ``prefixes``.

    Returns ``{prefix: number of parameter elements frozen by it}``. All prefixes are checked before anything is
    changed, so an error leaves the model untouched.
    """
    prefixes = _clean_prefixes(prefixes, "freeze")
    named = list(model.named_parameters())
    selected: dict[str, list[nn.Parameter]] = {}
    for prefix in prefixes:
        selected[prefix] = [p for name, p in named if name_matches(name, prefix)]
        if not selected[prefix]:
            raise _no_match_error("freeze", prefix, model)
    for params in selected.values():
        for p in params:
            p.requires_grad_(False)
    return {prefix: sum(p.numel() for p in params) for prefix, params in selected.items()}


def frozen_children(model: nn.Module) -> list[str]:
    """Names of the top-level submodules that have parameters and none of them trainable (the trainer keeps these
    in eval mode: a frozen encoder computes the same output for the same input, with no dropout)."""
    names = []
    for name, child in model.named_children():
        params = list(child.parameters())
        if params and not any(p.requires_grad for p in params):
            names.append(name)
    return names


def trainable_summary(model: nn.Module) -> str:
    """A table of total and trainable parameter counts per top-level module, plus the model total."""
    rows: dict[str, list[int]] = {}
    for name, p in model.named_parameters():
        counts = rows.setdefault(name.split(".", 1)[0], [0, 0])
        counts[0] += p.numel()
        counts[1] += p.numel() if p.requires_grad else 0
    total = [sum(c[0] for c in rows.values()), sum(c[1] for c in rows.values())]
    width = max([len(k) for k in rows] + [5])
    lines = [f"{'module':<{width}} {'total':>14} {'trainable':>14}"]
    for key, (n_all, n_train) in list(rows.items()) + [("total", total)]:
        lines.append(f"{key:<{width}} {n_all:>14,} {n_train:>14,}")
    return "\n".join(lines)


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 lr_groups: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Optimizer param groups of the trainable parameters (see the module docstring for the rules)."""
    lr_groups = dict(lr_groups or {})
    prefixes = _clean_prefixes(lr_groups, "lr_groups")
    rates = {clean: float(lr_groups[raw]) for clean, raw in zip(prefixes, lr_groups)}
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {
        (key, decay): [] for key in [*prefixes, DEFAULT_GROUP] for decay in (True, False)
    }
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = next((prefix for prefix in prefixes if name_matches(name, prefix)), DEFAULT_GROUP)
        buckets[(key, p.ndim >= 2)].append(p)
    for prefix in prefixes:
        if not buckets[(prefix, True)] and not buckets[(prefix, False)]:
            raise _no_match_error("lr_groups", prefix, model, "trainable parameter (frozen or misspelt?)")
    groups = [
        {"name": f"{key}/{'decay' if decay else 'no_decay'}", "params": params,
         "lr": rates.get(key, float(lr)), "weight_decay": float(weight_decay) if decay else 0.0}
        for (key, decay), params in buckets.items() if params
    ]
    if not groups:
        raise ValueError("param_groups: the model has no trainable parameters (everything is frozen)")
    return groups


@OPTIMIZERS.register("adamw")
def _adamw(params: list[dict[str, Any]], lr: float, betas: Sequence[float] = (0.9, 0.99), eps: float = 1e-6,
           weight_decay: float = 0.01, **kwargs: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **kwargs)


@OPTIMIZERS.register("adam")
def _adam(params: list[dict[str, Any]], lr: float, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.0, **kwargs: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **kwargs)


@OPTIMIZERS.register("sgd")
def _sgd(params: list[dict[str, Any]], lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
         **kwargs: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **kwargs)


def _default_weight_decay(name: str) -> float:
    return inspect.signature(OPTIMIZERS.get(name)).parameters["weight_decay"].default


def build_optimizer(model: nn.Module, name: str, conf: dict[str, Any],
                    lr_groups: dict[str, float] | None = None) -> torch.optim.Optimizer:
    """Build optimizer ``name`` over :func:`param_groups` of ``model``.

    ``conf`` (``optim_conf`` in YAML) must hold ``lr``; ``weight_decay`` defaults to the optimizer's default
    (AdamW: 0.01) and applies to the decayed groups only. Remaining keys go to the torch optimizer, e.g. AdamW
    ``betas`` (default ``(0.9, 0.99)``) and ``eps`` (default ``1e-6``). ``lr_groups`` maps name prefixes to
    their own learning rates.
    """
    conf = dict(conf or {})
    if "lr" not in conf:
        raise ValueError(f"optim_conf for '{name}' needs 'lr'; got keys {sorted(conf)}")
    weight_decay = conf.get("weight_decay", _default_weight_decay(name))
    groups = param_groups(model, conf["lr"], weight_decay, lr_groups)
    return OPTIMIZERS.build(name, conf, params=groups)
