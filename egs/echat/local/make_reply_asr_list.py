#!/usr/bin/env python3
"""Extra ASR data from the reply audio: one record per distinct ``response_wav`` with its reply text.

Usage: python local/make_reply_asr_list.py data/train/data.list data/train_reply_asr/data.list [--tasks asr tts]

EChat-mini's user turns repeat a few hundred sentences in many states; its replies (spoken by the assistant
voice) cover a much larger vocabulary. Transcribing them teaches stage 1 to spell words the user sentences of
train never contain, which is what the held-out test sentences need. The records serve only ``asr``; labels are
unknown (None) because they describe the assistant, not a user. Each record also keeps ``response``,
``response_wav``, ``response_emotion`` and (from a ``data.tok.list``) ``response_tokens``, so the list of a test
split is the set of distinct replies that token-to-wave resynthesis is scored on.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import soundfile as sf  # noqa: E402

from wenet_echat.utils.fileio import parse_jsonl_line, write_jsonl  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_list")
    p.add_argument("out_list")
    p.add_argument("--tasks", nargs="+", default=["asr"], choices=["asr", "tts"],
                   help="tasks the records list (tts: the reply text is a TTS prompt, e.g. for scoring a model's "
                        "TTS next to resynthesis from gold tokens)")
    args = p.parse_args(argv)
    seen: dict[str, dict] = {}
    with open(args.data_list, encoding="utf-8") as f:
        records = [parse_jsonl_line(line, args.data_list, i) for i, line in enumerate(f, 1) if line.strip()]
    for rec in records:
        wav, text = rec.get("response_wav"), rec.get("response")
        if not wav or not text or wav in seen:
            continue
        key = "reply-" + hashlib.md5(wav.encode()).hexdigest()[:12]
        try:
            duration = round(sf.info(wav).duration, 4)
        except RuntimeError as e:
            print(f"error: {args.data_list}: record {rec.get('key')!r}: cannot read response_wav {wav}: {e}",
                  file=sys.stderr)
            return 1
        seen[wav] = {"key": key, "wav": wav, "duration": duration, "task": list(args.tasks), "text": text,
                     "labels": {"age": None, "gender": None, "emotion": None, "event": None},
                     # kept so the same list serves resynthesis scoring (tokens -> audio vs this audio)
                     "response": text, "response_wav": wav, "response_emotion": rec.get("response_emotion")}
        if rec.get("response_tokens"):
            seen[wav]["response_tokens"] = rec["response_tokens"]
    if not seen:
        print(f"error: {args.data_list}: no record has both response_wav and response", file=sys.stderr)
        return 1
    write_jsonl(args.out_list, list(seen.values()))
    print(f"{args.out_list}: {len(seen)} reply utterances for {' + '.join(args.tasks)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
