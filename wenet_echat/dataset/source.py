"""Where samples come from: ``data.list`` lines or shard tars, split across ranks and DataLoader workers.

The split is deterministic and exact: with ``R`` ranks and ``W`` workers per rank, list entry ``i`` (after the
optional epoch shuffle, which is identical on every rank) goes to the reader ``(rank, worker)`` with
``rank * W + worker == i % (R * W)``. Over one epoch every entry is read by exactly one reader. Counts may differ
by one between readers; evening them out (padding or ``join``) is the training engine's business.
"""

from __future__ import annotations

import io
import os
import random
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

# member-name suffixes in a shard, longest first so "x.response.wav" is not taken for "x.response" + ".wav"
SHARD_SUFFIXES = (".response.wav", ".json", ".wav")


@dataclass(frozen=True)
class ReaderInfo:
    """Which slice of the list this reader owns."""

    rank: int = 0
    world_size: int = 1
    worker_id: int = 0
    num_workers: int = 1

    @property
    def index(self) -> int:
        return self.rank * self.num_workers + self.worker_id

    @property
    def total(self) -> int:
        return self.world_size * self.num_workers


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): explicit values win, then an initialised process group, then RANK/WORLD_SIZE."""
    if rank is None or world_size is None:
        if dist.is_available() and dist.is_initialized():
            r, w = dist.get_rank(), dist.get_world_size()
        else:
            r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad distributed setting rank={rank} world_size={world_size}")
    return rank, world_size


def reader_info(rank: int | None = None, world_size: int | None = None) -> ReaderInfo:
    """The reader slot of the calling process/DataLoader worker."""
    rank, world_size = dist_info(rank, world_size)
    worker = torch.utils.data.get_worker_info()
    if worker is None:
        return ReaderInfo(rank, world_size, 0, 1)
    return ReaderInfo(rank, world_size, worker.id, worker.num_workers)


def split_indices(n: int, info: ReaderInfo, shuffle: bool = False, seed: int = 0, epoch: int = 0) -> list[int]:
    """Indices of the ``n`` list entries this reader owns, in reading order."""
    order = list(range(n))
    if shuffle:
        random.Random(seed * 100003 + epoch).shuffle(order)
    return order[info.index :: info.total]


def read_list(path: str | os.PathLike) -> list[tuple[int, bytes]]:
    """Non-blank lines of a list file as ``(line number, raw bytes)``; decoding happens per sample later."""
    out = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                out.append((lineno, line))
    return out


def split_member(name: str) -> tuple[str, str] | None:
    """``"dir/utt1.response.wav"`` -> ``("utt1", "response.wav")``; None for names that are not shard members."""
    base = name.rsplit("/", 1)[-1]
    for suf in SHARD_SUFFIXES:
        if base.endswith(suf) and len(base) > len(suf):
            return base[: -len(suf)], suf[1:]
    return None


def iter_shard(tar_path: str) -> Iterator[dict[str, Any]]:
    """Stream one shard tar, yielding one group per utterance: ``{"key", "src", "json", "wav", "response.wav"}``.

    Members of an utterance are consecutive (``make_shard_list`` writes them so). Raises ``tarfile.TarError`` /
    ``OSError`` on a corrupt or missing tar; the caller decides whether that is fatal.
    """
    group: dict[str, Any] | None = None
    with tarfile.open(tar_path, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            parsed = split_member(member.name)
            if parsed is None:
                continue
            key, kind = parsed
            f = tar.extractfile(member)
            data = f.read() if f is not None else b""
            if group is not None and group["key"] != key:
                yield group
                group = None
            if group is None:
                group = {"key": key, "src": f"{tar_path}:{key}"}
            group[kind] = data
    if group is not None:
        yield group


class ListSource:
    """Iterable over the raw samples of one list, restricted to this reader's slice.

    ``data_type="raw"``: yields ``{"src": "list:line", "line": bytes}``.
    ``data_type="shard"``: the list holds tar paths; tars are split across readers and each yields
    ``{"src": "tar:key", "key", "json": bytes, "wav": bytes, ["response.wav": bytes]}`` groups; an unreadable tar
    yields ``{"src": tar, "error": message}`` once so the pipeline can count it.
    """

    def __init__(self, list_path: str, data_type: str = "raw", shuffle: bool = False, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None):
        if data_type not in ("raw", "shard"):
            raise ValueError(f"data_type must be 'raw' or 'shard', got {data_type!r}")
        self.list_path = str(list_path)
        self.data_type = data_type
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size = rank, world_size
        self.lines = read_list(self.list_path)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lines)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = reader_info(self.rank, self.world_size)
        for i in split_indices(len(self.lines), info, self.shuffle, self.seed, self.epoch):
            lineno, line = self.lines[i]
            if self.data_type == "raw":
                yield {"src": f"{self.list_path}:{lineno}", "line": line}
                continue
            tar_path = line.decode("utf-8", errors="replace").strip()
            try:
                yield from iter_shard(tar_path)
            except (OSError, tarfile.TarError, EOFError) as e:
                yield {"src": f"{self.list_path}:{lineno}", "key": tar_path, "error": f"bad shard {tar_path}: {e}"}


def wav_bytes_io(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)
