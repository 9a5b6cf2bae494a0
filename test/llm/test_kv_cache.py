"""The static KV cache's lean step gives the transformers forward's hidden states (Qwen2, Llama, LoRA, padding)."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from wenet_echat.llm import (
    StaticKVCache,
    apply_lora,
    backbone,
    build_hf_causal_lm,
    lean_unsupported,
    new_decode_cache,
    run_decoder,
)

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 50, "max_position_embeddings": 128}


def tiny(model_type: str = "qwen2", **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(model_type, **TINY, **extra)
    cfg._attn_implementation = "sdpa"
    return AutoModelForCausalLM.from_config(cfg).eval()


def run_chunks(stack, cache, emb, mask, pos, sizes):
    """Feed ``emb`` (B, T, H) in chunks of ``sizes``; the concatenated hidden states."""
    outs, at = [], 0
    for n in sizes:
        h, cache = run_decoder(stack, emb[:, at:at + n], mask[:, :at + n], pos[:, at:at + n], cache=cache,
                               use_cache=True)
        outs.append(h)
        at += n
    return torch.cat(outs, 1), cache


@pytest.mark.parametrize("model_type", ["qwen2", "llama"])
def test_static_steps_equal_transformers(model_type):
    stack = backbone(tiny(model_type))
    assert lean_unsupported(stack) is None
    emb = torch.randn(1, 20, 32)
    mask = torch.ones(1, 20, dtype=torch.long)
    pos = torch.arange(20)[None]
    sizes = [7, 1, 1, 1, 4, 1, 5]  # a prompt, single tokens, a later multi-token chunk (explicit causal mask)
    with torch.inference_mode():
        ref, _ = run_chunks(stack, None, emb, mask, pos, sizes)
        cache = StaticKVCache(stack, 1, capacity=4)  # grows by doubling on the way
        got, cache = run_chunks(stack, cache, emb, mask, pos, sizes)
    assert isinstance(cache, StaticKVCache) and cache.get_seq_length() == 20 and cache.capacity >= 20
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_crop_then_refeed_equals_a_fresh_run():
    stack = backbone(tiny())
    emb, other = torch.randn(1, 12, 32), torch.randn(1, 3, 32)
    mask, pos = torch.ones(1, 12, dtype=torch.long), torch.arange(12)[None]
    with torch.inference_mode():
        cache = new_decode_cache(stack, 1)
        _, cache = run_chunks(stack, cache, torch.cat([emb[:, :9], other], 1), mask, pos, [9, 3])
        cache.crop(-3)  # drop the 3 wrong positions, as a cancelled turn does
        assert cache.get_seq_length() == 9
        h, _ = run_decoder(stack, emb[:, 9:], mask, pos[:, 9:], cache=cache, use_cache=True)
        ref, _ = run_decoder(stack, emb, mask, pos, use_cache=True)
    torch.testing.assert_close(h, ref[:, 9:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cannot crop a cache of 12 positions to 13"):
        cache.crop(13)


def test_left_padded_batch_equals_transformers():
    stack = backbone(tiny())
    emb = torch.randn(2, 10, 32)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, :3] = 0  # row 1: 3 left pads before a 4-position prompt
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.inference_mode():
        ref, _ = run_chunks(stack, None, emb, mask, pos, [7, 1, 1, 1])
        got, _ = run_chunks(stack, StaticKVCache(stack, 2), emb, mask, pos, [7, 1, 1, 1])
    assert torch.isfinite(got).all()
    real = mask.bool()
    torch.testing.assert_close(got[real], ref[real], atol=1e-5, rtol=1e-5)


def test_lora_adapters_are_applied():
    model = apply_lora(tiny(), r=4, alpha=8, dropout=0.0)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: make the adapters matter
            torch.nn.init.normal_(p, std=0.5)
    model.eval()
    stack = backbone(model)
    emb, mask, pos = torch.randn(1, 9, 32), torch.ones(1, 9, dtype=torch.long), torch.arange(9)[None]
    with torch.inference_mode():
        ref, _ = run_chunks(stack, None, emb, mask, pos, [6, 1, 1, 1])
        got, _ = run_chunks(stack, new_decode_cache(stack, 1), emb, mask, pos, [6, 1, 1, 1])
        base, _ = run_chunks(backbone(tiny()), None, emb, mask, pos, [6, 1, 1, 1])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert (got - base).abs().max() > 1e-3  # the adapters changed the output, and the lean step kept that


def test_unsupported_models_fall_back_and_bad_kinds_are_errors():
    sliding = backbone(tiny(use_sliding_window=True, sliding_window=4, max_window_layers=0))
    why = lean_unsupported(sliding)
    assert why is not None and "sliding" in why
    assert new_decode_cache(sliding, 1) is None
    with pytest.raises(TypeError, match="sliding"):
        StaticKVCache(sliding, 1)
    stack = backbone(tiny())
    assert new_decode_cache(stack, 1, "hf") is None
    assert isinstance(new_decode_cache(stack, 2), StaticKVCache)
    with pytest.raises(ValueError, match="kv_cache must be one of static, hf"):
        new_decode_cache(stack, 1, "paged")
    cache = StaticKVCache(stack, 2)
    with pytest.raises(ValueError, match="cache holds 2 sequences, got a batch of 1"):
        cache.forward(torch.randn(1, 2, 32), None, torch.arange(2)[None])


def test_bf16_model_decodes_in_bf16():
    model = build_hf_causal_lm(config={"model_type": "qwen2", **TINY}, torch_dtype="bfloat16").eval()
    stack = backbone(model)
    emb = torch.randn(1, 8, 32, dtype=torch.bfloat16)
    mask, pos = torch.ones(1, 8, dtype=torch.long), torch.arange(8)[None]
    with torch.inference_mode():
        ref, _ = run_chunks(stack, None, emb, mask, pos, [5, 1, 1, 1])
        cache = new_decode_cache(stack, 1)
        got, _ = run_chunks(stack, cache, emb, mask, pos, [5, 1, 1, 1])
    assert got.dtype == torch.bfloat16 and cache.keys[0].dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref.float(), atol=3e-2, rtol=3e-2)
