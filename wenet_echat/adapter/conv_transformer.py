"""OSUM-EChat's speech adapter: causal conv down-sampler → transformer → projection to the LLM width.

Pipeline (50 Hz encoder frames → 12.5 Hz LLM inputs)::

    down_sample_2       3 × [ZeroPad(2, 0), Conv1d(k 3), GELU] with strides 1, 2, 2       (OSUM Conv1dSubsampling4)
    speech_transformer  Linear + LayerNorm + Dropout, abs positions (x·√d + pe), pre-LN blocks (ReLU FFN), after_norm
    speech_llama_proj   Linear(d_model, llm_dim)

Parameter names equal the official OSUM-EChat checkpoint's (its keys with the same prefixes)::

    down_sample_2.conv.{1,4,7}.{weight,bias}
    speech_transformer.embed.out.0.{weight,bias}  (Linear)   speech_transformer.embed.out.1.{weight,bias}  (LayerNorm)
    speech_transformer.embed.pos_enc.pe (1, max_positions, d_model)
    speech_transformer.encoders.N.self_attn.linear_{q,k,v,out}.{weight,bias}
    speech_transformer.encoders.N.feed_forward.w_{1,2}.{weight,bias}   speech_transformer.encoders.N.norm{1,2}.*
    speech_transformer.after_norm.{weight,bias}
    speech_llama_proj.{weight,bias}

Each causal conv of stride ``s`` maps a length ``L`` to ``floor((L - 1) / s) + 1`` (``ceil(L / s)``, 0 for 0), and
output frame ``j`` only sees input frames ``≤ j·s``, so padding after an item never changes its valid outputs.
Unlike the official code, the transformer is masked with the down-sampled lengths.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from wenet_echat.nn.transformer import LinearInput, PositionalEncoding, TransformerEncoder, make_non_pad_mask
from wenet_echat.utils.registry import Registry

ADAPTERS: Registry = Registry("adapter")

CONV_STRIDES: tuple[int, ...] = (1, 2, 2)


def causal_conv_lengths(lengths: torch.Tensor, strides: tuple[int, ...] = CONV_STRIDES) -> torch.Tensor:
    """Output lengths of the causal conv stack: per stride ``s``, ``L -> floor((L - 1) / s) + 1`` (0 stays 0)."""
    out = lengths.to(torch.long)
    for stride in strides:
        out = torch.where(out > 0, torch.div(out - 1, stride, rounding_mode="floor") + 1, torch.zeros_like(out))
    return out


class FrameLayerNorm(nn.LayerNorm):
    """LayerNorm over channels of each frame of a (B, C, T) tensor: keeps the conv stack causal."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class CausalConvDownsampler(nn.Module):
    """Three causal Conv1d (kernel 3, left zero-padding 2, strides 1, 2, 2), each followed by GELU: rate ÷4.

    Submodule ``conv`` is ``Sequential(pad, conv, gelu, pad, conv, gelu, pad, conv, gelu)`` so its convolutions
    sit at indices 1, 4 and 7 as in OSUM-EChat's ``osum_echatConv1dSubsampling4``. ``norm=True`` (not in
    OSUM-EChat) adds a per-frame LayerNorm after each GELU: without it, a stack trained from scratch at a high
    learning rate blows its activations up and the gradient reaching the encoder vanishes.
    """

    downsample_rate = 4

    def __init__(self, idim: int, odim: int, kernel_size: int = 3, norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        for i, stride in enumerate(CONV_STRIDES):
            layers += [
                nn.ConstantPad1d((kernel_size - 1, 0), 0.0),
                nn.Conv1d(idim if i == 0 else odim, odim, kernel_size, stride),
                nn.GELU(),
            ]
            if norm:
                layers.append(FrameLayerNorm(odim))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, idim) → (B, ceil(ceil(T/2)/2), odim); lengths through :func:`causal_conv_lengths`."""
        out = self.conv(x.transpose(1, 2)).transpose(1, 2)
        return out, causal_conv_lengths(lengths)


@dataclass
class ConvTransformerAdapterConfig:
    """Hyper-parameters of :class:`ConvTransformerAdapter`; defaults are OSUM-EChat's (Whisper-medium → Qwen2.5-3B)."""

    encoder_dim: int = 1024  # width of the encoder output and of the conv down-sampler
    d_model: int = 1024  # transformer width (OSUM: equal to encoder_dim)
    n_heads: int = 4
    ffn_dim: int = 2560
    n_layers: int = 4
    llm_dim: int = 2048
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation: str = "relu"  # WeNet TransformerEncoder default, used by OSUM's speech_transformer
    max_positions: int = 5000  # positional table rows (WeNet abs_pos default) = 400 s at 12.5 Hz
    gradient_checkpointing: bool = False
    conv_norm: bool = False  # per-frame LayerNorm after each conv (from-scratch training); OSUM-EChat: none

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ConvTransformerAdapter(nn.Module):
    """Speech adapter: ``(x (B, T, encoder_dim), lengths (B,)) -> (out (B, T', llm_dim), out_lengths (B,))``.

    ``T' = ceil(ceil(T / 2) / 2)``; padded output frames are zero. The submodules ``down_sample_2``,
    ``speech_transformer`` and ``speech_llama_proj`` carry the official checkpoint names (see the module doc).
    """

    official_prefixes: tuple[str, ...] = ("down_sample_2.", "speech_transformer.", "speech_llama_proj.")

    def __init__(self, config: ConvTransformerAdapterConfig | None = None):
        super().__init__()
        config = config or ConvTransformerAdapterConfig()
        self.config = config
        self.down_sample_2 = CausalConvDownsampler(config.encoder_dim, config.encoder_dim, norm=config.conv_norm)
        embed = LinearInput(config.encoder_dim, config.d_model, config.dropout,
                            PositionalEncoding(config.d_model, config.dropout, config.max_positions))
        self.speech_transformer = TransformerEncoder(
            embed, config.d_model, config.n_heads, config.ffn_dim, config.n_layers, dropout=config.dropout,
            attention_dropout=config.attention_dropout, key_bias=True, activation=config.activation,
            normalize_before=True, gradient_checkpointing=config.gradient_checkpointing,
        )
        self.speech_llama_proj = nn.Linear(config.d_model, config.llm_dim)

    @property
    def downsample_rate(self) -> int:
        return CausalConvDownsampler.downsample_rate

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Lengths after the adapter for input lengths at the encoder rate."""
        return causal_conv_lengths(lengths)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 3 or x.size(-1) != self.config.encoder_dim:
            raise ValueError(f"expected input of shape (batch, frames, {self.config.encoder_dim}), got "
                             f"{tuple(x.shape)}")
        lengths = lengths.to(device=x.device, dtype=torch.long)
        h, h_lengths = self.down_sample_2(x, lengths)
        h, h_lengths = self.speech_transformer(h, h_lengths)
        out = self.speech_llama_proj(h)
        valid = make_non_pad_mask(h_lengths, out.size(1)).unsqueeze(-1).to(out.dtype)
        return out * valid, h_lengths


@ADAPTERS.register("conv_transformer")
def build_conv_transformer_adapter(**conf: Any) -> ConvTransformerAdapter:
    """Registry factory: ``ADAPTERS.build("conv_transformer", {...})`` with :class:`ConvTransformerAdapterConfig`
    fields as keys."""
    return ConvTransformerAdapter(ConvTransformerAdapterConfig(**conf))
