"""The decoder-only LLM, through ``transformers``: loaded from a local directory or built from a config.

OSUM-EChat uses Qwen2.5-3B-Instruct as is (its own text vocabulary; speech tokens get a separate embedding and
head in :class:`~wenet_echat.model.echat.EChatModel`). The mini recipe has no weights to load, so it builds a
small Qwen2-style model from a config mapping instead::

    llm: hf_causal_lm
    llm_conf: {path: exp/pretrained/Qwen2.5-3B-Instruct, torch_dtype: bfloat16, lora: {r: 64, alpha: 32}}
    llm_conf: {config: {model_type: qwen2, hidden_size: 256, num_hidden_layers: 4, ...}}

Nothing is ever downloaded (``local_files_only``). LoRA (peft) wraps the model in place; the EChat model reaches
the parts it needs through :func:`backbone` (the transformer stack returning hidden states) and the model's own
``get_input_embeddings`` / ``get_output_embeddings``, which work the same with and without LoRA.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from typing import Any

import torch
from torch import nn

from wenet_echat.llm.kv_cache import StaticKVCache
from wenet_echat.utils.registry import Registry
from wenet_echat.utils.tensors import dtype_kind_problem, fmt_names

LLMS: Registry = Registry("llm")
log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}
# Qwen2.5 LoRA targets used by OSUM-EChat
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj")


class LLMLoadError(ValueError):
    """The LLM directory or config cannot be used; the message names the path or key."""


def _dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    try:
        return _DTYPES[str(name)]
    except KeyError:
        raise LLMLoadError(f"llm_conf.torch_dtype must be one of {', '.join(_DTYPES)}, got {name!r}") from None


def _from_path(path: str, dtype: torch.dtype | None, attn: str | None) -> nn.Module:
    from transformers import AutoModelForCausalLM

    if not os.path.isdir(path):
        raise LLMLoadError(f"LLM directory '{path}' does not exist; point llm_conf.path at a local HF model "
                           "directory (config.json + *.safetensors); nothing is downloaded")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise LLMLoadError(f"LLM directory '{path}' has no config.json")
    problems = _weight_file_problems(path)  # before transformers reports them as one anonymous error
    if problems:
        raise LLMLoadError(f"LLM directory '{path}' does not fit its config.json: " + "; ".join(problems))
    kwargs: dict[str, Any] = {"local_files_only": True, "output_loading_info": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if attn:
        kwargs["attn_implementation"] = attn
    try:
        model, info = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as e:  # transformers raises many kinds; name the directory
        raise LLMLoadError(f"cannot load a causal LM from '{path}': {e}") from e
    # transformers initialises missing weights randomly and only reports them: a truncated or foreign
    # checkpoint would train from noise, so they are errors here
    for what in ("missing_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in info.get(what) or ())
        if keys:
            problems.append(f"{what.replace('_', ' ')}: {fmt_names(keys)}")
    if problems:
        raise LLMLoadError(f"LLM directory '{path}' does not fit its config.json: " + "; ".join(problems))
    if info.get("unexpected_keys"):
        log.warning("%s: ignored checkpoint tensors %s", path, fmt_names(sorted(map(str, info["unexpected_keys"]))))
    return model


def _weight_file_problems(path: str) -> list[str]:
    """Shape and dtype problems of a directory's safetensors tensors against the model its config.json
    describes (built on the meta device: no memory, no weights read). Integer tensors for floating parameters
    are caught here because transformers would cast them silently."""
    import json

    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    single, index = os.path.join(path, "model.safetensors"), os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            files = sorted({os.path.join(path, v) for v in json.load(f)["weight_map"].values()})
    else:
        return []  # transformers reports the absent weights (or reads pytorch_model.bin)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        with torch.device("meta"):
            params = dict(AutoModelForCausalLM.from_config(config).state_dict())
    except Exception as e:
        return [f"config.json does not describe a causal LM ({type(e).__name__}: {e})"]
    shapes, dtypes = [], []
    for file in files:
        if not os.path.isfile(file):
            return [f"weight file {file} is missing"]
        try:
            with safe_open(file, framework="pt") as handle:
                for key in handle.keys():
                    if key not in params:
                        continue
                    meta = handle.get_slice(key)
                    shape, want = tuple(meta.get_shape()), tuple(params[key].shape)
                    if shape != want:
                        shapes.append(f"{key}: file {shape} vs config {want}")
                    problem = dtype_kind_problem(key, meta.get_dtype(), params[key].dtype)
                    if problem:
                        dtypes.append(problem)
        except Exception as e:  # a truncated or foreign file
            return [f"cannot read {file} as safetensors ({type(e).__name__}: {e})"]
    out = []
    if shapes:
        out.append(f"shape mismatches: {fmt_names(shapes)}")
    if dtypes:
        out.append(f"dtype mismatches: {fmt_names(dtypes)}")
    return out


def _from_config(config: dict[str, Any], vocab_size: int | None, dtype: torch.dtype | None,
                 attn: str | None) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    conf = dict(config)
    model_type = conf.pop("model_type", None)
    if not model_type:
        raise LLMLoadError("llm_conf.config needs 'model_type' (e.g. qwen2)")
    if vocab_size is not None:
        given = conf.get("vocab_size")
        if given is not None and int(given) < vocab_size:
            raise LLMLoadError(f"llm_conf.config.vocab_size {given} is smaller than the tokenizer's {vocab_size}")
        conf.setdefault("vocab_size", vocab_size)
    try:
        cfg = AutoConfig.for_model(model_type, **conf)
    except Exception as e:
        raise LLMLoadError(f"bad llm_conf.config for model_type {model_type!r}: {e}") from e
    if attn:
        cfg._attn_implementation = attn
    model = AutoModelForCausalLM.from_config(cfg)
    return model.to(dtype) if dtype is not None else model


def apply_lora(model: nn.Module, r: int = 64, alpha: int = 32, dropout: float = 0.1,
               target_modules: list[str] | tuple[str, ...] = DEFAULT_LORA_TARGETS) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters (base weights frozen, adapters trainable)."""
    from peft import LoraConfig, get_peft_model

    conf = LoraConfig(r=int(r), lora_alpha=int(alpha), lora_dropout=float(dropout),
                      target_modules=list(target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, conf)


@LLMS.register("hf_causal_lm")
def build_hf_causal_lm(path: str | None = None, config: dict[str, Any] | None = None, vocab_size: int | None = None,
                       torch_dtype: str | None = None, lora: dict[str, Any] | None = None,
                       gradient_checkpointing: bool = False, attn_implementation: str | None = "sdpa") -> nn.Module:
    """A ``*ForCausalLM`` from ``path`` (local HF directory) or ``config`` (exactly one of them).

    ``vocab_size`` (the text tokenizer's size) fills the config's vocabulary and is checked against a loaded
    model: the LM head must cover every text id.
    """
    if (path is None) == (config is None):
        raise LLMLoadError("llm_conf needs exactly one of 'path' (a local HF model directory) or 'config'")
    dtype = _dtype(torch_dtype)
    if path is not None:
        model = _from_path(str(path), dtype, attn_implementation)
        have = model.get_output_embeddings().weight.shape[0]
        if vocab_size is not None and have < vocab_size:
            raise LLMLoadError(f"LLM '{path}' has {have} output classes but the tokenizer has {vocab_size} ids")
    else:
        model = _from_config(config or {}, vocab_size, dtype, attn_implementation)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if lora:
        model = apply_lora(model, **lora)
    return model


def backbone(llm: nn.Module) -> nn.Module:
    """The transformer stack of a ``*ForCausalLM`` (with or without LoRA): inputs_embeds -> last hidden state."""
    dec = llm.get_decoder() if hasattr(llm, "get_decoder") else None
    if dec is None or dec is llm:
        raise TypeError(f"{type(llm).__name__} does not expose its decoder stack through get_decoder()")
    return dec


@functools.cache
def _cache_kwarg(cls: type) -> str:
    """``cache`` (transformers ≥ 5.2x) or ``past_key_values`` (older): the decoder's KV-cache argument."""
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def run_decoder(stack: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: Any = None,
                use_cache: bool = False) -> tuple[torch.Tensor, Any]:
    """One call of the decoder stack: ``(last hidden state, KV cache or None)`` across transformers versions.
    A :class:`~wenet_echat.llm.kv_cache.StaticKVCache` runs its lean step instead of the stack's forward."""
    if isinstance(cache, StaticKVCache):
        if position_ids is None:
            raise ValueError("a StaticKVCache step needs position_ids")
        return cache.forward(inputs_embeds, attention_mask, position_ids), cache
    name = _cache_kwarg(type(stack))
    kwargs: dict[str, Any] = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask,
                              "position_ids": position_ids, "use_cache": use_cache}
    if cache is not None:
        kwargs[name] = cache
    out = stack(**kwargs)
    return out.last_hidden_state, (getattr(out, name, None) if use_cache else None)


def hidden_size(llm: nn.Module) -> int:
    return int(llm.get_input_embeddings().weight.shape[1])


__all__ = ["DEFAULT_LORA_TARGETS", "LLMS", "LLMLoadError", "apply_lora", "backbone", "build_hf_causal_lm",
           "hidden_size", "run_decoder"]
