"""The training executor end to end on a tiny generated corpus: losses fall, checkpoints, exact resume, DDP,
DeepSpeed."""

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from test.echat_fixtures import make_corpus, make_tokenizer, tiny_dataset_conf, tiny_model_conf
from wenet_echat.bin import train as train_cli
from wenet_echat.train.checkpoint import read_state_dict
from wenet_echat.train.trainer import TrainConf, choose_task

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    data_list, recs = make_corpus(root, n=16)
    tok = make_tokenizer(root, recs)
    return root, data_list, tok


def write_config(path: Path, corpus, dataset_extra: dict | None = None, encoder_extra: dict | None = None,
                 **train_conf) -> str:
    root, _, tok = corpus
    model = tiny_model_conf()
    model["encoder_conf"].update(encoder_extra or {})
    conf = {
        "tokenizer": {"type": "sentencepiece", "model": str(root / "spm.model")},
        "model": model,
        "dataset_conf": {**tiny_dataset_conf(4), "spec_aug": True, "shuffle": True,
                         "spec_aug_conf": {"num_freq_masks": 1, "max_freq_width": 5}, **(dataset_extra or {})},
        "train_conf": {"tasks": {"asr": 1.0, "tag": 1.0, "s2s_think": 1.0}, "optim_conf": {"lr": 3e-3},
                       "scheduler": "warmuplr", "scheduler_conf": {"warmup_steps": 5}, "max_epoch": 2,
                       "log_interval": 2, "num_workers": 0, **train_conf},
    }
    path.write_text(yaml.safe_dump(conf))
    return str(path)


def run_train(tmp_path, corpus, model_dir, extra_args=(), dataset_extra=None, encoder_extra=None, **train_conf):
    _, data_list, _ = corpus
    cfg = write_config(tmp_path / f"{Path(model_dir).name}.yaml", corpus, dataset_extra, encoder_extra, **train_conf)
    return train_cli.main(["--config", cfg, "--train_data", data_list, "--cv_data", data_list,
                           "--model_dir", str(model_dir), "--threads", "1", *extra_args])


def read_log(model_dir):
    return [json.loads(line) for line in (Path(model_dir) / "train_log.jsonl").read_text().splitlines()]


def test_train_two_epochs_logs_and_checkpoints(tmp_path, corpus):
    model_dir = tmp_path / "exp"
    assert run_train(tmp_path, corpus, model_dir, max_epoch=6) == 0
    rows = read_log(model_dir)
    cv = [r for r in rows if r["kind"] == "cv"]
    assert len(cv) == 6 and cv[-1]["cv_loss"] < 0.85 * cv[0]["cv_loss"]
    assert {"cv_loss_asr", "cv_acc_tag", "cv_loss_s2s_think"} <= set(cv[-1])
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert train_rows and all(0 <= r["data_share"] <= 1 and 0 <= r["pad_share"] < 1 for r in train_rows)
    assert all(50 < r["rss_mb"] < 64 * 1024 for r in train_rows)  # this process's resident memory, MiB
    for tag in ("epoch_0", "epoch_5", "final"):
        assert (model_dir / tag / "model.pt").is_file()
    assert (model_dir / "latest").read_text().strip() == "final"
    assert yaml.safe_load((model_dir / "train.yaml").read_text())["train_conf"]["max_epoch"] == 6
    assert list((model_dir / "tensorboard").iterdir())
    # a finished model_dir is resumed, not retrained; --no_resume refuses it
    with pytest.raises(SystemExit, match="already holds"):
        run_train(tmp_path, corpus, model_dir, extra_args=["--no_resume"], max_epoch=6)


def test_resume_is_exact(tmp_path, corpus):
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_train(tmp_path, corpus, straight, max_steps=7, save_interval=3, keep_last=2)
    run_train(tmp_path, corpus, split, max_steps=5, save_interval=3, keep_last=2)  # "killed" after step 5 (mid epoch 1)
    run_train(tmp_path, corpus, split, max_steps=7, save_interval=3, keep_last=2)  # resumes from step 5 exactly
    a, b = read_state_dict(straight / "final"), read_state_dict(split / "final")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    trained = read_state_dict(split / "step_3")
    assert any(not torch.equal(a[k], trained[k]) for k in a)  # the test can fail: weights did move


def test_init_from_previous_stage_and_freeze(tmp_path, corpus):
    stage1 = tmp_path / "stage1"
    run_train(tmp_path, corpus, stage1, max_steps=2)
    stage2 = tmp_path / "stage2"
    run_train(tmp_path, corpus, stage2, extra_args=["--init", str(stage1 / "final")], max_steps=2,
              freeze=["encoder"])
    s1, s2 = read_state_dict(stage1 / "final"), read_state_dict(stage2 / "final")
    enc = [k for k in s1 if k.startswith("encoder.")]
    assert enc and all(torch.equal(s1[k], s2[k]) for k in enc)  # frozen: unchanged from the init
    assert any(not torch.equal(s1[k], s2[k]) for k in s1 if k.startswith("llama_model."))


