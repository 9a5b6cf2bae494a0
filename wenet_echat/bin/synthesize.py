#!/usr/bin/env python3
"""Speech tokens -> wavs with a trained token2wav model directory.

Usage (from egs/echat):
    python -m wenet_echat.bin.synthesize --model_dir exp/token2wav --in_list exp/stage3/decode_test/hyp.jsonl \
        --out_dir exp/stage3/decode_test/tts [--field speech_tokens] [--vocoder neural|griffinlim] [--stream] \
        [--n_steps 10] [--cfg_rate 0.7] [--max_utts N] [--threads 1]
    python -m wenet_echat.bin.synthesize --model_dir exp/token2wav --in_list data/test_reply/data.list \
        --out_dir exp/token2wav/copy_test_neural --copy_synthesis [--wav_field wav] [--vocoder neural|griffinlim]

Every JSON line with a ``key`` and tokens gives ``<out_dir>/wavs/<key>.wav`` (PCM 16 at the model's rate). Tokens
come from ``--field`` or, by default, the first of ``speech_tokens`` (decode output, hyp.jsonl) and
``response_tokens`` (data.tok.list) a record has; records with neither or with an empty list are skipped and
counted. ``--stream`` synthesises through :class:`~wenet_echat.token2wav.StreamingSynthesizer` (tokens pushed
one at a time) instead of whole utterances. ``--copy_synthesis`` skips the flow: each record's ``--wav_field``
audio (resampled to the model's rate) is analysed into the model's log-mel and vocoded back, which measures the
vocoder alone (analysis-synthesis). Writes ``<out_dir>/wav.scp`` (key -> wav path) and
``<out_dir>/synth.json`` (counts, audio seconds, compute seconds, real-time factor); all files atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from wenet_echat.audio.io import load_audio, save_audio
from wenet_echat.dataset.source import read_list
from wenet_echat.token2wav.model import VOCODERS, Token2Wav, load_token2wav, to_numpy_wav
from wenet_echat.token2wav.vocoder import log_mel
from wenet_echat.utils.fileio import JsonlError, atomic_open, parse_jsonl_line, write_kv
from wenet_echat.utils.logging import setup_logging

logger = logging.getLogger("synthesize")
DEFAULT_FIELDS = ("speech_tokens", "response_tokens")
_SAFE_KEY = re.compile(r"^[\w.\-]+$")


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--in_list", required=True, help="data.tok.list or hyp.jsonl")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--field", default=None, help=f"token field (default: first of {', '.join(DEFAULT_FIELDS)})")
    p.add_argument("--vocoder", default="neural", choices=VOCODERS)
    p.add_argument("--stream", action="store_true", help="synthesise through the streaming synthesizer")
    p.add_argument("--copy_synthesis", action="store_true",
                   help="vocode the log-mel of each record's audio (no flow): the vocoder's own quality")
    p.add_argument("--wav_field", default="wav", help="the audio field read by --copy_synthesis (default: wav)")
    p.add_argument("--n_steps", type=int, default=None, help="Euler steps (default: model config)")
    p.add_argument("--cfg_rate", type=float, default=None, help="guidance rate (default: model config)")
    p.add_argument("--max_utts", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def read_records(path: str, pick: Callable[[dict[str, Any], str], Any],
                 limit: int | None = None) -> tuple[list[tuple[str, Any]], int]:
    """``(key, pick(record, "file:line"))`` of every record whose ``pick`` is not None, and how many were skipped
    (``pick`` None); bad lines, keys and duplicate keys raise ``ValueError`` naming the file and line."""
    items: list[tuple[str, Any]] = []
    skipped = 0
    seen: set[str] = set()
    for lineno, raw in read_list(path):
        where = f"{path}:{lineno}"
        try:
            rec = parse_jsonl_line(raw, path, lineno)
        except JsonlError as e:
            raise ValueError(str(e)) from None
        value = pick(rec, where)
        if value is None:
            skipped += 1
            continue
        key = rec.get("key")
        if not isinstance(key, str) or not _SAFE_KEY.match(key):
            raise ValueError(f"{where}: 'key' must be a name of letters, digits, '.', '-', '_', got {key!r}")
        if key in seen:
            raise ValueError(f"{where}: duplicate key '{key}'")
        seen.add(key)
        items.append((key, value))
        if limit is not None and len(items) >= limit:
            break
    return items, skipped


def read_token_records(path: str, field: str | None, codebook_size: int,
                       limit: int | None = None) -> tuple[list[tuple[str, list[int]]], int]:
    """(key, tokens) of every record with tokens (``field``, else the first of :data:`DEFAULT_FIELDS`) and the
    number without; out-of-range tokens raise ``ValueError`` (file:line)."""
    names = (field,) if field else DEFAULT_FIELDS

    def pick(rec: dict[str, Any], where: str) -> list[int] | None:
        tokens = next((rec[n] for n in names if rec.get(n) is not None), None)
        if not tokens:
            return None
        if not isinstance(tokens, list) or not all(isinstance(t, int) and 0 <= t < codebook_size for t in tokens):
            raise ValueError(f"{where}: tokens must be ints in [0, {codebook_size})")
        return tokens

    return read_records(path, pick, limit)


def read_wav_records(path: str, field: str = "wav", limit: int | None = None) -> tuple[list[tuple[str, str]], int]:
    """(key, audio path) of every record with ``field`` (copy synthesis) and the number without."""

    def pick(rec: dict[str, Any], where: str) -> str | None:
        wav = rec.get(field)
        return wav if isinstance(wav, str) and wav else None

    return read_records(path, pick, limit)


def copy_synthesize(model: Token2Wav, wav_path: str, vocoder: str) -> torch.Tensor:
    """The reference audio's log-mel, vocoded back (the flow is not used)."""
    wav, _ = load_audio(wav_path, target_sr=model.sample_rate)
    return model.mel2wav(log_mel(wav, model.mel_config), vocoder)


