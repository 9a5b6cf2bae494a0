"""The paper configs' training path at tiny size: 2 processes under torchrun (gloo on CPU), DeepSpeed ZeRO-2 bf16.

The stage-1 config is ``egs/echat/conf/paper/train_stage1.yaml`` itself (its engine, DeepSpeed JSON, dtype, freeze
list, optimizer, scheduler and data pipeline); only the sizes change: the tiny model and tokenizer of
``test/echat_fixtures.py``, a static batch of 2 per process and a couple of optimizer steps.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from test.echat_fixtures import make_corpus, make_tokenizer, tiny_model_conf
from wenet_echat.dataset import EChatDataset
from wenet_echat.model import build_model
from wenet_echat.text.tokenizer import build_tokenizer
from wenet_echat.train.checkpoint import read_state_dict
from wenet_echat.train.engine import build_engine
from wenet_echat.train.optim import build_optimizer
from wenet_echat.train.scheduler import build_scheduler
from wenet_echat.train.trainer import TrainConf, Trainer
from wenet_echat.utils.config import load_config

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "egs" / "echat" / "conf" / "paper"
MAX_STEPS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_paper_config(root: Path, stage: int = 1, dtype: str = "bf16") -> dict:
    """``conf/paper/train_stage{stage}.yaml`` with tiny sizes (see the module docstring) and ``dtype``."""
    conf = load_config(PAPER / f"train_stage{stage}.yaml")
    conf["tokenizer"] = {"type": "sentencepiece", "model": str(root / "spm.model")}
    conf["model"] = tiny_model_conf()
    conf["dataset_conf"]["batch_conf"] = {"batch_type": "static", "batch_size": 2}
    tc = conf["train_conf"]
    assert tc["train_engine"] == "deepspeed" and tc["dtype"] == "bf16"  # the path this test is about
    # the JSON path is relative to egs/echat, where the recipe runs
    tc["deepspeed_config"] = str((REPO / "egs" / "echat" / tc["deepspeed_config"]).resolve())
    # a couple of steps, each of 2 micro-batches; the paper's 8000 warm-up steps would leave the bf16 weights as
    # they were after 2 steps
    tc.update({"max_steps": MAX_STEPS, "accum_grad": 2, "log_interval": 1, "save_interval": 1,
               "cv_interval": MAX_STEPS, "num_workers": 0, "prefetch": 2, "dtype": dtype,
               "scheduler_conf": {"warmup_steps": 1}})
    return conf


def cv_loss_single_process(model_dir: Path, data_list: str, root: Path) -> float:
    """The cv loss of ``model_dir/final`` over the whole list, in one process, with the weights in bf16 as
    DeepSpeed holds them."""
    conf = load_config(model_dir / "train.yaml")
    tok = build_tokenizer(conf["tokenizer"])
    model = build_model(conf["model"], tok.vocab_size, tok.eos_id, tok.pad_id)
    model.load_state_dict(read_state_dict(model_dir / "final"))
    tconf = TrainConf.from_dict(conf["train_conf"])
    if tconf.dtype == "bf16":
        model.to(torch.bfloat16)
    opt = build_optimizer(model, tconf.optim, tconf.optim_conf)
    engine = build_engine("torch_ddp", model, opt, build_scheduler(opt, tconf.scheduler, tconf.scheduler_conf),
                          {"dtype": tconf.dtype}, torch.device("cpu"))
    cv = EChatDataset("raw", data_list, conf["dataset_conf"], train=False)
    trainer = Trainer(engine, tok, tconf, root / "recheck", cv, cv, tensorboard=False)
    return float(trainer.cross_validate()["cv_loss"])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_torchrun_two_processes_deepspeed_zero2(tmp_path, dtype):
    pytest.importorskip("deepspeed")
    data_list, recs = make_corpus(tmp_path, n=16)
    make_tokenizer(tmp_path, recs)
    cfg = tmp_path / "paper_tiny_stage1.yaml"
    cfg.write_text(yaml.safe_dump(tiny_paper_config(tmp_path, dtype=dtype)))
    model_dir = tmp_path / "exp" / "stage1"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "wenet_echat.bin.train", "--config", str(cfg), "--train_data", data_list,
           "--cv_data", data_list, "--model_dir", str(model_dir), "--threads", "1"]
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]

    # checkpoints: ours (model.pt + train state) and DeepSpeed's (partitioned optimizer) for every step
    for tag in [f"step_{i}" for i in range(1, MAX_STEPS + 1)] + ["final"]:
        assert (model_dir / tag / "model.pt").is_file(), tag
        # ZeRO-2: each rank wrote its own optimizer partition
        parts = sorted(p.name for p in (model_dir / tag / "deepspeed").glob("*zero_pp_rank_*_optim_states.pt"))
        assert len(parts) == 2 and "rank_0" in parts[0] and "rank_1" in parts[1], (tag, parts)
    assert (model_dir / "latest").read_text().strip() == "final"
    saved = yaml.safe_load((model_dir / "train.yaml").read_text())["train_conf"]
    assert saved["train_engine"] == "deepspeed" and saved["freeze"] == ["llama_model"] and saved["dtype"] == dtype

    rows = [json.loads(x) for x in (model_dir / "train_log.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    cv = [r for r in rows if r["kind"] == "cv"]
    assert [r["step"] for r in train] == list(range(1, MAX_STEPS + 1))
    assert all(r["loss"] > 0 and r["grad_norm"] is not None for r in train)
    assert cv and cv[-1]["step"] == MAX_STEPS

    # stage 1 freezes the LLM; the encoder trains
    first, final = read_state_dict(model_dir / "step_1"), read_state_dict(model_dir / "final")
    assert any(not torch.equal(first[k], final[k]) for k in final if k.startswith("encoder."))
    assert all(torch.equal(first[k], final[k]) for k in final if k.startswith("llama_model."))

    # the logged cv loss is summed over both ranks' halves of the list: it equals a one-process pass over the
    # whole list, not the pass over either half alone
    whole = cv_loss_single_process(model_dir, data_list, tmp_path)
    halves = []
    for r in range(2):
        half = tmp_path / f"half{r}.list"
        half.write_text("".join(json.dumps(x) + "\n" for i, x in enumerate(recs) if i % 2 == r))
        halves.append(cv_loss_single_process(model_dir, str(half), tmp_path))
    logged = cv[-1]["cv_loss"]
    assert logged == pytest.approx(whole, rel=2e-3), (logged, whole, halves)
    assert min(abs(h - whole) for h in halves) > abs(logged - whole), (logged, whole, halves)
