import pytest
import torch

from wenet_echat.llm import LLMS, LLMLoadError, backbone, build_hf_causal_lm, run_decoder

CONF = {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128}


def test_local_directory_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_hf_causal_lm(config=CONF, vocab_size=120)
    model.save_pretrained(tmp_path / "qwen")  # the layout of a real Qwen2 directory (config.json + safetensors)
    loaded = LLMS.build("hf_causal_lm", {"path": str(tmp_path / "qwen"), "vocab_size": 100})
    ids = torch.randint(0, 120, (2, 7))
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, loaded(input_ids=ids).logits, atol=1e-6)
    with pytest.raises(LLMLoadError, match="121"):  # the head must cover the tokenizer
        build_hf_causal_lm(path=str(tmp_path / "qwen"), vocab_size=121)
    bf16 = build_hf_causal_lm(path=str(tmp_path / "qwen"), torch_dtype="bfloat16")
    assert bf16.get_input_embeddings().weight.dtype == torch.bfloat16


def test_kv_cache_matches_full_forward():
    torch.manual_seed(1)
    model = build_hf_causal_lm(config=CONF, vocab_size=50).eval()
    stack = backbone(model)
    emb = torch.randn(1, 9, 32)
    with torch.no_grad():
        full, _ = run_decoder(stack, emb)
        first, cache = run_decoder(stack, emb[:, :6], use_cache=True)
        rest = []
        for t in range(6, 9):
            h, cache = run_decoder(stack, emb[:, t:t + 1], position_ids=torch.tensor([[t]]), cache=cache,
                                   use_cache=True)
            rest.append(h)
    assert torch.allclose(torch.cat([first, *rest], 1), full, atol=1e-5)


def test_lora_trains_only_adapters():
    model = build_hf_causal_lm(config=CONF, vocab_size=50, lora={"r": 4, "alpha": 8, "dropout": 0.0})
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert backbone(model).__class__.__name__ == "Qwen2Model"


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(LLMLoadError, match="exactly one"):
        build_hf_causal_lm()
    with pytest.raises(LLMLoadError, match="does not exist"):
        build_hf_causal_lm(path=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LLMLoadError, match="no config.json"):
        build_hf_causal_lm(path=str(tmp_path / "empty"))
    with pytest.raises(LLMLoadError, match="model_type"):
        build_hf_causal_lm(config={"hidden_size": 8})
    with pytest.raises(LLMLoadError, match="torch_dtype"):
        build_hf_causal_lm(config=CONF, torch_dtype="int3")
    with pytest.raises(LLMLoadError, match="smaller than the tokenizer"):
        build_hf_causal_lm(config={**CONF, "vocab_size": 10}, vocab_size=20)
