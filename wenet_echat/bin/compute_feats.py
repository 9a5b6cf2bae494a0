#!/usr/bin/env python3
"""Dump features of a data.list into kaldiio ark/scp files and write a data.list with a ``feat`` field.

Usage:
    python -m wenet_echat.bin.compute_feats --data_list data/train/data.list --feats_type whisper_log_mel \
        --out_dir data/train/feats --nj 4 [--feats_conf '{"n_mels": 80}'] [--resample_rate 16000]

Writes ``out_dir/feats.<job>.ark`` + ``feats.<job>.scp`` (one pair per job), the merged ``out_dir/feats.scp`` and
``out_dir/data.list`` (every input record plus ``feat``). Each job's files appear atomically together with a
``feats.<job>.done`` marker; re-running skips finished jobs (resume after a crash). Records whose audio cannot be
loaded are reported as ``file:line: key: reason`` and the run exits 1 after finishing the other records.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from wenet_echat.dataset.source import read_list
from wenet_echat.utils.fileio import JsonlError, atomic_open, atomic_path, parse_jsonl_line, write_jsonl


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_list", required=True)
    p.add_argument("--feats_type", default="whisper_log_mel", choices=["whisper_log_mel", "fbank"])
    p.add_argument("--feats_conf", default="{}", help="JSON object of feature options")
    p.add_argument("--resample_rate", type=int, default=16000)
    p.add_argument("--out_dir", required=True)
    p.add_argument("--nj", type=int, default=1)
    return p.parse_args(argv)


def _job_files(out_dir: Path, job: int) -> tuple[Path, Path, Path]:
    return out_dir / f"feats.{job}.ark", out_dir / f"feats.{job}.scp", out_dir / f"feats.{job}.done"


def run_job(job: int, items: list[tuple[str, dict[str, Any]]], out_dir: str, feats_type: str,
            feats_conf: dict[str, Any], resample_rate: int) -> tuple[int, list[str]]:
    """Compute one job's features; returns (utterances written, errors). Skips a job that is already done."""
    import torch
    from kaldiio.matio import write_array

    from wenet_echat.audio.features import compute_features
    from wenet_echat.audio.io import load_audio

    torch.set_num_threads(1)
    out = Path(out_dir)
    ark, scp, done = _job_files(out, job)
    keys = [rec["key"] for _, rec in items]
    if done.exists() and ark.exists() and scp.exists() and done.read_text().split() == keys:
        return len(keys), []
    errors: list[str] = []
    scp_lines: list[str] = []
    final_ark = str(ark.resolve())
    with atomic_path(ark) as tmp_ark:
        with open(tmp_ark, "wb") as f:
            for where, rec in items:
                try:
                    wav, sr = load_audio(rec["wav"], target_sr=resample_rate, mono=True)
                    feats = compute_features(feats_type, wav, sr, feats_conf).numpy().astype(np.float32)
                except Exception as e:  # report every failing record, keep going
                    errors.append(f"{where}: {rec['key']}: {type(e).__name__}: {e}")
                    continue
                f.write(rec["key"].encode("utf-8") + b" ")
                offset = f.tell()
                write_array(f, feats)
                scp_lines.append(f"{rec['key']} {final_ark}:{offset}\n")
            f.flush()
            os.fsync(f.fileno())
        if errors:
            raise RuntimeError("\n".join(errors))
        with atomic_open(scp) as g:
            g.writelines(scp_lines)
    with atomic_open(done) as g:
        g.write("\n".join(keys) + "\n")
    return len(keys), []


def _run_job_safe(*args: Any) -> tuple[int, list[str]]:
    try:
        return run_job(*args)
    except RuntimeError as e:
        return 0, str(e).splitlines()


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    feats_conf = json.loads(args.feats_conf)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items: list[tuple[str, dict[str, Any]]] = []
    errors: list[str] = []
    for lineno, line in read_list(args.data_list):
        try:
            rec = parse_jsonl_line(line, args.data_list, lineno)
        except JsonlError as e:
            errors.append(str(e))
            continue
        if not isinstance(rec.get("key"), str) or not isinstance(rec.get("wav"), str):
            errors.append(f"{args.data_list}:{lineno}: record needs 'key' and 'wav'")
            continue
        items.append((f"{args.data_list}:{lineno}", rec))
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    nj = max(1, min(args.nj, len(items)))
    size = (len(items) + nj - 1) // nj if items else 0
    chunks = [items[i * size : (i + 1) * size] for i in range(nj)]
    job_args = [(j, c, str(out), args.feats_type, feats_conf, args.resample_rate) for j, c in enumerate(chunks)]
    if nj == 1:
        results = [_run_job_safe(*a) for a in job_args]
    else:
        with ProcessPoolExecutor(max_workers=nj) as pool:
            results = list(pool.map(_run_job_safe, *zip(*job_args, strict=True)))
    errors = [e for _, errs in results for e in errs]
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    feat_of: dict[str, str] = {}
    with atomic_open(out / "feats.scp") as f:
        for j in range(nj):
            for line in _job_files(out, j)[1].read_text(encoding="utf-8").splitlines():
                key, _, spec = line.partition(" ")
                feat_of[key] = spec
                f.write(line + "\n")
    write_jsonl(out / "data.list", ({**rec, "feat": feat_of[rec["key"]]} for _, rec in items))
    print(f"wrote features of {len(items)} utterances to {out}/feats.scp and {out}/data.list")
    return 0


if __name__ == "__main__":
    sys.exit(main())
