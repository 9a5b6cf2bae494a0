"""The official OSUM-EChat checkpoint layout ↔ ours.

The released ``.pt`` files (``tag_think_final.pt``, ``language_think_final.pt``) are flat state dicts whose
prefixes are the official module names. Ours are the same except that the adapter's three parts sit under
``adapter.``:

======================  ===============================
official                ours
======================  ===============================
``encoder.*``           ``encoder.*`` (WeNet Whisper names, see :mod:`wenet_echat.encoder.loaders`)
``down_sample_2.*``     ``adapter.down_sample_2.*``
``speech_transformer.*`` ``adapter.speech_transformer.*``
``speech_llama_proj.*`` ``adapter.speech_llama_proj.*``
``llama_model.*``       ``llama_model.*`` (the HF ``Qwen2ForCausalLM``; with LoRA, peft's names)
``speech_token_emded.*`` ``speech_token_emded.*``
``speech_head.*``       ``speech_head.*``
``ln_speech.*``         — (defined but never used by the official model; dropped)
======================  ===============================

Loading checks every tensor: unknown or missing keys and shape mismatches raise one error that lists them,
naming the file. Tensors are read with ``torch.load(weights_only=True)`` (or safetensors), never unpickled code.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

from wenet_echat.train.checkpoint import read_state_dict
from wenet_echat.utils.tensors import dtype_kind_problem, fmt_names

log = logging.getLogger(__name__)

ADAPTER_PARTS = ("down_sample_2.", "speech_transformer.", "speech_llama_proj.")
UNUSED_OFFICIAL = ("ln_speech.",)


class OfficialCheckpointError(ValueError):
    """The official checkpoint does not fit the model; the message names the file and the keys."""


def official_to_ours(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename official keys to ours; returns (renamed state, dropped unused keys)."""
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        if key.startswith(UNUSED_OFFICIAL):
            dropped.append(key)
        elif key.startswith(ADAPTER_PARTS):
            out["adapter." + key] = value
        else:
            out[key] = value
    return out, dropped


def ours_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict under the official names (what an official ``.pt`` holds, minus the unused ``ln_speech``)."""
    return {key[len("adapter."):] if key.startswith("adapter.") else key: value for key, value in state.items()}


def load_official_checkpoint(path: str | os.PathLike, model: nn.Module) -> dict[str, Any]:
    """Load an official OSUM-EChat ``.pt`` into ``model`` (an :class:`EChatModel` whose config matches it).
    Missing, unexpected, wrongly shaped and integer-for-floating tensors are one :class:`OfficialCheckpointError`;
    floating widths are cast to the model's."""
    state, dropped = official_to_ours(read_state_dict(path))
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
                  for k in state if k in target and state[k].shape != target[k].shape]
    wrong_kind = [p for k in state if k in target and (p := dtype_kind_problem(k, state[k].dtype, target[k].dtype))]
    problems = []
    if missing:
        problems.append(f"missing keys: {fmt_names(missing)}")
    if unexpected:
        hint = ""
        if any(".lora_" in k or ".base_layer." in k for k in unexpected):
            hint = " (the file has LoRA weights: set model.llm_conf.lora to the checkpoint's LoRA settings)"
        problems.append(f"unexpected keys: {fmt_names(unexpected)}{hint}")
    if mismatched:
        problems.append(f"shape mismatches: {fmt_names(mismatched)} (check the model config: speech_codes, "
                        "encoder/adapter sizes, the LLM directory)")
    if wrong_kind:  # integer vs floating: not a width to cast, a different tensor
        problems.append(f"dtype mismatches: {fmt_names(wrong_kind)}")
    if problems:
        raise OfficialCheckpointError(f"{path}: does not fit the model: " + "; ".join(problems))
    cast = {str(v.dtype) for k, v in state.items() if v.dtype != target[k].dtype}
    model.load_state_dict({k: v.to(target[k].dtype) for k, v in state.items()}, strict=True)
    if cast:
        log.info("%s: cast %s tensors to the model's dtypes", path, "/".join(sorted(cast)))
    return {"loaded": len(state), "dropped": dropped}


__all__ = ["OfficialCheckpointError", "load_official_checkpoint", "official_to_ours", "ours_to_official"]
