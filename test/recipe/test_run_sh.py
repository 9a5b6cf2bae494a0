"""The recipe's shell layer: option parsing, help, and that every script run.sh calls exists."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "egs" / "echat"


def _sh(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script, "prog", *args], capture_output=True, text=True, cwd=ROOT)


PARSE = (
    "stage=0; use_gpu=false; out_dir=x; help_message=HELP; . tools/parse_options.sh; "
    "echo $stage $use_gpu $out_dir $#"
)


def test_parse_options_sets_declared_variables():
    r = _sh(PARSE, "--stage", "3", "--use-gpu", "true", "--out_dir=a b", "rest")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3", "true", "a", "b", "1"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stgae", "3"], "invalid option --stgae"),
        (["--use_gpu", "yes"], "takes true or false, got 'yes'"),
        (["--stage"], "option --stage needs a value"),
        (["--config", "/nonexistent.conf"], "cannot read '/nonexistent.conf'"),
    ],
)
def test_parse_options_errors(args, message):
    r = _sh(PARSE, *args)
    assert r.returncode == 2
    assert message in r.stderr


def test_parse_options_help_and_config(tmp_path):
    r = _sh(PARSE, "--help")
    assert r.returncode == 0 and r.stdout.strip() == "HELP"
    conf = tmp_path / "opts.conf"
    conf.write_text("stage=5\nout_dir=from_conf\n")
    r = _sh(PARSE, "--config", str(conf), "--stage", "6")
    assert r.stdout.split() == ["6", "false", "from_conf", "0"]


def test_run_sh_help_lists_every_stage_it_has():
    r = subprocess.run([str(RECIPE / "run.sh"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    code = (RECIPE / "run.sh").read_text()
    stages = sorted(set(int(n) for n in re.findall(r'\[ "\$stage" -le (\d+) \]', code)))
    assert stages == list(range(len(stages))) and stages
    for n in stages:
        assert re.search(rf"^\s+{n}\s+\S", r.stdout, re.M), f"stage {n} missing from --help"
    r = subprocess.run([str(ROOT / "run.sh"), "--no_such_option", "1"], capture_output=True, text=True)
    assert r.returncode == 2 and "invalid option --no_such_option" in r.stderr


def test_scripts_called_by_run_sh_exist_and_parse():
    code = (RECIPE / "run.sh").read_text()
    called = set(re.findall(r"python ((?:local|tools)/\S+\.py)", code))
    called |= {m.replace(".", "/") + ".py" for m in re.findall(r"python -m (wenet_echat\.\S+)", code)}
    assert called, "run.sh calls no scripts?"
    for rel in sorted(called):
        path = RECIPE / rel
        assert path.is_file(), f"run.sh calls {rel}, which does not exist"
    for sh in [RECIPE / "run.sh", RECIPE / "path.sh", ROOT / "tools/install.sh", ROOT / "tools/parse_options.sh"]:
        assert subprocess.run(["bash", "-n", str(sh)]).returncode == 0, sh


def test_training_stages_read_the_tokenizer_of_their_data_dir(tmp_path):
    """With --data other than data/, stage 5's three trainings get that corpus's SentencePiece model (the mini
    configs name data/lang/spm.model), next to any --train_extra override."""
    fake = tmp_path / "bin"
    fake.mkdir()
    calls = tmp_path / "calls.txt"
    (fake / "python").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (fake / "python").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "VIRTUAL_ENV": str(tmp_path), "HOME": str(tmp_path)}
    data, exp = tmp_path / "mine", tmp_path / "exp"
    r = subprocess.run([str(RECIPE / "run.sh"), "--data", str(data), "--exp", str(exp), "--stage", "5",
                        "--stop_stage", "5", "--train_extra", "--override train_conf.max_epoch=1"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    lines = calls.read_text().splitlines()
    trainings = [x for x in lines if "wenet_echat.bin.train " in x or "wenet_echat.bin.pretrain_llm" in x]
    assert len(trainings) == 3  # encoder pre-training, LLM text pre-training, stage 1
    for line in trainings:
        assert f"--override tokenizer.model={data}/lang/spm.model" in line
    assert all("train_conf.max_epoch=1" in x for x in trainings if "bin.train " in x)
    calls.unlink()
    r = subprocess.run([str(RECIPE / "run.sh"), "--exp", str(exp / "default"), "--stage", "5", "--stop_stage", "5"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "tokenizer.model" not in calls.read_text()  # data/ itself: the configs' own path
