"""Speech-encoder pre-training: CTC over the transcript + one classifier per paralinguistic cue.

OSUM-EChat starts from a pretrained Whisper encoder. A recipe that trains from scratch (the CPU-scale mini recipe)
needs a stand-in: connected straight to a randomly initialised LLM, an untrained encoder collapses (its output
stops depending on the audio within a few dozen steps, because the LLM first learns the text prior and the audio
frames only add noise to it) and never recovers. This model trains the same encoder alone, with

* CTC of the transcript on the encoder frames (50 Hz; blank = the last class), over characters (``a-z``, ``'``
  and space of the lower-cased text; other characters are dropped: small and quick to align from scratch) or
  over the tokenizer's ids (``ctc_units: tokenizer``), and
* one linear classifier per cue (age, gender, emotion, sound event) on the length-masked mean of the frames,
  skipping records without that label,

so the encoder carries both what was said and how. Its checkpoint keeps the ``encoder.`` prefix of
:class:`~wenet_echat.model.echat.EChatModel`, so stage 1 initialises from it with
``--init <dir> --init_prefixes encoder.``.

Config: the EChat ``model:`` mapping (so a stage config includes the shared ``model.yaml`` and the encoder is
the one stage 1 builds) plus::

    arch: encoder_pretrain
    pretrain_conf:
      ctc_units: char             # char | tokenizer
      ctc_weight: 1.0             # CTC weight; 0 = cues only
      cue_weight: 1.0             # weight of the summed cue cross-entropies; 0 = CTC only
      task_losses:                # which losses a batch drawn for each task trains (default: both, every task)
        asr: [ctc]                #   e.g. a CTC-only warm-up through train_conf.task_schedule: {asr: 1},
        tag: [ctc, cue]           #   then tag batches train both (the cue loss slows an unaligned CTC)

Only ``encoder``/``encoder_conf`` are built; the EChat model's other keys are accepted and unused.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import jiwer
import torch
import torch.nn.functional as F
from torch import nn

from wenet_echat.encoder import ENCODERS
from wenet_echat.nn.transformer import make_non_pad_mask
from wenet_echat.text.labels import LABEL_VOCABS
from wenet_echat.text.tokenizer import TextTokenizer

CUES: tuple[str, ...] = tuple(LABEL_VOCABS)
# keys of the EChat ``model:`` mapping (wenet_echat.model.echat.build_model)
ECHAT_KEYS = frozenset({"encoder", "encoder_conf", "adapter", "adapter_conf", "llm", "llm_conf", "speech_codes", "init",
                        "ctc_weight", "speech_text_interleave", "speech_text_end"})
PRETRAIN_TASKS: tuple[str, ...] = ("asr", "tag")  # a batch's task names its records and (task_losses) its losses
CHARS = " 'abcdefghijklmnopqrstuvwxyz"
CTC_UNITS = ("char", "tokenizer")
LOSSES = ("ctc", "cue")
ALL_LOSSES = frozenset(LOSSES)


def char_ids(text: str) -> list[int]:
    """CTC ids of the lower-cased characters of ``text`` in :data:`CHARS` (runs of spaces collapse; others drop)."""
    ids: list[int] = []
    for ch in text.lower():
        k = CHARS.find(ch)
        if k < 0 or (k == 0 and (not ids or ids[-1] == 0)):
            continue
        ids.append(k)
    while ids and ids[-1] == 0:
        ids.pop()
    return ids


def ctc_greedy_errors(logp: torch.Tensor, lengths: torch.Tensor, ref_ids: torch.Tensor, ref_lengths: torch.Tensor,
                      blank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy CTC decoding of ``logp`` (T, B, C) (best path, repeats merged, blanks dropped) scored against the
    reference ids (every reference non-empty): (summed edit distance, summed reference length), as tensors."""
    best = logp.argmax(-1).transpose(0, 1).tolist()
    hyps, refs = [], []
    for row, n, ref, m in zip(best, lengths.tolist(), ref_ids.tolist(), ref_lengths.tolist()):
        hyps.append(" ".join(str(u) for k, u in enumerate(row[:n]) if u != blank and (k == 0 or u != row[k - 1])))
        refs.append(" ".join(str(u) for u in ref[:m]))
    ops = jiwer.process_words(refs, hyps)  # the edit distance the scorer uses, over unit ids as words
    return (torch.tensor(float(ops.substitutions + ops.deletions + ops.insertions)),
            torch.tensor(float(ref_lengths.sum())))


