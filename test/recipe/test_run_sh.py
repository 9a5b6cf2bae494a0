"""The recipe's shell layer: option parsing, help, and that every script run.sh calls exists."""

import re
import subprocess
import time
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
    env, calls = _fake_python(tmp_path)
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


def _fake_python(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A PATH whose ``python`` only records its arguments (one call a line) in the returned file."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    calls = tmp_path / "calls.txt"
    (fake / "python").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (fake / "python").chmod(0o755)
    return {"PATH": f"{fake}:/usr/bin:/bin", "VIRTUAL_ENV": str(tmp_path), "HOME": str(tmp_path)}, calls


def test_training_budgets_are_steps_by_default_and_minutes_on_request(tmp_path):
    """LLM text pre-training (stage 5) and token-to-wave (stage 10) get step budgets, so a run ends at the same
    step on any machine; a minute budget is an explicit choice, and a run without either is refused up front."""
    env, calls = _fake_python(tmp_path)

    def run(exp: str, *opts: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
        calls.unlink(missing_ok=True)
        r = subprocess.run([str(RECIPE / "run.sh"), "--data", str(tmp_path / "data"), "--exp", str(tmp_path / exp),
                            *opts],
                           capture_output=True, text=True, env=env)
        lines = calls.read_text().splitlines() if calls.exists() else []
        found = {}
        for name, needle in [("llm", "bin.pretrain_llm"), ("flow", "--part flow"), ("vocoder", "--part vocoder")]:
            hits = [x for x in lines if needle in x]
            if hits:
                found[name] = " ".join(re.findall(r"--max_(?:steps|minutes) \S+", hits[0]))
        return r, found

    r, found = run("a", "--stage", "5", "--stop_stage", "5")
    assert r.returncode == 0, r.stderr
    assert found == {"llm": "--max_steps 600"}
    r, found = run("a", "--stage", "10", "--stop_stage", "10")
    assert r.returncode == 0, r.stderr
    assert found == {"flow": "--max_steps 2400", "vocoder": "--max_steps 2700"}
    r, found = run("b", "--stage", "10", "--stop_stage", "10", "--t2w_flow_steps", "", "--t2w_flow_minutes", "8",
                   "--t2w_vocoder_minutes", "16")
    assert r.returncode == 0, r.stderr
    assert found == {"flow": "--max_minutes 8", "vocoder": "--max_steps 2700 --max_minutes 16"}
    r, found = run("c", "--stage", "5", "--stop_stage", "5", "--llm_pretrain_steps", "", "--llm_pretrain_minutes", "3")
    assert r.returncode == 0, r.stderr
    assert found == {"llm": "--max_minutes 3"}

    for opts, message in [
        (["--t2w_vocoder_steps", ""], "--t2w_vocoder_steps and --t2w_vocoder_minutes are both empty"),
        (["--llm_pretrain_steps", "1e3"], "--llm_pretrain_steps must be a positive whole number, got '1e3'"),
        (["--t2w_flow_steps", "0"], "--t2w_flow_steps must be a positive whole number, got '0'"),
    ]:
        r, found = run("d", "--stage", "5", "--stop_stage", "10", *opts)
        assert r.returncode == 2 and message in r.stderr, (opts, r.stderr)
        assert found == {} and not (tmp_path / "d").exists()  # refused before any stage ran
    # without LLM pre-training its budget is not needed
    r, _ = run("e", "--stage", "99", "--stop_stage", "0", "--llm_pretrain", "false", "--llm_pretrain_steps", "")
    assert r.returncode == 0, r.stderr


def test_stage_11_scores_the_stage_2_tts_next_to_resynthesis(tmp_path):
    """With a trained stage 2, stage 11 decodes its TTS of the first --resynth_utts test replies through the same
    token-to-wave and scores it in the resynthesis table; without one, the table has the resynthesis rows only."""
    env, calls = _fake_python(tmp_path)
    exp = tmp_path / "exp"
    cmd = [str(RECIPE / "run.sh"), "--data", str(tmp_path / "data"), "--exp", str(exp), "--stage", "11",
           "--stop_stage", "11", "--resynth_utts", "7"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    lines = calls.read_text().splitlines()
    assert not [x for x in lines if "bin.decode" in x]
    assert "tts_stage2=" not in next(x for x in lines if "bin.score_speech" in x)
    assert "--tasks asr tts" in next(x for x in lines if "make_reply_asr_list.py" in x)
    (exp / "stage2" / "final").mkdir(parents=True)
    (exp / "stage2" / "final" / "model.pt").write_bytes(b"")
    calls.unlink()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    lines = calls.read_text().splitlines()
    decode = next(x for x in lines if "bin.decode" in x)
    assert f"--model_dir {exp}/stage2 " in decode and "--tasks tts --limit 7" in decode
    assert f"--token2wav_dir {exp}/token2wav" in decode
    score = next(x for x in lines if "bin.score_speech" in x)
    assert f"--system tts_stage2={exp}/stage2/decode_test_reply_tts/reply_wavs/tts/wav.scp" in score


def _scripted_python(tmp_path: Path, cases: str) -> tuple[dict[str, str], Path]:
    """Like :func:`_fake_python`, with ``cases``: shell ``case "$*" in ...`` arms run after the arguments are
    recorded (e.g. ``*train_token2wav*) sleep 1; echo t2w-end >> $CALLS;;``; ``$CALLS`` is the calls file)."""
    env, calls = _fake_python(tmp_path)
    (tmp_path / "bin" / "python").write_text(
        f'#!/bin/sh\nCALLS={calls}\necho "$*" >> $CALLS\ncase "$*" in\n{cases}\nesac\n')
    return env, calls


def _run_stages(tmp_path: Path, env: dict[str, str], *opts: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RECIPE / "run.sh"), "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"),
                           "--stage", "8", *opts], capture_output=True, text=True, env=env, timeout=60)


