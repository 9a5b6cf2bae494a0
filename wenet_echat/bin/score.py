"""Score ``hyp.jsonl`` against the reference data list: understanding, EChat-eval-style chat scores per category,
identity, optional LLM judge, optional reply-audio metrics, latency; Markdown + JSON + confusion-matrix PNGs.

    python -m wenet_echat.bin.score --ref data/test/data.list --hyp exp/stage3/decode_test/hyp.jsonl \\
        --out exp/stage3/decode_test/results.md [--title "stage 3, test"] [--no_plots]
        [--judge_conf conf/judge/judge.yaml [--judge_max_items N]] [--cue_lexicon my_lexicon.yaml]
        [--reply_weights 0.6,0.4] [--identity_names names.txt]
        [--speech [--spk_ref_list data/train_reply_asr/data.list] [--spk_ref_n 30]
                  [--speech_metrics pocketsphinx_asr dnsmos speaker_similarity prosody] [--nj 2]]

What is scored depends on the rows' tasks:

* ``asr`` / ``tag``: WER/CER and per-cue tag accuracy next to chance (:mod:`wenet_echat.eval.understanding`),
  also per category (``understanding_by_category``);
* chat tasks (``s2s_think``, ``s2s_chat``, ``s2t_chat``, ``t2t``): per category (the reference ``category``) the
  offline reply score (state match + chrF, :mod:`wenet_echat.eval.reply`), token F1, reply-emotion accuracy,
  per-cue accuracy read from the CoT and the CoT transcript's WER, identity accuracy
  (:mod:`wenet_echat.eval.echat`); with ``--judge_conf`` also an LLM judge's score (:mod:`wenet_echat.eval.judge`,
  off by default, any OpenAI-compatible endpoint);
* rows with ``reply_wav`` (``bin/decode.py --token2wav_dir``), with ``--speech``: pocketsphinx WER of the reply
  audio against the reply text, DNSMOS, speaker similarity to the assistant voice (gold reply wavs of
  ``--spk_ref_list``) and prosody against the gold reply audio by reply emotion
  (:mod:`wenet_echat.eval.reply_speech`; needs ``pip install 'wenet_echat[eval]'``; ``--nj`` worker processes);
* timing fields: latency medians (first text token, first speech token, first audio chunk, RTF).

Writes ``--out`` (Markdown) and the numbers next to it (``.json``; per-item rows included), confusion matrices to
``<out dir>/plots/*.png`` and prints the Markdown. Several systems' JSONs make one table with ``bin/report.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wenet_echat.eval.echat import (
    CHAT_TASKS,
    ChatScoring,
    chat_rows,
    latency_summary,
    score_chat,
    understanding_by_category,
)
from wenet_echat.eval.judge import JudgeClient, judge_rows
from wenet_echat.eval.plots import confusion_plots
from wenet_echat.eval.reply import CUE_LEXICON, ReplyWeights, load_cue_lexicon
from wenet_echat.eval.report import results_markdown
from wenet_echat.eval.understanding import score_understanding, understanding_markdown
from wenet_echat.text.identity import IdentityFilter
from wenet_echat.text.labels import LABEL_VOCABS, REPLY_EMOTIONS
from wenet_echat.utils.fileio import read_jsonl, write_report
from wenet_echat.utils.logging import setup_logging

if TYPE_CHECKING:
    from wenet_echat.eval.speech import MetricPool

log = logging.getLogger("score")
SPEECH_METRICS = ("pocketsphinx_asr", "dnsmos", "speaker_similarity", "prosody")
TIMED_TASKS = (*CHAT_TASKS, "tts")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--ref", required=True, help="reference data.list")
    p.add_argument("--hyp", required=True, help="hyp.jsonl from bin/decode.py")
    p.add_argument("--out", required=True, help="results.md")
    p.add_argument("--title", default="Results")
    p.add_argument("--system", default=None, help="system name in the tables (default: the hyp's folder name)")
    p.add_argument("--no_plots", action="store_true", help="no confusion-matrix PNGs")
    p.add_argument("--judge_conf", default=None, help="LLM judge YAML (default: no judge)")
    p.add_argument("--judge_max_items", type=int, default=None, help="judge only the first N items per task")
    p.add_argument("--cue_lexicon", default=None, help="YAML cue -> value -> keywords for the state match")
    p.add_argument("--reply_weights", default="0.6,0.4", help="STATE,SIMILARITY weights of the reply score")
    p.add_argument("--identity_names", default=None, help="names file of other assistants (default: packaged)")
    p.add_argument("--speech", action="store_true", help="score the reply audio (rows with reply_wav)")
    p.add_argument("--speech_metrics", nargs="+", default=list(SPEECH_METRICS), choices=SPEECH_METRICS)
    p.add_argument("--spk_ref_list", default=None, help="list whose response_wav define the assistant voice")
    p.add_argument("--spk_ref_n", type=int, default=30)
    p.add_argument("--nj", type=int, default=1, help="worker processes scoring the reply audio")
    return p


def read_refs(path: str) -> dict[str, dict[str, Any]]:
    refs: dict[str, dict[str, Any]] = {}
    for i, rec in enumerate(read_jsonl(path), 1):
        if "key" not in rec:
            raise KeyError(f"{path}:{i}: record has no 'key'")
        refs[rec["key"]] = rec
    return refs


def init_chat_scoring(args: argparse.Namespace) -> ChatScoring:
    try:
        state, sim = (float(x) for x in args.reply_weights.split(","))
    except ValueError:
        raise ValueError(f"--reply_weights {args.reply_weights!r}: expected STATE,SIMILARITY (two numbers)") from None
    lexicon = load_cue_lexicon(args.cue_lexicon) if args.cue_lexicon else CUE_LEXICON
    return ChatScoring(ReplyWeights(state, sim), lexicon, IdentityFilter.from_file(args.identity_names))


def init_speech_metrics(args: argparse.Namespace) -> MetricPool:
    from wenet_echat.eval.speech import MetricPool, build_speech_metric

    metrics = {}
    for name in args.speech_metrics:
        if name == "speaker_similarity":
            if not args.spk_ref_list:
                log.warning("speaker similarity left out: no --spk_ref_list (gold reply wavs of the assistant)")
                continue
            wavs = [r.get("response_wav") or r.get("wav") for r in read_jsonl(args.spk_ref_list)]
            metrics[name] = build_speech_metric(name, ref_wavs=[w for w in wavs if w][: args.spk_ref_n])
        else:
            metrics[name] = build_speech_metric(name)
    return MetricPool(metrics, args.nj)


def score_chat_tasks(args: argparse.Namespace, refs: dict[str, dict[str, Any]], hyps: list[dict[str, Any]],
                     scores: dict[str, Any]) -> None:
    conf = init_chat_scoring(args)
    judge = JudgeClient.from_file(args.judge_conf) if args.judge_conf else None
    with init_speech_metrics(args) if args.speech else contextlib.nullcontext() as metrics:
        score_tasks(refs, hyps, scores, conf, judge, metrics, args.judge_max_items)


def score_tasks(refs: dict[str, dict[str, Any]], hyps: list[dict[str, Any]], scores: dict[str, Any],
                conf: ChatScoring, judge: JudgeClient | None, metrics: MetricPool | None,
                judge_max_items: int | None) -> None:
    if metrics is not None:
        from wenet_echat.eval.reply_speech import score_reply_audio
    for task in CHAT_TASKS:
        pairs = chat_rows(refs, hyps, task)
        if not pairs:
            continue
        rows = [row for _, row in pairs]
        if judge is not None:
            rows, failures = judge_rows(judge, pairs, judge_max_items)
            scores.setdefault("judge", {})[task] = {"calls": judge.calls, "failures": failures,
                                                    "model": judge.conf.model}
            log.info("%s: judged %d items (%d failed)", task, len(rows) - failures, failures)
        scores.setdefault("chat", {})[task] = score_chat(refs, rows, task, conf)
        if metrics is not None:
            scores.setdefault("speech", {})[task] = score_reply_audio(list(zip([r for r, _ in pairs], rows)), metrics)
    if metrics is not None and chat_rows(refs, hyps, "tts"):
        scores.setdefault("speech", {})["tts"] = score_reply_audio(chat_rows(refs, hyps, "tts"), metrics)


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    refs = read_refs(args.ref)
    hyps = read_jsonl(args.hyp)
    scores: dict[str, Any] = {"title": args.title, "ref": args.ref, "hyp": args.hyp,
                              **score_understanding(refs, hyps)}
    if any(h.get("task") in ("asr", "tag") for h in hyps):
        scores["understanding_by_category"] = understanding_by_category(refs, hyps)
    score_chat_tasks(args, refs, hyps, scores)
    latency = {t: latency_summary(h for h in hyps if h.get("task") == t) for t in TIMED_TASKS}
    scores["latency"] = {t: v for t, v in latency.items() if v}
    out = Path(args.out)
    if not args.no_plots:
        orders = {**LABEL_VOCABS, "response_emotion": REPLY_EMOTIONS}
        scores["plots"] = confusion_plots(scores, out.parent / "plots", orders)
    name = args.system or Path(args.hyp).resolve().parent.name
    parts = [understanding_markdown(scores, args.title)] if ("asr" in scores or "tag" in scores) else []
    if "chat" in scores or scores["latency"]:
        parts.append(results_markdown({name: scores}, f"{args.title}: chat", out.parent, understanding=False))
    text = "\n".join(parts) if parts else f"## {args.title}\n\nno hypothesis rows to score\n"
    write_report(out, text, scores)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
