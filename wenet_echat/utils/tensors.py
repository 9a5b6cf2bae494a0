"""Checks shared by the checkpoint loaders: whether a stored tensor's dtype can stand in for a parameter's, and
one way to list offending tensor names in an error message.

Casting between floating widths (bf16/fp16 on disk -> fp32 in the model) is normal and allowed; an integer or
boolean tensor where the model holds floating values (or the reverse) means the file is not what the loader
thinks it is, and is reported instead of being cast silently.
"""

from __future__ import annotations

import torch

# safetensors header dtype names that hold floating values
SAFETENSORS_FLOAT = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2",
                               "F4"})


def _is_float(dtype: torch.dtype | str) -> bool:
    if isinstance(dtype, str):
        return dtype.upper() in SAFETENSORS_FLOAT
    return dtype.is_floating_point or dtype.is_complex


def _name(dtype: torch.dtype | str) -> str:
    return dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")


def dtype_kind_problem(name: str, stored: torch.dtype | str, expected: torch.dtype | str) -> str | None:
    """``"<name>: stored int64, model float32"`` when one is floating and the other is not, else ``None``.
    ``stored``/``expected`` are torch dtypes or safetensors header names (``"BF16"``, ``"I64"``)."""
    if _is_float(stored) == _is_float(expected):
        return None
    return f"{name}: stored {_name(stored)}, model {_name(expected)}"


def fmt_names(names: list[str], limit: int = 10) -> str:
    """``names`` joined with commas, the first ``limit`` only, then ``... (N in all)``."""
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


__all__ = ["SAFETENSORS_FLOAT", "dtype_kind_problem", "fmt_names"]
