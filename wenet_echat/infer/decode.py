"""Decoding a trained EChat model: load ``model_dir``, build prompts per task, generate, split the output.

A model directory written by ``bin/train.py`` holds ``train.yaml`` (tokenizer + model config) and checkpoints
(``final/``, ``epoch_N/``, ``step_N/``, or an averaged ``*.pt``). :func:`decode_batch` turns one pipeline batch
into hypothesis rows for ``hyp.jsonl``::

    {"key", "task", "text", "think", "reply", "reply_emotion", "speech_tokens", "n_text_tokens",
     "finished", "first_text_s", "first_speech_s", "total_s"}

``text`` is the whole text phase (for ``asr``/``tag`` the answer itself); for chat tasks :func:`split_output`
cuts it into the chain of thought and the reply at the ``<think end>`` marker (no token is lost at the
boundary: ``think + reply`` re-joins to ``text`` minus the markers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wenet_echat.model import EChatModel, GenerateConf, build_model, make_inputs
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


def load_model_dir(model_dir: str | Path, checkpoint: str | None = None, device: str = "cpu") -> LoadedModel:
    """Model + tokenizer from ``model_dir/train.yaml`` and a checkpoint (a tag under ``model_dir``, a path to a
    checkpoint directory or ``.pt`` file; default: the ``latest`` one)."""
    model_dir = Path(model_dir)
    conf_path = model_dir / "train.yaml"
    if not conf_path.is_file():
        raise FileNotFoundError(f"{conf_path} not found: is '{model_dir}' a directory written by bin/train.py?")
    conf = load_config(conf_path)
    tok = build_tokenizer(conf["tokenizer"])
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
    """(think, reply) of a generated text phase; no ``<think>`` → ("", text). An unclosed think is all think."""
    body = text.strip()
    if not body.startswith(THINK_BEGIN):
        return "", body
    body = body[len(THINK_BEGIN):]
    think, sep, reply = body.partition(THINK_END)
    return think.strip(), reply.strip() if sep else ""


def decode_batch(loaded: LoadedModel, batch: dict[str, Any], task: str, gen: GenerateConf,
                 think: bool = True, think_style: str = "auto") -> list[dict[str, Any]]:
    """Hypothesis rows for the samples of ``batch`` that serve ``task`` (see the module docstring)."""
    model, tok = loaded.model, loaded.tokenizer
    inputs = make_inputs(batch, task, tok, model.audio_lengths, model.speech_bos, None, think, prompt_only=True,
                         think_style=think_style)
    if inputs is None:
        return []
    device = next(model.parameters()).device
    tensors = {k: inputs[k].to(device) for k in ("input_ids", "kinds", "attention_mask", "position_ids",
                                                   "feats", "feats_lengths") if k in inputs}
    with torch.inference_mode():
        outs = model.generate(**tensors, speak=inputs["speak"], conf=gen)
    rows = []
    for key, out in zip(inputs["keys"], outs):
        text = tok.decode(out["text_ids"])
        row: dict[str, Any] = {"key": key, "task": task, "text": text.strip()}
        if task in ("s2t_chat", "t2t", "s2s_chat", "s2s_think"):
            cot, reply = split_output(text)
            row["think"], row["reply"] = cot, reply
            row["reply_emotion"] = parse_think(cot).get("response_emotion") if cot else None
        if inputs["speak"][0]:
            row["speech_tokens"] = out["speech_ids"]
        row.update({"n_text_tokens": len(out["text_ids"]), "finished": out["finished"],
                    "first_text_s": out["first_text_s"], "first_speech_s": out["first_speech_s"],
                    "total_s": out["total_s"]})
        rows.append(row)
    return rows


__all__ = ["LoadedModel", "decode_batch", "load_model_dir", "split_output"]
