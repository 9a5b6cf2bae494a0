"""Training examples: a data.list record + a task -> ordered segments -> one contiguous sequence -> a batch.

Layout (OSUM-EChat, facts §2, Qwen chat template)::

    <|im_start|>system\\n{system prompt}<|im_end|>\\n<|im_start|>user\\n{instruction | text}
    [AUDIO]                                    # the model splices [4097] + adapter_out + [4098] here
    <|im_end|>\\n<|im_start|>assistant\\n{target}

Targets per task (``EOS`` = ``<|im_end|>``, ``S`` = ``[4096] + reply speech codes + [4096]``):

=========== ========================================================= =====================================
task        user turn                                                 target
=========== ========================================================= =====================================
asr         instruction + AUDIO                                       transcript EOS
tag         instruction + AUDIO                                       ``<adult> <female> <sad> <none>`` EOS
s2t_chat    AUDIO                                                     reply EOS
t2t         user text                                                 reply EOS
tts         reply text (no audio)                                     S
s2s_chat    AUDIO                                                     reply EOS S
s2s_think   AUDIO                                                     ``<think>`` CoT ``<think end>`` reply EOS S
=========== ========================================================= =====================================

A record with ``history`` (earlier turns ``[{"text", "response"}, ...]``) puts them between the system turn and
the user turn of the chat tasks, each as a user turn and the assistant's reply; they carry no loss.

With ``interleave`` (``model.speech_text_interleave``) the speech phase ``S`` carries the spoken text again in
chunks between chunks of its codes (:mod:`wenet_echat.text.interleave`); those text chunks carry no loss.

Loss is on target tokens only, except the tokens of a ``<&&>`` span (a missing label), which carry none.
``think=False`` drops the CoT of ``s2s_think`` and uses the ``s2s_chat`` system prompt (the no-thinking
ablation). The reply text is used as is: the reply emotion lives in the CoT, not as a leading tag.

:func:`flatten` lays the segments out with no padding in between (OSUM pads each segment separately; we do
not). Every position gets an *embedding kind*:

- ``KIND_TEXT`` (0): ``ids`` index the LLM's text embedding;
- ``KIND_SPEECH`` (1): ``ids`` index the separate speech embedding (codes, 4096 speech BOS/EOS, and the
  4097/4098 wrappers of the input audio);
- ``KIND_AUDIO`` (2): an adapter output frame; ``ids`` hold the frame's index (counted over the example's audio
  segments in order), so the model scatters ``adapter_out`` into these positions in order.

:func:`collate` right-pads whole sequences at the end only. ``labels`` follow the Hugging Face convention:
aligned with ``input_ids`` (the model shifts by one), ``IGNORE_ID = -100`` where there is no loss (prompt,
audio, ``<&&>`` spans, padding). A label at a ``KIND_SPEECH`` position is a speech-head class; use
:func:`joint_labels` to move it into the concatenated ``[text logits ; speech logits]`` class space.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from wenet_echat.text.interleave import Interleave
from wenet_echat.text.prompts import system_prompt, tag_string, user_instruction
from wenet_echat.text.think import MASK_TAG, THINK_STYLES, build_think, wrap_think
from wenet_echat.text.tokenizer import IM_END, IM_START, TextTokenizer

SPEECH_BOS = 4096  # opens and closes a spoken reply; audio input wrappers are SPEECH_BOS + 1 and + 2
IGNORE_ID = -100
KIND_TEXT, KIND_SPEECH, KIND_AUDIO = 0, 1, 2
SEGMENT_KINDS = ("text", "audio", "speech")

TARGET_TASKS: tuple[str, ...] = ("asr", "tag", "s2t_chat", "t2t", "tts", "s2s_chat", "s2s_think")
AUDIO_TASKS = frozenset({"asr", "tag", "s2t_chat", "s2s_chat", "s2s_think"})
SPEECH_TASKS = frozenset({"tts", "s2s_chat", "s2s_think"})
# the chat tasks: their prompt carries a record's ``history`` (earlier turns of a dialogue)
CHAT_TASKS = frozenset({"s2t_chat", "t2t", "s2s_chat", "s2s_think"})
# record fields the target builder reads (audio is loaded elsewhere; s2s_think needs text+labels or think)
TARGET_FIELDS: dict[str, tuple[str, ...]] = {
    "asr": ("text",),
    "tag": ("labels",),
    "s2t_chat": ("response",),
    "t2t": ("text", "response"),
    "tts": ("response", "response_tokens"),
    "s2s_chat": ("response", "response_tokens"),
    "s2s_think": ("response", "response_tokens"),
}


class MissingFieldError(ValueError):
    """A record lacks a field its task needs; ``field``, ``task`` and ``key`` name it."""

    def __init__(self, key: str, task: str, field_name: str, hint: str = ""):
        msg = f"record {key!r}: task {task!r} needs field {field_name!r}"
        super().__init__(msg + (f" ({hint})" if hint else ""))
        self.key, self.task, self.field = key, task, field_name


@dataclass
class Segment:
    """A run of one kind. ``ids`` is None for ``audio`` (its length is known only after the adapter);
    ``loss`` is one flag for the whole segment or one per id."""

    kind: str
    ids: list[int] | None
    loss: list[bool] | bool = False
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in SEGMENT_KINDS:
            raise ValueError(f"segment kind must be one of {SEGMENT_KINDS}, got {self.kind!r}")
        if (self.kind == "audio") != (self.ids is None):
            raise ValueError("an audio segment has ids=None and only an audio segment has")
        if self.kind == "audio" and self.loss is not False:
            raise ValueError("an audio segment carries no loss")
        if isinstance(self.loss, list) and len(self.loss) != len(self.ids or []):
            raise ValueError(f"segment {self.name!r}: {len(self.loss)} loss flags for {len(self.ids or [])} ids")

    def loss_flags(self) -> list[bool]:
        """One loss flag per id (not for audio)."""
        if self.ids is None:
            raise ValueError("an audio segment has no ids")
        return list(self.loss) if isinstance(self.loss, list) else [bool(self.loss)] * len(self.ids)


@dataclass
class Example:
    """The segments of one training (or, with only the prompt, decoding) sequence."""

    task: str
    segments: list[Segment]
    key: str = ""
    target_text: str = ""  # the text target (no EOS, ``<&&>`` kept); "" for tts
    speech_bos: int = SPEECH_BOS
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def kinds(self) -> list[str]:
        return [s.kind for s in self.segments]

    @property
    def num_audio(self) -> int:
        return sum(s.kind == "audio" for s in self.segments)

    def prompt(self) -> Example:
        """The segments before the target (what the model is fed at decoding time)."""
        segs = [s for s in self.segments if s.name not in ("target", "speech_text") and s.kind != "speech"]
        return Example(self.task, segs, self.key, "", self.speech_bos, dict(self.meta))


def _present(rec: dict[str, Any], name: str) -> bool:
    return rec.get(name) not in (None, "", [], {})


def _check_fields(rec: dict[str, Any], task: str, think: bool, think_style: str = "auto") -> None:
    key = str(rec.get("key", "?"))
    for name in TARGET_FIELDS[task]:
        if not _present(rec, name):
            hint = ("speech tokens of the reply; run the speech-token extraction stage or train a text-only task"
                    if name == "response_tokens" else "")
            raise MissingFieldError(key, task, name, hint)
    if task == "s2s_think" and think and (think_style != "auto" or not _present(rec, "think")):
        for name in ("text", "labels"):
            if not _present(rec, name):
                raise MissingFieldError(key, task, name, "needed to build the chain of thought when 'think' is absent")


def has_target_fields(record: dict[str, Any], task: str, think: bool = True, think_style: str = "auto") -> bool:
    """True when ``record`` has every field the target of ``task`` needs (no tokenization done)."""
    try:
        _check_fields(record, task, think, think_style)
    except MissingFieldError:
        return False
    return True


def target_text(record: dict[str, Any], task: str, think: bool = True, think_style: str = "auto") -> str:
    """The text target of ``task`` without the EOS ("" for tts).

    ``think_style`` picks the CoT of ``s2s_think``: ``auto`` = the record's ``think`` field, else the tag form
    built from its labels; ``tag`` / ``natural`` / ``cues`` (the tag form without the transcript) = always built
    from the labels in that form."""
    if task == "asr":
        return record["text"]
    if task == "tag":
        return tag_string(record["labels"])
    if task == "tts":
        return ""
    reply = record["response"]
    if task == "s2s_think" and think:
        if think_style not in THINK_STYLES:
            raise ValueError(f"think_style must be one of {', '.join(THINK_STYLES)}, got {think_style!r}")
        body = record.get("think") if think_style == "auto" else None
        if not body:
            style = "tag" if think_style == "auto" else think_style
            body = build_think(record["text"], record["labels"], record.get("response_emotion"), style)
        return wrap_think(body) + reply
    return reply


def encode_masked(text: str, tokenizer: TextTokenizer) -> tuple[list[int], list[bool]]:
    """Encode ``text``; the ids of every ``<&&>`` span get loss False, all others True.

    The text is cut at the spans and the pieces are encoded separately, so the span is exactly its own ids in
    every tokenizer (with SentencePiece it is one id; with a Qwen BPE it is a few).
    """
    ids: list[int] = []
    loss: list[bool] = []
    for piece in re.split(f"({re.escape(MASK_TAG)})", text):
        if not piece:
            continue
        part = tokenizer.encode(piece)
        ids += part
        loss += [piece != MASK_TAG] * len(part)
    return ids, loss


def _speech_codes(rec: dict[str, Any], task: str, speech_bos: int) -> list[int]:
    codes = rec["response_tokens"]
    bad = [c for c in codes if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < speech_bos]
    if bad:
        raise ValueError(f"record {rec.get('key', '?')!r}: task {task!r}: response_tokens must be ints in "
                         f"[0, {speech_bos}), got {bad[:3]}")
    return list(codes)


def speech_segments(rec: dict[str, Any], task: str, tokenizer: TextTokenizer, speech_bos: int,
                    interleave: Interleave | None = None) -> list[Segment]:
    """The speech phase of a speaking task: ``[4096] codes [4096]`` in one segment, or with ``interleave`` the
    speech BOS, then the reply's text chunks (``"speech_text"`` segments, no loss) between chunks of its codes
    (:mod:`wenet_echat.text.interleave`)."""
    codes = _speech_codes(rec, task, speech_bos)
    if interleave is None:
        return [Segment("speech", [speech_bos, *codes, speech_bos], True, "speech")]
    segments = [Segment("speech", [speech_bos], True, "speech")]
    for kind, ids in interleave.layout(tokenizer.encode(rec["response"]), codes, speech_bos):
        segments.append(Segment(kind, ids, kind == "speech", "speech" if kind == "speech" else "speech_text"))
    return segments


def history_text(history: Sequence[dict[str, str]] | None) -> str:
    """Earlier turns of a dialogue (``[{"text", "response"}, ...]``, oldest first) in the chat template: each a
    user turn with what was said and the assistant's reply (its chain of thought is not kept), as
    :class:`wenet_echat.infer.stream.ContextBuilder` keeps a live session's history."""
    return "".join(f"{IM_START}user\n{turn['text']}{IM_END}\n{IM_START}assistant\n{turn['response']}{IM_END}\n"
                   for turn in history or ())


