"""dtype: auto picks bf16 only where the device computes it natively; the torch engine autocasts accordingly."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from wenet_echat.train import engine as eng


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(eng, "native_bf16", lambda device: native)
    assert eng.resolve_dtype("auto", "cpu") == expected


def test_explicit_dtypes_are_kept_and_bf16_without_native_support_warns(monkeypatch, caplog):
    monkeypatch.setattr(eng, "native_bf16", lambda device: False)
    assert eng.resolve_dtype("fp32", "cpu") == "fp32"
    assert eng.resolve_dtype("fp16", "cpu") == "fp16"
    with caplog.at_level(logging.WARNING, logger=eng.__name__):
        assert eng.resolve_dtype("bf16", "cpu", "pretrain_conf.dtype") == "bf16"
    assert "pretrain_conf.dtype bf16" in caplog.text and "no native bf16" in caplog.text
    caplog.clear()
    monkeypatch.setattr(eng, "native_bf16", lambda device: True)
    with caplog.at_level(logging.WARNING, logger=eng.__name__):
        eng.resolve_dtype("bf16", "cpu")
    assert caplog.text == ""


def test_unknown_dtype_names_the_key():
    with pytest.raises(ValueError, match=r"train_conf\.dtype must be one of auto, fp32, bf16, fp16, got 'half'"):
        eng.resolve_dtype("half", "cpu")


def test_native_bf16_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert eng.native_bf16("cpu") is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert eng.native_bf16(torch.device("cpu")) is True


@pytest.mark.parametrize("native, autocast", [(True, torch.bfloat16), (False, None)])
def test_torch_engine_autocasts_by_the_resolved_dtype(monkeypatch, native, autocast):
    monkeypatch.setattr(eng, "native_bf16", lambda device: native)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = eng.build_engine("torch_ddp", model, opt, None, {"dtype": "auto"}, torch.device("cpu"))
    assert engine.autocast is autocast and engine.dtype == ("bf16" if native else "fp32")
    with engine.eval_context():
        out = model(torch.randn(3, 4))
    assert out.dtype == (autocast or torch.float32)


def test_pretrain_conf_checks_its_dtype_at_parse_time():
    from wenet_echat.bin.pretrain_llm import pretrain_conf

    assert pretrain_conf({"pretrain_conf": {"dtype": "auto"}}, "x.yaml")["dtype"] == "auto"
    with pytest.raises(ValueError, match=r"pretrain_conf\.dtype must be one of .*got 'half'"):
        pretrain_conf({"pretrain_conf": {"dtype": "half"}}, "x.yaml")
