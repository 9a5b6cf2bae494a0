#!/usr/bin/env python3
"""Add discrete speech tokens of the reply audio (``response_tokens``) to every record of a data.list.

Usage:
    python -m wenet_echat.bin.extract_speech_tokens --tokenizer data/speech_token/kmeans512.npz \
        --in_list data/train/data.list --out_list data/train/data.tok.list --nj 2 \
        [--tokenizer_conf '{"type": "s3", "path": "speech_tokenizer_v1.onnx", "version": "v1"}'] \
        [--field response_wav] [--out_field response_tokens]

Every record with ``--field`` gets ``--out_field`` (a list of ints in ``[0, codebook_size)``); other records are
copied byte for byte. Each distinct wav is tokenised once (many records share a reply), by ``--nj`` worker
processes that build the tokenizer once each.

Resume: finished wavs are appended (and flushed) to ``<out_list>.cache.jsonl`` as they come in; a rerun reuses every
entry whose wav still has the same size and modification time and whose tokenizer fingerprint (config plus size and
mtime of the files it names) matches the cache header, so an interrupted run only does the rest. The out list is
written atomically at the end, with ``<out_list>.stats.json``: codebook usage over the distinct wavs (perplexity,
entropy, used/unused codes) and a rate check (tokens per second of audio; every wav must give ``duration *
frame_rate`` tokens within one token).

Errors name the list line (``list:line: ...``); bad lines are reported before any work starts, failing wavs after the
others are done (their successful neighbours stay cached). Either way the exit status is 1 and no out list is
written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wenet_echat.dataset.source import read_list
from wenet_echat.speech_token.kmeans import SpeechTokenizer, build_speech_tokenizer, codebook_stats
from wenet_echat.utils.fileio import JsonlError, atomic_open, parse_jsonl_line
from wenet_echat.utils.logging import setup_logging

logger = logging.getLogger("extract_speech_tokens")
RATE_TOLERANCE = 1.0  # tokens
_WORKER: dict[str, Any] = {}  # per-process state: the tokenizer, built once


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tokenizer", help="k-means model (.npz) from train_speech_tokenizer")
    src.add_argument("--tokenizer_conf", help='JSON tokenizer config, e.g. {"type": "kmeans", "path": "m.npz"}')
    p.add_argument("--in_list", required=True)
    p.add_argument("--out_list", required=True)
    p.add_argument("--field", default="response_wav", help="record field holding the audio path")
    p.add_argument("--out_field", default="response_tokens")
    p.add_argument("--nj", type=int, default=1)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------- list reading


@dataclass
class ListScan:
    """A data.list read for one audio field: raw lines, parsed records, and the distinct audio paths."""

    lines: list[tuple[int, bytes]] = field(default_factory=list)
    records: dict[int, dict[str, Any]] = field(default_factory=dict)  # line number -> record having the field
    wav_lines: dict[str, list[int]] = field(default_factory=dict)  # audio path -> lines using it, first-seen order
    errors: list[str] = field(default_factory=list)

    def where(self, path: str, wav: str) -> str:
        """``list:line`` of the first record using ``wav`` (plus how many more use it)."""
        lines = self.wav_lines[wav]
        more = f" (and {len(lines) - 1} more lines)" if len(lines) > 1 else ""
        return f"{path}:{lines[0]}{more}"


def scan_list(path: str, wav_field: str) -> ListScan:
    """Parse every line; a record whose ``wav_field`` is present but not a non-empty string is an error."""
    scan = ListScan()
    for lineno, raw in read_list(path):
        scan.lines.append((lineno, raw))
        try:
            rec = parse_jsonl_line(raw, path, lineno)
        except JsonlError as e:
            scan.errors.append(str(e))
            continue
        if wav_field not in rec or rec[wav_field] is None:
            continue
        wav = rec[wav_field]
        if not isinstance(wav, str) or not wav:
            scan.errors.append(f"{path}:{lineno}: '{wav_field}' must be a non-empty path, got {wav!r}")
            continue
        scan.records[lineno] = rec
        scan.wav_lines.setdefault(wav, []).append(lineno)
    return scan


# ----------------------------------------------------------------------------------------------- parallel map


def parallel_map(func: Callable[[str], Any], items: Iterable[str], nj: int,
                 initializer: Callable[..., None] | None = None,
                 initargs: tuple = ()) -> Iterator[tuple[str, Any, BaseException | None]]:
    """Yield ``(item, result, None)`` or ``(item, None, error)`` for every item, in completion order.

    ``nj > 1`` runs ``func`` in that many spawned processes, each set up once by ``initializer(*initargs)``;
    ``nj <= 1`` (or a single item) runs in this process, which the caller must have set up already.
    """
    items = list(items)
    if nj <= 1 or len(items) <= 1:
        for item in items:
            try:
                yield item, func(item), None
            except Exception as e:  # one bad file must not stop the others
                yield item, None, e
        return
    ctx = mp.get_context("spawn")  # no fork of a process that may hold torch/BLAS threads
    with ProcessPoolExecutor(max_workers=min(nj, len(items)), mp_context=ctx, initializer=initializer,
                             initargs=initargs) as pool:
        futures = {pool.submit(func, item): item for item in items}
        for fut in as_completed(futures):
            err = fut.exception()
            yield futures[fut], (None if err else fut.result()), err


# ----------------------------------------------------------------------------------------------- tokenising


def init_worker(conf: dict[str, Any], threads: int | None = 1) -> SpeechTokenizer:
    """Build this process's tokenizer (once)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    _WORKER["tokenizer"] = build_speech_tokenizer(conf)
    return _WORKER["tokenizer"]


