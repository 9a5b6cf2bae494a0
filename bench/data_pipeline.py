#!/usr/bin/env python3
"""Throughput of the data pipeline (load -> resample -> whisper log-mel -> batch) and of our log-mel.

Usage:
    .venv/bin/python bench/data_pipeline.py [--data_list data.list] [--minutes 10] [--workers 0 2]

Without ``--data_list`` it writes ~``--minutes`` of synthetic speech-like audio (harmonic tones with vibrato and
noise, 2-8 s each; every fourth file at 22.05 kHz to exercise resampling) to a temp dir. Prints one line per
worker setting::

    data_pipeline workers=N audio_s=... wall_s=... xRT=... xRT_per_core=...

(cores = max(1, workers)), then compares ``whisper_log_mel`` with ``whisper.audio.log_mel_spectrogram`` on 30 s::

    log_mel max_abs_diff=... ours_ms=... whisper_ms=... speedup=...
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wenet_echat.dataset.dataset import EChatDataset, iterate_batches, make_dataloader  # noqa: E402
from wenet_echat.dataset.processor import SkipStats  # noqa: E402


def speechlike(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    f0 = 100 + 120 * rng.random()
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 4 * t))) / sr
    wav = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2  # syllable-like amplitude
    wav = 0.1 * wav * envelope + 0.005 * rng.standard_normal(t.size)
    return wav.astype(np.float32)


def make_corpus(out_dir: Path, minutes: float, seed: int = 0) -> tuple[str, float]:
    rng = np.random.default_rng(seed)
    total, i, lines = 0.0, 0, []
    while total < minutes * 60:
        secs = float(rng.uniform(2, 8))
        sr = 22050 if i % 4 == 3 else 16000
        path = out_dir / f"utt{i:05d}.wav"
        sf.write(str(path), speechlike(secs, sr, rng), sr, subtype="PCM_16")
        lines.append({"key": f"utt{i:05d}", "wav": str(path), "task": "asr", "text": "benchmark", "duration": secs})
        total += secs
        i += 1
    list_path = out_dir / "data.list"
    list_path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return str(list_path), total


def run_pipeline(list_path: str, workers: int) -> tuple[float, float, int]:
    conf = {"shuffle": False, "sort": False, "feats_type": "whisper_log_mel",
            "batch_conf": {"batch_type": "dynamic", "max_frames_in_batch": 24000}}
    ds = EChatDataset("raw", list_path, conf, train=False)
    stats = SkipStats()
    audio_s, n = 0.0, 0
    t0 = time.perf_counter()
    for batch in iterate_batches(make_dataloader(ds, num_workers=workers), stats):
        audio_s += float(batch["feats_lengths"].sum()) / 100.0
        n += len(batch["keys"])
    wall = time.perf_counter() - t0
    if stats.total:
        print(f"warning: {stats.summary()}", file=sys.stderr)
    return audio_s, wall, n


def compare_log_mel(reps: int = 20) -> str:
    import whisper

    from wenet_echat.audio.features import whisper_log_mel

    wav = speechlike(30.0, 16000, np.random.default_rng(1))
    ours = whisper_log_mel(wav)  # (frames, n_mels)
    ref = whisper.audio.log_mel_spectrogram(torch.from_numpy(wav)).T  # (frames, n_mels)
    n = min(ours.shape[0], ref.shape[0])
    diff = float((ours[:n] - ref[:n]).abs().max())

    # best of interleaved repetitions: robust to other load on the machine
    fns = {
        "ours": lambda: whisper_log_mel(wav),
        "ref": lambda: whisper.audio.log_mel_spectrogram(torch.from_numpy(wav)),
    }
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], (time.perf_counter() - t0) * 1000)
    ours_ms, ref_ms = best["ours"], best["ref"]
    return (f"log_mel max_abs_diff={diff:.2e} frames={ours.shape[0]}/{ref.shape[0]} ours_ms={ours_ms:.2f} "
            f"whisper_ms={ref_ms:.2f} speedup={ref_ms / ours_ms:.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_list", help="use this data.list instead of synthetic audio")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.data_list:
            list_path = args.data_list
        else:
            t0 = time.perf_counter()
            list_path, total = make_corpus(Path(tmp), args.minutes)
            print(f"made {total:.0f} s of audio in {time.perf_counter() - t0:.1f} s")
        for workers in args.workers:
            audio_s, wall, n = run_pipeline(list_path, workers)
            cores = max(1, workers)
            print(f"data_pipeline workers={workers} utts={n} audio_s={audio_s:.1f} wall_s={wall:.2f} "
                  f"xRT={audio_s / wall:.0f} xRT_per_core={audio_s / wall / cores:.0f}")
    print(compare_log_mel())
    return 0


if __name__ == "__main__":
    sys.exit(main())
