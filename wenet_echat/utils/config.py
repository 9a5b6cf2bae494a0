"""YAML configs with dotted-key overrides that fail loudly."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Load a YAML mapping and apply ``overrides`` of the form ``"a.b.c value"`` (value parsed as YAML)."""
    with open(path, encoding="utf-8") as f:
        conf = yaml.safe_load(f) or {}
    if not isinstance(conf, dict):
        raise ValueError(f"{path}: top level must be a mapping, got {type(conf).__name__}")
    for ov in overrides or []:
        conf = apply_override(conf, ov, source=str(path))
    return conf


def apply_override(conf: dict[str, Any], override: str, source: str = "config") -> dict[str, Any]:
    """Return a copy of ``conf`` with one ``"dotted.key value"`` override applied.

    The key must already exist (typos are errors, not silent additions); the value keeps its YAML type.
    """
    key, sep, raw = override.strip().partition(" ")
    if not sep:
        raise ValueError(f"override '{override}': expected 'dotted.key value'")
    conf = copy.deepcopy(conf)
    node: Any = conf
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"override '{override}': '{'.'.join(parts[: i + 1])}' not in {source}")
        node = node[part]
    if not isinstance(node, dict) or parts[-1] not in node:
        raise KeyError(f"override '{override}': '{key}' not in {source}")
    node[parts[-1]] = _cast_like(node[parts[-1]], yaml.safe_load(raw), override)
    return conf


def _cast_like(old: Any, new: Any, override: str) -> Any:
    """Keep numeric settings numeric: YAML 1.1 reads ``1e-3`` as a string, so cast it back."""
    if isinstance(old, bool) or not isinstance(old, int | float) or not isinstance(new, str):
        return new
    try:
        return type(old)(new) if isinstance(old, float) else int(new)
    except ValueError:
        try:
            return float(new)
        except ValueError:
            raise ValueError(f"override '{override}': expected a number, got {new!r}") from None


def save_config(conf: dict[str, Any], path: str | Path) -> None:
    from wenet_echat.utils.fileio import atomic_open

    with atomic_open(path) as f:
        yaml.safe_dump(conf, f, sort_keys=False, allow_unicode=True)
