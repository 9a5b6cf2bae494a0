"""Tiny EChat fixtures shared by model/train/decode tests: a corpus with every field, its tokenizer, a model config.

Everything is generated here (wavs are tones whose pitch follows the labels, so a model can learn something).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from wenet_echat.text.think import build_tag_think
from wenet_echat.text.tokenizer import SentencePieceTokenizer, train_sentencepiece

SENTENCES = ["I lost my keys again.", "What a lovely sunny day.", "My exam is tomorrow.", "The train was late."]
STATES = [
    ({"age": "adult", "gender": "female", "emotion": "happy", "event": "none"}, "happy", 220.0),
    ({"age": "old", "gender": "male", "emotion": "sad", "event": "none"}, "comforting", 90.0),
    ({"age": "child", "gender": "female", "emotion": "angry", "event": "none"}, "apologetic", 320.0),
]
SPEECH_CODES = 16


def _tone(seconds: float, f0: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    wav = sum(0.2 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 4)) + 0.01 * rng.standard_normal(t.size)
    return wav.astype(np.float32)


def make_corpus(root: Path, n: int = 12) -> tuple[str, list[dict[str, Any]]]:
    """A data.list of ``n`` records serving every task; returns (list path, records)."""
    (root / "wav").mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n):
        labels, reply_emo, f0 = STATES[i % len(STATES)]
        text = SENTENCES[i % len(SENTENCES)]
        dur = 0.5 + 0.1 * (i % 4)
        wav = root / "wav" / f"u{i:03d}.wav"
        sf.write(str(wav), _tone(dur, f0, i), 16000, subtype="PCM_16")
        reply = f"I hear you, {labels['emotion']} friend."
        recs.append({
            "key": f"u{i:03d}", "wav": str(wav), "duration": dur,
            "task": ["asr", "tag", "s2t_chat", "t2t", "tts", "s2s_chat", "s2s_think"],
            "text": text, "labels": labels, "response": reply, "response_emotion": reply_emo,
            # the same reply text is the same reply audio, hence the same tokens
            "response_tokens": [int(x) for x in np.random.default_rng(i % 3).integers(0, SPEECH_CODES, 6 + i % 3)],
            "think": build_tag_think(text, labels, reply_emo),
        })
    path = root / "data.list"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(path), recs


def make_tokenizer(root: Path, recs: list[dict[str, Any]]) -> SentencePieceTokenizer:
    texts = [t for r in recs for t in (r["text"], r["response"], r["think"])]
    return SentencePieceTokenizer(train_sentencepiece(texts * 3, root / "spm", vocab_size=400))


def tiny_model_conf(vocab: int | None = None) -> dict[str, Any]:
    llm = {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
           "tie_word_embeddings": True}
    if vocab is not None:
        llm["vocab_size"] = vocab
    return {
        "encoder": "whisper",
        "encoder_conf": {"n_mels": 80, "d_model": 32, "n_heads": 2, "n_layers": 1, "ffn_dim": 64, "dropout": 0.0},
        "adapter": "conv_transformer",
        "adapter_conf": {"d_model": 32, "n_heads": 2, "ffn_dim": 64, "n_layers": 1, "dropout": 0.0},
        "llm": "hf_causal_lm",
        "llm_conf": {"config": llm},
        "speech_codes": SPEECH_CODES,
    }


def tiny_dataset_conf(batch_size: int = 4) -> dict[str, Any]:
    return {"spec_aug": False, "shuffle": False, "sort": False,
            "batch_conf": {"batch_type": "static", "batch_size": batch_size}}
