"""bench/train_throughput.py: the FLOP counting rules, the MFU arithmetic and one real run on a tiny config."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch
import yaml
from torch import nn

from test.echat_fixtures import tiny_model_conf
from wenet_echat.nn.transformer import MultiHeadedAttention

from .conftest import ROOT


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput", ROOT / "bench" / "train_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def test_dense_flops_follow_what_trains(bench):
    x = torch.randn(3, 5, 8)  # 15 positions; the data itself needs no gradient
    m = mlp()
    count = bench.count_step_flops(m, lambda: m(x))
    # layer 1: forward + weight gradient (4 x MACs); layer 2: forward + input and weight gradients (6 x MACs)
    assert count.dense == 2 * 128 * 15 * 2 + 2 * 64 * 15 * 3 and count.attention == 0
    m[2].requires_grad_(False)  # frozen head above a trained layer: forward + input gradient
    assert bench.count_step_flops(m, lambda: m(x)).dense == 2 * 128 * 15 * 2 + 2 * 64 * 15 * 2
    m[0].requires_grad_(False)  # nothing trains: forward only
    assert bench.count_step_flops(m, lambda: m(x)).dense == 2 * (128 + 64) * 15
    # an input that needs a gradient makes it the usual 6 x N x tokens
    m.requires_grad_(True)
    xg = x.clone().requires_grad_(True)
    assert bench.count_step_flops(m, lambda: m(xg)).dense == 6 * (128 + 64) * 15


def test_attention_term(bench):
    att = MultiHeadedAttention(2, 8)
    x = torch.randn(2, 6, 8, requires_grad=True)
    count = bench.count_step_flops(att, lambda: att(x))
    assert count.dense == 4 * 2 * 64 * 12 * 3            # q, k, v, out projections, 12 positions, all training
    assert count.attention == 4 * 2 * 6 * 6 * 8 * 3        # 4 B T^2 d forward, x3 with the backward
    att.requires_grad_(False)
    assert bench.count_step_flops(att, lambda: att(x.detach())).attention == 4 * 2 * 6 * 6 * 8


def test_mfu_and_peaks(bench):
    assert bench.mfu(2e12, 0.5, 8.0) == pytest.approx(0.5)
    assert bench.mfu(1e12, 1.0, None) is None
    assert bench.gpu_peak_tflops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4)
    assert bench.gpu_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.gpu_peak_tflops("NVIDIA H200") == pytest.approx(989.4)
    assert bench.gpu_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.gpu_peak_tflops("Tesla T4") is None
    assert bench.cpu_peak_tflops(2, ghz=2.5, flops_per_cycle=32) == pytest.approx(0.16)


def test_random_init_conf_drops_weight_sources(bench, tmp_path):
    conf = {"init": {"encoder": {"format": "openai", "path": "x.pt"}}, "encoder": "whisper",
            "llm_conf": {"path": str(tmp_path / "absent"), "torch_dtype": "bfloat16"}}
    out, source = bench.random_init_model_conf(conf)
    assert "init" not in out and "path" not in out["llm_conf"] and out["llm_conf"]["torch_dtype"] == "bfloat16"
    assert out["llm_conf"]["config"]["hidden_size"] == 2048 and "built in" in source
    (tmp_path / "qwen").mkdir()
    (tmp_path / "qwen" / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 64,
                                                               "architectures": ["Qwen2ForCausalLM"]}))
    out, source = bench.random_init_model_conf({"llm_conf": {"path": str(tmp_path / "qwen")}})
    assert out["llm_conf"]["config"] == {"model_type": "qwen2", "hidden_size": 64}


def run_bench(bench, capsys, cfg, *extra):
    assert bench.main(["--config", str(cfg), "--device", "cpu", "--batch_size", "2", "--audio_seconds", "1",
                       "--prompt_tokens", "5", "--text_tokens", "7", "--steps", "2", "--warmup", "0",
                       "--threads", "1", "--vocab_size", "400", "--peak_tflops", "0.1", *extra]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("| ") and lines[-2].count("|") == 13
    return json.loads(lines[-1])


def test_bench_runs_a_tiny_stage(bench, tmp_path, capsys):
    base = {"tokenizer": {"type": "sentencepiece", "model": str(tmp_path / "absent.model")},
            "model": tiny_model_conf(),
            "train_conf": {"optim": "adamw", "optim_conf": {"lr": 1e-3}, "dtype": "fp32"}}
    (tmp_path / "all.yaml").write_text(yaml.safe_dump(base))
    base["train_conf"]["freeze"] = ["llama_model"]
    (tmp_path / "frozen.yaml").write_text(yaml.safe_dump(base))
    full = run_bench(bench, capsys, tmp_path / "all.yaml")
    frozen = run_bench(bench, capsys, tmp_path / "frozen.yaml")
    seq = full["seq"]
    # 5 prompt + (1 s -> 100 mel frames -> 50 -> 12.5 Hz: 13 adapter frames) + 2 markers + 7 target tokens
    assert seq == 5 + 13 + 2 + 7
    assert full["tokens_per_s"] == pytest.approx(2 * seq / (full["ms_per_step"] / 1000), rel=1e-3)
    total = full["flops"]["dense"] + full["flops"]["attention"]
    assert full["mfu"] == pytest.approx(total / (full["ms_per_step"] / 1000) / 0.1e12, rel=1e-2)
    # freezing the LLM removes exactly its weight-gradient matmuls: 2 x MACs of its layers at every position
    # (q 32x32, k/v 16x32, o 32x32, gate/up 64x32, down 32x64 = 9216 per layer, 2 layers) and of the tied
    # 400-way LM head at the 2 x 7 labelled positions
    llm_macs = 2 * 9216 * 2 * seq + 400 * 32 * 2 * 7
    assert full["flops"]["dense"] - frozen["flops"]["dense"] == 2 * llm_macs
    assert full["flops"]["attention"] == frozen["flops"]["attention"]
    assert frozen["trainable"] < full["trainable"] == full["params"]
    assert full["vocab_source"] == "--vocab_size" and full["loss_last"] > 0
