"""Score spoken replies: independent-ASR intelligibility, DNSMOS, speaker similarity, next to the reference audio.

    python -m wenet_echat.bin.score_speech --ref_list data/test_reply/data.list \\
        --system neural=exp/token2wav/resynth_test_neural/wav.scp --system griffinlim=exp/.../wav.scp \\
        --spk_ref_list data/train_reply_asr/data.list --out exp/token2wav/resynth_test.md [--max_utts 100] [--nj 2]

``--ref_list`` records give the reply text (``response``, else ``text``) and the reference audio
(``response_wav``, else ``wav``); each ``--system NAME=wav.scp`` maps the same keys to generated wavs. The
reference audio is scored as the first row (``reference``), so every number has its yardstick beside it:
pocketsphinx WER of the audio against the reply text (corpus level), DNSMOS P.835 (SIG/BAK/OVRL), and the
cosine similarity of Resemblyzer d-vectors to the assistant voice (mean embedding of ``--spk_ref_n`` wavs of
``--spk_ref_list``, which should not overlap the scored replies). Writes a Markdown table to ``--out`` and the
numbers (with per-utterance rows) to the same path with ``.json``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from wenet_echat.eval.speech import MetricPool, build_speech_metric, summarize_rows
from wenet_echat.utils.fileio import read_jsonl, read_kv, write_report
from wenet_echat.utils.logging import setup_logging

log = logging.getLogger("score_speech")


def reference_items(records: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    items = []
    for i, rec in enumerate(records, 1):
        text = rec.get("response") or rec.get("text")
        wav = rec.get("response_wav") or rec.get("wav")
        if not rec.get("key") or not text or not wav:
            raise ValueError(f"{path}:{i}: a record needs key, response (or text) and response_wav (or wav)")
        items.append({"key": rec["key"], "path": wav, "ref_text": text})
    return items


def score_system(items: list[dict[str, Any]], pool: MetricPool) -> dict[str, Any]:
    """Corpus WER/CER and mean DNSMOS (and speaker similarity, when the pool has it) of one system's items."""
    t0 = time.perf_counter()
    rows = pool.score(items)
    out = summarize_rows(rows, [it["ref_text"] for it in items])
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["items"] = rows
    return out


def markdown(results: dict[str, dict[str, Any]], title: str) -> str:
    ref = results["reference"]
    lines = [f"## {title}", "", "| system | n | WER % | WER / ref | DNSMOS OVRL | Δ OVRL | SIG | BAK | speaker sim |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        ratio = r["wer"] / ref["wer"] if ref["wer"] else float("nan")
        sim = f"{r['spk_sim']:.3f}" if "spk_sim" in r else "-"
        lines.append(f"| {name} | {r['n']} | {r['wer']:.1f} | {ratio:.2f} | {r['dnsmos_ovrl']:.2f} | "
                     f"{r['dnsmos_ovrl'] - ref['dnsmos_ovrl']:+.2f} | {r['dnsmos_sig']:.2f} | {r['dnsmos_bak']:.2f} | "
                     f"{sim} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--ref_list", required=True)
    p.add_argument("--system", action="append", default=[], help="NAME=wav.scp (repeatable)")
    p.add_argument("--spk_ref_list", default=None, help="list whose response_wav/wav define the target voice")
    p.add_argument("--spk_ref_n", type=int, default=30)
    p.add_argument("--max_utts", type=int, default=None)
    p.add_argument("--nj", type=int, default=1, help="worker processes (each scorer is single-threaded)")
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="Speech")
    args = p.parse_args(argv)
    setup_logging()
    records = read_jsonl(args.ref_list)[: args.max_utts]
    ref_items = reference_items(records, args.ref_list)
    systems: dict[str, list[dict[str, Any]]] = {"reference": ref_items}
    for spec in args.system:
        name, sep, scp = spec.partition("=")
        if not sep or not name or name == "reference":
            raise ValueError(f"--system {spec!r}: expected NAME=wav.scp (NAME not 'reference')")
        wavs = read_kv(scp)
        missing = [it["key"] for it in ref_items if it["key"] not in wavs]
        if missing:
            raise KeyError(f"{scp}: no wav for {len(missing)} reference key(s), e.g. {missing[:3]}")
        systems[name] = [{**it, "path": wavs[it["key"]]} for it in ref_items]
    metrics = {"asr": build_speech_metric("pocketsphinx_asr"), "dnsmos": build_speech_metric("dnsmos")}
    if args.spk_ref_list:
        refs = reference_items(read_jsonl(args.spk_ref_list), args.spk_ref_list)[: args.spk_ref_n]
        scored = {it["path"] for it in ref_items}
        overlap = [r["path"] for r in refs if r["path"] in scored]
        if overlap:
            raise ValueError(f"--spk_ref_list shares {len(overlap)} wav(s) with the scored replies, e.g. {overlap[0]}")
        metrics["spk"] = build_speech_metric("speaker_similarity", ref_wavs=[r["path"] for r in refs])
    results = {}
    with MetricPool(metrics, args.nj) as pool:
        for name, items in systems.items():
            results[name] = score_system(items, pool)
            log.info("%s: n %d WER %.1f%% OVRL %.2f (%.0f s)", name, results[name]["n"], results[name]["wer"],
                     results[name]["dnsmos_ovrl"], results[name]["seconds"])
    text = markdown(results, args.title)
    write_report(args.out, text, results)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
