"""Decoder-only LLMs through ``transformers`` (local directory or config), optional LoRA; built through ``LLMS``."""

from wenet_echat.llm.hf import (
    DEFAULT_LORA_TARGETS,
    LLMS,
    LLMLoadError,
    apply_lora,
    backbone,
    build_hf_causal_lm,
    hidden_size,
    run_decoder,
)

__all__ = ["DEFAULT_LORA_TARGETS", "LLMS", "LLMLoadError", "apply_lora", "backbone", "build_hf_causal_lm",
           "hidden_size", "run_decoder"]
