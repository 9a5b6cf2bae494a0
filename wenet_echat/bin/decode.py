"""Decode a data list with a trained EChat model, task by task, into ``hyp.jsonl`` (and reply wavs).

    python -m wenet_echat.bin.decode --model_dir exp/stage3 --data_list data/test/data.list \\
        --tasks s2s_think --out exp/stage3/decode_test/hyp.jsonl [--checkpoint final] [--batch_size 16]
        [--no_think] [--think_style tag|natural] [--max_text_tokens 256] [--max_speech_tokens 1000]
        [--text_temperature 0] [--speech_temperature 0] [--speech_top_k 0] [--speech_top_p 1.0]
        [--speech_max_run 5 --speech_window 8 --speech_max_in_window 5] [--speech_rule_override 1446:10:13:10]
        [--no_speech_blocking] [--token2wav_dir exp/token2wav --vocoder neural --wav_dir DIR] [--limit N]

Tasks: ``asr tag s2t_chat t2t tts s2s_chat s2s_think``; every record that lists a task is decoded for it
(greedy by default; sampling with ``--{text,speech}_{temperature,top_k,top_p}``, set apart for the text/think
phase and the speech phase). ``--no_think`` runs ``s2s_think`` with the no-thinking prompt (the ablation).
Records need only what the prompt shows (audio; text for ``t2t``; reply text for ``tts``): S2S decodes a
``data.list`` without gold speech tokens.

Speech codes are repetition-blocked (:mod:`wenet_echat.infer.repetition`: no run longer than
``--speech_max_run``, at most ``--speech_max_in_window`` of one code in ``--speech_window``; per-code overrides
``CODE:RUN:WINDOW:MAX``) when the model's ``GenerateConf`` has the ``speech_processors`` hook; otherwise a warning
says the codes are decoded without it. With ``--token2wav_dir`` the speech tokens of each row are streamed
through token-to-wave into ``<wav_dir>/<task>/<key>.wav`` (default ``wav_dir``: ``reply_wavs`` next to
``--out``), with ``<wav_dir>/<task>/wav.scp``, and the row gains ``reply_wav``, ``audio_s``, ``first_audio_s``,
``rtf``, ``rtf_e2e`` (:mod:`wenet_echat.infer.reply_audio`; decode with ``--batch_size 1`` for per-utterance
latency). Rows and ``<out stem>.summary.json`` (settings, counts, times; per speech task how the codes ended,
:func:`wenet_echat.infer.decode.speech_length_stats`) are written atomically at the end; ``--limit`` decodes the
first N records only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from wenet_echat.dataset import EChatDataset, iterate_batches
from wenet_echat.dataset.processor import SkipStats
from wenet_echat.infer import decode_batch, load_model_dir
from wenet_echat.infer.decode import attach_speech_processors, speech_length_stats
from wenet_echat.infer.repetition import RepetitionRule, SpeechRepetitionBlocker
from wenet_echat.infer.reply_audio import ReplyAudio
from wenet_echat.llm import CACHE_KINDS
from wenet_echat.model import GenerateConf, SamplingConf
from wenet_echat.text.targets import TARGET_TASKS
from wenet_echat.text.think import THINK_STYLES
from wenet_echat.token2wav.model import VOCODERS
from wenet_echat.utils.fileio import atomic_open, write_jsonl, write_kv
from wenet_echat.utils.logging import setup_logging

log = logging.getLogger("decode")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--checkpoint", default=None, help="tag under model_dir or a path (default: latest)")
    p.add_argument("--data_list", required=True)
    p.add_argument("--data_type", default="raw", choices=["raw", "shard"])
    p.add_argument("--tasks", nargs="+", default=["asr", "tag"], choices=TARGET_TASKS)
    p.add_argument("--out", required=True, help="hyp.jsonl to write")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--limit", type=int, default=None, help="decode only the first N records")
    p.add_argument("--no_think", action="store_true", help="s2s_think without the chain of thought (ablation)")
    p.add_argument("--think_style", default=None, choices=THINK_STYLES,
                   help="CoT form of the prompt's task (default: the model's train_conf.think_style)")
    p.add_argument("--max_text_tokens", type=int, default=256)
    p.add_argument("--max_speech_tokens", type=int, default=1000)
    p.add_argument("--min_speech_tokens", type=int, default=0, help="speech EOS is not accepted before this many")
    for phase in ("text", "speech"):
        p.add_argument(f"--{phase}_temperature", type=float, default=0.0, help=f"{phase} phase; 0 = greedy")
        p.add_argument(f"--{phase}_top_k", type=int, default=0)
        p.add_argument(f"--{phase}_top_p", type=float, default=1.0)
    p.add_argument("--text_no_repeat_ngram", type=int, default=0,
                   help="think/reply text: no n-gram of this length twice (0: off)")
    g = p.add_argument_group("speech repetition blocking (OSUM-EChat defaults)")
    g.add_argument("--speech_max_run", type=int, default=5, help="longest run of one code (0: no run rule)")
    g.add_argument("--speech_window", type=int, default=8, help="window of the count rule (0: no count rule)")
    g.add_argument("--speech_max_in_window", type=int, default=5, help="most occurrences of one code per window")
    g.add_argument("--speech_rule_override", action="append", default=[], metavar="CODE:RUN:WINDOW:MAX",
                   help="own limits for one code, e.g. 1446:10:13:10 for S3 silence (repeatable)")
    g.add_argument("--no_speech_blocking", action="store_true", help="decode speech codes without blocking")
    g = p.add_argument_group("reply audio")
    g.add_argument("--token2wav_dir", default=None, help="trained token2wav model dir: write reply wavs")
    g.add_argument("--vocoder", default="neural", choices=VOCODERS)
    g.add_argument("--wav_dir", default=None, help="reply wav folder (default: reply_wavs next to --out)")
    g.add_argument("--t2w_n_steps", type=int, default=None, help="flow Euler steps (default: model config)")
    g.add_argument("--t2w_cfg_rate", type=float, default=None, help="flow guidance rate (default: model config)")
    p.add_argument("--kv_cache", default="static", choices=CACHE_KINDS,
                   help="static: preallocated cache + lean step (Qwen2/Llama; others fall back); hf: transformers'")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    return p


def init_generate_conf(args: argparse.Namespace) -> tuple[GenerateConf, dict[str, Any]]:
    """Decoding limits, per-phase sampling and (if the model supports it) speech repetition blocking."""
    gen = GenerateConf(
        max_text_tokens=args.max_text_tokens, max_speech_tokens=args.max_speech_tokens,
        min_speech_tokens=args.min_speech_tokens, seed=args.seed, kv_cache=args.kv_cache,
        text_no_repeat_ngram=args.text_no_repeat_ngram,
        text=SamplingConf(args.text_temperature, args.text_top_k, args.text_top_p),
        speech=SamplingConf(args.speech_temperature, args.speech_top_k, args.speech_top_p))
    if args.no_speech_blocking:
        return gen, {"speech_blocking": "off"}
    blocker = SpeechRepetitionBlocker(
        RepetitionRule(args.speech_max_run, args.speech_window, args.speech_max_in_window),
        dict(RepetitionRule.parse(s) for s in args.speech_rule_override))
    speaks = any(t in ("tts", "s2s_chat", "s2s_think") for t in args.tasks)
    if attach_speech_processors(gen, [blocker]):
        return gen, {"speech_blocking": blocker.describe()}
    if speaks:
        log.warning("EChatModel.generate has no speech_processors hook: speech codes are decoded without "
                    "repetition blocking")
    return gen, {"speech_blocking": "unavailable (no GenerateConf.speech_processors)"}


def init_reply_audio(args: argparse.Namespace) -> ReplyAudio | None:
    if not args.token2wav_dir:
        return None
    wav_dir = args.wav_dir or Path(args.out).parent / "reply_wavs"
    flow = {k: v for k, v in (("n_steps", args.t2w_n_steps), ("cfg_rate", args.t2w_cfg_rate)) if v is not None}
    return ReplyAudio.from_dir(args.token2wav_dir, wav_dir, args.vocoder, args.device, **flow)


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen, settings = init_generate_conf(args)
    audio = init_reply_audio(args)
    loaded = load_model_dir(args.model_dir, args.checkpoint, args.device)
    dataset_conf = {**(loaded.conf.get("dataset_conf") or {}), "spec_aug": False, "shuffle": False,
                    "sort": False, "batch_conf": {"batch_type": "static", "batch_size": args.batch_size}}
    dataset = EChatDataset(args.data_type, args.data_list, dataset_conf, train=False)
    think_style = args.think_style or (loaded.conf.get("train_conf") or {}).get("think_style", "auto")
    rows: list[dict] = []
    t0 = time.perf_counter()
    n_utts = 0
    stats = SkipStats()
    batches = iterate_batches(dataset, stats)
    if args.limit is not None:
        batches = itertools.islice(batches, (args.limit + args.batch_size - 1) // args.batch_size)
    for batch in batches:
        n_utts += len(batch["keys"])
        for task in args.tasks:
            new = decode_batch(loaded, batch, task, gen, think=not args.no_think, think_style=think_style)
            rows += [audio.add_to_row(r) for r in new] if audio else new
        log.info("%d utterances, %d hypotheses, %.1f s", n_utts, len(rows), time.perf_counter() - t0)
    if stats.total:
        log.warning("%s: %s", args.data_list, stats.summary())
    if not n_utts:
        raise SystemExit(f"{args.data_list}: no record could be decoded ({stats.summary()}); "
                         "relative wav paths are read from the current directory")
    write_jsonl(args.out, rows)
    summary = {"model_dir": args.model_dir, "checkpoint": loaded.checkpoint, "data_list": args.data_list,
               "tasks": args.tasks, "think": not args.no_think, "think_style": think_style, "utterances": n_utts,
               "left_out": dict(stats.skipped),
               "hypotheses": dict(Counter(r["task"] for r in rows)), **settings,
               "generate": {"max_text_tokens": gen.max_text_tokens, "max_speech_tokens": gen.max_speech_tokens,
                            "min_speech_tokens": gen.min_speech_tokens,
                            "text": vars(gen.text), "speech": vars(gen.speech), "seed": gen.seed},
               "speech": speech_length_stats(rows),
               "seconds": round(time.perf_counter() - t0, 2)}
    if audio is not None:
        by_task: dict[str, list[tuple[str, str]]] = {}
        for r in rows:
            if "reply_wav" in r:
                by_task.setdefault(r["task"], []).append((r["key"], r["reply_wav"]))
        for task, items in by_task.items():
            write_kv(audio.wav_dir / task / "wav.scp", items)
        summary["reply_audio"] = {"token2wav_dir": args.token2wav_dir, "vocoder": args.vocoder,
                                  "wav_dir": str(audio.wav_dir), "wavs": sum(len(v) for v in by_task.values())}
    out = Path(args.out)
    with atomic_open(out.with_name(out.stem + ".summary.json")) as f:
        json.dump(summary, f, indent=1)
    log.info("wrote %d hypotheses (%s) for %d utterances to %s in %.1f s", len(rows), " ".join(args.tasks), n_utts,
             args.out, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
