"""DeepSpeed: the shipped ZeRO configs parse, and a ZeRO-2 engine checkpoint converts to the model.pt format.

The engine runs in a subprocess (single rank, gloo, CPU) so that its process group and environment variables do
not leak into the other tests; the conversion and the checks run here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from wenet_echat.bin import convert_deepspeed
from wenet_echat.train.checkpoint import deepspeed_to_state_dict, load_model_weights

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
SKIP_CODE = 3

ENGINE_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    try:
        import deepspeed
        import deepspeed.comm.torch  # noqa: F401
    except Exception as e:
        print(f"import deepspeed failed: {type(e).__name__}: {e}")
        sys.exit(%(skip)d)
    import torch
    from torch import nn
    from wenet_echat.train.optim import apply_freeze, param_groups

    # The CPU shared-memory all-reduce kernel is compiled on first use (about 30 s); one rank never needs it.
    ds_comm = sys.modules["deepspeed.comm.torch"]
    if hasattr(ds_comm, "build_shm_op"):
        ds_comm.build_shm_op = lambda: None

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(4, 6)
            self.norm = nn.LayerNorm(6)
            self.head = nn.Linear(6, 3)
            self.register_buffer("scale", torch.full((3,), 0.5))

        def forward(self, x):
            return self.head(self.norm(torch.relu(self.encoder(x)))) * self.scale

    conf_path, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    config = json.loads(conf_path.read_text())
    config["bf16"] = {"enabled": False}
    config["optimizer"] = {"type": "AdamW", "params": {"lr": 1e-2, "torch_adam": True}}
    torch.manual_seed(0)
    model = Net()
    apply_freeze(model, ["encoder"])
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    deepspeed.init_distributed(dist_backend="gloo")
    engine, *_ = deepspeed.initialize(model=model, config=config,
                                      model_parameters=param_groups(model, 1e-2, 0.01, {"head": 1e-3}))
    for _ in range(3):
        loss = engine(torch.randn(2, 4)).pow(2).mean()
        engine.backward(loss)
        engine.step()
    engine.save_checkpoint(str(out_dir / "ds"), tag="step_3")
    final = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    torch.save({"initial": initial, "final": final}, out_dir / "reference.pt")
""") % {"skip": SKIP_CODE}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name,stage,offload", [("ds_zero1.json", 1, False), ("ds_zero2.json", 2, False),
                                                ("ds_zero3.json", 3, False), ("ds_zero3_offload.json", 3, True)])
def test_shipped_configs_parse(name, stage, offload):
    config_mod = pytest.importorskip("deepspeed.runtime.config")
    raw = json.loads((CONF / name).read_text())
    conf = config_mod.DeepSpeedConfig(raw)  # pydantic validation: unknown or misspelt keys raise
    assert conf.zero_optimization_stage == stage
    assert conf.bfloat16_config.enabled and not conf.float16_config.enabled
    assert conf.gradient_clipping == 5.0 and conf.zero_allow_untested_optimizer
    assert raw["train_micro_batch_size_per_gpu"] == 1 and raw["gradient_accumulation_steps"] == 1
    assert raw["steps_per_print"] >= 100000
    for part in (conf.zero_config.offload_optimizer, conf.zero_config.offload_param):
        assert (part is not None and part.device == "cpu") == offload


def test_zero2_checkpoint_converts_to_model_pt(tmp_path, capsys):
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", ENGINE_SCRIPT, str(CONF / "ds_zero2.json"), str(tmp_path)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    if proc.returncode == SKIP_CODE:
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reference = torch.load(tmp_path / "reference.pt", weights_only=True)
    initial, final = reference["initial"], reference["final"]
    assert not torch.equal(final["head.weight"], initial["head.weight"])  # training did happen
    assert torch.equal(final["encoder.weight"], initial["encoder.weight"])  # frozen

    state = deepspeed_to_state_dict(tmp_path / "ds")
    assert sorted(state) == sorted(final)  # trainable and frozen parameters and buffers
    for key, value in final.items():
        assert state[key].dtype == value.dtype and torch.allclose(state[key], value), key

    out = tmp_path / "step_3" / "model.pt"
    assert convert_deepspeed.main(["--ds_dir", str(tmp_path / "ds"), "--tag", "step_3", "--out", str(out)]) == 0
    assert "wrote 7 tensors" in capsys.readouterr().out
    converted = torch.load(out, weights_only=True)
    assert all(torch.equal(converted[k], state[k]) for k in state)
    target = torch.nn.Module()
    target.encoder, target.norm, target.head = torch.nn.Linear(4, 6), torch.nn.LayerNorm(6), torch.nn.Linear(6, 3)
    target.register_buffer("scale", torch.zeros(3))
    assert load_model_weights(out.parent, target, strict=True)["loaded"] == 7


def test_conversion_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no such DeepSpeed checkpoint directory"):
        deepspeed_to_state_dict(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no 'latest' file, pass the tag explicitly"):
        deepspeed_to_state_dict(tmp_path)
    assert convert_deepspeed.main(["--ds_dir", str(tmp_path), "--tag", "step_9", "--out", str(tmp_path / "m.pt")]) == 1
    assert "step_9: no such DeepSpeed checkpoint tag" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()
