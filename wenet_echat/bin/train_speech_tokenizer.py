#!/usr/bin/env python3
"""Train the k-means speech tokenizer (25 Hz discrete units) on the reply audio of a data.list.

Usage:
    python -m wenet_echat.bin.train_speech_tokenizer --data_list data/train/data.list --field response_wav \
        --k 512 --out data/speech_token/kmeans512.npz [--max_hours 2] [--seed 777] [--iters 30] [--nj 2] \
        [--max_frames 200000] [--pca_dim 64] [--whiten] [--norm none|mean|meanvar] [--stack 4] \
        [--feature_source log_mel|encoder --encoder_ckpt WHISPER|MODEL_DIR [--encoder_layer N]] [--force]

Collects the distinct wavs of ``--field`` (in order of first appearance; with ``--max_hours``, a seeded random
subset of about that much audio), computes their stacked features with ``--nj`` processes, fits PCA and k-means
(:mod:`wenet_echat.speech_token.kmeans`) and writes the model (``--out``, atomically) and a summary next to it
(``<out stem>.json``: k, wavs, hours, frames total/used, iterations, inertia, and codebook usage of the training
audio: perplexity, entropy, used/unused codes). A run is skipped ("up to date") when the model exists, is newer
than the list and the summary records the same options; ``--force`` retrains.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from wenet_echat.audio.io import audio_info, load_audio
from wenet_echat.bin.extract_speech_tokens import ListScan, parallel_map, scan_list
from wenet_echat.speech_token.kmeans import (
    FEATURE_SOURCES,
    NORMS,
    EncoderFn,
    FeatureConfig,
    assign,
    codebook_stats,
    default_stack,
    fit_kmeans_tokenizer,
    load_whisper_encoder_frames,
    stacked_features,
)
from wenet_echat.utils.fileio import atomic_open
from wenet_echat.utils.logging import setup_logging

logger = logging.getLogger("train_speech_tokenizer")
_WORKER: dict[str, Any] = {}  # per-process feature settings (and encoder), set once


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_list", required=True)
    p.add_argument("--field", default="response_wav", help="record field holding the audio path")
    p.add_argument("--out", required=True, help="model file (.npz)")
    p.add_argument("--k", type=int, default=512, help="codebook size")
    p.add_argument("--max_hours", type=float, default=None, help="train on a random subset of about this much audio")
    p.add_argument("--max_frames", type=int, default=200_000, help="frames (25 Hz vectors) k-means is fitted on")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--pca_dim", type=int, default=64, help="0 = no PCA")
    p.add_argument("--whiten", action="store_true")
    p.add_argument("--norm", default="none", choices=NORMS, help="per-utterance feature normalisation")
    p.add_argument("--n_mels", type=int, default=80)
    p.add_argument("--stack", type=int, default=None, help="frames per token (default: 25 Hz for the source)")
    p.add_argument("--feature_source", default="log_mel", choices=sorted(FEATURE_SOURCES))
    p.add_argument("--encoder_ckpt", default=None,
                   help="for --feature_source encoder: a Whisper checkpoint (HF dir, openai .pt) or a bin/train.py "
                        "model dir with an encoder (e.g. exp/encoder)")
    p.add_argument("--encoder_layer", type=int, default=None,
                   help="for --feature_source encoder: cluster the output of this block (1-based; default the last)")
    p.add_argument("--nj", type=int, default=1)
    p.add_argument("--force", action="store_true", help="retrain even if the model is up to date")
    return p.parse_args(argv)


def summary_path(out: str | os.PathLike) -> Path:
    return Path(out).with_suffix(".json")


def training_options(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that changes the model (recorded in the summary; a change triggers retraining)."""
    keys = ("data_list", "field", "k", "max_hours", "max_frames", "seed", "iters", "pca_dim", "whiten", "norm",
            "n_mels", "stack", "feature_source", "encoder_ckpt", "encoder_layer")
    return {k: getattr(args, k) for k in keys}


def up_to_date(out: Path, data_list: str, options: dict[str, Any]) -> bool:
    meta = summary_path(out)
    if not (out.is_file() and meta.is_file()) or out.stat().st_mtime < os.path.getmtime(data_list):
        return False
    try:
        stored = json.loads(meta.read_text(encoding="utf-8")).get("options")
        # an option added after the model was trained counts as its default (None)
        return isinstance(stored, dict) and {**dict.fromkeys(options), **stored} == options
    except (OSError, ValueError, AttributeError):
        return False


