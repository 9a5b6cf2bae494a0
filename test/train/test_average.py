"""Checkpoint averaging: fp64 accumulation, integer tensors, selection by step / cv_loss, the CLI."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml

from wenet_echat.bin import average_model
from wenet_echat.train.average import average_checkpoints, select_checkpoints
from wenet_echat.train.checkpoint import save_state_dict


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(64, 8, generator=g) * 1e3 + 1e-3,
        "half": torch.randn(16, generator=g).to(torch.bfloat16),
        "steps": torch.tensor(seed, dtype=torch.long),
        "mask": torch.tensor([True, False]),
    }


def _fake_checkpoint(model_dir, tag, step, cv_loss=None, seed=0):
    path = model_dir / tag
    save_state_dict(_state(seed), path / "model.pt")
    info = {"tag": tag, "step": step, "epoch": 0}
    if cv_loss is not None:
        info["cv_loss"] = cv_loss
    (path / "info.yaml").write_text(yaml.safe_dump(info))
    return path


def test_average_is_fp64_mean_cast_back_and_keeps_last_integers(tmp_path):
    paths = []
    for seed in (1, 2, 3):
        paths.append(tmp_path / f"{seed}.pt")
        save_state_dict(_state(seed), paths[-1])
    paths[1] = _fake_checkpoint(tmp_path, "step_2", 2, seed=2)  # a checkpoint directory works too
    states = [_state(s) for s in (1, 2, 3)]
    avg = average_checkpoints(paths)
    expected_w = (sum(s["w"].double() for s in states) / 3).float()
    expected_half = (sum(s["half"].double() for s in states) / 3).to(torch.bfloat16)
    assert avg["w"].dtype == torch.float32 and torch.equal(avg["w"], expected_w)
    assert avg["half"].dtype == torch.bfloat16 and torch.equal(avg["half"], expected_half)
    assert avg["steps"].dtype == torch.long and avg["steps"].item() == 3
    assert torch.equal(avg["mask"], torch.tensor([True, False]))
    assert torch.equal(average_checkpoints(paths[:1])["w"], states[0]["w"])


def test_average_rejects_incompatible_checkpoints(tmp_path):
    save_state_dict(_state(1), tmp_path / "a.pt")
    save_state_dict({**_state(2), "extra": torch.zeros(1)}, tmp_path / "b.pt")
    save_state_dict({**_state(3), "w": torch.zeros(8, 64)}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"a.pt: keys differ from .*b.pt .*only in .*b.pt: \['extra'\]"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"])
    with pytest.raises(ValueError, match=r"a.pt: 'w' is torch.float32\(64, 8\) but torch.float32\(8, 64\) in .*c.pt"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "c.pt"])
    with pytest.raises(ValueError, match="no checkpoints given"):
        average_checkpoints([])


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "exp"
    _fake_checkpoint(d, "step_100", 100, cv_loss=3.0, seed=1)
    _fake_checkpoint(d, "step_200", 200, cv_loss=1.0, seed=2)
    _fake_checkpoint(d, "step_300", 300, cv_loss=2.0, seed=3)
    _fake_checkpoint(d, "step_400", 400, seed=4)
    _fake_checkpoint(d, "epoch_1", 250, cv_loss=0.5, seed=5)
    _fake_checkpoint(d, "final", 400, cv_loss=0.1, seed=4)
    (d / "latest").write_text("final\n")
    return d


def test_select_last_and_best(model_dir, caplog):
    names = [r.path.name for r in select_checkpoints(model_dir, 3, "last")]
    assert names == ["epoch_1", "step_300", "step_400"]  # highest steps, returned oldest first; final excluded
    names = [r.path.name for r in select_checkpoints(model_dir, 2, "best")]
    assert names == ["step_200", "epoch_1"]
    assert [r.path.name for r in select_checkpoints(model_dir, 1, "last", tag_regex=r"final")] == ["final"]
    with caplog.at_level(logging.WARNING):
        records = select_checkpoints(model_dir, 9, "best")
    assert len(records) == 4 and "only 4 checkpoint(s) available for mode 'best', wanted 9" in caplog.text


def test_select_errors(model_dir, tmp_path):
    with pytest.raises(ValueError, match="no checkpoint matching 'step_400' with a cv_loss in info.yaml found"):
        select_checkpoints(model_dir, 1, "best", tag_regex="step_400")
    with pytest.raises(ValueError, match="mode must be one of"):
        select_checkpoints(model_dir, 1, "first")
    with pytest.raises(ValueError, match="num must be >= 1"):
        select_checkpoints(model_dir, 0)
    with pytest.raises(FileNotFoundError, match="no such model_dir"):
        select_checkpoints(tmp_path / "nope", 1)
    (model_dir / "step_200" / "info.yaml").write_text("step: 200\ncv_loss: high\n")
    with pytest.raises(ValueError, match=r"step_200/info.yaml: cv_loss must be a number, got 'high'"):
        select_checkpoints(model_dir, 2, "best")


def test_cli_averages_and_reports(model_dir, capsys):
    dst = model_dir / "avg_2.pt"
    assert average_model.main(["--model_dir", str(model_dir), "--num", "2", "--mode", "best", "--dst", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "averaging step_200 (step 200, cv_loss 1)" in out and "averaging epoch_1 (step 250, cv_loss 0.5)" in out
    written = torch.load(dst, weights_only=True)
    expected = average_checkpoints([model_dir / "step_200", model_dir / "epoch_1"])
    assert written.keys() == expected.keys() and all(torch.equal(written[k], expected[k]) for k in expected)
    assert sorted(p.name for p in model_dir.iterdir() if p.is_file()) == ["avg_2.pt", "latest"]  # no temp file

    assert average_model.main(["--model_dir", str(model_dir / "missing"), "--dst", str(dst)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("average_model: ") and "missing: no such model_dir" in err
    with pytest.raises(SystemExit) as exc:
        average_model.get_args(["--help"])
    assert exc.value.code == 0 and "--mode {last,best}" in capsys.readouterr().out
