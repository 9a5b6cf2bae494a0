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
from wenet_echat.llm.kv_cache import CACHE_KINDS, StaticKVCache, lean_unsupported, new_decode_cache

__all__ = ["CACHE_KINDS", "DEFAULT_LORA_TARGETS", "LLMS", "LLMLoadError", "StaticKVCache", "apply_lora", "backbone",
           "build_hf_causal_lm", "hidden_size", "lean_unsupported", "new_decode_cache", "run_decoder"]