def build_prompt(record: dict[str, Any], task: str, tokenizer: TextTokenizer, rng: random.Random | None = None,
                 think: bool = True) -> list[Segment]:
    """The prompt segments of ``task`` (system turn, the dialogue's earlier turns for the chat tasks, user turn
    with the audio slot, assistant header)."""
    if task not in TARGET_TASKS:
        raise KeyError(f"unknown task {task!r}; known: {', '.join(TARGET_TASKS)}")
    sys_task = "s2s_chat" if task == "s2s_think" and not think else task
    if task == "tts":
        user = record["response"]
    elif task == "t2t":
        user = record["text"]
    else:
        user = user_instruction(task, rng)
    head = (f"{IM_START}system\n{system_prompt(sys_task)}{IM_END}\n"
            + (history_text(record.get("history")) if task in CHAT_TASKS else "") + f"{IM_START}user\n{user}")
    tail = f"{IM_END}\n{IM_START}assistant\n"
    if task not in AUDIO_TASKS:
        return [Segment("text", tokenizer.encode(head + tail), False, "prompt")]
    return [
        Segment("text", tokenizer.encode(head), False, "prompt"),
        Segment("audio", None, False, "audio"),
        Segment("text", tokenizer.encode(tail), False, "assistant"),
    ]


def build_example(record: dict[str, Any], task: str, tokenizer: TextTokenizer, rng: random.Random | None = None,
                  think: bool = True, speech_bos: int = SPEECH_BOS, think_style: str = "auto",
                  interleave: Interleave | None = None) -> Example:
    """Segments of one training sequence for ``task`` (see the module docstring for the layouts; ``interleave``:
    the text-guided speech phase of :mod:`wenet_echat.text.interleave`).

    ``rng`` picks the instruction paraphrase of understanding tasks (None = the first, for evaluation).
    Raises :class:`MissingFieldError` naming the field (e.g. ``response_tokens`` for a speech task) when the
    record cannot serve ``task``; the caller may fall back to a text-only task.
    """
    if task not in TARGET_TASKS:
        raise KeyError(f"unknown task {task!r}; known: {', '.join(TARGET_TASKS)}")
    _check_fields(record, task, think, think_style)
    segments = build_prompt(record, task, tokenizer, rng, think)
    text = target_text(record, task, think, think_style)
    if task != "tts":
        ids, loss = encode_masked(text, tokenizer)
        segments.append(Segment("text", [*ids, tokenizer.eos_id], [*loss, True], "target"))
    if task in SPEECH_TASKS:
        segments += speech_segments(record, task, tokenizer, speech_bos, interleave)
    return Example(task, segments, str(record.get("key", "")), text, speech_bos)


