#!/usr/bin/env python3
"""Spoken-chat latency on CPU: time to the first text token, first speech token, first audio chunk and the whole
turn, streamed (token-to-wave in its own thread or inline between LLM steps) vs whole-reply synthesis, with and
without thinking; and the engine's LLM decoding speed next to
``transformers`` ``generate`` on the same backbone and prompt embeddings.

Usage (from the repository root):
    .venv/bin/python bench/latency.py [--model_dir egs/echat/exp/stage3 --token2wav_dir egs/echat/exp/token2wav]
        [--random] [--wav in.wav] [--threads 1] [--repeats 3] [--text_tokens 64] [--speech_tokens 100]
        [--kv_cache static|hf] [--stream_conf '{"hop_growth": 1.0}'] [--json out.json]

Models: ``--model_dir`` / ``--token2wav_dir`` when given; else the recipe's newest trained stage
(``egs/echat/exp/stage3``, ``stage2``, ``stage1``) and ``egs/echat/exp/token2wav`` when they exist; else (or with
``--random``) the mini-recipe architecture (``egs/echat/conf/mini/{model,token2wav}.yaml``) with random weights
and a SentencePiece model trained in-process on the task prompts. The first line says which was used.

A trained model stops where it wants to; to compare like with like every turn is cut at ``--text_tokens`` text
and ``--speech_tokens`` speech tokens unless it ends earlier (the token counts are printed). Times are medians of
``--repeats`` runs after one warm-up. Output lines::

    models model=... token2wav=... (recipe | given | random mini)
    turn task=s2s_think audio=stream|stream_inline|whole first_text_ms=... first_speech_ms=... first_audio_ms=...
    share task=s2s_think stream=... stream_inline=...   (first streamed audio / whole-reply total, per mode)
    decode engine_tok_s=... hf_generate_tok_s=... ratio=... same_tokens=true new_tokens=...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wenet_echat.infer.decode import LoadedModel  # noqa: E402
from wenet_echat.infer.session import ChatConf, ChatEngine  # noqa: E402
from wenet_echat.infer.stream import ContextBuilder, IncrementalDecoder  # noqa: E402
from wenet_echat.infer.user_audio import load_user_audio  # noqa: E402
from wenet_echat.llm import CACHE_KINDS  # noqa: E402
from wenet_echat.model import GenerateConf, build_model  # noqa: E402
from wenet_echat.text.prompts import INSTRUCTIONS, SYSTEM_PROMPTS, system_prompt  # noqa: E402
from wenet_echat.text.tokenizer import SentencePieceTokenizer, train_sentencepiece  # noqa: E402
from wenet_echat.token2wav.model import build_token2wav  # noqa: E402
from wenet_echat.utils.config import load_config  # noqa: E402

RECIPE = ROOT / "egs" / "echat"
STAGES = ("stage3", "stage2", "stage1")


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_dir", default=None)
    p.add_argument("--token2wav_dir", default=None)
    p.add_argument("--random", action="store_true", help="random mini-architecture model even if the recipe has one")
    p.add_argument("--wav", default=None, help="user audio (default: the first test utterance, else a tone)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--text_tokens", type=int, default=64)
    p.add_argument("--speech_tokens", type=int, default=100)
    p.add_argument("--stream_conf", default=None,
                   help='JSON overrides of the token2wav streaming schedule, e.g. {"first_chunk": 12, "lookahead": 4}')
    p.add_argument("--kv_cache", default="static", choices=CACHE_KINDS,
                   help="the engine's KV cache: static (lean step) or hf (transformers' forward + DynamicCache)")
    p.add_argument("--json", default=None, help="also write the numbers here")
    return p.parse_args(argv)


def random_mini(tmp: Path) -> tuple[LoadedModel, Any]:
    """The mini recipe's model and token2wav architectures with random weights, and a tokenizer of the prompts."""
    texts = [*SYSTEM_PROMPTS.values(), *(s for v in INSTRUCTIONS.values() for s in v)]
    tok = SentencePieceTokenizer(train_sentencepiece(texts * 20, tmp / "spm", vocab_size=500))
    conf = load_config(RECIPE / "conf" / "mini" / "model.yaml")
    conf["tokenizer"] = {"type": "sentencepiece", "model": str(tmp / "spm.model")}
    torch.manual_seed(0)
    model = build_model(conf["model"], tok.vocab_size, tok.eos_id, tok.pad_id).eval()
    t2w = build_token2wav(load_config(RECIPE / "conf" / "mini" / "token2wav.yaml")).eval()
    return LoadedModel(model, tok, conf, "random"), t2w


def pick_models(args: argparse.Namespace, tmp: Path, conf: ChatConf) -> tuple[ChatEngine, str]:
    if args.model_dir:
        return ChatEngine.from_dirs(args.model_dir, args.token2wav_dir, conf=conf), "given"
    found = next((RECIPE / "exp" / s for s in STAGES if (RECIPE / "exp" / s / "train.yaml").is_file()), None)
    t2w = RECIPE / "exp" / "token2wav"
    if found is not None and not args.random:
        t2w_dir = t2w if (t2w / "token2wav.yaml").is_file() else None
        return ChatEngine.from_dirs(found, t2w_dir, conf=conf, recipe_dir=RECIPE), "recipe"
    loaded, t2w_model = random_mini(tmp)
    return ChatEngine(loaded, t2w_model, conf), "random mini"


def user_audio(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    if args.wav:
        return load_user_audio(args.wav), args.wav
    test = RECIPE / "data" / "test" / "data.list"
    if test.is_file():
        rec = json.loads(test.open().readline())
        path = Path(rec["wav"]) if Path(rec["wav"]).is_absolute() else RECIPE / rec["wav"]
        return load_user_audio(path), str(path)
    t = np.arange(48000) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32), "3 s tone"