def test_encoder_cache_trains_exactly_as_without(tmp_path, corpus, capfd):
    """The frozen encoder (dropout 0.3, kept in eval mode) computes the same outputs whether it runs every step or
    once into the cache, so the two runs log the same losses and end with the same weights."""
    common = {"dataset_extra": {"spec_aug": False}, "encoder_extra": {"dropout": 0.3}, "freeze": ["encoder"],
              "max_steps": 6, "log_interval": 1}
    plain, cached = tmp_path / "plain", tmp_path / "cached"
    run_train(tmp_path, corpus, plain, **common)
    capfd.readouterr()
    run_train(tmp_path, corpus, cached, encoder_cache=True, **common)
    assert "encoder cache: 16 utterances" in capfd.readouterr().err
    rows = {d: [r for r in read_log(d) if r["kind"] in ("train", "cv")] for d in (plain, cached)}
    assert len(rows[plain]) == len(rows[cached]) >= 6
    for a, b in zip(rows[plain], rows[cached]):
        assert a["kind"] == b["kind"]
        loss = "loss" if a["kind"] == "train" else "cv_loss"
        assert a[loss] == pytest.approx(b[loss], rel=1e-5, abs=1e-6)
    sa, sb = read_state_dict(plain / "final"), read_state_dict(cached / "final")
    assert all(torch.allclose(sa[k], sb[k], atol=1e-5) for k in sa)


def test_encoder_cache_needs_a_frozen_unaugmented_encoder(tmp_path, corpus):
    with pytest.raises(ValueError, match="freeze: \\[encoder\\]"):
        run_train(tmp_path, corpus, tmp_path / "trained", dataset_extra={"spec_aug": False}, encoder_cache=True,
                  max_steps=1)
    with pytest.raises(ValueError, match="spec_aug: false"):
        run_train(tmp_path, corpus, tmp_path / "augmented", encoder_cache=True, freeze=["encoder"], max_steps=1)
    with pytest.raises(ValueError, match="frozen_eval: true"):
        run_train(tmp_path, corpus, tmp_path / "noisy", dataset_extra={"spec_aug": False}, encoder_cache=True,
                  freeze=["encoder"], frozen_eval=False, max_steps=1)


def test_frozen_eval_false_keeps_the_frozen_encoders_dropout(tmp_path, corpus):
    """With frozen_eval: false the frozen encoder's dropout stays on, so the losses differ from the eval-mode run
    (the weights it reads from stay untouched either way)."""
    common = {"dataset_extra": {"spec_aug": False}, "encoder_extra": {"dropout": 0.3}, "freeze": ["encoder"],
              "max_steps": 3, "log_interval": 1}
    run_train(tmp_path, corpus, tmp_path / "eval", **common)
    run_train(tmp_path, corpus, tmp_path / "dropout", frozen_eval=False, **common)
    a = [r["loss"] for r in read_log(tmp_path / "eval") if r["kind"] == "train"]
    b = [r["loss"] for r in read_log(tmp_path / "dropout") if r["kind"] == "train"]
    assert len(a) == len(b) == 3 and a != pytest.approx(b, rel=1e-6)


def test_train_conf_errors():
    with pytest.raises(ValueError, match="unknown train_conf key"):
        TrainConf.from_dict({"max_epochs": 3})
    with pytest.raises(ValueError, match="tasks"):
        TrainConf.from_dict({"tasks": {"sing": 1.0}})


def test_task_schedule_conf():
    c = TrainConf.from_dict({"tasks": {"asr": 1.0, "tag": 1.0},
                             "task_schedule": [{"until_step": 3, "tasks": {"tag": 1.0}},
                                               {"until_step": 5, "tasks": {"tag": 1.0, "tts": 0.0}}]})
    assert [c.tasks_at(s) for s in (0, 2, 3, 4, 5, 100)] == [{"tag": 1.0}] * 2 + [{"tag": 1.0, "tts": 0.0}] * 2 \
        + [{"asr": 1.0, "tag": 1.0}] * 2
    assert c.all_tasks == ["asr", "tag", "tts"]
    bad = [([{"until_step": 3}], "exactly until_step and tasks"),
           ([{"until_step": 3, "tasks": {"tag": 1}}, {"until_step": 3, "tasks": {"asr": 1}}], r"\[1\].until_step"),
           ([{"until_step": 0, "tasks": {"tag": 1}}], "above 0"),
           ([{"until_step": 4, "tasks": {"sing": 1}}], r"task_schedule\[0\].tasks"),
           ([{"until_step": 4, "tasks": {"tag": 0}}], "positive sum")]
    for schedule, match in bad:
        with pytest.raises(ValueError, match=match):
            TrainConf.from_dict({"task_schedule": schedule})