class EncoderPretrainModel(nn.Module):
    """``encoder`` + ``ctc_head`` + ``cue_heads.<cue>``; :meth:`forward` takes :meth:`make_inputs`' tensors."""

    def __init__(self, encoder: nn.Module, text_vocab_size: int, ctc_weight: float = 1.0, cue_weight: float = 1.0,
                 ctc_units: str = "char", task_losses: dict[str, list[str]] | None = None):
        super().__init__()
        if ctc_weight < 0 or cue_weight < 0 or ctc_weight + cue_weight <= 0:
            raise ValueError(f"ctc_weight {ctc_weight} and cue_weight {cue_weight} must be >= 0, not both 0")
        if ctc_units not in CTC_UNITS:
            raise ValueError(f"ctc_units must be one of {', '.join(CTC_UNITS)}, got {ctc_units!r}")
        if task_losses is not None and not isinstance(task_losses, dict):
            raise ValueError(f"model.pretrain_conf.task_losses must be a mapping task -> losses, got {task_losses!r}")
        self.task_losses = dict.fromkeys(PRETRAIN_TASKS, ALL_LOSSES)
        for task, losses in (task_losses or {}).items():
            if task not in PRETRAIN_TASKS:
                raise ValueError(f"model.pretrain_conf.task_losses: unknown task {task!r}; known: "
                                 f"{', '.join(PRETRAIN_TASKS)}")
            if not isinstance(losses, list | tuple) or not losses or any(x not in LOSSES for x in losses):
                raise ValueError(f"model.pretrain_conf.task_losses.{task} must be a non-empty list of "
                                 f"{', '.join(LOSSES)}, got {losses!r}")
            self.task_losses[task] = frozenset(losses)
        self.encoder = encoder
        width = int(encoder.config.d_model)
        self.ctc_units = ctc_units
        self.ctc_classes = len(CHARS) if ctc_units == "char" else int(text_vocab_size)  # blank = this index
        self.ctc_weight, self.cue_weight = float(ctc_weight), float(cue_weight)
        self.ctc_head = nn.Linear(width, self.ctc_classes + 1)
        self.cue_heads = nn.ModuleDict({cue: nn.Linear(width, len(LABEL_VOCABS[cue])) for cue in CUES})

    # ------------------------------------------------------------------------------------------ inputs
    def make_inputs(self, batch: dict[str, Any], task: str, tokenizer: TextTokenizer,
                    rng: random.Random | None = None, think: bool = True, dropped: Counter[str] | None = None,
                    think_style: str = "auto") -> dict[str, Any] | None:
        """Tensors for :meth:`forward` from a pipeline batch: features, CTC ids of ``text`` (records without a
        transcript get length 0 and no CTC loss) and cue class ids (-1 = no label). Records with neither a
        transcript nor a label are dropped (counted in ``dropped``); None when none is left."""
        del rng, think, think_style  # the trainer's interface; targets here are fixed
        keep, ids, cue_ids = [], [], []
        n = len(batch["keys"])
        texts, all_labels = batch.get("text") or [None] * n, batch.get("labels") or [None] * n
        for i in range(n):
            text, labels = texts[i], all_labels[i] or {}
            row = [LABEL_VOCABS[c].index(labels[c]) if labels.get(c) in LABEL_VOCABS[c] else -1 for c in CUES]
            if not text and all(x < 0 for x in row):
                if dropped is not None:
                    dropped[f"{task}: no text and no labels"] += 1
                continue
            keep.append(i)
            ids.append((char_ids(text) if self.ctc_units == "char" else tokenizer.encode(text)) if text else [])
            cue_ids.append(row)
        if not keep:
            return None
        idx = torch.tensor(keep, dtype=torch.long)
        lengths = batch["feats_lengths"][idx]
        out: dict[str, Any] = {"feats": batch["feats"][idx, : int(lengths.max())], "feats_lengths": lengths}
        out["ctc_lengths"] = torch.tensor([len(x) for x in ids], dtype=torch.long)
        out["ctc_ids"] = torch.full((len(ids), max(1, max(len(x) for x in ids))), -1, dtype=torch.long)
        for row, x in enumerate(ids):
            out["ctc_ids"][row, : len(x)] = torch.tensor(x, dtype=torch.long)
        out["cue_ids"] = torch.tensor(cue_ids, dtype=torch.long)
        out["keys"] = [batch["keys"][i] for i in keep]
        out["task"] = task
        # what the trainer's timing counters read (one position per frame, no padding of ids)
        out["attention_mask"] = make_non_pad_mask(lengths, int(lengths.max()))
        return out

    # ----------------------------------------------------------------------------------------- forward
    def pooled(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Length-masked mean over frames: (B, T, d) → (B, d)."""
        mask = make_non_pad_mask(lengths, h.size(1)).unsqueeze(-1).to(h.dtype)
        return (h * mask).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(h.dtype)

    def forward(self, feats: torch.Tensor, feats_lengths: torch.Tensor, ctc_ids: torch.Tensor,
                ctc_lengths: torch.Tensor, cue_ids: torch.Tensor, task: str | None = None,
                **_: Any) -> dict[str, torch.Tensor]:
        """``loss`` = ctc_weight x CTC (mean per target token, over rows with a transcript) + cue_weight x the sum
        of the cue cross-entropies, each only if ``task_losses[task]`` names it (no task: both); ``acc`` = cue
        accuracy over labelled cues; ``acc_<cue>``, ``ctc``, ``n_tokens`` (labelled cues, at least 1 so CTC-only
        batches still weigh in); in eval mode also ``ctc_errs``/``ctc_units`` (greedy CTC decoding errors)."""
        losses = self.task_losses.get(task or "", ALL_LOSSES)  # no or unknown task: both losses
        h, lens = self.encoder(feats, feats_lengths)
        loss = h.float().sum() * 0.0  # keeps a graph when a batch has nothing to learn for the enabled losses
        out: dict[str, torch.Tensor] = {}
        has_text = ctc_lengths > 0
        if "ctc" in losses and self.ctc_weight > 0 and bool(has_text.any()):
            logp = self.ctc_head(h[has_text]).float().log_softmax(-1).transpose(0, 1)
            ctc = F.ctc_loss(logp, ctc_ids[has_text].clamp(min=0), lens[has_text], ctc_lengths[has_text],
                             blank=self.ctc_classes, reduction="mean", zero_infinity=True)
            loss = loss + self.ctc_weight * ctc
            out["ctc"] = ctc.detach()
            if not self.training:  # greedy-decoding errors for the cv report (ctc_err: unit error rate)
                out["ctc_errs"], out["ctc_units"] = ctc_greedy_errors(logp, lens[has_text], ctc_ids[has_text],
                                                                      ctc_lengths[has_text], self.ctc_classes)
        pooled = self.pooled(h, lens)
        hits, labelled = 0, 0
        for k, (cue, head) in enumerate(self.cue_heads.items()):
            y = cue_ids[:, k]
            sel = y >= 0
            if "cue" not in losses or not bool(sel.any()):
                continue
            logits = head(pooled[sel]).float()
            if self.cue_weight > 0:
                loss = loss + self.cue_weight * F.cross_entropy(logits, y[sel])
            with torch.no_grad():
                hit = logits.argmax(-1) == y[sel]
                out[f"acc_{cue}"] = hit.float().mean()
                hits += int(hit.sum())
                labelled += int(sel.sum())
        out["acc"] = torch.tensor(hits / labelled if labelled else float("nan"))
        out["n_tokens"] = torch.tensor(max(1, labelled))
        out["loss"] = loss
        return out


def build_encoder_pretrain(conf: dict[str, Any], text_vocab_size: int) -> EncoderPretrainModel:
    """From the ``model:`` mapping with ``arch: encoder_pretrain`` (keys in the module docstring)."""
    unknown = sorted(set(conf) - ECHAT_KEYS - {"arch", "pretrain_conf"})
    if unknown:
        raise KeyError(f"unknown encoder_pretrain model key(s) {unknown}; known: the EChat model's keys and "
                       "pretrain_conf")
    if "encoder" not in conf:
        raise KeyError("encoder_pretrain model config needs 'encoder'")
    pconf = dict(conf.get("pretrain_conf") or {})
    bad = sorted(set(pconf) - {"ctc_units", "ctc_weight", "cue_weight", "task_losses"})
    if bad:
        raise KeyError(f"unknown model.pretrain_conf key(s) {bad}; known: ctc_units, ctc_weight, cue_weight, "
                       "task_losses")
    encoder = ENCODERS.build(conf["encoder"], dict(conf.get("encoder_conf") or {}))
    return EncoderPretrainModel(encoder, text_vocab_size, float(pconf.get("ctc_weight", 1.0)),
                                float(pconf.get("cue_weight", 1.0)), str(pconf.get("ctc_units", "char")),
                                pconf.get("task_losses"))


__all__ = ["CHARS", "CTC_UNITS", "CUES", "ECHAT_KEYS", "LOSSES", "PRETRAIN_TASKS", "EncoderPretrainModel",
           "build_encoder_pretrain", "char_ids", "ctc_greedy_errors"]