def synthesize_one(model: Token2Wav, tokens: list[int], vocoder: str, stream: bool,
                   flow_kwargs: dict[str, Any]) -> torch.Tensor:
    if not stream:
        return model.synthesize(tokens, vocoder=vocoder, **flow_kwargs)
    chunks = list(model.stream(([t] for t in tokens), vocoder=vocoder, **flow_kwargs))
    return torch.cat(chunks) if chunks else torch.zeros(0)


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    setup_logging()
    torch.set_num_threads(args.threads)
    try:
        require = ("vocoder",) if args.vocoder == "neural" else ()
        if not args.copy_synthesis:
            require = ("flow", *require)
        model = load_token2wav(args.model_dir, require=require)
        if args.copy_synthesis:
            items, skipped = read_wav_records(args.in_list, args.wav_field, args.max_utts)
        else:
            items, skipped = read_token_records(args.in_list, args.field, model.codebook_size, args.max_utts)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out_dir = Path(args.out_dir)
    flow_kwargs = {k: v for k, v in (("n_steps", args.n_steps), ("cfg_rate", args.cfg_rate)) if v is not None}
    scp: list[tuple[str, str]] = []
    audio_s = compute_s = 0.0
    for key, source in items:
        t0 = time.perf_counter()
        try:
            wav = (copy_synthesize(model, source, args.vocoder) if args.copy_synthesis
                   else synthesize_one(model, source, args.vocoder, args.stream, flow_kwargs))
        except (OSError, RuntimeError, ValueError) as e:
            print(f"error: {args.in_list}: key {key}: {e}", file=sys.stderr)
            return 1
        compute_s += time.perf_counter() - t0
        path = out_dir / "wavs" / f"{key}.wav"
        save_audio(path, to_numpy_wav(wav), model.sample_rate)
        scp.append((key, str(path)))
        audio_s += wav.numel() / model.sample_rate
    write_kv(out_dir / "wav.scp", scp)
    summary = {"model_dir": args.model_dir, "in_list": args.in_list, "vocoder": args.vocoder, "stream": args.stream,
               "copy_synthesis": args.copy_synthesis,
               "utts": len(scp), "skipped": skipped, "audio_seconds": round(audio_s, 3),
               "compute_seconds": round(compute_s, 3), "rtf": round(compute_s / audio_s, 4) if audio_s else None,
               "trained_parts": sorted(model.trained_parts)}
    with atomic_open(out_dir / "synth.json") as f:
        json.dump(summary, f, indent=2)
    logger.info("wrote %d wavs (%.1f s of audio, RTF %s, %d records skipped) to %s", len(scp), audio_s,
                summary["rtf"], skipped, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
