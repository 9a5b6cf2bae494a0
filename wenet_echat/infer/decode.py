"""Decoding a trained EChat model: load ``model_dir``, build prompts per task, generate, split the output.

A model directory written by ``bin/train.py`` holds ``train.yaml`` (tokenizer + model config) and checkpoints
(``final/``, ``epoch_N/``, ``step_N/``, or an averaged ``*.pt``). :func:`decode_batch` turns one pipeline batch
into hypothesis rows for ``hyp.jsonl``::

    {"key", "task", "text", "think", "reply", "reply_emotion", "speech_tokens", "n_text_tokens",
     "finished", "first_text_s", "first_speech_s", "total_s"[, "speech_times"]}

``text`` is the whole text phase (for ``asr``/``tag`` the answer itself); for chat tasks :func:`split_output`
cuts it into the chain of thought and the reply at the ``<think end>`` marker (no token is lost at the
boundary: ``think + reply`` re-joins to ``text`` minus the markers) and ``reply_emotion`` is read from the
thought (:func:`wenet_echat.text.think.parse_think`; None without one). ``speech_tokens`` are the reply's codes
without the speech BOS/EOS (tasks with a speech phase: ``tts``, ``s2s_chat``, ``s2s_think``).

Prompts need only what the prompt shows (the audio; the text for ``t2t``, the reply text for ``tts``):
:func:`prompt_batch` fills target-only fields a test record lacks (gold speech tokens, reply, labels) with
placeholders, so e.g. S2S decoding runs on a ``data.list`` without ``response_tokens``. Reply audio, its
latency and real-time factor are added by :mod:`wenet_echat.infer.reply_audio`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wenet_echat.model import EChatModel, GenerateConf, build_model, make_inputs
from wenet_echat.text.targets import CHAT_TASKS, SPEECH_TASKS
from wenet_echat.text.think import THINK_BEGIN, THINK_END, parse_think
from wenet_echat.text.tokenizer import TextTokenizer, build_tokenizer
from wenet_echat.train.checkpoint import read_state_dict, resolve_checkpoint
from wenet_echat.utils.config import load_config

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: EChatModel
    tokenizer: TextTokenizer
    conf: dict[str, Any]
    checkpoint: str


def resolve_tokenizer_paths(conf: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    """The tokenizer config with relative ``model``/``path`` entries made usable from any directory: kept when they
    exist from the current directory, else taken relative to the nearest ancestor of ``model_dir`` holding them
    (``train.yaml`` stores them relative to the recipe directory, e.g. ``data/lang/spm.model``)."""
    out = dict(conf)
    for key in ("model", "path"):
        value = out.get(key)
        if not isinstance(value, str) or Path(value).is_absolute() or Path(value).exists():
            continue
        for base in Path(model_dir).resolve().parents:
            if (base / value).exists():
                out[key] = str(base / value)
                break
    return out


def load_model_dir(model_dir: str | Path, checkpoint: str | None = None, device: str = "cpu") -> LoadedModel:
    """Model + tokenizer from ``model_dir/train.yaml`` and a checkpoint (a tag under ``model_dir``, a path to a
    checkpoint directory or ``.pt`` file; default: the ``latest`` one)."""
    model_dir = Path(model_dir)
    conf_path = model_dir / "train.yaml"
    if not conf_path.is_file():
        raise FileNotFoundError(f"{conf_path} not found: is '{model_dir}' a directory written by bin/train.py?")
    conf = load_config(conf_path)
    tok = build_tokenizer(resolve_tokenizer_paths(conf["tokenizer"], model_dir))
    model = build_model(conf["model"], tok.vocab_size, tok.eos_id, tok.pad_id)
    if checkpoint is None:
        ckpt: Path = resolve_checkpoint(model_dir)
    else:
        candidate = Path(checkpoint)
        ckpt = candidate if candidate.exists() else model_dir / checkpoint
        if not ckpt.exists():
            raise FileNotFoundError(f"checkpoint '{checkpoint}' is neither a path nor a tag under {model_dir}")
    state = read_state_dict(ckpt)
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    log.info("loaded %s", ckpt)
    return LoadedModel(model, tok, conf, str(ckpt))


def split_output(text: str) -> tuple[str, str]:
    """(think, reply) of a generated text phase.

    The chain of thought ends at the first ``<think end>``; everything after it is the reply, so the token next
    to the marker on either side stays where it belongs. Tolerated deviations: text before ``<think>`` (dropped
    with the marker), a missing ``<think>`` before ``<think end>`` (the part before the end marker is the
    thought), repeated markers (removed from the reply). No ``<think end>``: an output that opens with
    ``<think>`` is an unfinished thought (empty reply), any other output is all reply.
    """
    body = text.strip()
    head, sep, reply = body.partition(THINK_END)
    if not sep:
        if body.startswith(THINK_BEGIN):
            return body[len(THINK_BEGIN):].strip(), ""
        return "", body
    begin = head.find(THINK_BEGIN)
    think = head[begin + len(THINK_BEGIN):] if begin >= 0 else head
    reply = reply.replace(THINK_BEGIN, "").replace(THINK_END, "")
    return think.strip(), reply.strip()


def spoken_ids(tok: TextTokenizer, text_ids: list[int], tts_text: str | None = None) -> list[int]:
    """The ids of the text a speech phase says, as training encodes it (the record's ``response`` on its own):
    a TTS row's input text, else the reply of the generated text phase (the chain of thought is not spoken).
    A model with ``speech_text_interleave`` re-reads them while it speaks."""
    return tok.encode(tts_text if tts_text is not None else split_output(tok.decode(text_ids))[1])


# what a decoding prompt reads from a record, per task (everything else feeds the target only)
PROMPT_FIELDS: dict[str, tuple[str, ...]] = {"tts": ("response",), "t2t": ("text",)}
# stand-ins for target-only fields a record may lack at test time (the prompt never shows them)
_PLACEHOLDERS: dict[str, Any] = {
    "text": "-", "response": "-", "response_tokens": [0], "think": "-",
    "labels": {"age": None, "gender": None, "emotion": None, "event": None},
}


def prompt_batch(batch: dict[str, Any], task: str) -> dict[str, Any]:
    """A copy of ``batch`` whose missing target-only fields hold placeholders, so that a test record without
    gold speech tokens (or reply, or labels) still gets its decoding prompt. Fields the prompt of ``task``
    reads (:data:`PROMPT_FIELDS`) are never filled in: a TTS record without a reply text is still skipped."""
    out = dict(batch)
    n = len(batch["keys"])
    for name, value in _PLACEHOLDERS.items():
        if name in PROMPT_FIELDS.get(task, ()):
            continue
        column = list(batch.get(name) or [None] * n)
        out[name] = [value if v in (None, "", [], {}) else v for v in column]
    return out


def attach_speech_processors(gen: GenerateConf, processors: list[Any]) -> bool:
    """Put logits processors for the speech phase into ``gen`` when :class:`GenerateConf` has the
    ``speech_processors`` hook; returns whether it has (False: generation runs without them)."""
    if "speech_processors" not in getattr(GenerateConf, "__dataclass_fields__", {}):
        return False
    gen.speech_processors = list(processors)  # type: ignore[attr-defined]
    return True


def decode_batch(loaded: LoadedModel, batch: dict[str, Any], task: str, gen: GenerateConf,
                 think: bool = True, think_style: str = "auto") -> list[dict[str, Any]]:
    """Hypothesis rows for the samples of ``batch`` that serve ``task`` (see the module docstring)."""
    model, tok = loaded.model, loaded.tokenizer
    inputs = make_inputs(prompt_batch(batch, task), task, tok, model.audio_lengths, model.speech_bos, None, think,
                         prompt_only=True, think_style=think_style)
    if inputs is None:
        return []
    device = next(model.parameters()).device
    tensors = {k: inputs[k].to(device) for k in ("input_ids", "kinds", "attention_mask", "position_ids",
                                                   "feats", "feats_lengths") if k in inputs}
    records = inputs["records"]

    def spoken(row: int, text_ids: list[int]) -> list[int]:
        return spoken_ids(tok, text_ids, records[row]["response"] if task == "tts" else None)

    with torch.inference_mode():
        outs = model.generate(**tensors, speak=inputs["speak"], conf=gen, speech_only=inputs.get("speech_only"),
                              spoken=spoken)
    return [hyp_row(key, task, out, tok, speak) for key, out, speak in zip(inputs["keys"], outs, inputs["speak"])]


def hyp_row(key: str, task: str, out: dict[str, Any], tok: TextTokenizer, speak: bool) -> dict[str, Any]:
    """One ``hyp.jsonl`` row from one :meth:`EChatModel.generate` result."""
    text = tok.decode(out["text_ids"])
    row: dict[str, Any] = {"key": key, "task": task, "text": text.strip()}
    if task in CHAT_TASKS:
        cot, reply = split_output(text)
        row["think"], row["reply"] = cot, reply
        row["reply_emotion"] = parse_think(cot).get("response_emotion") if cot else None
    if speak:
        row["speech_tokens"] = [int(t) for t in out["speech_ids"]]
    row.update({"n_text_tokens": len(out["text_ids"]), "finished": out["finished"],
                "first_text_s": out["first_text_s"], "first_speech_s": out["first_speech_s"],
                "total_s": out["total_s"]})
    if out.get("speech_times"):
        row["speech_times"] = [round(float(t), 5) for t in out["speech_times"]]
    return row


def speech_length_stats(rows: list[dict[str, Any]], opening: int = 30) -> dict[str, Any]:
    """How the speech codes of each task with a speech phase ended: ``rows``, ``ended`` (closed by the model's own
    speech EOS; the others were cut at the length limit), ``mean_tokens``, and ``distinct_openings``: distinct
    first ``opening`` codes among the rows (far fewer than rows: the model speaks the same start whatever the
    text). Returns ``{"opening_tokens": opening, "tasks": {task: {...}}}``."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("speech_tokens") is not None and r["task"] in SPEECH_TASKS:
            by_task.setdefault(r["task"], []).append(r)
    tasks = {}
    for task, rs in by_task.items():
        tasks[task] = {"rows": len(rs), "ended": sum(bool(r.get("finished")) for r in rs),
                       "mean_tokens": round(sum(len(r["speech_tokens"]) for r in rs) / len(rs), 1),
                       "distinct_openings": len({tuple(r["speech_tokens"][:opening]) for r in rs})}
    return {"opening_tokens": opening, "tasks": tasks}


__all__ = ["CHAT_TASKS", "LoadedModel", "PROMPT_FIELDS", "attach_speech_processors", "decode_batch", "hyp_row",
           "load_model_dir", "prompt_batch", "speech_length_stats", "split_output", "spoken_ids"]
