#!/usr/bin/env python3
"""Train the token2wav flow (tokens -> mel) or vocoder (mel -> wave) on the reply audio of a data.list.

Usage (from egs/echat):
    python -m wenet_echat.bin.train_token2wav --config conf/mini/token2wav.yaml --part flow|vocoder \
        --data_list data/train/data.list --model_dir exp/token2wav \
        [--speech_tokenizer data/speech_token/kmeans512.npz] [--valid_list data/dev/data.list] \
        [--max_minutes 8] [--max_steps N] [--threads 1] [--seed 777] [--max_utts N] \
        [--mode regression|gan] [--override 'train.flow.lr 5e-4' ...]

Data: the distinct ``--wav_field`` (``response_wav``) files of the list. The flow needs their speech tokens: the
record's ``--token_field`` (``response_tokens``) when present, otherwise they are computed with the k-means model
``--speech_tokenizer`` and cached in ``<model_dir>/tokens.jsonl`` (reused while the tokenizer file and the wav
are unchanged). Training samples are random crops: ``segment_tokens`` tokens with their ``round(T * ratio)`` mel
frames for the flow, ``segment_frames`` frames with their ``frames * hop`` samples for the vocoder. A crop's mel
is computed from the crop plus ``n_fft / 2`` samples of real context on each side, so it equals the frames of the
whole-file mel (except the first and last few frames of a file, where the file edge is zero-padded instead of
reflected).

Learning rate (:mod:`wenet_echat.train.budget`): linear warm-up over ``warmup_steps``; with ``lr_decay: cosine`` it
then falls along a cosine to ``min_lr_ratio`` of the peak at the end of the planned training (earlier runs' time
plus ``--max_minutes``, or ``--max_steps``). Flow: AdamW, OT-CFM loss (:meth:`FlowMatching.compute_loss`); per-bin
mel statistics are set from ``stats_batches`` crops on a fresh start. Vocoder ``regression`` mode: mel L1 +
multi-resolution STFT loss; ``gan`` mode adds the multi-period/multi-scale discriminator (least squares + feature
matching, mel weight 45). ``phase_weight`` > 0 (either mode, iSTFT vocoder only) adds its magnitude-weighted phase
losses (:func:`wenet_echat.token2wav.istft_vocoder.phase_losses`) against the real crop's STFT.

Limits and state: training stops after ``--max_minutes`` of this run or at global step ``--max_steps``.
``<model_dir>/<part>.pt`` (inference weights, see :mod:`wenet_echat.token2wav.model`) and
``<model_dir>/<part>.train.pt`` (weights, optimizer(s), step, elapsed time) are written atomically every
``save_interval_minutes`` and at the end (also on Ctrl-C); a rerun resumes from the ``.train.pt``.
``<model_dir>/<part>.train.json`` keeps the loss history (every ``log_interval`` steps) and validation results.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch import nn

from wenet_echat.audio.io import AudioInfo, audio_info, load_audio, resample
from wenet_echat.dataset.source import read_list
from wenet_echat.token2wav.istft_vocoder import ISTFTVocoder, phase_losses
from wenet_echat.token2wav.model import (
    CONFIG_NAME,
    Token2Wav,
    build_token2wav,
    load_config_file,
    load_token2wav,
    part_module,
    save_config,
    save_part,
)
from wenet_echat.token2wav.vocoder import (
    MultiResolutionSTFTLoss,
    VocoderDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adv_loss,
    log_mel,
    mel_l1,
)
from wenet_echat.train.budget import budget_lr, check_budget_lr_conf, planned_progress
from wenet_echat.utils.config import load_config
from wenet_echat.utils.fileio import JsonlError, atomic_open, atomic_path, parse_jsonl_line
from wenet_echat.utils.logging import setup_logging

logger = logging.getLogger("train_token2wav")
STATE_TAG = "wenet_echat.token2wav.train_state.v1"
INFERENCE_SECTIONS = ("streaming", "griffinlim")  # config sections that do not change the weights ...
INFERENCE_KEYS = {"flow": ("n_steps", "inference_cfg_rate", "temperature")}  # ... and keys of other sections

FLOW_DEFAULTS: dict[str, Any] = {
    "batch_size": 12, "segment_tokens": 48, "lr": 1e-3, "warmup_steps": 100, "lr_decay": "none",
    "min_lr_ratio": 0.1, "weight_decay": 0.0, "grad_clip": 5.0, "log_interval": 25, "save_interval_minutes": 2.0,
    "stats_batches": 8, "valid_batches": 4,
}
VOCODER_DEFAULTS: dict[str, Any] = {
    "mode": "regression", "batch_size": 8, "segment_frames": 32, "lr": 5e-4, "warmup_steps": 50,
    "lr_decay": "none", "min_lr_ratio": 0.1, "weight_decay": 0.0, "grad_clip": 5.0, "log_interval": 25,
    "save_interval_minutes": 2.0, "valid_batches": 4,
    "mel_weight": 1.0, "stft_weight": 1.0, "stft_resolutions": [[512, 50, 240], [1024, 120, 600], [2048, 240, 1200]],
    "phase_weight": 0.0,
    "betas": [0.8, 0.99], "gan": {"adv_weight": 1.0, "fm_weight": 1.0, "mel_weight": 45.0, "stft_weight": 0.0,
                                  "disc_width": 1.0, "disc_lr": 2e-4, "periods": [2, 3, 5, 7, 11], "scales": 3},
}


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="token2wav YAML (token2wav, token2wav_conf, train)")
    p.add_argument("--part", required=True, choices=("flow", "vocoder"))
    p.add_argument("--data_list", required=True)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--valid_list", default=None, help="held-out list for validation losses")
    p.add_argument("--speech_tokenizer", default=None, help="k-means model (.npz) for replies without tokens")
    p.add_argument("--wav_field", default="response_wav")
    p.add_argument("--token_field", default="response_tokens")
    p.add_argument("--max_minutes", type=float, default=None, help="wall-clock limit of this run")
    p.add_argument("--max_steps", type=int, default=None, help="stop at this global step")
    p.add_argument("--max_utts", type=int, default=None, help="use only the first N distinct replies")
    p.add_argument("--mode", choices=("regression", "gan"), default=None, help="vocoder mode (overrides config)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--override", nargs="*", action="extend", default=[], help="'dotted.key value' config overrides")
    args = p.parse_args(argv)
    if args.max_minutes is None and args.max_steps is None:
        p.error("give --max_minutes and/or --max_steps")
    return args


# ----------------------------------------------------------------------------------------------- corpus


@dataclass
class Reply:
    """One distinct reply wav: its header info and (for the flow) its speech tokens."""

    wav: str
    info: AudioInfo
    tokens: list[int] | None = None


def collect_replies(path: str, wav_field: str, token_field: str, limit: int | None = None) -> list[Reply]:
    """Distinct reply wavs of a list in first-seen order, with tokens from the first record that has them."""
    replies: dict[str, Reply] = {}
    errors: list[str] = []
    for lineno, raw in read_list(path):
        try:
            rec = parse_jsonl_line(raw, path, lineno)
        except JsonlError as e:
            errors.append(str(e))
            continue
        wav = rec.get(wav_field)
        if wav is None:
            continue
        if not isinstance(wav, str) or not wav:
            errors.append(f"{path}:{lineno}: '{wav_field}' must be a non-empty path, got {wav!r}")
            continue
        tokens = rec.get(token_field)
        if tokens is not None and not (isinstance(tokens, list) and all(isinstance(t, int) for t in tokens)):
            errors.append(f"{path}:{lineno}: '{token_field}' must be a list of ints")
            continue
        if wav not in replies:
            if limit is not None and len(replies) >= limit:
                continue
            try:
                replies[wav] = Reply(wav, audio_info(wav))
            except ValueError as e:
                errors.append(f"{path}:{lineno}: {e}")
                continue
        if replies[wav].tokens is None and tokens is not None:
            replies[wav].tokens = tokens
    if errors:
        raise ValueError("\n".join(errors[:20]) + (f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""))
    if not replies:
        raise ValueError(f"{path}: no record has '{wav_field}'")
    return list(replies.values())


def _stamp(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def tokenize_missing(replies: list[Reply], tokenizer_path: str | None, cache_path: Path) -> int:
    """Fill in missing tokens with the k-means tokenizer (cached in ``cache_path``); returns how many were computed."""
    todo = [r for r in replies if r.tokens is None]
    if not todo:
        return 0
    if not tokenizer_path:
        raise ValueError(f"{len(todo)} replies have no tokens (e.g. {todo[0].wav}); pass --speech_tokenizer")
    if not os.path.isfile(tokenizer_path):
        raise FileNotFoundError(f"speech tokenizer {tokenizer_path} not found")
    from wenet_echat.speech_token.kmeans import KMeansTokenizer

    header = {"tokenizer": os.path.abspath(tokenizer_path), "stamp": _stamp(tokenizer_path)}
    cache = _read_token_cache(cache_path, header)
    tok = None
    computed = 0
    for r in todo:
        entry = cache.get(r.wav)
        if entry is not None and entry["stamp"] == _stamp(r.wav):
            r.tokens = entry["tokens"]
            continue
        if tok is None:
            tok = KMeansTokenizer.load(tokenizer_path)
        wav, sr = load_audio(r.wav)
        r.tokens = [int(t) for t in tok.encode(wav, sr)]
        cache[r.wav] = {"wav": r.wav, "stamp": _stamp(r.wav), "tokens": r.tokens}
        computed += 1
    if computed:
        with atomic_open(cache_path) as f:
            f.write(json.dumps(header) + "\n")
            for entry in cache.values():
                f.write(json.dumps(entry) + "\n")
    return computed


def _read_token_cache(path: Path, header: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    try:
        if not lines or json.loads(lines[0]) != header:
            return {}
        return {e["wav"]: e for e in map(json.loads, lines[1:])}
    except (ValueError, KeyError, TypeError):
        logger.warning("ignoring unreadable token cache %s", path)
        return {}


# ----------------------------------------------------------------------------------------------- crops


class CropReader:
    """Aligned (wave, log-mel) crops of reply files at the model's rate (see the module docstring)."""

    def __init__(self, model: Token2Wav):
        self.mel = model.mel_config
        self.sr = self.mel.sample_rate
        self.hop = self.mel.hop_length
        self.margin_frames = math.ceil(self.mel.n_fft / 2 / self.hop)

    def n_frames(self, reply: Reply) -> int:
        return int(reply.info.frames * self.sr / reply.info.sample_rate) // self.hop

    def samples(self, reply: Reply, start: int, length: int) -> np.ndarray:
        """Samples ``[start, start + length)`` at the model rate, zeros outside the file."""
        info = reply.info
        if info.sample_rate == self.sr:
            return _read_padded(reply.wav, info, start, length)
        ratio = info.sample_rate / self.sr
        pad = 64
        fa = int(math.floor(start * ratio)) - pad
        fb = int(math.ceil((start + length) * ratio)) + pad
        data = resample(_read_padded(reply.wav, info, fa, fb - fa), info.sample_rate, self.sr)
        offset = int(round(start - fa / ratio))
        out = np.zeros(length, dtype=np.float32)
        piece = data[offset : offset + length]
        out[: len(piece)] = piece
        return out

    def crop(self, reply: Reply, frame_start: int, n_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(wave (n_frames * hop,), log-mel (n_mels, n_frames)) of frames ``[frame_start, frame_start + n)``."""
        m = self.margin_frames
        audio = torch.from_numpy(self.samples(reply, (frame_start - m) * self.hop, (n_frames + 2 * m) * self.hop))
        mel = log_mel(audio, self.mel)[:, m : m + n_frames]
        return audio[m * self.hop : (m + n_frames) * self.hop], mel


def _read_padded(path: str, info: AudioInfo, start: int, length: int) -> np.ndarray:
    out = np.zeros(length, dtype=np.float32)
    a, b = max(0, start), min(info.frames, start + length)
    if b > a:
        data, _ = sf.read(path, start=a, stop=b, dtype="float32", always_2d=True)
        out[a - start : a - start + data.shape[0]] = data.mean(axis=1)
    return out


def usable_tokens(reply: Reply, reader: CropReader, model: Token2Wav) -> int:
    """Tokens of a reply whose mel frames lie inside the audio."""
    n = len(reply.tokens or [])
    while n and model.flow.mel_frames(n) > reader.n_frames(reply):
        n -= 1
    return n


def flow_batch(replies: list[Reply], reader: CropReader, model: Token2Wav, conf: dict[str, Any],
               rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (B, T), log-mel (B, n_mels, frames(T))): equal-length random crops of random replies."""
    idx = rng.choice(len(replies), size=min(conf["batch_size"], len(replies)), replace=False)
    chosen = [replies[i] for i in idx]
    lengths = [usable_tokens(r, reader, model) for r in chosen]
    n_tok = min(conf["segment_tokens"], *lengths)
    n_frames = model.flow.mel_frames(n_tok)
    tokens, mels = [], []
    for reply, n in zip(chosen, lengths):
        s = int(rng.integers(0, n - n_tok + 1))
        tokens.append(reply.tokens[s : s + n_tok])
        mels.append(reader.crop(reply, model.flow.mel_frames(s), n_frames)[1])
    return torch.tensor(tokens, dtype=torch.long), torch.stack(mels)


def vocoder_batch(replies: list[Reply], reader: CropReader, conf: dict[str, Any],
                  rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(wave (B, frames * hop), log-mel (B, n_mels, frames)) random crops of ``segment_frames`` frames."""
    idx = rng.choice(len(replies), size=min(conf["batch_size"], len(replies)), replace=False)
    chosen = [replies[i] for i in idx]
    n_frames = min(conf["segment_frames"], *(reader.n_frames(r) for r in chosen))
    wavs, mels = [], []
    for reply in chosen:
        start = int(rng.integers(0, reader.n_frames(reply) - n_frames + 1))
        wav, mel = reader.crop(reply, start, n_frames)
        wavs.append(wav)
        mels.append(mel)
    return torch.stack(wavs), torch.stack(mels)


# ----------------------------------------------------------------------------------------------- trainers




def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


class PartTrainer:
    """Common state of a part's training: the module, its optimizer, step; subclasses define ``train_step``."""

    part = ""

    def __init__(self, model: Token2Wav, conf: dict[str, Any], replies: list[Reply], reader: CropReader):
        self.model = model
        self.conf = conf
        self.replies = replies
        self.reader = reader
        self.module = part_module(model, self.part)
        self.opt = torch.optim.AdamW(self.module.parameters(), lr=conf["lr"], weight_decay=conf["weight_decay"],
                                     betas=tuple(conf.get("betas", (0.9, 0.999))))
        self.step = 0
        self.progress = 0.0  # share of the planned training done, set by the loop (drives lr_decay)

    def lr(self, base: float) -> float:
        return budget_lr(base, self.step, self.conf, self.progress)

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def fresh_start(self, rng: np.random.Generator) -> None:
        pass

    def _update(self, loss: torch.Tensor, opt: torch.optim.Optimizer, params) -> float:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(params, self.conf["grad_clip"])
        opt.step()
        return float(norm)

    def train_step(self, rng: np.random.Generator) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def validate(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        raise NotImplementedError

    def make_batch(self, replies: list[Reply], rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class FlowTrainer(PartTrainer):
    part = "flow"

    def make_batch(self, replies, rng):
        return flow_batch(replies, self.reader, self.model, self.conf, rng)

    def fresh_start(self, rng: np.random.Generator) -> None:
        mels = [self.make_batch(self.replies, rng)[1] for _ in range(self.conf["stats_batches"])]
        frames = torch.cat([m.transpose(1, 2).reshape(-1, m.shape[1]) for m in mels])
        self.model.flow.set_mel_stats(frames.mean(0), frames.std(0))
        logger.info("mel statistics from %d frames: mean %.2f, std %.2f (averaged over bins)", frames.shape[0],
                    frames.mean(), frames.std(0).mean())

    def train_step(self, rng):
        tokens, mel = self.make_batch(self.replies, rng)
        _set_lr(self.opt, self.lr(self.conf["lr"]))
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        out = self.model.flow.compute_loss(tokens, mel, generator=gen)
        grad = self._update(out["loss"], self.opt, self.module.parameters())
        return {"loss": out["loss"].item(), "fm_loss": out["fm_loss"].item(), "prior_loss": out["prior_loss"].item(),
                "grad_norm": grad}

    @torch.no_grad()
    def validate(self, batches):
        flow = self.model.flow
        flow.eval()
        gen = torch.Generator().manual_seed(0)
        losses = [flow.compute_loss(t, m, generator=gen) for t, m in batches]
        mel_l1s = [float((flow.inference(t) - m[..., : flow.mel_frames(t.shape[1])]).abs().mean())
                   for t, m in batches[:1]]  # the full sampler on one batch: tokens -> mel error
        flow.train()
        return {"fm_loss": float(np.mean([float(x["fm_loss"]) for x in losses])),
                "prior_loss": float(np.mean([float(x["prior_loss"]) for x in losses])),
                "mel_l1": float(np.mean(mel_l1s))}


class VocoderTrainer(PartTrainer):
    part = "vocoder"

    def __init__(self, model, conf, replies, reader):
        super().__init__(model, conf, replies, reader)
        if conf["mode"] not in ("regression", "gan"):
            raise ValueError(f"vocoder mode must be 'regression' or 'gan', got '{conf['mode']}'")
        self.stft_loss = MultiResolutionSTFTLoss(conf["stft_resolutions"])
        if conf["phase_weight"] and not isinstance(model.vocoder, ISTFTVocoder):
            raise ValueError(f"train.vocoder.phase_weight {conf['phase_weight']} needs an iSTFT vocoder "
                             f"(token2wav_conf.vocoder_type: istft); this one is a {type(model.vocoder).__name__}")
        self.disc: VocoderDiscriminator | None = None
        if conf["mode"] == "gan":
            g = conf["gan"]
            self.disc = VocoderDiscriminator(g["periods"], g["scales"], g["disc_width"])
            self.disc_opt = torch.optim.AdamW(self.disc.parameters(), lr=g["disc_lr"], betas=tuple(conf["betas"]))

    def extra_state(self):
        if self.disc is None:
            return {}
        return {"disc": self.disc.state_dict(), "disc_optimizer": self.disc_opt.state_dict()}

    def load_extra_state(self, state):
        if self.disc is not None and "disc" in state:
            self.disc.load_state_dict(state["disc"])
            self.disc_opt.load_state_dict(state["disc_optimizer"])

    def make_batch(self, replies, rng):
        return vocoder_batch(replies, self.reader, self.conf, rng)

    def train_step(self, rng):
        wav, mel = self.make_batch(self.replies, rng)
        _set_lr(self.opt, self.lr(self.conf["lr"]))
        cfg = self.model.mel_config
        out: dict[str, float] = {}
        fake, phase_loss = self._generate(mel, wav, out)
        if self.disc is None:
            mel_loss, stft_loss = mel_l1(fake, mel, cfg), self.stft_loss(fake, wav)
            loss = self.conf["mel_weight"] * mel_loss + self.conf["stft_weight"] * stft_loss
        else:
            g = self.conf["gan"]
            _set_lr(self.disc_opt, self.lr(g["disc_lr"]))
            d_loss = discriminator_loss(self.disc(wav), self.disc(fake.detach()))
            self._update(d_loss, self.disc_opt, self.disc.parameters())
            real_out, fake_out = self.disc(wav), self.disc(fake)
            mel_loss = mel_l1(fake, mel, cfg)
            stft_loss = self.stft_loss(fake, wav) if g["stft_weight"] else fake.new_zeros(())
            adv, fm = generator_adv_loss(fake_out), feature_matching_loss(real_out, fake_out)
            loss = (g["adv_weight"] * adv + g["fm_weight"] * fm + g["mel_weight"] * mel_loss
                    + g["stft_weight"] * stft_loss)
            out.update(d_loss=d_loss.item(), adv_loss=adv.item(), fm_loss=fm.item())
        if phase_loss is not None:
            loss = loss + self.conf["phase_weight"] * phase_loss
        out["grad_norm"] = self._update(loss, self.opt, self.module.parameters())
        out.update(loss=loss.item(), mel_l1=mel_loss.item(), stft_loss=stft_loss.item())
        return out

    def _generate(self, mel: torch.Tensor, wav: torch.Tensor,
                  out: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The generated audio and, with ``phase_weight``, the summed phase losses (logged into ``out``)."""
        voc = self.model.vocoder
        if not self.conf["phase_weight"]:
            return voc(mel), None
        log_mag, phase = voc.log_magnitude_and_phase(mel)
        parts = phase_losses(phase, voc.real_spectrum(wav))
        out.update({f"{k}_loss": v.item() for k, v in parts.items()})
        return voc.synthesize(log_mag, phase), sum(parts.values())

    @torch.no_grad()
    def validate(self, batches):
        voc = self.model.vocoder
        voc.eval()
        vals = [float(mel_l1(voc(m), m, self.model.mel_config)) for _, m in batches]
        voc.train()
        return {"mel_l1": float(np.mean(vals))}


TRAINERS: dict[str, type[PartTrainer]] = {"flow": FlowTrainer, "vocoder": VocoderTrainer}


# ----------------------------------------------------------------------------------------------- state files


def state_path(model_dir: Path, part: str) -> Path:
    return model_dir / f"{part}.train.pt"


def save_state(model_dir: Path, trainer: PartTrainer, elapsed: float, history: dict[str, Any]) -> None:
    """Inference weights, then the resumable state (weights, optimizers, step), then the history; each atomic."""
    info = {"elapsed_minutes": round(elapsed / 60, 3), "last": history["log"][-1] if history["log"] else None}
    save_part(model_dir, trainer.model, trainer.part, step=trainer.step, info=info)
    state = {"format": STATE_TAG, "part": trainer.part, "step": trainer.step, "elapsed": elapsed,
             "module": trainer.module.state_dict(), "optimizer": trainer.opt.state_dict(), **trainer.extra_state()}
    with atomic_path(state_path(model_dir, trainer.part)) as tmp:
        torch.save(state, tmp)
    with atomic_open(model_dir / f"{trainer.part}.train.json") as f:
        json.dump(history, f, indent=1)


def load_state(model_dir: Path, trainer: PartTrainer) -> tuple[float, dict[str, Any]] | None:
    """Resume ``trainer`` from ``<part>.train.pt``; returns (elapsed seconds, history) or None on a fresh start."""
    path = state_path(model_dir, trainer.part)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != STATE_TAG or state.get("part") != trainer.part:
        raise ValueError(f"{path}: not a token2wav {trainer.part} training state")
    trainer.module.load_state_dict(state["module"])
    trainer.opt.load_state_dict(state["optimizer"])
    trainer.load_extra_state(state)
    trainer.step = int(state["step"])
    hist_path = model_dir / f"{trainer.part}.train.json"
    history = json.loads(hist_path.read_text(encoding="utf-8")) if hist_path.is_file() else {"log": [], "valid": []}
    return float(state["elapsed"]), history


def _weight_sections(conf: dict[str, Any]) -> dict[str, Any]:
    """The parts of a token2wav config that shape the weights (inference-only sections left out)."""
    sub = {}
    for key, value in (conf.get("token2wav_conf") or {}).items():
        if key in INFERENCE_SECTIONS:
            continue
        if key in INFERENCE_KEYS and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in INFERENCE_KEYS[key]}
        sub[key] = value
    return {"token2wav": conf.get("token2wav"), "token2wav_conf": sub}


def prepare_model(args: argparse.Namespace, conf: dict[str, Any], model_dir: Path) -> Token2Wav:
    """A fresh model from the config, or the model directory's: its weight-shaping sections must equal the
    config's; changed inference settings (the streaming and griffinlim sections, the flow's n_steps,
    inference_cfg_rate and temperature) are taken from the config and stored."""
    wanted = {"token2wav": conf.get("token2wav"), "token2wav_conf": conf.get("token2wav_conf")}
    if not (model_dir / CONFIG_NAME).is_file():
        return build_token2wav(wanted)
    stored = load_config_file(model_dir)
    if _weight_sections(stored) != _weight_sections(wanted):
        raise ValueError(f"{model_dir / CONFIG_NAME} differs from the token2wav config of {args.config}; "
                         f"use another --model_dir or the same config")
    if stored != wanted:
        logger.info("updating the inference settings of %s", model_dir / CONFIG_NAME)
        save_config(model_dir, wanted)
    return load_token2wav(model_dir)


def part_conf(conf: dict[str, Any], part: str, mode: str | None) -> dict[str, Any]:
    defaults = FLOW_DEFAULTS if part == "flow" else VOCODER_DEFAULTS
    given = dict((conf.get("train") or {}).get(part) or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise KeyError(f"unknown train.{part} keys: {', '.join(unknown)} (known: {', '.join(sorted(defaults))})")
    out = {**defaults, **given}
    check_budget_lr_conf(out, f"train.{part}")
    if part == "vocoder":
        out["gan"] = {**defaults["gan"], **(given.get("gan") or {})}
        if mode:
            out["mode"] = mode
    return out


# ----------------------------------------------------------------------------------------------- main loop


def load_replies(args: argparse.Namespace, path: str, model_dir: Path, need_tokens: bool) -> list[Reply]:
    replies = collect_replies(path, args.wav_field, args.token_field, args.max_utts)
    if need_tokens:
        n = tokenize_missing(replies, args.speech_tokenizer, model_dir / "tokens.jsonl")
        if n:
            logger.info("tokenised %d replies of %s with %s", n, path, args.speech_tokenizer)
    return replies


def check_tokens(replies: list[Reply], model: Token2Wav, reader: CropReader, path: str) -> list[Reply]:
    """Replies with enough tokens for a crop; codes must be inside the model's codebook."""
    for r in replies:
        bad = [t for t in r.tokens or [] if not 0 <= t < model.codebook_size]
        if bad:
            raise ValueError(f"{path}: {r.wav} has code {bad[0]} outside the codebook [0, {model.codebook_size})")
    usable = [r for r in replies if usable_tokens(r, reader, model) >= 2]
    if not usable:
        raise ValueError(f"{path}: no reply has enough tokens")
    return usable


def train(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    conf = load_config(args.config, args.override)
    model_dir = Path(args.model_dir)
    model = prepare_model(args, conf, model_dir).train()
    pconf = part_conf(conf, args.part, args.mode)
    reader = CropReader(model)
    need_tokens = args.part == "flow"
    replies = load_replies(args, args.data_list, model_dir, need_tokens)
    valid = load_replies(args, args.valid_list, model_dir, need_tokens) if args.valid_list else []
    if need_tokens:
        replies = check_tokens(replies, model, reader, args.data_list)
        valid = check_tokens(valid, model, reader, args.valid_list) if valid else []
    trainer = TRAINERS[args.part](model, pconf, replies, reader)
    resumed = load_state(model_dir, trainer)
    elapsed0, history = resumed if resumed else (0.0, {"log": [], "valid": []})
    rng = np.random.default_rng([args.seed, trainer.step])
    if resumed is None:
        trainer.fresh_start(rng)
    valid_batches = [trainer.make_batch(valid, np.random.default_rng([args.seed, 1, i]))
                     for i in range(pconf["valid_batches"])] if valid else []
    logger.info("%s %s: %d replies (%s), %d params, step %d%s", "resuming" if resumed else "training", args.part,
                len(replies), args.data_list, sum(p.numel() for p in trainer.module.parameters()), trainer.step,
                f", mode {pconf['mode']}" if args.part == "vocoder" else "")
    history["config"] = {"part": args.part, **pconf}
    history = run_loop(args, trainer, model_dir, valid_batches, elapsed0, history)
    return history


def _validate(trainer: PartTrainer, batches, history: dict[str, Any]) -> None:
    if batches:
        res = {"step": trainer.step, **trainer.validate(batches)}
        history["valid"].append(res)
        logger.info("valid step %d: %s", trainer.step, " ".join(f"{k} {v:.4f}" for k, v in res.items() if k != "step"))


def run_loop(args: argparse.Namespace, trainer: PartTrainer, model_dir: Path, valid_batches: list,
             elapsed0: float, history: dict[str, Any]) -> dict[str, Any]:
    conf = trainer.conf
    start = last_save = time.time()
    window: list[dict[str, float]] = []
    limit = args.max_minutes * 60 if args.max_minutes is not None else math.inf
    rng = np.random.default_rng([args.seed, trainer.step, 2])
    _validate(trainer, valid_batches, history)
    try:
        while (args.max_steps is None or trainer.step < args.max_steps) and time.time() - start < limit:
            trainer.progress = planned_progress(args.max_minutes, args.max_steps, trainer.step, elapsed0,
                                                time.time() - start)
            window.append(trainer.train_step(rng))
            trainer.step += 1
            if trainer.step % conf["log_interval"] == 0 or trainer.step == args.max_steps:
                _log(trainer, window, time.time() - start, elapsed0, history)
                window = []
            if time.time() - last_save > conf["save_interval_minutes"] * 60:
                save_state(model_dir, trainer, elapsed0 + time.time() - start, history)
                last_save = time.time()
    except KeyboardInterrupt:
        logger.warning("interrupted at step %d: saving", trainer.step)
    if window:
        _log(trainer, window, time.time() - start, elapsed0, history)
    _validate(trainer, valid_batches, history)
    save_state(model_dir, trainer, elapsed0 + time.time() - start, history)
    logger.info("saved %s at step %d (%.1f min this run)", model_dir / f"{trainer.part}.pt", trainer.step,
                (time.time() - start) / 60)
    return history


def _log(trainer: PartTrainer, window: list[dict[str, float]], run_s: float, elapsed0: float,
         history: dict[str, Any]) -> None:
    avg = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
    row = {"step": trainer.step, **{k: round(v, 5) for k, v in avg.items()},
           "lr": trainer.opt.param_groups[0]["lr"], "minutes": round((elapsed0 + run_s) / 60, 3)}
    history["log"].append(row)
    logger.info("%s step %d %s lr %.2e %.2f min", trainer.part, trainer.step,
                " ".join(f"{k} {v:.4f}" for k, v in avg.items()), row["lr"], row["minutes"])


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    setup_logging()
    try:
        train(args)
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