def select_wavs(scan: ListScan, list_path: str, max_hours: float | None,
                seed: int) -> tuple[list[str], float, list[str]]:
    """(chosen wavs in list order, their seconds, errors): a seeded random subset of at most ``max_hours``."""
    seconds: dict[str, float] = {}
    errors: list[str] = []
    for wav in scan.wav_lines:
        try:
            seconds[wav] = audio_info(wav).duration
        except ValueError as e:
            errors.append(f"{scan.where(list_path, wav)}: {e}")
    wavs = list(seconds)
    if max_hours is not None:
        order = wavs[:]
        random.Random(seed).shuffle(order)
        budget, chosen, total = max_hours * 3600.0, set(), 0.0
        for wav in order:
            if total + seconds[wav] > budget and chosen:
                continue
            chosen.add(wav)
            total += seconds[wav]
        wavs = [w for w in wavs if w in chosen]
    return wavs, sum(seconds[w] for w in wavs), errors


def init_worker(cfg: FeatureConfig, threads: int | None = 1) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
    encoder: EncoderFn | None = (load_whisper_encoder_frames(cfg.encoder_ckpt, cfg.encoder_layer)
                                 if cfg.encoder_ckpt else None)
    _WORKER.update(cfg=cfg, encoder=encoder)


def wav_features(path: str) -> np.ndarray:
    """Raw stacked vectors of one wav (pre-PCA), using this process's settings."""
    wav, sr = load_audio(path, mono=True)
    return stacked_features(wav, sr, _WORKER["cfg"], _WORKER["encoder"])


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    setup_logging()
    out = Path(args.out)
    options = training_options(args)
    if not args.force and up_to_date(out, args.data_list, options):
        print(f"{out} is up to date (use --force to retrain)")
        return 0
    start = time.time()
    scan = scan_list(args.data_list, args.field)
    wavs, seconds, errors = select_wavs(scan, args.data_list, args.max_hours, args.seed)
    if errors or scan.errors:
        print("\n".join(scan.errors + errors), file=sys.stderr)
        return 1
    stack = args.stack or default_stack(args.feature_source)
    cfg = FeatureConfig(args.feature_source, args.n_mels, stack, args.norm, encoder_ckpt=args.encoder_ckpt,
                        encoder_layer=args.encoder_layer)
    logger.info("training k=%d on %d distinct wavs (%.2f h) of %s with nj=%d", args.k, len(wavs), seconds / 3600,
                args.data_list, args.nj)
    init_worker(cfg, threads=None)
    feats: dict[str, np.ndarray] = {}
    for wav, x, err in parallel_map(wav_features, wavs, args.nj, init_worker, (cfg,)):
        if err is not None:
            errors.append(f"{scan.where(args.data_list, wav)}: {args.field} '{wav}': {type(err).__name__}: {err}")
        else:
            feats[wav] = x
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    per_wav = [feats[w] for w in wavs]
    t_feats = time.time() - start
    tok, result = fit_kmeans_tokenizer(per_wav, cfg, k=args.k, pca_dim=args.pca_dim or None, whiten=args.whiten,
                                       iters=args.iters, seed=args.seed, max_frames=args.max_frames,
                                       encoder=_WORKER["encoder"])
    tok.save(out)
    labels, _ = assign(tok.project(np.concatenate(per_wav)), tok.centroids)
    bounds = np.cumsum([0] + [len(x) for x in per_wav])
    usage = codebook_stats((labels[a:b] for a, b in zip(bounds[:-1], bounds[1:])), args.k)
    summary = {
        "model": str(out), "k": args.k, "wavs": len(wavs), "hours": round(seconds / 3600, 4),
        "frames_total": int(bounds[-1]), "frames_used": result.n_frames, "iterations": result.iterations,
        "inertia": result.inertia, "mean_sq_distance": result.mean_sq_distance, "frame_rate": tok.frame_rate,
        "train_usage": usage, "feature_seconds": round(t_feats, 2), "seconds": round(time.time() - start, 2),
        "options": options,
    }
    with atomic_open(summary_path(out)) as f:
        json.dump(summary, f, indent=2)
    logger.info("wrote %s: %d wavs, %d/%d frames used, %d iterations, mean sq distance %.4f, train perplexity "
                "%.1f, %d/%d codes used, %.1f s", out, len(wavs), result.n_frames, bounds[-1], result.iterations,
                result.mean_sq_distance, usage["perplexity"], usage["used"], args.k, summary["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
