#!/usr/bin/env python3
"""A static demo page from decoding outputs: ``index.html`` plus the audio it plays, in one folder.

From egs/echat, after decoding with reply audio (``bin/decode.py --token2wav_dir``) and, optionally, a spoken
conversation logged by ``bin/chat.py --log``::

    python -m wenet_echat.bin.make_gallery --out_dir exp/stage3/gallery \\
        --hyp exp/stage3/decode_test/hyp.jsonl --data_list data/test/data.list --session exp/chat/session.jsonl

Sections (OSUM-EChat's demo page layout):

* **Empathetic Interaction**: the same words spoken in different states (age, gender, emotion, sound event) and
  the model's different answers; groups are sentences of ``--data_list`` decoded in at least two states.
* **Real-time Spoken Dialogue**: each ``--session`` log as a multi-turn conversation with its latency figures
  (first text token, first audio chunk, whole turn).
* **Cross-Scenario**: one example per label value (ages, genders, emotions, sound events).

Every item plays the user's input audio and the reply audio and shows the chain of thought and the reply text.
Audio files are copied (``--link``: relative symlinks) under ``audio/``; every path in the page is relative, so the
folder works from ``file://`` with no server and can be moved or zipped. All text is HTML-escaped.
"""

from __future__ import annotations

import argparse
import html
import logging
import os
import re
import shutil
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from wenet_echat.audio.io import AudioError, load_audio, save_audio
from wenet_echat.text.labels import LABEL_VOCABS
from wenet_echat.utils.fileio import JsonlError, atomic_open, read_jsonl
from wenet_echat.utils.logging import setup_logging

log = logging.getLogger("make_gallery")
CUES = ("age", "gender", "emotion", "event")
_SAFE = re.compile(r"[^\w.\-]+")


@dataclass
class Item:
    key: str
    think: str
    reply: str
    input_audio: str | None  # source path (or ark spec)
    reply_audio: str | None
    transcript: str = ""
    labels: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", required=True)
    p.add_argument("--hyp", action="append", default=[], help="hyp.jsonl of bin/decode.py (repeatable)")
    p.add_argument("--data_list", action="append", default=[], help="data.list(s) the hyps were decoded from")
    p.add_argument("--session", action="append", default=[], help="bin/chat.py --log file(s) (repeatable)")
    p.add_argument("--task", default="s2s_think", help="hyp rows of this task (default: s2s_think)")
    p.add_argument("--max_groups", type=int, default=4, help="sentences in Empathetic Interaction")
    p.add_argument("--per_group", type=int, default=4, help="states per sentence")
    p.add_argument("--link", action="store_true", help="symlink the audio instead of copying it")
    p.add_argument("--title", default="wenet-echat demo")
    return p


# ------------------------------------------------------------------------------------------------- inputs
def load_records(paths: list[str]) -> dict[str, dict[str, Any]]:
    recs: dict[str, dict[str, Any]] = {}
    for path in paths:
        for i, rec in enumerate(read_jsonl(path), 1):
            if "key" not in rec:
                raise JsonlError(path, i, "record has no 'key'")
            recs[str(rec["key"])] = rec
    return recs


def load_items(hyp_paths: list[str], records: dict[str, dict[str, Any]], task: str) -> list[Item]:
    """Hyp rows of ``task`` joined with their data.list records (input audio, transcript, labels)."""
    items = []
    for path in hyp_paths:
        for i, row in enumerate(read_jsonl(path), 1):
            if "key" not in row:
                raise JsonlError(path, i, "hyp row has no 'key'")
            if row.get("task", task) != task:
                continue
            key = str(row["key"])
            rec = records.get(key)
            if rec is None:
                raise JsonlError(path, i, f"key {key!r} is in none of the data lists given with --data_list")
            items.append(Item(key, str(row.get("think") or ""), str(row.get("reply") or row.get("text") or ""),
                              rec.get("wav"), row.get("reply_wav"), str(rec.get("text") or ""),
                              dict(rec.get("labels") or {}),
                              {k: float(row[k]) for k in ("first_text_s", "first_audio_s", "total_s")
                               if isinstance(row.get(k), int | float)}))
    return items


