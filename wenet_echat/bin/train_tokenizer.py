#!/usr/bin/env python3
"""Train the SentencePiece text tokenizer of the mini recipe from data.list text fields.

Usage:
    python -m wenet_echat.bin.train_tokenizer --data_list data/train/data.list --model_prefix data/lang/spm \
        --vocab_size 2000 [--model_type bpe|unigram] [--data_list more.list ...] [--no_templates] [--force]

Collects the ``text``, ``response`` and ``think`` fields of every record (``think`` is built from the transcript
and labels with the tag-form template when a record has no gold ``think`` but has ``text`` and ``labels``), plus
the task prompts, and writes ``{model_prefix}.model`` / ``.vocab`` atomically; the chat markers and label tags
are single pieces. Training is deterministic. A run is skipped when the model exists, is newer than every input
list and was trained with the same options (recorded in ``{model_prefix}.json``); ``--force`` retrains.
Prints the vocabulary size and the coverage (share of corpus bytes covered by learned pieces, not byte fallback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from wenet_echat.dataset.source import read_list
from wenet_echat.text.prompts import INSTRUCTIONS, SYSTEM_PROMPTS
from wenet_echat.text.think import build_tag_think
from wenet_echat.text.tokenizer import SentencePieceTokenizer, train_sentencepiece
from wenet_echat.utils.fileio import JsonlError, atomic_open, parse_jsonl_line

FIELDS = ("text", "response", "think")


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_list", action="append", required=True, help="data.list to read (repeatable)")
    p.add_argument("--model_prefix", required=True, help="writes PREFIX.model, PREFIX.vocab, PREFIX.json")
    p.add_argument("--vocab_size", type=int, default=2000, help="upper bound; a small corpus yields fewer pieces")
    p.add_argument("--model_type", default="bpe", choices=["bpe", "unigram"])
    p.add_argument("--character_coverage", type=float, default=1.0)
    p.add_argument("--no_templates", action="store_true", help="do not add the task prompts to the corpus")
    p.add_argument("--force", action="store_true", help="retrain even if the model is up to date")
    return p.parse_args(argv)


def collect_texts(paths: list[str], templates: bool = True) -> Iterator[str]:
    """Yield the training sentences of ``paths`` (one per field value), then the prompt texts."""
    for path in paths:
        for lineno, raw in read_list(path):
            rec = parse_jsonl_line(raw, path, lineno)
            for name in FIELDS:
                value = rec.get(name)
                if isinstance(value, str) and value.strip():
                    yield value
            if not rec.get("think") and isinstance(rec.get("text"), str) and isinstance(rec.get("labels"), dict):
                yield build_tag_think(rec["text"], rec["labels"], rec.get("response_emotion"))
    if templates:
        yield from SYSTEM_PROMPTS.values()
        for table in INSTRUCTIONS.values():
            yield from table


def coverage(tok: SentencePieceTokenizer, texts: list[str]) -> float:
    """Share of UTF-8 bytes of ``texts`` encoded by learned pieces rather than byte fallback."""
    total = sum(len(t.encode("utf-8")) for t in texts)
    fallback = sum(tok.is_byte(i) for t in texts for i in tok.encode(t))
    return 1.0 - fallback / total if total else 1.0


def up_to_date(model: Path, meta_path: Path, inputs: list[str], options: dict) -> bool:
    if not (model.is_file() and meta_path.is_file()):
        return False
    try:
        if json.loads(meta_path.read_text(encoding="utf-8")) != options:
            return False
    except (OSError, ValueError):
        return False
    newest_input = max(os.path.getmtime(p) for p in inputs)
    return model.stat().st_mtime >= newest_input


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    for path in args.data_list:
        if not os.path.isfile(path):
            print(f"train_tokenizer: data list '{path}' not found", file=sys.stderr)
            return 1
    model = Path(f"{args.model_prefix}.model")
    meta_path = Path(f"{args.model_prefix}.json")
    options = {"data_list": [os.path.abspath(p) for p in args.data_list], "vocab_size": args.vocab_size,
               "model_type": args.model_type, "character_coverage": args.character_coverage,
               "templates": not args.no_templates}
    try:
        texts = list(collect_texts(args.data_list, templates=not args.no_templates))
    except JsonlError as e:
        print(f"train_tokenizer: {e}", file=sys.stderr)
        return 1
    if not args.force and up_to_date(model, meta_path, args.data_list, options):
        print(f"train_tokenizer: {model} is up to date, skipping")
    else:
        train_sentencepiece(texts, args.model_prefix, vocab_size=args.vocab_size, model_type=args.model_type,
                            character_coverage=args.character_coverage)
        with atomic_open(meta_path) as f:
            json.dump(options, f, indent=1)
    tok = SentencePieceTokenizer(model)
    print(f"train_tokenizer: {model}: vocab size {tok.vocab_size}, {len(texts)} sentences, "
          f"coverage {coverage(tok, texts):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
