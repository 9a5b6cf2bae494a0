"""Whisper-style speech encoder in the WeNet/OSUM-EChat parameter layout.

Architecture (as openai-whisper's ``AudioEncoder``): Conv1d(n_mels, d, 3, pad 1) + GELU, Conv1d(d, d, 3, stride 2,
pad 1) + GELU (100 Hz → 50 Hz), plus Whisper's fixed sinusoids, ``n_layers`` pre-LN blocks (GELU FFN, no key
bias), final LayerNorm. Unlike openai-whisper, inputs are not padded to 30 s: any length up to
``2 * max_positions`` feature frames is accepted, and padding inside a batch is masked (features and the first
conv's output are zeroed past each item's length, attention ignores padded keys), so an item gives the same output
alone or in a padded batch.

Parameter names (as WeNet's ``convert_whisper_to_wenet_config_and_ckpt.py`` writes them, prefixed ``encoder.`` in
OSUM-EChat checkpoints)::

    embed.conv.0.{weight,bias}     embed.conv.2.{weight,bias}     embed.pos_enc.pe  (1, max_positions, d)
    encoders.N.self_attn.linear_{q,v,out}.{weight,bias}   encoders.N.self_attn.linear_k.weight
    encoders.N.feed_forward.w_{1,2}.{weight,bias}         encoders.N.norm{1,2}.{weight,bias}
    after_norm.{weight,bias}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from wenet_echat.nn.transformer import TransformerEncoder, WhisperPositionalEncoding, make_non_pad_mask
from wenet_echat.utils.registry import Registry

ENCODERS: Registry = Registry("encoder")


@dataclass
class WhisperEncoderConfig:
    """Hyper-parameters of :class:`WhisperEncoder`; defaults are Whisper-medium as used by OSUM-EChat."""

    n_mels: int = 80
    d_model: int = 1024
    n_heads: int = 16
    n_layers: int = 24
    ffn_dim: int = 4096
    max_positions: int = 1500  # 30 s at 50 Hz
    dropout: float = 0.1  # residual, FFN and positional dropout (WeNet dropout_rate / positional_dropout_rate)
    attention_dropout: float = 0.0
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.d_model % 2:
            raise ValueError(f"d_model must be even for Whisper sinusoids, got {self.d_model}")
        for name in ("n_mels", "d_model", "n_heads", "n_layers", "ffn_dim", "max_positions"):
            if getattr(self, name) < (0 if name == "n_layers" else 1):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def conv_stem_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Output lengths of the stride-2 stem (kernel 3, padding 1): ``ceil(L / 2)``."""
    return torch.div(lengths + 1, 2, rounding_mode="floor")


class WhisperConvStem(nn.Module):
    """Whisper's conv stem plus positions (WeNet ``conv1d2`` input layer): ``conv.0``, GELU, ``conv.2``, GELU,
    ``pos_enc``. Padded frames are zeroed before each conv so padding never leaks into valid frames."""

    subsampling_rate = 2

    def __init__(self, n_mels: int, d_model: int, dropout: float = 0.0, max_positions: int = 1500):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(n_mels, d_model, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv1d(d_model, d_model, kernel_size=3, stride=2, padding=1),
            nn.GELU(),
        )
        self.pos_enc = WhisperPositionalEncoding(d_model, dropout, max_positions)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, n_mels) → (B, ceil(T/2), d), lengths → ceil(lengths / 2)."""
        valid = make_non_pad_mask(lengths, x.size(1)).unsqueeze(1).to(x.dtype)  # (B, 1, T)
        h = x.transpose(1, 2) * valid
        h = self.conv[1](self.conv[0](h)) * valid
        h = self.conv[3](self.conv[2](h))
        return self.pos_enc(h.transpose(1, 2)), conv_stem_lengths(lengths)


class WhisperEncoder(TransformerEncoder):
    """Whisper audio encoder: ``(feats (B, T, n_mels), feats_lengths (B,)) -> (out (B, T', d), out_lengths (B,))``
    with ``T' = ceil(T / 2)`` (50 Hz for 100 Hz log-mel); ``T`` must be at most ``2 * max_positions``."""

    downsample_rate = 2

    def __init__(self, config: WhisperEncoderConfig | None = None):
        config = config or WhisperEncoderConfig()
        stem = WhisperConvStem(config.n_mels, config.d_model, config.dropout, config.max_positions)
        super().__init__(stem, config.d_model, config.n_heads, config.ffn_dim, config.n_layers,
                         dropout=config.dropout, attention_dropout=config.attention_dropout, key_bias=False,
                         activation="gelu", normalize_before=True, norm_eps=1e-5,
                         gradient_checkpointing=config.gradient_checkpointing)
        self.config = config

    @property
    def max_input_frames(self) -> int:
        """Longest accepted feature sequence (frames at 100 Hz): 3000 for Whisper's 30 s table."""
        return 2 * self.config.max_positions

    def forward(self, feats: torch.Tensor, feats_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if feats.dim() != 3 or feats.size(-1) != self.config.n_mels:
            raise ValueError(f"expected feats of shape (batch, frames, {self.config.n_mels}), got "
                             f"{tuple(feats.shape)}")
        if feats_lengths.shape != (feats.size(0),):
            raise ValueError(f"feats_lengths must have shape ({feats.size(0)},), got {tuple(feats_lengths.shape)}")
        frames = feats.size(1)
        if frames > self.max_input_frames:
            raise ValueError(
                f"input of {frames} feature frames ({frames / 100:.2f} s at 100 Hz) exceeds the encoder limit of "
                f"{self.max_input_frames} frames ({self.config.max_positions} positions after the stride-2 stem); "
                "split or truncate the audio"
            )
        feats_lengths = feats_lengths.to(device=feats.device, dtype=torch.long)
        if feats_lengths.numel() and (int(feats_lengths.max()) > frames or int(feats_lengths.min()) < 0):
            raise ValueError(f"feats_lengths {feats_lengths.tolist()} must lie in [0, {frames}]")
        return super().forward(feats, feats_lengths)


@ENCODERS.register("whisper")
def build_whisper_encoder(**conf: Any) -> WhisperEncoder:
    """Registry factory: ``ENCODERS.build("whisper", {"d_model": 1024, ...})``; keys are
    :class:`WhisperEncoderConfig` fields."""
    return WhisperEncoder(WhisperEncoderConfig(**conf))