# ------------------------------------------------------------------------------------------ flatten / pack
class Flat(NamedTuple):
    """One contiguous sequence: per-position id, embedding kind, loss flag and position (0..n-1)."""

    ids: list[int]
    kinds: list[int]
    loss_mask: list[bool]
    positions: list[int]


def _audio_lens(example: Example, audio_len: int | Sequence[int] | None) -> list[int]:
    n = example.num_audio
    if audio_len is None:
        lens: list[int] = []
    elif isinstance(audio_len, int):
        lens = [audio_len]
    else:
        lens = [int(x) for x in audio_len]
    if len(lens) != n:
        raise ValueError(f"example {example.key!r} has {n} audio segment(s) but {len(lens)} audio length(s)")
    if any(x < 0 for x in lens):
        raise ValueError(f"audio lengths must be >= 0, got {lens}")
    return lens


def flatten(example: Example, audio_len: int | Sequence[int] | None = None) -> Flat:
    """Lay the segments out contiguously. ``audio_len`` = adapter frames of each audio segment; an audio segment
    takes ``audio_len + 2`` positions (``[speech_bos+1] frames [speech_bos+2]``)."""
    lens = iter(_audio_lens(example, audio_len))
    ids: list[int] = []
    kinds: list[int] = []
    loss: list[bool] = []
    frame = 0
    for seg in example.segments:
        if seg.kind == "audio":
            n = next(lens)
            ids += [example.speech_bos + 1, *range(frame, frame + n), example.speech_bos + 2]
            kinds += [KIND_SPEECH, *[KIND_AUDIO] * n, KIND_SPEECH]
            loss += [False] * (n + 2)
            frame += n
            continue
        assert seg.ids is not None
        ids += seg.ids
        kinds += [KIND_TEXT if seg.kind == "text" else KIND_SPEECH] * len(seg.ids)
        loss += seg.loss_flags()
    return Flat(ids, kinds, loss, list(range(len(ids))))


