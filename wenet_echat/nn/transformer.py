"""Shared transformer pieces in the WeNet parameter layout.

The module and parameter names follow WeNet's ``TransformerEncoder`` so that checkpoints converted by WeNet (and
the OSUM-EChat checkpoints built on them) map one-to-one onto these modules:

    embed.*                               input layer (``embed.out.0/1`` for :class:`LinearInput`,
                                          ``embed.conv.0/2`` for the Whisper stem) and ``embed.pos_enc.pe``
    encoders.N.self_attn.linear_{q,k,v,out}.{weight,bias}
    encoders.N.feed_forward.w_{1,2}.{weight,bias}
    encoders.N.norm{1,2}.{weight,bias}
    after_norm.{weight,bias}

Padding is described by lengths; masks are built here (``True`` = a real frame) and attention runs through
``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU, "silu": nn.SiLU}


def make_non_pad_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Boolean mask (B, T) that is ``True`` on valid frames: ``mask[b, t] = t < lengths[b]``."""
    if max_len is None:
        max_len = int(lengths.max().item()) if lengths.numel() else 0
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)


def make_pad_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Boolean mask (B, T) that is ``True`` on padded frames (the complement of :func:`make_non_pad_mask`)."""
    return ~make_non_pad_mask(lengths, max_len)


def attention_mask_from_valid(valid: torch.Tensor) -> torch.Tensor:
    """Key-padding mask (B, 1, 1, T) for SDPA from a valid-frame mask (B, T).

    A row with no valid key at all (a zero-length item) is left fully open so softmax stays finite; its output
    is padding and callers ignore it.
    """
    open_rows = ~valid.any(dim=-1, keepdim=True)
    return (valid | open_rows)[:, None, None, :]


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's fixed positional table (length, channels): ``[sin(t * f) | cos(t * f)]`` (halves, not interleaved),
    with log-spaced frequencies ``f_i = max_timescale ** (-i / (channels / 2 - 1))``."""
    if channels % 2:
        raise ValueError(f"whisper sinusoids need an even number of channels, got {channels}")
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2, dtype=torch.float32))
    scaled_time = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


def transformer_sinusoids(length: int, d_model: int) -> torch.Tensor:
    """The classic (Vaswani et al.) table (length, d_model): sin on even channels, cos on odd channels."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table


class PositionalEncoding(nn.Module):
    """Absolute positions (WeNet ``abs_pos``): ``dropout(x * sqrt(d) + pe[:T])``.

    ``pe`` is a persistent buffer of shape (1, max_len, d_model), as in WeNet checkpoints.
    """

    def __init__(self, d_model: int, dropout: float = 0.0, max_len: int = 5000):
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.xscale = math.sqrt(d_model)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pe", self._table(max_len, d_model).unsqueeze(0))

    @staticmethod
    def _table(length: int, d_model: int) -> torch.Tensor:
        return transformer_sinusoids(length, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add the table to ``x`` (B, T, d); raises ``ValueError`` when T exceeds the table."""
        length = x.size(1)
        if length > self.max_len:
            raise ValueError(f"sequence of {length} frames is longer than the positional table ({self.max_len})")
        return self.dropout(x * self.xscale + self.pe[:, :length].to(x.dtype))


class WhisperPositionalEncoding(PositionalEncoding):
    """Whisper's fixed sinusoids (WeNet ``abs_pos_whisper``): ``dropout(x + pe[:T])``, no input scaling."""

    def __init__(self, d_model: int, dropout: float = 0.0, max_len: int = 1500):
        super().__init__(d_model, dropout, max_len)
        self.xscale = 1.0

    @staticmethod
    def _table(length: int, d_model: int) -> torch.Tensor:
        return whisper_sinusoids(length, d_model)


class MultiHeadedAttention(nn.Module):
    """Multi-head self-attention with ``linear_q/linear_k/linear_v/linear_out`` (Whisper: no key bias)."""

    def __init__(self, n_head: int, d_model: int, dropout: float = 0.0, key_bias: bool = True):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model {d_model} is not divisible by n_head {n_head}")
        self.n_head = n_head
        self.d_k = d_model // n_head
        self.dropout_rate = dropout
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model, bias=key_bias)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_head, self.d_k).transpose(1, 2)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, d); attn_mask boolean (B, 1, 1|T, T), ``True`` where a key may be attended. Returns (B, T, d)."""
        q, k, v = self._heads(self.linear_q(x)), self._heads(self.linear_k(x)), self._heads(self.linear_v(x))
        p = self.dropout_rate if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        batch, _, length, _ = out.shape
        return self.linear_out(out.transpose(1, 2).reshape(batch, length, self.n_head * self.d_k))


class PositionwiseFeedForward(nn.Module):
    """``w_2(dropout(act(w_1(x))))``."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{activation}'; known: {', '.join(sorted(ACTIVATIONS))}")
        self.w_1 = nn.Linear(d_model, ffn_dim)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.w_2 = nn.Linear(ffn_dim, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(self.activation(self.w_1(x))))


