"""File helpers: atomic writes and line-oriented readers with precise error locations."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success.

    A crash or exception inside the block leaves any existing ``path`` untouched and removes the
    temporary file, so readers never see a half-written file. The result gets the permissions of a normally
    created file (``0666 & ~umask``), not ``mkstemp``'s private ``0600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a file for writing that appears at ``path`` only when the block completes."""
    if "b" in mode:
        encoding = None
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Atomically write ``rows`` as JSON lines; returns the number of rows."""
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_kv(path: str | os.PathLike, items: Iterable[tuple[str, str]]) -> None:
    """Atomically write a Kaldi-style ``<key> <value>`` file, sorted by key (C locale order)."""
    with atomic_open(path) as f:
        for key, value in sorted(items, key=lambda kv: kv[0].encode()):
            f.write(f"{key} {value}\n")


def read_kv(path: str | os.PathLike) -> dict[str, str]:
    """Read a Kaldi-style ``<key> <value>`` file. Raises ``ValueError`` naming file:line on bad lines."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            key, _, value = line.partition(" ")
            if key in out:
                raise ValueError(f"{path}:{lineno}: duplicate key '{key}'")
            out[key] = value.strip()
    return out


class JsonlError(ValueError):
    """A data.list line that is not a JSON object; carries the file and line number."""

    def __init__(self, path: str, lineno: int, reason: str):
        super().__init__(f"{path}:{lineno}: {reason}")
        self.path, self.lineno, self.reason = path, lineno, reason


def parse_jsonl_line(line: bytes | str, path: str = "<list>", lineno: int = 0) -> dict:
    """Decode one data.list line into a dict, raising :class:`JsonlError` with a location on failure."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise JsonlError(path, lineno, f"not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise JsonlError(path, lineno, f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise JsonlError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every JSON object of a JSON-lines file (blank lines skipped); errors name the file and line."""
    path = str(path)
    with open(path, "rb") as f:
        return [parse_jsonl_line(line, path, i) for i, line in enumerate(f, 1) if line.strip()]


def write_report(md_path: str | os.PathLike, markdown: str, data: Any) -> None:
    """A Markdown report and its numbers next to it (same path, ``.json``), both written atomically."""
    with atomic_open(md_path) as f:
        f.write(markdown if markdown.endswith("\n") else markdown + "\n")
    with atomic_open(Path(md_path).with_suffix(".json")) as f:
        json.dump(data, f, indent=1)


def load_weights_only(path: str | os.PathLike, error: type[Exception] = ValueError,
                      what: str = "a torch checkpoint", mmap: bool = False) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors and plain containers only, so an
    untrusted file cannot run code. A missing file raises ``FileNotFoundError`` and an unreadable one ``error``,
    both naming the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file ({what} not found)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # pickle/zip errors come in many types
        raise error(f"{path}: cannot read as {what} ({type(e).__name__}: {e})") from None
