"""A Qwen2 directory in the released layout (config.json + model.safetensors + tokenizer.json) as the paper configs
use it: one directory for the tokenizer (``tokenizer: {type: hf}``) and the LLM (``llm_conf.path``)."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from test.echat_fixtures import tiny_model_conf
from test.text.test_tokenizer import write_tiny_hf_tokenizer
from wenet_echat.llm import LLMLoadError, build_hf_causal_lm
from wenet_echat.model import build_model
from wenet_echat.text.tokenizer import IM_END, build_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QWEN = {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
        "tie_word_embeddings": True, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0}


def write_qwen_dir(d, seed: int = 0):
    """A tiny Qwen2 directory at ``d``: its tokenizer, and an LM whose vocabulary is padded past it (as
    Qwen2.5's 151,936 rows are past its 151,665 tokens). Returns the LM."""
    write_tiny_hf_tokenizer(d)
    size = len(build_tokenizer({"type": "hf", "path": str(d)}).tok)
    torch.manual_seed(seed)
    lm = build_hf_causal_lm(config={**QWEN, "vocab_size": size + 11})
    lm.save_pretrained(d)
    return lm


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("qwen") / "Qwen2-tiny-Instruct"
    return d, write_qwen_dir(d)


def test_paper_layout_builds_the_echat_model(qwen_dir):
    d, lm = qwen_dir
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(d))
    tok = build_tokenizer({"type": "hf", "path": str(d)})
    conf = {**tiny_model_conf(), "llm_conf": {"path": str(d), "torch_dtype": "bfloat16"}}
    model = build_model(conf, tok.vocab_size, tok.eos_id, tok.pad_id)
    assert tok.eos_id == tok.tok.get_vocab()[IM_END]
    assert model.lm_classes == tok.vocab_size + 11 and model.text_vocab_size == tok.vocab_size
    ours = model.llama_model.state_dict()
    for k, v in lm.state_dict().items():  # every weight came from the file (bf16 as asked)
        assert ours[k].dtype == torch.bfloat16 and torch.equal(ours[k], v.to(torch.bfloat16)), k
    ids = torch.tensor([tok.encode("hello there")])
    with torch.no_grad():
        out = model.llama_model(input_ids=ids).logits
    assert out.shape == (1, ids.shape[1], tok.vocab_size + 11)


def _broken_copy(src, dst, edit):
    dst.mkdir()
    for name in os.listdir(src):
        if name != "model.safetensors":
            (dst / name).write_bytes((src / name).read_bytes())
    state = load_file(str(src / "model.safetensors"))
    edit(state)
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return str(dst)


def test_missing_mismatched_and_integer_weights_are_errors(qwen_dir, tmp_path):
    d, _ = qwen_dir
    missing = _broken_copy(d, tmp_path / "missing", lambda s: s.pop("model.layers.1.mlp.down_proj.weight"))
    with pytest.raises(LLMLoadError, match=r"missing.*missing keys: model\.layers\.1\.mlp\.down_proj\.weight"):
        build_hf_causal_lm(path=missing)

    def wrong_shape(s):
        s["model.layers.0.mlp.up_proj.weight"] = torch.zeros(64, 33)

    shape_msg = r"shape mismatches: model\.layers\.0\.mlp\.up_proj\.weight: file \(64, 33\) vs config \(64, 32\)"
    with pytest.raises(LLMLoadError, match=shape_msg):
        build_hf_causal_lm(path=_broken_copy(d, tmp_path / "shape", wrong_shape))

    def integer(s):
        s["model.layers.0.self_attn.q_proj.bias"] = torch.arange(32)

    with pytest.raises(LLMLoadError, match=r"dtype mismatches: model\.layers\.0\.self_attn\.q_proj\.bias: stored I64"):
        build_hf_causal_lm(path=_broken_copy(d, tmp_path / "int", integer))

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_bytes((d / "config.json").read_bytes())
    with pytest.raises(LLMLoadError, match="no_weights"):
        build_hf_causal_lm(path=str(no_weights))