class TransformerEncoderLayer(nn.Module):
    """One block: self-attention and FFN, each with a residual; LayerNorms ``norm1``/``norm2`` (pre-LN default)."""

    def __init__(self, d_model: int, n_heads: int, ffn_dim: int, dropout: float = 0.1,
                 attention_dropout: float = 0.0, key_bias: bool = True, activation: str = "relu",
                 normalize_before: bool = True, norm_eps: float = 1e-5):
        super().__init__()
        self.self_attn = MultiHeadedAttention(n_heads, d_model, attention_dropout, key_bias)
        self.feed_forward = PositionwiseFeedForward(d_model, ffn_dim, dropout, activation)
        self.norm1 = nn.LayerNorm(d_model, eps=norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, d), attn_mask as in :meth:`MultiHeadedAttention.forward`. Returns (B, T, d)."""
        if self.normalize_before:
            x = x + self.dropout(self.self_attn(self.norm1(x), attn_mask))
            return x + self.dropout(self.feed_forward(self.norm2(x)))
        x = self.norm1(x + self.dropout(self.self_attn(x, attn_mask)))
        return self.norm2(x + self.dropout(self.feed_forward(x)))


class LinearInput(nn.Module):
    """WeNet ``input_layer: linear``: ``pos_enc(Dropout(LayerNorm(Linear(x))))``; keeps the frame rate.

    Parameters: ``out.0`` (Linear), ``out.1`` (LayerNorm), ``pos_enc.pe``.
    """

    subsampling_rate = 1

    def __init__(self, idim: int, odim: int, dropout: float = 0.1, pos_enc: nn.Module | None = None,
                 norm_eps: float = 1e-5):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(idim, odim), nn.LayerNorm(odim, eps=norm_eps), nn.Dropout(dropout))
        self.pos_enc = pos_enc if pos_enc is not None else PositionalEncoding(odim, dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pos_enc(self.out(x)), lengths


class TransformerEncoder(nn.Module):
    """``embed`` → ``encoders.N`` → ``after_norm`` (pre-LN), WeNet ``TransformerEncoder``-style.

    ``embed`` is any module mapping ``(x, lengths)`` to ``(x', lengths')`` (subsampling plus positions).
    Forward: ``(x (B, T, idim), lengths (B,)) -> (out (B, T', d_model), out_lengths (B,))``; padded output
    frames are set to zero.
    """

    def __init__(self, embed: nn.Module, d_model: int, n_heads: int, ffn_dim: int, n_layers: int,
                 dropout: float = 0.1, attention_dropout: float = 0.0, key_bias: bool = True,
                 activation: str = "relu", normalize_before: bool = True, norm_eps: float = 1e-5,
                 gradient_checkpointing: bool = False):
        super().__init__()
        self.d_model = d_model
        self.embed = embed
        self.encoders = nn.ModuleList(
            TransformerEncoderLayer(d_model, n_heads, ffn_dim, dropout, attention_dropout, key_bias, activation,
                                    normalize_before, norm_eps)
            for _ in range(n_layers)
        )
        self.normalize_before = normalize_before
        self.after_norm = nn.LayerNorm(d_model, eps=norm_eps) if normalize_before else nn.Identity()
        self.gradient_checkpointing = gradient_checkpointing

    def output_size(self) -> int:
        return self.d_model

    def forward_layers(self, x: torch.Tensor, lengths: torch.Tensor,
                       n_layers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the blocks and ``after_norm`` on already embedded input; zero the padded frames. ``n_layers``
        (1..number of blocks) stops after that block and returns its output (``after_norm`` follows the last
        block only), e.g. for units from a middle layer."""
        total = len(self.encoders)
        if n_layers is None:
            n_layers = total
        if not 1 <= n_layers <= total:
            raise ValueError(f"n_layers must lie in [1, {total}] (the encoder's blocks), got {n_layers}")
        valid = make_non_pad_mask(lengths, x.size(1))
        attn_mask = attention_mask_from_valid(valid)
        for layer in self.encoders[:n_layers]:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, attn_mask, use_reentrant=False)
            else:
                x = layer(x, attn_mask)
        if n_layers == total:
            x = self.after_norm(x)
        return x * valid.unsqueeze(-1).to(x.dtype), lengths

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lengths = self.embed(x, lengths)
        return self.forward_layers(x, lengths)
