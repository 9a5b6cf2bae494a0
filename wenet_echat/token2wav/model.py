"""``Token2Wav``: speech tokens -> log-mel (flow matching) -> waveform (neural vocoder or Griffin-Lim), whole or
streamed.

Config (a YAML mapping; ``egs/echat/conf/{mini,paper}/token2wav.yaml``)::

    token2wav: flow_vocoder          # a TOKEN2WAV name (``flow_hifigan`` is the same builder)
    token2wav_conf:
      token_rate: 25                 # speech tokens per second
      codebook_size: 512
      mel: {...}                     # MelConfig (vocoder.py)
      flow: {...}                    # FlowMatching sizes and settings (flow.py)
      vocoder_type: hifigan          # a VOCODER_NETS name: hifigan (vocoder.py) | istft (istft_vocoder.py)
      vocoder: {...}                 # that class's sizes
      streaming: {...}               # StreamConfig (streaming.py)
      griffinlim: {n_iter: 32, momentum: 0.99}

The vocoder must turn ``mel.n_mels`` mels into ``mel.hop_length`` samples per frame (HiFiGAN: the product of its
upsampling rates; the iSTFT vocoder takes ``hop_length`` from the mel config unless its section sets it).

Model directory (written by :func:`save_token2wav` / the training CLI, read by :func:`load_token2wav`)
    ``token2wav.yaml``: the config above; ``flow.pt`` and ``vocoder.pt``: ``{"format", "part", "state_dict",
    "step", "info"}`` for each trained part (the two parts are trained separately, so either may be missing:
    ``trained_parts`` says which were loaded). All files are written atomically and read with
    ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from wenet_echat.token2wav.flow import FlowMatching, build_flow
from wenet_echat.token2wav.griffinlim import GriffinLimVocoder
from wenet_echat.token2wav.istft_vocoder import ISTFTVocoder
from wenet_echat.token2wav.streaming import StreamConfig, StreamingSynthesizer
from wenet_echat.token2wav.vocoder import HiFiGANGenerator, MelConfig
from wenet_echat.utils.fileio import atomic_open, atomic_path, load_weights_only
from wenet_echat.utils.registry import Registry

TOKEN2WAV: Registry = Registry("token2wav")
VOCODER_NETS: Registry = Registry("vocoder_type")
FORMAT_TAG = "wenet_echat.token2wav.v1"
CONFIG_NAME = "token2wav.yaml"
PARTS = ("flow", "vocoder")
VOCODERS = ("neural", "griffinlim")


class Token2WavFileError(ValueError):
    """A token2wav model file that cannot be used; the message names the file and the reason."""


class Token2Wav(nn.Module):
    """Flow matching + vocoder; ``synthesize(tokens)`` for whole utterances, ``stream()`` for incremental use."""

    def __init__(self, mel: MelConfig, flow: FlowMatching, vocoder: nn.Module, token_rate: float = 25.0,
                 streaming: StreamConfig | None = None, griffinlim: dict[str, Any] | None = None,
                 conf: dict[str, Any] | None = None):
        super().__init__()
        if vocoder.hop != mel.hop_length or vocoder.n_mels != mel.n_mels:
            raise ValueError(f"vocoder upsamples by {vocoder.hop} from {vocoder.n_mels} mels but the mel config "
                             f"has hop_length {mel.hop_length} and {mel.n_mels} mels")
        if flow.n_mels != mel.n_mels:
            raise ValueError(f"flow predicts {flow.n_mels} mels but the mel config has {mel.n_mels}")
        self.mel_config = mel
        self.flow = flow
        self.vocoder = vocoder
        self.token_rate = token_rate
        self.streaming = streaming or StreamConfig()
        try:
            self.griffinlim = GriffinLimVocoder(mel, **(griffinlim or {}))
        except TypeError as e:
            raise TypeError(f"bad griffinlim config {griffinlim}: {e}") from None
        self.conf = copy.deepcopy(conf) if conf is not None else None
        self.trained_parts: set[str] = set()

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.mel_config.hop_length

    @property
    def codebook_size(self) -> int:
        return self.flow.codebook_size

    def expected_samples(self, n_tokens: int) -> int:
        """Output length for ``n_tokens`` tokens: ``round(T * mel_rate / token_rate) * hop``."""
        return self.flow.mel_frames(n_tokens) * self.hop_length

    def vocoder_fn(self, vocoder: str = "neural"):
        """The mel (B, n_mels, F) -> wave (B, F * hop) callable named ``neural`` or ``griffinlim``."""
        if vocoder == "neural":
            return self._neural
        if vocoder == "griffinlim":
            return self.griffinlim
        raise ValueError(f"vocoder must be one of {VOCODERS}, got '{vocoder}'")

    @torch.inference_mode()
    def _neural(self, mel: torch.Tensor) -> torch.Tensor:
        return self.vocoder(mel.to(self.flow.mel_mean.device))

    def token2mel(self, tokens: Sequence[int] | torch.Tensor, **flow_kwargs: Any) -> torch.Tensor:
        """Log-mel (n_mels, frames) of one utterance; ``flow_kwargs`` go to :meth:`FlowMatching.inference`."""
        return self.flow.inference(tokens, **flow_kwargs)[0]

    def mel2wav(self, mel: torch.Tensor, vocoder: str = "neural") -> torch.Tensor:
        """Waveform (samples,) of a log-mel (n_mels, frames)."""
        return self.vocoder_fn(vocoder)(mel.unsqueeze(0))[0].cpu()

    def synthesize(self, tokens: Sequence[int] | torch.Tensor, vocoder: str = "neural",
                   **flow_kwargs: Any) -> torch.Tensor:
        """Whole-utterance synthesis: tokens -> waveform (``expected_samples(len(tokens))`` floats in [-1, 1])."""
        if len(tokens) == 0:
            return torch.zeros(0)
        return self.mel2wav(self.token2mel(tokens, **flow_kwargs), vocoder)

    def streamer(self, vocoder: str = "neural", config: StreamConfig | None = None,
                 **flow_kwargs: Any) -> StreamingSynthesizer:
        """A fresh :class:`StreamingSynthesizer` for one utterance (``config`` defaults to the model's)."""
        return StreamingSynthesizer(self.flow, self.vocoder_fn(vocoder), self.hop_length, config or self.streaming,
                                    **flow_kwargs)

    def stream(self, token_chunks: Iterable[Sequence[int]], vocoder: str = "neural",
               config: StreamConfig | None = None, **flow_kwargs: Any) -> Iterator[torch.Tensor]:
        """Audio chunks for an iterable of token pieces (as they would arrive from the LLM), then the flush."""
        synth = self.streamer(vocoder, config, **flow_kwargs)
        for piece in token_chunks:
            yield from synth.push(piece)
        yield from synth.finish()


@VOCODER_NETS.register("hifigan")
def build_hifigan(mel: MelConfig, **conf: Any) -> HiFiGANGenerator:
    return HiFiGANGenerator(n_mels=mel.n_mels, **conf)


@VOCODER_NETS.register("istft")
def build_istft_vocoder(mel: MelConfig, **conf: Any) -> ISTFTVocoder:
    conf.setdefault("hop_length", mel.hop_length)
    return ISTFTVocoder(n_mels=mel.n_mels, **conf)


@TOKEN2WAV.register("flow_vocoder")
@TOKEN2WAV.register("flow_hifigan")
def build_flow_vocoder(codebook_size: int, token_rate: float = 25.0, mel: dict[str, Any] | None = None,
                       flow: dict[str, Any] | None = None, vocoder_type: str = "hifigan",
                       vocoder: dict[str, Any] | None = None, streaming: dict[str, Any] | None = None,
                       griffinlim: dict[str, Any] | None = None) -> Token2Wav:
    """Flow matching + the ``vocoder_type`` vocoder from the ``token2wav_conf`` sections."""
    mel_cfg = MelConfig.from_dict(mel)
    flow_mod = build_flow(dict(flow or {}), codebook_size, mel_cfg.n_mels, mel_cfg.frame_rate, token_rate)
    try:
        voc = VOCODER_NETS.build(vocoder_type, dict(vocoder or {}), mel=mel_cfg)
    except TypeError as e:
        raise TypeError(f"bad token2wav vocoder config: {e}") from None
    return Token2Wav(mel_cfg, flow_mod, voc, token_rate, StreamConfig.from_dict(streaming), griffinlim)


def build_token2wav(conf: dict[str, Any]) -> Token2Wav:
    """Build from ``{"token2wav": name, "token2wav_conf": {...}}`` (a whole token2wav YAML is fine)."""
    name = conf.get("token2wav")
    if not isinstance(name, str):
        raise KeyError(f"token2wav config needs a 'token2wav' name (one of {', '.join(TOKEN2WAV.names())})")
    sub = conf.get("token2wav_conf")
    if not isinstance(sub, dict):
        raise KeyError("token2wav config needs a 'token2wav_conf' mapping")
    model = TOKEN2WAV.build(name, copy.deepcopy(sub))
    model.conf = {"token2wav": name, "token2wav_conf": copy.deepcopy(sub)}
    return model


# ----------------------------------------------------------------------------------------------- files


def part_module(model: Token2Wav, part: str) -> nn.Module:
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got '{part}'")
    return model.flow if part == "flow" else model.vocoder


def save_config(model_dir: str | os.PathLike, conf: dict[str, Any]) -> None:
    with atomic_open(Path(model_dir) / CONFIG_NAME) as f:
        yaml.safe_dump(conf, f, sort_keys=False)


def save_part(model_dir: str | os.PathLike, model: Token2Wav, part: str, step: int = 0,
              info: dict[str, Any] | None = None) -> Path:
    """Write ``<model_dir>/<part>.pt`` atomically (and the config if it is not there yet)."""
    model_dir = Path(model_dir)
    if model.conf is None:
        raise ValueError("model has no config to save (build it with build_token2wav)")
    if not (model_dir / CONFIG_NAME).is_file():
        save_config(model_dir, model.conf)
    path = model_dir / f"{part}.pt"
    state = {k: v.detach().cpu() for k, v in part_module(model, part).state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT_TAG, "part": part, "state_dict": state, "step": int(step),
                    "info": dict(info or {})}, tmp)
    return path