def load_session(path: str) -> list[Item]:
    items = []
    for i, row in enumerate(read_jsonl(path), 1):
        if "reply" not in row:
            raise JsonlError(path, i, "not a bin/chat.py --log row (no 'reply')")
        items.append(Item(f"turn {row.get('turn', i)}", str(row.get("think") or ""), str(row["reply"]),
                          row.get("input") if row.get("input") and os.path.exists(str(row.get("input"))) else None,
                          row.get("reply_wav"), timings=dict(row.get("timings") or {})))
    return items


# ------------------------------------------------------------------------------------------------- selection
def state_of(item: Item) -> tuple[str, ...]:
    return tuple(str(item.labels.get(c)) for c in CUES)


def empathetic_groups(items: list[Item], max_groups: int, per_group: int) -> list[list[Item]]:
    """Sentences heard in the most distinct states first; one item per state."""
    by_text: dict[str, dict[tuple[str, ...], Item]] = defaultdict(dict)
    for it in items:
        if it.transcript:
            by_text[" ".join(it.transcript.lower().split())].setdefault(state_of(it), it)
    groups = [list(states.values())[:per_group] for _, states in
              sorted(by_text.items(), key=lambda kv: (-len(kv[1]), kv[0])) if len(states) >= 2]
    return groups[:max_groups]


def cross_scenario(items: list[Item]) -> list[tuple[str, str, Item]]:
    """(cue, value, item): the first item for every label value, in the vocabularies' order."""
    out = []
    for cue in CUES:
        for value in LABEL_VOCABS[cue]:
            if cue == "event" and value == "none":
                continue
            hit = next((it for it in items if it.labels.get(cue) == value), None)
            if hit is not None:
                out.append((cue, value, hit))
    return out


# ------------------------------------------------------------------------------------------------- audio
class AudioStore:
    """Copies (or links) each source once under ``out_dir/audio`` and returns the page-relative path."""

    def __init__(self, out_dir: Path, link: bool):
        self.out_dir, self.link = out_dir, link
        self.done: dict[str, str | None] = {}
        self.missing: list[str] = []

    def add(self, src: str | None, name: str) -> str | None:
        if not src:
            return None
        if src in self.done:
            return self.done[src]
        ext = Path(src).suffix.lower() if os.path.isfile(src) else ".wav"
        rel = f"audio/{len(self.done):04d}_{_SAFE.sub('_', name)[:60]}{ext}"
        dst = self.out_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            if os.path.isfile(src):
                if dst.is_symlink() or dst.exists():
                    dst.unlink()
                if self.link:
                    dst.symlink_to(os.path.relpath(os.path.abspath(src), dst.parent))
                else:
                    shutil.copyfile(src, dst)
            else:  # a kaldiio ark entry or a missing file
                wav, sr = load_audio(src)
                save_audio(dst, wav, sr)
        except (AudioError, OSError) as e:
            log.warning("audio %s left out: %s", src, e)
            self.missing.append(src)
            rel = None
        self.done[src] = rel
        return rel


