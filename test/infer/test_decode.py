import json

import pytest
import yaml

from test.echat_fixtures import make_corpus, make_tokenizer, tiny_dataset_conf, tiny_model_conf
from wenet_echat.bin import decode as decode_cli
from wenet_echat.bin import score as score_cli
from wenet_echat.bin import train as train_cli
from wenet_echat.infer import load_model_dir, split_output
from wenet_echat.text.think import THINK_BEGIN, THINK_END


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode")
    data_list, recs = make_corpus(root, n=8)
    make_tokenizer(root, recs)
    conf = {"tokenizer": {"type": "sentencepiece", "model": str(root / "spm.model")}, "model": tiny_model_conf(),
            "dataset_conf": tiny_dataset_conf(4),
            "train_conf": {"tasks": {"asr": 1.0, "tag": 1.0, "s2s_think": 1.0}, "optim_conf": {"lr": 3e-3},
                           "scheduler_conf": {"warmup_steps": 2}, "max_steps": 4, "log_interval": 2}}
    (root / "conf.yaml").write_text(yaml.safe_dump(conf))
    train_cli.main(["--config", str(root / "conf.yaml"), "--train_data", data_list, "--model_dir",
                    str(root / "exp"), "--threads", "1"])
    return root, data_list, recs


def test_decode_and_score(trained, capsys):
    root, data_list, recs = trained
    hyp = root / "hyp.jsonl"
    assert decode_cli.main(["--model_dir", str(root / "exp"), "--data_list", data_list, "--tasks", "asr", "tag",
                            "s2s_think", "--out", str(hyp), "--batch_size", "3", "--max_text_tokens", "12",
                            "--max_speech_tokens", "5"]) == 0
    rows = [json.loads(line) for line in hyp.read_text().splitlines()]
    assert len(rows) == 3 * len(recs)
    assert {r["key"] for r in rows} == {r["key"] for r in recs}
    for r in rows:
        assert r["n_text_tokens"] <= 12 and r["total_s"] > 0
        if r["task"] == "s2s_think":
            assert "think" in r and "reply" in r and len(r["speech_tokens"]) <= 5
    out = root / "results.md"
    assert score_cli.main(["--ref", data_list, "--hyp", str(hyp), "--out", str(out)]) == 0
    text = out.read_text()
    assert "WER" in text and "| age |" in text and "| emotion |" in text
    scores = json.loads(out.with_suffix(".json").read_text())
    assert scores["asr"]["utts"] == len(recs)


def test_load_model_dir_errors(trained, tmp_path):
    root, _, _ = trained
    with pytest.raises(FileNotFoundError, match="train.yaml"):
        load_model_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a path nor a tag"):
        load_model_dir(root / "exp", "epoch_99")
    assert load_model_dir(root / "exp", "final").checkpoint.endswith("final")


def test_split_output_keeps_every_token():
    assert split_output(f"{THINK_BEGIN}the user said: hi, age: <adult>{THINK_END}Hello there!") == (
        "the user said: hi, age: <adult>", "Hello there!")
    assert split_output("Just a reply.") == ("", "Just a reply.")
    assert split_output(f"{THINK_BEGIN}unfinished thought") == ("unfinished thought", "")