def save_token2wav(model_dir: str | os.PathLike, model: Token2Wav, parts: Iterable[str] = PARTS) -> None:
    """Config plus the given parts (both by default)."""
    if model.conf is None:
        raise ValueError("model has no config to save (build it with build_token2wav)")
    save_config(model_dir, model.conf)
    for part in parts:
        save_part(model_dir, model, part)


def read_part(path: str | os.PathLike, part: str) -> dict[str, Any]:
    """The checked payload of a part file."""
    path = Path(path)
    obj = load_weights_only(path, Token2WavFileError, f"token2wav {part} file")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_TAG or "state_dict" not in obj:
        raise Token2WavFileError(f"{path}: not a token2wav checkpoint (expected format '{FORMAT_TAG}')")
    if obj.get("part") != part:
        raise Token2WavFileError(f"{path}: holds part '{obj.get('part')}', expected '{part}'")
    return obj


def load_part(model: Token2Wav, path: str | os.PathLike, part: str) -> dict[str, Any]:
    """Load one part's weights into ``model``; returns the file's payload (step, info)."""
    obj = read_part(path, part)
    try:
        part_module(model, part).load_state_dict(obj["state_dict"])
    except RuntimeError as e:
        raise Token2WavFileError(f"{path}: weights do not fit the configured {part} ({e})") from None
    model.trained_parts.add(part)
    return obj


def load_config_file(model_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(model_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {model_dir} is not a token2wav model directory")
    with open(path, encoding="utf-8") as f:
        conf = yaml.safe_load(f)
    if not isinstance(conf, dict):
        raise Token2WavFileError(f"{path}: expected a mapping")
    return conf


def load_token2wav(model_dir: str | os.PathLike, require: Iterable[str] = (), device: str = "cpu") -> Token2Wav:
    """A model from a directory: its config plus every part file present; ``require`` lists parts that must be
    there (``FileNotFoundError`` otherwise). The model is returned in eval mode."""
    model_dir = Path(model_dir)
    model = build_token2wav(load_config_file(model_dir))
    for part in PARTS:
        path = model_dir / f"{part}.pt"
        if path.is_file():
            load_part(model, path, part)
        elif part in require:
            raise FileNotFoundError(f"{path} not found: train it with wenet_echat.bin.train_token2wav --part {part}")
    return model.to(device).eval()


def to_numpy_wav(wav: torch.Tensor) -> np.ndarray:
    return wav.detach().float().cpu().numpy().reshape(-1)