class Packed(NamedTuple):
    """Several examples in one row; positions restart at 0 per example, ``seq_lens`` gives the boundaries
    (attention must be block-diagonal over them)."""

    ids: list[int]
    kinds: list[int]
    loss_mask: list[bool]
    positions: list[int]
    seq_lens: list[int]


def pack(examples: Sequence[Example], audio_lens: Sequence[int | Sequence[int] | None] | None = None) -> Packed:
    """Concatenate flattened examples into one row with no padding between them."""
    if audio_lens is None:
        audio_lens = [None] * len(examples)
    if len(audio_lens) != len(examples):
        raise ValueError(f"{len(examples)} examples but {len(audio_lens)} audio lengths")
    out = Packed([], [], [], [], [])
    for ex, al in zip(examples, audio_lens):
        f = flatten(ex, al)
        out.ids.extend(f.ids)
        out.kinds.extend(f.kinds)
        out.loss_mask.extend(f.loss_mask)
        out.positions.extend(f.positions)
        out.seq_lens.append(len(f.ids))
    return out


def collate(flats: Sequence[Flat | Packed], pad_id: int, padding_side: str = "right") -> dict[str, Any]:
    """Pad whole sequences to the longest one; returns int64 tensors (B, T) and ``lengths`` (B,).

    ``input_ids`` (pads = ``pad_id``), ``kinds`` (pads = ``KIND_TEXT``), ``labels`` (``ids`` where there is
    loss, else ``IGNORE_ID``), ``attention_mask`` (1 = real), ``position_ids``. Training pads on the right (pads
    continue the position count); batched decoding pads prompts on the ``"left"`` (pads get position 0), so every
    row's next token goes in the same column.
    """
    import torch

    if not flats:
        raise ValueError("collate needs at least one sequence")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    longest = max(len(f.ids) for f in flats)
    batch = len(flats)
    input_ids = torch.full((batch, longest), pad_id, dtype=torch.long)
    kinds = torch.full((batch, longest), KIND_TEXT, dtype=torch.long)
    labels = torch.full((batch, longest), IGNORE_ID, dtype=torch.long)
    attention = torch.zeros((batch, longest), dtype=torch.long)
    positions = torch.zeros((batch, longest), dtype=torch.long)
    lengths = torch.zeros(batch, dtype=torch.long)
    for b, f in enumerate(flats):
        n = len(f.ids)
        span = slice(0, n) if padding_side == "right" else slice(longest - n, longest)
        ids = torch.tensor(f.ids, dtype=torch.long)
        input_ids[b, span] = ids
        kinds[b, span] = torch.tensor(f.kinds, dtype=torch.long)
        labels[b, span] = torch.where(torch.tensor(f.loss_mask, dtype=torch.bool), ids, IGNORE_ID)
        attention[b, span] = 1
        pos = torch.tensor(f.positions, dtype=torch.long)
        positions[b, span] = pos
        if padding_side == "right":
            start = int(pos[-1]) + 1 if n else 0
            positions[b, n:] = torch.arange(start, start + longest - n)
        lengths[b] = n
    return {"input_ids": input_ids, "kinds": kinds, "labels": labels, "attention_mask": attention,
            "position_ids": positions, "lengths": lengths}


def joint_labels(labels: Any, kinds: Any, text_vocab_size: int) -> Any:
    """Shift speech-position labels by ``text_vocab_size`` into the ``[text ; speech]`` logit space."""
    import torch

    speech = (labels != IGNORE_ID) & (kinds == KIND_SPEECH)
    return torch.where(speech, labels + text_vocab_size, labels)


__all__ = [
    "AUDIO_TASKS", "CHAT_TASKS", "Example", "Flat", "IGNORE_ID", "KIND_AUDIO", "KIND_SPEECH", "KIND_TEXT",
    "MissingFieldError", "Packed", "SPEECH_BOS", "SPEECH_TASKS", "Segment", "TARGET_FIELDS", "TARGET_TASKS",
    "build_example", "build_prompt", "collate", "encode_masked", "flatten", "has_target_fields", "history_text",
    "joint_labels", "pack", "speech_segments", "target_text",
]