def _threads(line: str) -> int:
    return int(re.search(r"--threads (\d+)", line).group(1))


@pytest.mark.parametrize("threads", [2, 4])
def test_token2wav_trains_in_the_background_beside_stages_8_9(tmp_path, threads):
    """Stage 10 needs only the speech tokens: in a run covering stages 8-10 it trains beside stages 2 and 3 (they
    are recorded before it ends), the threads split between them, and stage 10's block waits for it."""
    env, calls = _scripted_python(tmp_path, '*train_token2wav*) sleep 1; echo "t2w-end $*" >> $CALLS;;')
    r = _run_stages(tmp_path, env, "--stop_stage", "10", "--threads", str(threads))
    assert r.returncode == 0, r.stderr
    lines = calls.read_text().splitlines()
    first_end = next(i for i, x in enumerate(lines) if x.startswith("t2w-end"))
    trainings = [x for x in lines if "wenet_echat.bin.train " in x]
    assert [re.search(r"--model_dir (\S+)", x).group(1) for x in trainings] == [
        f"{tmp_path}/exp/stage2", f"{tmp_path}/exp/stage3"]
    assert all(lines.index(x) < first_end for x in trainings)  # both started before the flow training ended
    t2w = [x for x in lines if x.startswith("-m wenet_echat.bin.train_token2wav")]
    assert [re.search(r"--part (\w+)", x).group(1) for x in t2w] == ["flow", "vocoder"]
    assert {_threads(x) for x in trainings} == {threads // 2} and {_threads(x) for x in t2w} == {threads // 2}
    assert (tmp_path / "exp/token2wav/.vocoder.done").exists()
    assert "stage 10 in the background beside stages 8-9" in r.stderr
    # rerun: both parts done, so nothing goes to the background and stages 8-9 keep every thread
    calls.unlink()
    r = _run_stages(tmp_path, env, "--stop_stage", "10", "--threads", str(threads))
    assert r.returncode == 0, r.stderr
    assert "background" not in r.stderr
    assert {_threads(x) for x in calls.read_text().splitlines() if "bin.train " in x} == {threads}


def test_token2wav_in_order_without_t2w_parallel(tmp_path):
    env, calls = _scripted_python(tmp_path, '*train_token2wav*) sleep 1; echo "t2w-end $*" >> $CALLS;;')
    r = _run_stages(tmp_path, env, "--stop_stage", "10", "--t2w_parallel", "false")
    assert r.returncode == 0, r.stderr
    lines = calls.read_text().splitlines()
    last_training = max(i for i, x in enumerate(lines) if "wenet_echat.bin.train " in x)
    first_t2w = min(i for i, x in enumerate(lines) if "train_token2wav" in x)
    assert last_training < first_t2w and {_threads(x) for x in lines if "--threads" in x} == {2}
    r = _run_stages(tmp_path, env, "--stop_stage", "10", "--t2w_parallel", "yes")
    assert r.returncode == 2 and "option --t2w_parallel takes true or false, got 'yes'" in r.stderr


def test_background_token2wav_failure_stops_the_run(tmp_path):
    """A failed background stage 10 fails the run at stage 10's block, naming its log; stage 11 does not start."""
    env, calls = _scripted_python(tmp_path, "*train_token2wav*) exit 3;;")
    r = _run_stages(tmp_path, env, "--stop_stage", "11")
    assert r.returncode == 1
    assert f"stage 10 failed in the background: see {tmp_path}/exp/token2wav/log/background.log" in r.stderr
    lines = calls.read_text().splitlines()
    assert len([x for x in lines if "wenet_echat.bin.train " in x]) == 2  # stages 8 and 9 ran
    assert not [x for x in lines if "synthesize" in x or "make_reply_asr_list" in x]
    assert not (tmp_path / "exp/token2wav/.flow.done").exists()


def test_foreground_failure_stops_the_background_token2wav(tmp_path):
    """When stage 8 fails, the background stage 10 is stopped with the run, not left training on its own."""
    env, calls = _scripted_python(tmp_path, "*wenet_echat.bin.train\\ *) exit 4;;\n"
                                            '*train_token2wav*) sleep 3; echo "t2w-end" >> $CALLS;;')
    r = _run_stages(tmp_path, env, "--stop_stage", "10")
    assert r.returncode != 0 and "stopping the background stage 10" in r.stderr
    time.sleep(4)
    assert "t2w-end" not in calls.read_text()
    assert not (tmp_path / "exp/token2wav/.flow.done").exists()


# scripted python arms that write what the stage-11 tools write (after a pause, so mtimes order like real runs)
_STAGE11_OUTPUTS = r'''*make_reply_asr_list*) sleep 0.02; mkdir -p "$(dirname "$3")"; touch "$3";;
*bin.synthesize*) sleep 0.02; o=$(echo "$*" | sed 's/.*--out_dir \([^ ]*\).*/\1/'); mkdir -p "$o"; touch "$o/wav.scp";;
*bin.decode*--tasks\ tts*) sleep 0.02; o=$(echo "$*" | sed 's/.*--out \([^ ]*\)\/hyp.jsonl.*/\1/');
  mkdir -p "$o/reply_wavs/tts"; touch "$o/reply_wavs/tts/wav.scp";;
*bin.score_speech*) sleep 0.02; o=$(echo "$*" | sed 's/.*--out \([^ ]*\).*/\1/'); touch "$o";;'''


def test_resynthesis_follows_token2wav_in_the_background(tmp_path):
    """In a run that goes on to stage 11, its resynthesis (and the stage-2 TTS, stage 2 being trained by then)
    follows stage 10 in the background, on the background's threads and half the scoring jobs, while stage 3 still
    trains; stage 11's own block then finds it up to date."""
    exp = tmp_path / "exp"
    env, calls = _scripted_python(tmp_path, _STAGE11_OUTPUTS + f'''
*model_dir\\ {exp}/stage2\\ *) mkdir -p {exp}/stage2/final; touch {exp}/stage2/final/model.pt;;
*train_token2wav*) sleep 0.5;;
*model_dir\\ {exp}/stage3\\ *) sleep 4; echo stage3-end >> $CALLS;;''')
    r = _run_stages(tmp_path, env, "--stop_stage", "11", "--threads", "2", "--nj", "4", "--resynth_utts", "5")
    assert r.returncode == 0, r.stderr
    assert "stage 10-11 in the background beside stages 8-9" in r.stderr
    lines = calls.read_text().splitlines()
    stage3_end = lines.index("stage3-end")
    synth = [i for i, x in enumerate(lines) if "bin.synthesize" in x]
    decode = [i for i, x in enumerate(lines) if "bin.decode" in x]
    score = [i for i, x in enumerate(lines) if "bin.score_speech" in x]
    assert len(synth) == 4 and len(decode) == 1 and len(score) == 1  # nothing redone by stage 11's block
    assert max(synth + decode + score) < stage3_end
    assert {_threads(lines[i]) for i in synth + decode} == {1}
    assert "--nj 2 " in lines[score[0]] and f"tts_stage2={exp}/stage2/decode_test_reply_tts" in lines[score[0]]
    assert "resynth_test.md written in the background" in r.stderr


def test_stage_11_adds_the_tts_row_the_background_could_not(tmp_path):
    """When stage 2 was not trained by the time the background resynthesis scored, stage 11's block decodes the
    stage-2 TTS and scores again; the resynthesised audio is not made twice."""
    exp = tmp_path / "exp"
    env, calls = _scripted_python(tmp_path, _STAGE11_OUTPUTS + f'''
*train_token2wav*--part\\ vocoder*) sleep 0.2;;
*model_dir\\ {exp}/stage2\\ *) sleep 2; mkdir -p {exp}/stage2/final; touch {exp}/stage2/final/model.pt;;''')
    r = _run_stages(tmp_path, env, "--stop_stage", "11")
    assert r.returncode == 0, r.stderr
    lines = calls.read_text().splitlines()
    assert len([x for x in lines if "bin.synthesize" in x]) == 4
    scores = [x for x in lines if "bin.score_speech" in x]
    assert len(scores) == 2 and "tts_stage2=" not in scores[0] and "tts_stage2=" in scores[1]
    assert len([x for x in lines if "bin.decode" in x]) == 1


def test_background_resynthesis_failure_names_stage_11(tmp_path):
    env, calls = _scripted_python(tmp_path, "*bin.synthesize*) exit 5;;")
    r = _run_stages(tmp_path, env, "--stop_stage", "11")
    assert r.returncode == 1
    assert f"stage 11 failed in the background: see {tmp_path}/exp/token2wav/log/background.log" in r.stderr
    assert (tmp_path / "exp/token2wav/.vocoder.done").exists()