def test_task_schedule_trains_tags_first(tmp_path, corpus):
    model_dir = tmp_path / "curriculum"
    run_train(tmp_path, corpus, model_dir, max_steps=8, log_interval=1, tasks={"asr": 1.0},
              task_schedule=[{"until_step": 4, "tasks": {"tag": 1.0}}])
    rows = read_log(model_dir)
    by_step = {r["step"]: {k[5:] for k in r if k.startswith("loss_")} for r in rows if r["kind"] == "train"}
    assert [by_step[s] for s in range(1, 9)] == [{"tag"}] * 4 + [{"asr"}] * 4
    cv = [r for r in rows if r["kind"] == "cv"][-1]
    assert {"cv_loss_asr", "cv_loss_tag"} <= set(cv)  # scored on every task of the curriculum


def test_choose_task_only_servable_and_weighted():
    recs = [{"key": "a", "task": ["asr"], "text": "hi", "wav": "x"}]
    rng = random.Random(0)
    assert {choose_task(recs, {"asr": 1.0, "tag": 5.0}, rng) for _ in range(20)} == {"asr"}
    both = [{"key": "b", "task": ["asr", "tag"], "text": "hi", "labels": {"age": "adult"}}]
    draws = [choose_task(both, {"asr": 1.0, "tag": 3.0}, rng) for _ in range(400)]
    assert 0.65 < draws.count("tag") / 400 < 0.85
    assert choose_task([{"key": "c", "task": ["tts"]}], {"asr": 1.0}, rng) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cv_curve(model_dir):
    return [r["cv_loss"] for r in read_log(model_dir) if r["kind"] == "cv"]


# same data order and global batch in every layout: no shuffling, no SpecAugment, no dropout
DETERMINISTIC = {"cv_interval": 2, "max_steps": 6, "save_interval": None}


def write_deterministic_config(path: Path, corpus, batch_size: int, **train_conf) -> str:
    cfg = yaml.safe_load(Path(write_config(path, corpus, **DETERMINISTIC, **train_conf)).read_text())
    cfg["dataset_conf"] = tiny_dataset_conf(batch_size)
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_ddp_two_processes_match_one_process(tmp_path, corpus):
    _, data_list, _ = corpus
    one = write_deterministic_config(tmp_path / "one.yaml", corpus, batch_size=4)
    train_cli.main(["--config", one, "--train_data", data_list, "--cv_data", data_list, "--model_dir",
                    str(tmp_path / "one"), "--threads", "1"])
    two = write_deterministic_config(tmp_path / "two.yaml", corpus, batch_size=2)  # 2 ranks x 2 = 4
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "wenet_echat.bin.train", "--config", two, "--train_data", data_list,
           "--cv_data", data_list, "--model_dir", str(tmp_path / "ddp"), "--threads", "1"]
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "ddp" / "final" / "model.pt").is_file()
    a, b = cv_curve(tmp_path / "one"), cv_curve(tmp_path / "ddp")
    assert len(a) == len(b) == 3
    # equal up to the per-rank token weighting of the mean loss
    assert all(abs(x - y) < 0.02 * x for x, y in zip(a, b)), (a, b)
    assert a[-1] < a[0]


def test_deepspeed_zero2_matches_torch_engine(tmp_path, corpus, monkeypatch):
    pytest.importorskip("deepspeed")
    _, data_list, _ = corpus
    port = str(_free_port())
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": port}.items():
        monkeypatch.setenv(k, v)
    ds = {"zero_optimization": {"stage": 2}, "bf16": {"enabled": False}, "zero_allow_untested_optimizer": True,
          "steps_per_print": 100000}
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    for name, extra in (("torch", {}), ("ds", {"train_engine": "deepspeed",
                                               "deepspeed_config": str(tmp_path / "ds.json")})):
        cfg = write_deterministic_config(tmp_path / f"{name}.yaml", corpus, batch_size=4, **extra)
        train_cli.main(["--config", cfg, "--train_data", data_list, "--cv_data", data_list, "--model_dir",
                        str(tmp_path / name), "--threads", "1"])
    a, b = cv_curve(tmp_path / "torch"), cv_curve(tmp_path / "ds")
    assert len(a) == len(b) == 3 and all(abs(x - y) < 1e-3 * x for x, y in zip(a, b)), (a, b)
    assert (tmp_path / "ds" / "final" / "deepspeed").is_dir()


def test_repeated_override_options_add_up():
    args = train_cli.get_parser().parse_args(["--config", "c.yaml", "--train_data", "t", "--model_dir", "m",
                                              "--override", "a.b=1", "--override", "c=2", "d=3"])
    assert args.override == ["a.b=1", "c=2", "d=3"]
