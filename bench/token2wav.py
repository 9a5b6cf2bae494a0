#!/usr/bin/env python3
"""Token2wav speed and fidelity on CPU: real-time factor, time to the first streamed chunk, streamed vs whole
synthesis, and (with ``--eval_list``) mel L1 of resynthesised replies against their real audio.

Usage (from the repository root or egs/echat):
    .venv/bin/python bench/token2wav.py [--model_dir exp/token2wav | --config egs/echat/conf/mini/token2wav.yaml]
        [--threads 1] [--seconds 5] [--repeats 3] [--seed 0]
        [--eval_list data/dev/data.list --n_eval 20 [--speech_tokenizer data/speech_token/kmeans512.npz]]
        [--stream_conf '{"lookahead": 6}']

Without ``--model_dir`` the model is built from ``--config`` with random weights (speed numbers only). One line
per measurement::

    rtf vocoder=neural audio_s=5.00 flow_s=... vocoder_s=... rtf=...        (median of --repeats, after a warm-up)
    rtf vocoder=griffinlim ...
    first_chunk tokens=18 latency_ms=... chunk_audio_ms=... stream_rtf=...  (tokens pushed one at a time)
    stream_vs_whole frames=... mel_max_abs=... mel_mean_abs=... wav_max_abs=... wav_mean_abs=... same_length=...
    eval flow n=20 mel_l1=...                    (flow mel vs the reply's real mel)
    eval copy vocoder=neural n=20 mel_l1=...     (real mel -> vocoder -> mel vs real mel)
    eval copy vocoder=griffinlim n=20 mel_l1=...
    eval resynth vocoder=neural n=20 mel_l1=...  (tokens -> flow -> vocoder -> mel vs real mel)
    eval resynth vocoder=griffinlim n=20 mel_l1=...

Mel L1 is the mean absolute difference of natural-log mel magnitudes (the model's own mel definition).
Eval tokens come from ``response_tokens`` when the list has them, else from ``--speech_tokenizer``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wenet_echat.audio.io import load_audio  # noqa: E402
from wenet_echat.bin.train_token2wav import collect_replies, tokenize_missing  # noqa: E402
from wenet_echat.token2wav.model import Token2Wav, build_token2wav, load_token2wav  # noqa: E402
from wenet_echat.token2wav.vocoder import log_mel  # noqa: E402
from wenet_echat.utils.config import load_config  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "egs" / "echat" / "conf" / "mini" / "token2wav.yaml"


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_dir", default=None, help="trained model directory (default: random init)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="config for a random-init model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=5.0, help="utterance length for the speed measurements")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval_list", default=None)
    p.add_argument("--n_eval", type=int, default=20)
    p.add_argument("--speech_tokenizer", default=None)
    p.add_argument("--stream_conf", default=None, help='JSON overrides of the streaming config, e.g. {"lookahead": 6}')
    return p.parse_args(argv)


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def bench_rtf(model: Token2Wav, tokens: list[int], repeats: int) -> None:
    audio_s = model.expected_samples(len(tokens)) / model.sample_rate
    mel = model.token2mel(tokens)  # warm-up
    for vocoder in ("neural", "griffinlim"):
        model.mel2wav(mel, vocoder)  # warm-up
        flow_t, voc_t = [], []
        for _ in range(repeats):
            mel, t_flow = _timed(model.token2mel, tokens)
            _, t_voc = _timed(model.mel2wav, mel, vocoder)
            flow_t.append(t_flow)
            voc_t.append(t_voc)
        f, v = statistics.median(flow_t), statistics.median(voc_t)
        print(f"rtf vocoder={vocoder} audio_s={audio_s:.2f} flow_s={f:.3f} vocoder_s={v:.3f} "
              f"rtf={(f + v) / audio_s:.3f} threads={torch.get_num_threads()} "
              f"trained={','.join(sorted(model.trained_parts)) or 'none'}", flush=True)


def bench_stream(model: Token2Wav, tokens: list[int], repeats: int) -> None:
    first_ms, chunk_ms, stream_rtf = [], [], []
    cfg = model.streaming
    synth = None
    for _ in range(repeats):
        synth = model.streamer()
        chunks: list[torch.Tensor] = []
        latency = None
        t_start = time.perf_counter()
        for i, tok in enumerate(tokens):
            out, dt = _timed(synth.push, [tok])
            if out and latency is None:
                if i + 1 != cfg.first_chunk:
                    raise RuntimeError(f"first chunk came after {i + 1} tokens, expected {cfg.first_chunk}")
                latency = dt
                chunk_ms.append(1000 * out[0].numel() / model.sample_rate)
            chunks += out
        chunks += synth.finish()
        total = time.perf_counter() - t_start
        first_ms.append(1000 * latency)
        stream_rtf.append(total / (sum(c.numel() for c in chunks) / model.sample_rate))
    print(f"first_chunk tokens={cfg.first_chunk} latency_ms={statistics.median(first_ms):.1f} "
          f"chunk_audio_ms={statistics.median(chunk_ms):.0f} stream_rtf={statistics.median(stream_rtf):.3f} "
          f"hop={cfg.hop} hop_growth={cfg.hop_growth} max_hop={cfg.max_hop} lookahead={cfg.lookahead} "
          f"context={cfg.context}", flush=True)
    streamed = torch.cat(chunks)
    whole_mel = model.token2mel(tokens)
    whole = model.mel2wav(whole_mel)
    mel_diff = (synth.mel - whole_mel).abs()
    n = min(streamed.numel(), whole.numel())
    wav_diff = (streamed[:n] - whole[:n]).abs()
    print(f"stream_vs_whole frames={whole_mel.shape[-1]} mel_max_abs={float(mel_diff.max()):.4f} "
          f"mel_mean_abs={float(mel_diff.mean()):.5f} wav_max_abs={float(wav_diff.max()):.4f} "
          f"wav_mean_abs={float(wav_diff.mean()):.5f} wav_rms={float(whole.square().mean().sqrt()):.4f} "
          f"same_length={streamed.numel() == whole.numel()}", flush=True)


def bench_eval(model: Token2Wav, args: argparse.Namespace) -> None:
    replies = collect_replies(args.eval_list, "response_wav", "response_tokens", args.n_eval)
    with tempfile.TemporaryDirectory() as tmp:
        tokenize_missing(replies, args.speech_tokenizer, Path(tmp) / "tokens.jsonl")
    scores: dict[str, list[float]] = {}

    def add(name: str, mel: torch.Tensor, ref: torch.Tensor) -> None:
        n = min(mel.shape[-1], ref.shape[-1])
        scores.setdefault(name, []).append(float((mel[..., :n] - ref[..., :n]).abs().mean()))

    for reply in replies:
        wav, _ = load_audio(reply.wav, target_sr=model.sample_rate)
        ref = log_mel(torch.from_numpy(wav), model.mel_config)
        flow_mel = model.token2mel(reply.tokens)
        add("eval flow", flow_mel, ref)
        for vocoder in ("neural", "griffinlim"):
            add(f"eval copy vocoder={vocoder}", log_mel(model.mel2wav(ref, vocoder), model.mel_config), ref)
            add(f"eval resynth vocoder={vocoder}", log_mel(model.mel2wav(flow_mel, vocoder), model.mel_config), ref)
    for name, vals in scores.items():
        print(f"{name} n={len(vals)} mel_l1={np.mean(vals):.4f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = load_token2wav(args.model_dir) if args.model_dir else build_token2wav(load_config(args.config)).eval()
    if args.stream_conf:
        model.streaming = model.streaming.updated(json.loads(args.stream_conf))
    rng = np.random.default_rng(args.seed)
    tokens = rng.integers(0, model.codebook_size, int(round(args.seconds * model.token_rate))).tolist()
    if args.eval_list:
        replies = collect_replies(args.eval_list, "response_wav", "response_tokens", 1)
        if replies[0].tokens is None and args.speech_tokenizer:
            with tempfile.TemporaryDirectory() as tmp:
                tokenize_missing(replies, args.speech_tokenizer, Path(tmp) / "tokens.jsonl")
        if replies[0].tokens:  # real tokens make the streaming comparison representative
            tokens = (replies[0].tokens * 4)[: len(tokens)]
    bench_rtf(model, tokens, args.repeats)
    bench_stream(model, tokens, args.repeats)
    if args.eval_list and args.n_eval > 0:
        bench_eval(model, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