# ------------------------------------------------------------------------------------------------- html
CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h2{border-bottom:2px solid #e86a1c;padding-bottom:.2em;margin-top:2em}
.group{margin:1.2em 0 2em}.items{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:1em}
.item{border:1px solid #ddd;border-radius:8px;padding:.8em;background:#fafafa}
.state{font-weight:600;color:#a4470f}.label{font-size:.8em;color:#666;margin-top:.5em}
details{font-size:.85em;color:#444}.reply{margin:.3em 0}audio{width:100%;margin:.2em 0}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ddd;padding:.5em;vertical-align:top;text-align:left}
.missing{color:#999;font-size:.85em}
"""


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def audio_tag(rel: str | None) -> str:
    if rel is None:
        return '<div class="missing">(no audio)</div>'
    return f'<audio controls preload="metadata" src="{esc(quote(rel))}"></audio>'


def state_caption(item: Item) -> str:
    parts = [f"{c}: {item.labels[c]}" for c in CUES if item.labels.get(c) not in (None, "", "none")]
    return ", ".join(parts) or "no labels"


def item_html(item: Item, store: AudioStore, heading: str) -> str:
    return (f'<div class="item"><div class="state">{esc(heading)}</div>'
            f'<div class="label">input</div>{audio_tag(store.add(item.input_audio, item.key + "_in"))}'
            f'<details><summary>chain of thought</summary>{esc(item.think) or "<i>(none)</i>"}</details>'
            f'<div class="label">reply</div><div class="reply">{esc(item.reply)}</div>'
            f'{audio_tag(store.add(item.reply_audio, item.key + "_reply"))}</div>')


def ms(t: dict[str, float], key: str) -> str:
    return f"{t[key] * 1000:.0f} ms" if key in t else "–"


def session_html(turns: list[Item], store: AudioStore, name: str) -> str:
    rows = []
    for it in turns:
        rows.append(
            f"<tr><td>{esc(it.key)}</td><td>{audio_tag(store.add(it.input_audio, f'{name}_{it.key}_in'))}</td>"
            f"<td><details><summary>chain of thought</summary>{esc(it.think) or '<i>(none)</i>'}</details>"
            f'<div class="reply">{esc(it.reply)}</div>'
            f"{audio_tag(store.add(it.reply_audio, f'{name}_{it.key}_reply'))}</td>"
            f"<td>{ms(it.timings, 'first_text_s')}</td><td>{ms(it.timings, 'first_audio_s')}</td>"
            f"<td>{ms(it.timings, 'total_s')}</td></tr>")
    firsts = [it.timings["first_audio_s"] for it in turns if "first_audio_s" in it.timings]
    mean = f"; mean time to first audio {sum(firsts) / len(firsts) * 1000:.0f} ms" if firsts else ""
    return (f"<h3>{esc(name)}</h3><p>{len(turns)} turns{esc(mean)}</p><table><tr><th>turn</th><th>user</th>"
            "<th>assistant</th><th>first text</th><th>first audio</th><th>turn total</th></tr>"
            + "".join(rows) + "</table>")


def build_page(title: str, groups: list[list[Item]], sessions: list[tuple[str, list[Item]]],
               cross: list[tuple[str, str, Item]], store: AudioStore) -> str:
    body = [f"<h1>{esc(title)}</h1>"]
    body.append('<h2 id="empathetic">Empathetic Interaction</h2><p>The same words in different states, and how '
                "the answer changes.</p>")
    for g in groups:
        body.append(f'<div class="group"><p>&ldquo;{esc(g[0].transcript)}&rdquo;</p><div class="items">'
                    + "".join(item_html(it, store, state_caption(it)) for it in g) + "</div></div>")
    if not groups:
        body.append('<p class="missing">No sentence was decoded in two or more states.</p>')
    body.append('<h2 id="dialogue">Real-time Spoken Dialogue</h2>')
    body += [session_html(turns, store, name) for name, turns in sessions]
    if not sessions:
        body.append('<p class="missing">No conversation log given (bin/chat.py --log).</p>')
    body.append('<h2 id="cross">Cross-Scenario</h2><div class="items">')
    body += [item_html(it, store, f"{cue}: {value}") for cue, value, it in cross]
    body.append("</div>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def make_gallery(out_dir: str | os.PathLike, hyps: list[str], data_lists: list[str], sessions: list[str],
                 task: str = "s2s_think", max_groups: int = 4, per_group: int = 4, link: bool = False,
                 title: str = "wenet-echat demo") -> dict[str, Any]:
    """Write ``out_dir/index.html`` and its audio; returns counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = load_items(hyps, load_records(data_lists), task) if hyps else []
    groups = empathetic_groups(items, max_groups, per_group)
    convs = [(Path(p).stem, load_session(p)) for p in sessions]
    cross = cross_scenario(items)
    store = AudioStore(out, link)
    page = build_page(title, groups, convs, cross, store)
    with atomic_open(out / "index.html") as f:
        f.write(page)
    return {"items": len(items), "groups": len(groups), "sessions": len(convs), "cross": len(cross),
            "audio": sum(v is not None for v in store.done.values()), "missing_audio": len(store.missing)}


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    if args.hyp and not args.data_list:
        sys.exit("error: --hyp needs the --data_list it was decoded from (input audio, transcripts, labels)")
    if not args.hyp and not args.session:
        sys.exit("error: nothing to show: give --hyp (+ --data_list) and/or --session")
    try:
        counts = make_gallery(args.out_dir, args.hyp, args.data_list, args.session, args.task, args.max_groups,
                              args.per_group, args.link, args.title)
    except (FileNotFoundError, JsonlError) as e:
        sys.exit(f"error: {e}")
    log.info("wrote %s: %s", Path(args.out_dir) / "index.html", counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
