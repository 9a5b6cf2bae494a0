"""A preallocated KV cache and a lean decoding step for Llama-family stacks (Qwen2, Llama).

``transformers``' generic forward costs a few milliseconds per call on top of the arithmetic (mask building,
``DynamicCache`` concatenation, config lookups, deprecation wrappers). For a small model decoded one token at a
time on a CPU that overhead is most of the step: the mini LLM spends ~3 ms per token in it. :class:`StaticKVCache`
keeps keys and values in buffers that grow by doubling, and :meth:`StaticKVCache.forward` runs the stack's own
modules (the projections, whatever LoRA wraps them, the norms, the MLP, the rotary embedding) in the order the
model's ``forward`` runs them, with one attention mask built per call. The outputs equal the ``transformers``
forward to float rounding (``test/llm/test_kv_cache.py``).

Only stacks whose layers this step reproduces exactly are taken (:func:`lean_unsupported` says why not: sliding
window layers, per-head q/k norms, other layer classes); for every other model :func:`new_decode_cache` returns
``None`` and callers keep the ``transformers`` path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# decoder layer classes whose forward is: x + o(attn(rope(q(n1 x)), rope(k(n1 x)), v(n1 x))); then x + mlp(n2 x)
LEAN_LAYERS = ("Qwen2DecoderLayer", "LlamaDecoderLayer")
CACHE_KINDS = ("static", "hf")


def lean_unsupported(stack: nn.Module) -> str | None:
    """Why :class:`StaticKVCache` cannot run ``stack`` (a ``*Model`` decoder stack), or ``None`` when it can."""
    layers = getattr(stack, "layers", None)
    if layers is None or not hasattr(stack, "norm") or not hasattr(stack, "rotary_emb"):
        return f"{type(stack).__name__} has no layers / norm / rotary_emb"
    config = getattr(stack, "config", None)
    for i, layer in enumerate(layers):
        name = type(layer).__name__
        if name not in LEAN_LAYERS:
            return f"layer {i} is a {name} (lean step: {', '.join(LEAN_LAYERS)})"
        attn = layer.self_attn
        if getattr(attn, "sliding_window", None):
            return f"layer {i} uses sliding-window attention"
        if hasattr(attn, "q_norm") or hasattr(attn, "k_norm"):
            return f"layer {i} normalises q/k per head"
    types = getattr(config, "layer_types", None) or ()
    if any(t != "full_attention" for t in types):
        return "config.layer_types has layers other than full_attention"
    return None


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class StaticKVCache:
    """Keys and values of ``batch`` sequences for every layer of one stack, positions ``0 .. length-1``.

    ``get_seq_length`` and ``crop`` behave like the ``transformers`` caches (a negative ``crop`` argument removes
    that many positions), so the callers' cache handling is the same for both kinds.
    """

    def __init__(self, stack: nn.Module, batch: int, capacity: int = 256):
        why = lean_unsupported(stack)
        if why:
            raise TypeError(f"StaticKVCache cannot decode this model: {why}")
        self.stack = stack
        self.batch = int(batch)
        self.capacity = max(1, int(capacity))
        self.length = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, max_length: int) -> None:
        if max_length < 0:
            max_length = self.length + max_length
        if not 0 <= max_length <= self.length:
            raise ValueError(f"cannot crop a cache of {self.length} positions to {max_length}")
        self.length = max_length  # later writes overwrite the dropped positions

    def _reserve(self, need: int, like: torch.Tensor) -> None:
        """Buffers for ``need`` positions; ``like``: a (B, kv_heads, T, head_dim) key of the first layer."""
        if not self.keys:
            self.capacity = max(self.capacity, need)
            shape = (like.size(0), like.size(1), self.capacity, like.size(3))
            n = len(self.stack.layers)
            self.keys = [like.new_zeros(shape) for _ in range(n)]
            self.values = [like.new_zeros(shape) for _ in range(n)]
            return
        if need <= self.capacity:
            return
        while self.capacity < need:
            self.capacity *= 2
        for buf in (self.keys, self.values):
            for i, old in enumerate(buf):
                new = old.new_zeros(old.size(0), old.size(1), self.capacity, old.size(3))
                new[:, :, : self.length] = old[:, :, : self.length]
                buf[i] = new

    def _mask(self, attention_mask: torch.Tensor | None, start: int, steps: int) -> torch.Tensor | None:
        """(B, 1, T, L) bool: key ``j`` is visible to query ``i`` when it is not padding and ``j <= start + i``.
        A query whose every key is padding (a left-padded prompt's pad positions) sees itself, so its output
        stays finite; no real position ever attends to it."""
        total = start + steps
        keys_ok = None
        if attention_mask is not None:
            keys_ok = attention_mask[:, :total].bool()
            if bool(keys_ok.all()):
                keys_ok = None
        if keys_ok is None and (steps == 1 or start == 0):
            return None  # one new position sees everything cached; a first chunk is plainly causal
        dev = (attention_mask.device if attention_mask is not None else
               self.keys[0].device if self.keys else torch.device("cpu"))
        q_pos = torch.arange(start, total, device=dev)
        allowed = (torch.arange(total, device=dev)[None, :] <= q_pos[:, None])[None, None]  # (1, 1, T, L)
        if keys_ok is not None:
            allowed = allowed & keys_ok[:, None, None, :]
            allowed = allowed | (torch.arange(total, device=dev)[None, :] == q_pos[:, None])[None, None]
        return allowed

    @torch.inference_mode()
    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None,
                position_ids: torch.Tensor) -> torch.Tensor:
        """Append ``inputs_embeds`` (B, T, H) at ``position_ids`` (B, T); ``attention_mask`` (B, >= length + T):
        1 for real positions, 0 for padding. Returns the last hidden state (B, T, H) after the final norm."""
        stack = self.stack
        x = inputs_embeds
        b, t, _ = x.shape
        if b != self.batch:
            raise ValueError(f"cache holds {self.batch} sequences, got a batch of {b}")
        start, end = self.length, self.length + t
        cos, sin = stack.rotary_emb(x, position_ids)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        mask = self._mask(attention_mask, start, t)
        causal = mask is None and t > 1  # (_mask: only for a first chunk without padding)
        for i, layer in enumerate(stack.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(b, t, -1, attn.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(b, t, -1, attn.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(b, t, -1, attn.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            if i == 0:
                self._reserve(end, k)
            self.keys[i][:, :, start:end] = k
            self.values[i][:, :, start:end] = v
            keys, values = self.keys[i][:, :, :end], self.values[i][:, :, :end]
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=causal,
                                               scale=attn.scaling, enable_gqa=q.size(1) != keys.size(1))
            x = x + attn.o_proj(o.transpose(1, 2).reshape(b, t, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        self.length = end
        return stack.norm(x)


def new_decode_cache(stack: nn.Module, batch: int, kind: str = "static") -> StaticKVCache | None:
    """A :class:`StaticKVCache` for ``stack`` when ``kind`` is ``static`` and the lean step supports the model;
    ``None`` (``transformers``' own cache, made by its forward) for ``kind`` ``hf`` or an unsupported model."""
    if kind not in CACHE_KINDS:
        raise ValueError(f"kv_cache must be one of {', '.join(CACHE_KINDS)}, got {kind!r}")
    if kind == "hf" or lean_unsupported(stack):
        return None
    return StaticKVCache(stack, batch)


__all__ = ["CACHE_KINDS", "LEAN_LAYERS", "StaticKVCache", "lean_unsupported", "new_decode_cache"]
