"""Tiny token2wav configs, models and a generated reply corpus shared by the token2wav tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from wenet_echat.token2wav import Token2Wav, build_token2wav
from wenet_echat.token2wav.vocoder import MelConfig, MultiResolutionSTFTLoss, log_mel

CODES = 16
SR = 16000
MEL = MelConfig(sample_rate=SR, n_fft=512, hop_length=160, win_length=400, n_mels=20)

TINY: dict[str, Any] = {
    "token2wav": "flow_hifigan",
    "token2wav_conf": {
        "token_rate": 25,
        "codebook_size": CODES,
        "mel": {"sample_rate": SR, "n_fft": 512, "hop_length": 160, "win_length": 400, "n_mels": 20},
        "flow": {"encoder_dim": 24, "encoder_layers": 2, "encoder_kernel": 3, "regulator_layers": 1,
                 "channels": [24, 32], "blocks": 1, "mid_blocks": 1, "kernel": 3, "n_steps": 4},
        "vocoder": {"channels": 16, "upsample_rates": [8, 5, 4], "upsample_kernel_sizes": [16, 11, 8],
                    "resblock_kernel_sizes": [3], "resblock_dilations": [[1, 3]]},
        "streaming": {"first_chunk": 6, "hop": 4, "lookahead": 2, "context": 8, "vocoder_context": 8, "overlap": 2},
        "griffinlim": {"n_iter": 4},
    },
}


def tiny_conf(flow: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    """The tiny config with ``flow`` keys and whole other ``token2wav_conf`` sections replaced."""
    conf = copy.deepcopy(TINY)
    conf["token2wav_conf"]["flow"].update(flow or {})
    conf["token2wav_conf"].update(sections)
    return conf


def randomize_field(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    """Give the (zero-initialised) estimator output layer random weights so the flow does something."""
    flow = model.flow if isinstance(model, Token2Wav) else model
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = flow.estimator.final_proj.weight
        w.copy_(torch.randn(w.shape, generator=gen) * scale)
        if hasattr(flow, "spk_embed"):
            flow.spk_embed.copy_(torch.randn(flow.spk_embed.shape, generator=gen))


def tiny_model(seed: int = 0, **kwargs: Any) -> Token2Wav:
    torch.manual_seed(seed)
    model = build_token2wav(tiny_conf(**kwargs)).eval()
    randomize_field(model, seed)
    return model


def tokens(n: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(0, CODES, n).tolist()


def voiced(seconds: float, f0: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    """A harmonic tone with a slow pitch glide and a little noise (speech-like enough for the tests)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 1.5 * t))) / sr
    wav = sum(0.25 / k * np.sin(k * phase) for k in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t) ** 2)
    return (wav + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


def make_reply_corpus(root: Path, n_replies: int = 4, with_tokens: bool = False) -> tuple[str, list[str]]:
    """A data.list whose records share ``n_replies`` reply wavs (1.2-1.8 s); returns (list path, wav paths)."""
    (root / "reply").mkdir(parents=True, exist_ok=True)
    wavs = []
    for i in range(n_replies):
        path = root / "reply" / f"r{i}.wav"
        sf.write(str(path), voiced(1.2 + 0.2 * (i % 4), 110.0 + 40 * i, seed=i), SR, subtype="PCM_16")
        wavs.append(str(path))
    recs = []
    for j in range(2 * n_replies):
        rec = {"key": f"utt{j:02d}", "text": "hi", "response_wav": wavs[j % n_replies]}
        if with_tokens:
            rec["response_tokens"] = tokens(int(25 * (1.2 + 0.2 * (j % n_replies % 4))), seed=j % n_replies)
        recs.append(rec)
    recs.append({"key": "no_reply", "text": "only text"})
    path = root / "data.list"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return str(path), wavs


def vocoder_clip(frames: int = 40) -> tuple[torch.Tensor, torch.Tensor, MultiResolutionSTFTLoss]:
    """(wave (1, frames * 160), its log-mel at ``MEL``, a two-resolution STFT loss) to overfit a vocoder on."""
    wav = torch.from_numpy(voiced(0.4, 150.0)).unsqueeze(0)[:, : frames * 160]
    return wav, log_mel(wav, MEL), MultiResolutionSTFTLoss([[512, 64, 256], [256, 32, 128]])