def median_turn(engine: ChatEngine, conf: ChatConf, task: str, wav: np.ndarray, repeats: int) -> dict[str, float]:
    runs = []
    for i in range(repeats + 1):  # the first run warms up
        res = engine.session(conf).respond(task, audio=(wav, 16000))
        if i:
            runs.append(res.timings)
    keys = set.intersection(*(set(r) for r in runs))
    return {k: statistics.median(r[k] for r in runs) for k in sorted(keys)}


@torch.inference_mode()
def decode_speed(engine: ChatEngine, wav: np.ndarray, n: int, repeats: int, kv_cache: str) -> dict[str, Any]:
    """Greedy text decoding of ``n`` new tokens (EOS suppressed) from the same s2s_think prompt embeddings: the
    engine's incremental decoder vs ``llm.generate(inputs_embeds=...)``."""
    model = engine.model
    b = ContextBuilder(engine.tokenizer, model.speech_bos).user_turn(system_prompt("s2s_think"), "",
                                                                      engine.encode(wav))
    ids = torch.tensor([b.ids])
    kinds = torch.tensor([b.kinds])
    emb = model.embed(ids, kinds, torch.cat(b.frames, 0).unsqueeze(0))
    eos = model.eos_id

    def ours() -> list[int]:
        dec = IncrementalDecoder(model, kv_cache)
        dec.feed(emb)
        out = []
        for _ in range(n):
            logits = dec.text_logits()
            logits[:, eos] = float("-inf")
            tok = int(logits.argmax(-1))
            out.append(tok)
            dec.feed_ids([tok], [0])
        return out

    llm = model.llama_model
    mask = torch.ones(1, emb.size(1), dtype=torch.long)

    def hf() -> list[int]:
        out = llm.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, eos_token_id=eos, pad_token_id=engine.tokenizer.pad_id)
        return out[0, -n:].tolist()

    times: dict[str, list[float]] = {"engine": [], "hf": []}
    toks: dict[str, list[int]] = {}
    for i in range(repeats + 1):
        for name, fn in (("engine", ours), ("hf", hf)):
            t0 = time.perf_counter()
            toks[name] = fn()
            if i:
                times[name].append(time.perf_counter() - t0)
    eng_s, hf_s = statistics.median(times["engine"]), statistics.median(times["hf"])
    same = toks["engine"] == toks["hf"] if model.lm_classes == model.text_vocab_size else None
    return {"engine_tok_s": n / eng_s, "hf_generate_tok_s": n / hf_s, "ratio": hf_s / eng_s, "same_tokens": same,
            "new_tokens": n, "prompt_tokens": int(emb.size(1))}


TIME_KEYS = ("first_text_s", "first_reply_s", "first_speech_s", "first_audio_s", "total_s", "audio_s")


def fmt(d: dict[str, Any]) -> str:
    out = []
    for k, v in d.items():
        if isinstance(v, bool) or v is None:
            out.append(f"{k}={str(v).lower()}")
        elif k in TIME_KEYS:
            out.append(f"{k[:-2]}_ms={v * 1000:.0f}")
        elif k.endswith("_tokens"):
            out.append(f"{k}={int(v)}")
        elif isinstance(v, float):
            out.append(f"{k}={v:.2f}")
        else:
            out.append(f"{k}={v}")
    return " ".join(out)


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    torch.set_num_threads(args.threads)
    gen = GenerateConf(max_text_tokens=args.text_tokens, max_speech_tokens=args.speech_tokens,
                       kv_cache=args.kv_cache)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(sys.stderr):
        conf = ChatConf(generate=gen, max_history_turns=0)
        engine, source = pick_models(args, Path(tmp), conf)
        if engine.token2wav is not None and args.stream_conf:
            engine.token2wav.streaming = engine.token2wav.streaming.updated(json.loads(args.stream_conf))
        sched = engine.token2wav.streaming if engine.token2wav is not None else None
        wav, wav_name = user_audio(args)
        print(f"models model={engine.loaded.checkpoint} token2wav={'yes' if engine.token2wav else 'no'} "
              f"vocoder={engine.vocoder} ({source}) input={wav_name} ({wav.size / 16000:.2f} s) "
              f"threads={args.threads} kv_cache={args.kv_cache}"
              + (f" first_chunk={sched.first_chunk} hop={sched.hop} lookahead={sched.lookahead} "
                 f"hop_growth={sched.hop_growth} max_hop={sched.max_hop}" if sched is not None else ""))
        results: dict[str, Any] = {"models": source, "checkpoint": engine.loaded.checkpoint, "turns": []}
        for task in ("s2s_think", "s2s_chat"):
            rows = {}
            for mode in ("stream", "stream_inline", "whole"):
                c = ChatConf(generate=gen, max_history_turns=0, stream_audio=mode != "whole",
                             synth_thread=mode == "stream")
                t = median_turn(engine, c, task, wav, args.repeats)
                keep = [*TIME_KEYS, "text_tokens", "speech_tokens", "decode_tokens_per_s"]
                rows[mode] = row = {"task": task, "audio": mode, **{k: t[k] for k in keep if k in t}}
                results["turns"].append(row)
                print("turn " + fmt(row))
            if "first_audio_s" in rows["stream"]:
                share = {m: rows[m]["first_audio_s"] / rows["whole"]["total_s"] for m in ("stream", "stream_inline")}
                results.setdefault("share", {})[task] = share
                print(f"share task={task} " + fmt(share))
        speed = decode_speed(engine, wav, args.text_tokens, args.repeats, args.kv_cache)
        results["decode"] = speed
        print("decode " + fmt(speed))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
