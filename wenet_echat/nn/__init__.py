"""Neural-network building blocks shared by the encoder, the adapter and other parts."""

from wenet_echat.nn.transformer import (
    ACTIVATIONS,
    LinearInput,
    MultiHeadedAttention,
    PositionalEncoding,
    PositionwiseFeedForward,
    TransformerEncoder,
    TransformerEncoderLayer,
    WhisperPositionalEncoding,
    attention_mask_from_valid,
    make_non_pad_mask,
    make_pad_mask,
    transformer_sinusoids,
    whisper_sinusoids,
)

__all__ = [
    "ACTIVATIONS",
    "LinearInput",
    "MultiHeadedAttention",
    "PositionalEncoding",
    "PositionwiseFeedForward",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "WhisperPositionalEncoding",
    "attention_mask_from_valid",
    "make_non_pad_mask",
    "make_pad_mask",
    "transformer_sinusoids",
    "whisper_sinusoids",
]
