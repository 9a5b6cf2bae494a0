"""YAML configs with dotted-key overrides that fail loudly."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Load a YAML mapping and apply ``overrides`` of the form ``"a.b.c value"`` (value parsed as YAML).

    A top-level ``include:`` (a file name or a list of them, relative to the including file) is loaded first and
    deep-merged under this file's keys, so stage configs can share e.g. ``data.yaml`` and ``model.yaml``.
    """
    conf = _load_with_includes(Path(path), ())
    for ov in overrides or []:
        conf = apply_override(conf, ov, source=str(path))
    return conf


def _load_with_includes(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        raise ValueError(f"{path}: include cycle: {' -> '.join(str(p) for p in (*chain, path))}")
    try:
        with open(path, encoding="utf-8") as f:
            conf = yaml.safe_load(f) or {}
    except FileNotFoundError:
        where = f" (included from {chain[-1]})" if chain else ""
        raise FileNotFoundError(f"config {path} not found{where}") from None
    if not isinstance(conf, dict):
        raise ValueError(f"{path}: top level must be a mapping, got {type(conf).__name__}")
    includes = conf.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    merged: dict[str, Any] = {}
    for inc in includes:
        merged = deep_merge(merged, _load_with_includes(path.parent / inc, (*chain, path)))
    return deep_merge(merged, conf)


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``top`` merged in: nested mappings merge, anything else in ``top`` replaces."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(conf: dict[str, Any], override: str, source: str = "config") -> dict[str, Any]:
    """Return a copy of ``conf`` with one ``"dotted.key value"`` (or ``dotted.key=value``) override applied.

    The key must already exist (typos are errors, not silent additions); the value keeps its YAML type.
    """
    text = override.strip()
    eq, space = text.find("="), text.find(" ")
    key, sep, raw = text.partition("=" if eq >= 0 and (space < 0 or eq < space) else " ")
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