def tokenize_wav(path: str) -> dict[str, Any]:
    """Cache entry of one wav: its tokens, duration and the file stamp the entry is valid for."""
    from wenet_echat.audio.io import load_audio

    tok: SpeechTokenizer = _WORKER["tokenizer"]
    stamp = os.stat(path) if os.path.isfile(path) else None  # taken first: a file replaced later is redone
    wav, sr = load_audio(path, mono=True)  # raises a clear AudioError for missing/undecodable files
    tokens = [int(t) for t in tok.encode(wav, sr)]
    return {"wav": path, "size": stamp and stamp.st_size, "mtime_ns": stamp and stamp.st_mtime_ns,
            "seconds": len(wav) / sr,
            "tokens": tokens}


def tokenizer_conf(args: argparse.Namespace) -> dict[str, Any]:
    if args.tokenizer:
        return {"type": "kmeans", "path": args.tokenizer}
    try:
        conf = json.loads(args.tokenizer_conf)
    except json.JSONDecodeError as e:
        raise ValueError(f"--tokenizer_conf is not valid JSON ({e})") from None
    if not isinstance(conf, dict):
        raise ValueError("--tokenizer_conf must be a JSON object")
    return conf


def fingerprint(conf: dict[str, Any]) -> str:
    """Identity of a tokenizer: its config plus size and mtime of every file or folder the config names."""
    parts: list[Any] = [conf]
    for value in conf.values():
        if isinstance(value, str) and os.path.exists(value):
            st = os.stat(value)
            parts.append([value, st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- cache


def _stamp_matches(entry: dict[str, Any]) -> bool:
    try:
        st = os.stat(entry["wav"])
    except OSError:
        return False
    return st.st_size == entry.get("size") and st.st_mtime_ns == entry.get("mtime_ns")


def load_cache(path: Path, fp: str, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """Reusable entries of ``path`` (same tokenizer fingerprint, wav unchanged, still wanted).

    Unreadable lines (e.g. the last one of a killed run) are skipped with a warning.
    """
    if not path.is_file():
        return {}
    entries: dict[str, dict[str, Any]] = {}
    bad = 0
    with open(path, encoding="utf-8") as f:
        header = f.readline()
        try:
            if json.loads(header).get("fingerprint") != fp:
                logger.info("%s was made with another tokenizer; starting afresh", path)
                return {}
        except (ValueError, AttributeError):
            logger.warning("%s has no valid header; starting afresh", path)
            return {}
        for line in f:
            try:
                entry = json.loads(line)
                wav, tokens = entry["wav"], entry["tokens"]
                if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
                    raise ValueError("tokens must be a list of ints")
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            if wav in wanted and _stamp_matches(entry):
                entries[wav] = entry
    if bad:
        logger.warning("%s: skipped %d unreadable lines", path, bad)
    return entries


def start_cache(path: Path, fp: str, entries: dict[str, dict[str, Any]]) -> None:
    """Rewrite the cache atomically as header + the reusable entries (drops stale and torn lines)."""
    with atomic_open(path) as f:
        f.write(json.dumps({"fingerprint": fp}) + "\n")
        for entry in entries.values():
            f.write(json.dumps(entry) + "\n")


# ----------------------------------------------------------------------------------------------- outputs


def token_stats(entries: Iterable[dict[str, Any]], tok: SpeechTokenizer) -> dict[str, Any]:
    """Codebook usage and the token-rate check over distinct wavs."""
    entries = list(entries)
    seconds = sum(e["seconds"] for e in entries)
    deviations = [len(e["tokens"]) - e["seconds"] * tok.frame_rate for e in entries]
    off = [e["wav"] for e, d in zip(entries, deviations) if abs(d) > RATE_TOLERANCE]
    stats: dict[str, Any] = {"wavs": len(entries), "seconds": round(seconds, 3), "codebook_size": tok.codebook_size,
                             "frame_rate": tok.frame_rate}
    stats.update(codebook_stats((e["tokens"] for e in entries), tok.codebook_size))
    stats.update({
        "tokens_per_second": stats["tokens"] / seconds if seconds else 0.0,
        "max_rate_deviation": max((abs(d) for d in deviations), default=0.0),
        "rate_violations": len(off),
        "rate_ok": not off,
        "rate_violation_examples": off[:5],
    })
    return stats


def write_out_list(path: str, scan: ListScan, tokens_of: dict[str, list[int]], wav_field: str,
                   out_field: str) -> int:
    """Write the out list atomically; returns the number of records that got tokens."""
    n = 0
    with atomic_open(path, "wb") as f:
        for lineno, raw in scan.lines:
            rec = scan.records.get(lineno)
            if rec is None:
                f.write(raw + b"\n")
                continue
            rec = {**rec, out_field: tokens_of[rec[wav_field]]}
            f.write(json.dumps(rec, ensure_ascii=False).encode("utf-8") + b"\n")
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    setup_logging()
    start = time.time()
    scan = scan_list(args.in_list, args.field)
    if scan.errors:
        print("\n".join(scan.errors), file=sys.stderr)
        return 1
    try:
        conf = tokenizer_conf(args)
        tok = init_worker(conf, threads=None)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as e:
        print(f"cannot build the speech tokenizer: {e}", file=sys.stderr)
        return 1
    fp = fingerprint(conf)
    cache_path = Path(f"{args.out_list}.cache.jsonl")
    entries = load_cache(cache_path, fp, set(scan.wav_lines))
    start_cache(cache_path, fp, entries)
    todo = [w for w in scan.wav_lines if w not in entries]
    logger.info("%d records with '%s', %d distinct wavs, %d cached, %d to tokenise with nj=%d",
                len(scan.records), args.field, len(scan.wav_lines), len(entries), len(todo), args.nj)
    errors: list[str] = []
    with open(cache_path, "a", encoding="utf-8") as cache:
        results = parallel_map(tokenize_wav, todo, args.nj, init_worker, (conf,))
        for done, (wav, entry, err) in enumerate(results, 1):
            if err is not None:
                errors.append(f"{scan.where(args.in_list, wav)}: {args.field} '{wav}': {type(err).__name__}: {err}")
                continue
            entries[wav] = entry
            cache.write(json.dumps(entry) + "\n")
            cache.flush()
            if done % 200 == 0:
                logger.info("tokenised %d/%d wavs", done, len(todo))
    if errors:
        print("\n".join(errors), file=sys.stderr)
        print(f"{len(errors)} wavs failed; finished ones are cached in {cache_path}", file=sys.stderr)
        return 1
    n = write_out_list(args.out_list, scan, {w: e["tokens"] for w, e in entries.items()}, args.field, args.out_field)
    stats = token_stats((entries[w] for w in scan.wav_lines), tok)
    stats.update({"records": len(scan.lines), "records_with_tokens": n, "tokenised_now": len(todo),
                  "elapsed_s": round(time.time() - start, 2)})
    with atomic_open(f"{args.out_list}.stats.json") as f:
        json.dump(stats, f, indent=2)
    logger.info("wrote %s (%d/%d records with %s); %d wavs, %.1f tokens/s, perplexity %.1f, %d/%d codes used%s",
                args.out_list, n, len(scan.lines), args.out_field, stats["wavs"], stats["tokens_per_second"],
                stats["perplexity"], stats["used"], stats["codebook_size"],
                "" if stats["rate_ok"] else f"; RATE CHECK FAILED for {stats['rate_violations']} wavs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
