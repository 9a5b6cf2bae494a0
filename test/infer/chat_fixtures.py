"""Tiny chat models for the session, CLI, app and gallery tests.

``memorised_model`` trains the tiny EChat model until it reproduces one record of the tiny corpus for
``s2s_think``, ``s2s_chat``, ``asr`` and ``tts``: greedy decoding then writes a real chain of thought, reply and
speech codes, so the tests can check what reaches the user. About 5 s on one core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import yaml

from test.echat_fixtures import make_corpus, make_tokenizer, tiny_model_conf
from test.token2wav.fixtures import tiny_model as tiny_token2wav
from wenet_echat.audio.features import compute_features
from wenet_echat.infer.decode import LoadedModel
from wenet_echat.model import EChatModel, build_model, make_inputs
from wenet_echat.text.tokenizer import SentencePieceTokenizer
from wenet_echat.token2wav import save_token2wav
from wenet_echat.train.checkpoint import save_checkpoint

TRAIN_TASKS = ("s2s_think", "s2s_chat", "asr", "tts")
KEYS = ("u000",)  # "I lost my keys again." from an adult female, happy
MAX_TEXT = 120


def _batch(recs: list[dict[str, Any]]) -> dict[str, Any]:
    feats = [compute_features("whisper_log_mel", sf.read(r["wav"], dtype="float32")[0], 16000, {}) for r in recs]
    longest = max(f.shape[0] for f in feats)
    batch: dict[str, Any] = {
        "keys": [r["key"] for r in recs], "tasks": [r["task"] for r in recs],
        "feats": torch.stack([torch.nn.functional.pad(f, (0, 0, 0, longest - f.shape[0])) for f in feats]),
        "feats_lengths": torch.tensor([f.shape[0] for f in feats]),
    }
    for name in ("text", "labels", "response", "response_emotion", "response_tokens", "think"):
        batch[name] = [r[name] for r in recs]
    return batch


def model_conf(root: Path) -> dict[str, Any]:
    return {"tokenizer": {"type": "sentencepiece", "model": str(root / "spm.model")}, "model": tiny_model_conf(),
            "dataset_conf": {"feats_type": "whisper_log_mel", "feats_conf": {"n_mels": 80}}}


def memorised_model(root: Path, max_steps: int = 600) -> tuple[LoadedModel, list[dict[str, Any]]]:
    """The tiny model trained on the records :data:`KEYS` until every target token is right; (model, records)."""
    torch.manual_seed(0)
    _, recs = make_corpus(root, n=8)
    tok = make_tokenizer(root, recs)
    model = build_model(tiny_model_conf(), tok.vocab_size, tok.eos_id, tok.pad_id)
    chosen = [r for r in recs if r["key"] in KEYS]
    batch = _batch(chosen)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    perfect = 0
    for step in range(max_steps):
        task = TRAIN_TASKS[step % len(TRAIN_TASKS)]
        inputs = make_inputs(batch, task, tok, model.audio_lengths, model.speech_bos, None, True)
        out = model(**{k: inputs[k] for k in ("input_ids", "kinds", "labels", "attention_mask", "position_ids",
                                               "feats", "feats_lengths") if k in inputs})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        perfect = perfect + 1 if float(out["acc"]) == 1.0 and float(out["loss"].detach()) < 0.02 else 0
        if perfect >= 2 * len(TRAIN_TASKS):
            break
    model.eval()
    return LoadedModel(model, tok, model_conf(root), "memory"), chosen


def random_model(root: Path) -> LoadedModel:
    """The untrained tiny model (outputs are arbitrary but deterministic)."""
    torch.manual_seed(0)
    _, recs = make_corpus(root, n=4)
    tok = make_tokenizer(root, recs)
    model = build_model(tiny_model_conf(), tok.vocab_size, tok.eos_id, tok.pad_id).eval()
    return LoadedModel(model, tok, model_conf(root), "memory")


def write_model_dir(model: EChatModel, root: Path, model_dir: Path) -> Path:
    """A model directory as ``bin/train.py`` writes it (``train.yaml`` + ``final/``)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "train.yaml").write_text(yaml.safe_dump(model_conf(root)))
    save_checkpoint(model_dir, "final", model)
    return model_dir


def write_token2wav_dir(path: Path) -> Path:
    save_token2wav(path, tiny_token2wav())
    return path


def load_tokenizer(root: Path) -> SentencePieceTokenizer:
    return SentencePieceTokenizer(root / "spm.model")


def read_wav(path: str) -> tuple[np.ndarray, int]:
    wav, sr = sf.read(path, dtype="float32")
    return wav, int(sr)
