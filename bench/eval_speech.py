#!/usr/bin/env python3
"""Cost and sanity of the speech metrics (wenet_echat.eval.speech) on espeak-ng replies.

Usage:
    .venv/bin/python bench/eval_speech.py [--n 6] [--voice en-us+klatt4] [--metrics dnsmos pocketsphinx_asr ...]

Speaks ``--n`` reply-like sentences with espeak-ng (22.05 kHz, so every metric also pays for resampling) and
scores them with each metric. The first item is timed apart, as it pays for the lazy model load. One line per
metric::

    eval_speech metric=NAME items=N audio_s=... first_item_s=... per_item_ms=... xRT=...

(xRT = audio seconds per second of scoring, after the first item), then the corpus WER, mean DNSMOS and mean
speaker similarity to the first reply's voice, so a broken model shows up next to its timing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wenet_echat.audio.io import load_audio  # noqa: E402
from wenet_echat.eval.speech import SPEECH_METRICS, build_speech_metric  # noqa: E402
from wenet_echat.eval.understanding import error_rates  # noqa: E402

REPLIES = [
    "I am so sorry to hear that, it sounds like a really hard day.",
    "That is wonderful news, congratulations on passing the exam!",
    "Please call me tomorrow morning and we can talk it through.",
    "The weather is lovely today, maybe a short walk would help.",
    "Take a deep breath, you do not have to solve everything at once.",
    "I understand why you are angry, the train being late again is frustrating.",
]


def speak(texts: list[str], voice: str, out_dir: Path) -> list[dict]:
    items = []
    for i, text in enumerate(texts):
        path = out_dir / f"reply{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(path), text], check=True,
                       capture_output=True)
        wav, sr = load_audio(str(path))
        items.append({"key": f"reply{i}", "wav": wav, "sr": sr, "ref_text": text})
    return items


def time_metric(name: str, items: list[dict], ref_embedding: np.ndarray | None) -> list[dict]:
    metric = build_speech_metric(name)
    extra = {"ref_embedding": ref_embedding} if name == "speaker_similarity" else {}
    t0 = time.perf_counter()
    rows = metric.score_many([{**items[0], **extra}])
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows += metric.score_many([{**it, **extra} for it in items[1:]])
    rest = time.perf_counter() - t0
    audio_s = sum(len(it["wav"]) / it["sr"] for it in items[1:])
    per_item = 1000 * rest / max(len(items) - 1, 1)
    print(f"eval_speech metric={name} items={len(items)} audio_s={audio_s:.1f} first_item_s={first:.2f} "
          f"per_item_ms={per_item:.0f} xRT={audio_s / rest if rest > 0 else float('inf'):.1f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--voice", default="en-us+klatt4")
    ap.add_argument("--metrics", nargs="+", default=SPEECH_METRICS.names(), choices=SPEECH_METRICS.names())
    args = ap.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed")
    texts = [REPLIES[i % len(REPLIES)] for i in range(args.n)]
    with tempfile.TemporaryDirectory() as tmp:
        items = speak(texts, args.voice, Path(tmp))
    ref_embedding = None
    if "speaker_similarity" in args.metrics:
        from wenet_echat.eval.speech import speaker_embedding

        ref_embedding = speaker_embedding(items[0]["wav"], items[0]["sr"])
    results = {name: time_metric(name, items, ref_embedding) for name in args.metrics}
    if "pocketsphinx_asr" in results:
        wer = error_rates(texts, [r["asr_hyp"] for r in results["pocketsphinx_asr"]])["wer"]
        print(f"pocketsphinx corpus WER={wer:.1f}%")
    if "dnsmos" in results:
        rows = results["dnsmos"]
        print("dnsmos mean " + " ".join(f"{k}={np.mean([r[k] for r in rows]):.2f}" for k in rows[0] if k != "key"))
    if "speaker_similarity" in results:
        sims = [r["spk_sim"] for r in results["speaker_similarity"][1:]]
        print(f"speaker similarity to reply0 mean={np.mean(sims):.3f} min={np.min(sims):.3f}")


if __name__ == "__main__":
    main()
