"""Speech adapters between the encoder and the LLM; built by name through ``ADAPTERS``."""

from wenet_echat.adapter.conv_transformer import (
    ADAPTERS,
    CONV_STRIDES,
    CausalConvDownsampler,
    ConvTransformerAdapter,
    ConvTransformerAdapterConfig,
    build_conv_transformer_adapter,
    causal_conv_lengths,
)

__all__ = [
    "ADAPTERS",
    "CONV_STRIDES",
    "CausalConvDownsampler",
    "ConvTransformerAdapter",
    "ConvTransformerAdapterConfig",
    "build_conv_transformer_adapter",
    "causal_conv_lengths",
]
