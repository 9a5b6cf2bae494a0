"""Shard writing (docs/data.md §3): tar files of ``<key>.json`` + ``<key>.wav`` [+ ``<key>.response.wav``].

Audio is stored as 16-bit PCM WAV at its original sample rate and channel count (the reader resamples/downmixes,
exactly as for raw input). Each tar is written to a temporary name, re-opened and checked member by member, then
renamed into place; any problem raises :class:`ShardError` naming the list file:line and key.
Reading lives in :func:`wenet_echat.dataset.source.iter_shard`.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from wenet_echat.dataset.schema import check_record
from wenet_echat.dataset.source import read_list, split_member
from wenet_echat.utils.fileio import JsonlError, atomic_path, parse_jsonl_line


class ShardError(RuntimeError):
    """Shard creation failed; the message lists every problem with its location."""


def _is_pcm16_wav_file(spec: str) -> bool:
    if not os.path.isfile(spec):
        return False
    try:
        info = sf.info(spec)
    except (sf.LibsndfileError, RuntimeError):
        return False
    return info.format == "WAV" and info.subtype == "PCM_16"


def _to_2d(wav: np.ndarray) -> np.ndarray:
    """(T,) or (T, C) float/int audio as (T, C)."""
    wav = np.asarray(wav)
    return wav[:, None] if wav.ndim == 1 else wav


def encode_pcm16(spec: str) -> bytes:
    """The audio of ``spec`` (path or kaldiio ``ark:offset``) as 16-bit PCM WAV bytes, channels and rate kept.

    A file that already is 16-bit PCM WAV is copied byte for byte.
    """
    if _is_pcm16_wav_file(spec):
        with open(spec, "rb") as f:
            return f.read()
    if os.path.isfile(spec):
        wav, sr = sf.read(spec, dtype="float32", always_2d=True)
    else:
        from wenet_echat.audio.io import load_audio

        mono, sr = load_audio(spec, target_sr=None, mono=True)
        wav = _to_2d(mono)
    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1.0, 1.0), sr, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_shard(tar_path: str | os.PathLike, items: Sequence[tuple[dict[str, Any], str]]) -> int:
    """Write one shard from ``(record, "list:line")`` items atomically and verify it; returns utterances."""
    expected: list[str] = []
    mtime = time.time()
    with atomic_path(tar_path) as tmp:
        with tarfile.open(tmp, "w") as tar:
            for rec, where in items:
                key = rec["key"]
                try:
                    meta = {k: v for k, v in rec.items() if k not in ("wav", "response_wav")}
                    members = [(f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))]
                    if rec.get("wav"):
                        members.append((f"{key}.wav", encode_pcm16(rec["wav"])))
                    if rec.get("response_wav"):
                        members.append((f"{key}.response.wav", encode_pcm16(rec["response_wav"])))
                except Exception as e:
                    raise ShardError(f"{where}: {key}: cannot read audio: {e}") from e
                for name, data in members:
                    _add(tar, name, data, mtime)
                    expected.append(name)
        with tarfile.open(tmp, "r") as tar:
            names = [m.name for m in tar.getmembers()]
        if names != expected:
            raise ShardError(f"{tar_path}: verification failed: wrote {len(expected)} members, read {len(names)}")
    return len(items)


def load_list_records(list_path: str) -> list[tuple[dict[str, Any], str]]:
    """Parse and check every line of a data.list; raises :class:`ShardError` listing all bad lines."""
    items: list[tuple[dict[str, Any], str]] = []
    errors: list[str] = []
    seen: dict[str, str] = {}
    for lineno, line in read_list(list_path):
        where = f"{list_path}:{lineno}"
        try:
            rec = parse_jsonl_line(line, list_path, lineno)
        except JsonlError as e:
            errors.append(str(e))
            continue
        problems = check_record(rec)
        if problems:
            errors.append(f"{where}: {rec.get('key')}: {'; '.join(problems)}")
            continue
        if rec["key"] in seen:
            errors.append(f"{where}: {rec['key']}: duplicate key (first at {seen[rec['key']]})")
            continue
        seen[rec["key"]] = where
        items.append((rec, where))
    if errors:
        raise ShardError(f"{len(errors)} bad line(s) in {list_path}:\n" + "\n".join(errors))
    return items


def make_shards(list_path: str, shards_dir: str | os.PathLike, num_utts_per_shard: int = 1000, nj: int = 1,
                prefix: str = "shards") -> list[str]:
    """Pack a data.list into ``shards_dir/<prefix>_NNNNNN.tar``; returns the tar paths in list order."""
    if num_utts_per_shard < 1:
        raise ValueError(f"num_utts_per_shard must be >= 1, got {num_utts_per_shard}")
    items = load_list_records(list_path)
    out = Path(shards_dir)
    out.mkdir(parents=True, exist_ok=True)
    chunks = [items[i : i + num_utts_per_shard] for i in range(0, len(items), num_utts_per_shard)]
    paths = [str(out / f"{prefix}_{i:06d}.tar") for i in range(len(chunks))]
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, nj)) as pool:
        futures = [pool.submit(write_shard, p, c) for p, c in zip(paths, chunks, strict=True)]
        for fut in futures:
            try:
                fut.result()
            except ShardError as e:
                errors.append(str(e))
    if errors:
        raise ShardError("\n".join(errors))
    return paths


def shard_keys(tar_path: str) -> list[str]:
    """Keys of the utterances in one shard, in order (from the ``.json`` members)."""
    with tarfile.open(tar_path, "r") as tar:
        return [k for k, kind in filter(None, (split_member(m.name) for m in tar.getmembers())) if kind == "json"]
