"""bin/pretrain_llm.py: the text LM learns, writes a loadable HF directory, resumes, and initialises the EChat LLM."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from test.echat_fixtures import make_corpus, make_tokenizer, tiny_model_conf
from wenet_echat.bin import pretrain_llm, train
from wenet_echat.llm import build_hf_causal_lm
from wenet_echat.model import build_model
from wenet_echat.train.checkpoint import init_llm_weights, latest_checkpoint, read_state_dict

PRETRAIN = {"block_size": 16, "batch_size": 4, "lr": 1e-2, "warmup_steps": 5, "log_interval": 10,
            "valid_blocks": 8, "dtype": "fp32"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain_llm")
    data_list, recs = make_corpus(root, n=12)
    tok = make_tokenizer(root, recs)
    conf = {"tokenizer": {"type": "sentencepiece", "model": str(root / "spm.model")}, "model": tiny_model_conf(),
            "pretrain_conf": PRETRAIN}
    path = root / "pretrain.yaml"
    path.write_text(yaml.safe_dump(conf))
    return {"root": root, "list": data_list, "recs": recs, "tok": tok, "conf": conf, "conf_path": str(path)}


def run(s, out, *extra):
    return pretrain_llm.main(["--config", s["conf_path"], "--data_list", s["list"], "--valid_list", s["list"],
                              "--out_dir", str(out), *extra])


def test_collect_texts_and_packing(setup):
    texts = pretrain_llm.collect_texts([setup["list"]], ["text", "response"])
    assert len(texts) == len(set(texts)) == len({r["text"] for r in setup["recs"]} | {r["response"]
                                                                                      for r in setup["recs"]})
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    blocks = pretrain_llm.pack_blocks(docs, [2, 0, 1], block_size=3)
    assert blocks.tolist() == [[6, 7, 8, 9], [1, 2, 3, 4]]  # the tail [5] is dropped
    with pytest.raises(ValueError, match="fewer than one block"):
        pretrain_llm.pack_blocks(docs, [0], block_size=8)


def test_pretraining_lowers_the_loss_writes_an_hf_dir_and_resumes(setup, tmp_path):
    out = tmp_path / "llm"
    assert run(setup, out, "--max_steps", "60") == 0
    hist = json.loads((out / "pretrain.json").read_text())
    first, last = hist["valid"][0], hist["valid"][-1]
    assert first["step"] == 0 and last["step"] == 60 and last["loss"] < 0.5 * first["loss"]
    assert hist["log"][-1]["lr"] == pytest.approx(1e-2 * 0.1, rel=0.1)  # cosine to min_lr_ratio over the steps
    # the directory loads as a local HF model and holds the trained weights
    llm = build_hf_causal_lm(path=str(out), vocab_size=setup["tok"].vocab_size)
    trained = torch.load(out / "pretrain.train.pt", weights_only=True)["model"]
    for k, v in llm.state_dict().items():
        torch.testing.assert_close(v, trained[k])
    assert (out / "model.safetensors").stat().st_mode & 0o044  # readable like any written file
    # resume continues at step 60
    assert run(setup, out, "--max_steps", "70") == 0
    hist = json.loads((out / "pretrain.json").read_text())
    assert [r["step"] for r in hist["log"]] == [10, 20, 30, 40, 50, 60, 70]


def test_train_init_llm_loads_the_pretrained_llm(setup, tmp_path):
    out = tmp_path / "llm"
    assert run(setup, out, "--max_steps", "3") == 0
    tok = setup["tok"]
    model = build_model(tiny_model_conf(), tok.vocab_size, tok.eos_id, tok.pad_id)
    assert init_llm_weights(model, out) == len(read_state_dict(out / "model.safetensors"))
    for k, v in read_state_dict(out / "model.safetensors").items():
        torch.testing.assert_close(model.llama_model.state_dict()[k], v)
    # bin/train.py --init_llm: the stage starts from these weights (one step with lr 0 keeps them)
    conf = {**setup["conf"], "dataset_conf": {"feats_type": "whisper_log_mel", "feats_conf": {"n_mels": 80},
                                              "batch_conf": {"batch_type": "static", "batch_size": 4}},
            "train_conf": {"tasks": {"asr": 1.0}, "max_steps": 1, "optim_conf": {"lr": 0.0},
                           "scheduler": "warmup_constant", "scheduler_conf": {"warmup_steps": 0}}}
    conf.pop("pretrain_conf")
    cpath = tmp_path / "stage.yaml"
    cpath.write_text(yaml.safe_dump(conf))
    md = tmp_path / "stage"
    assert train.main(["--config", str(cpath), "--train_data", setup["list"], "--model_dir", str(md),
                       "--init_llm", str(out)]) == 0
    state = read_state_dict(latest_checkpoint(md))
    emb = read_state_dict(out / "model.safetensors")["model.embed_tokens.weight"]
    torch.testing.assert_close(state["llama_model.model.embed_tokens.weight"], emb)


def test_errors_are_named(setup, tmp_path, capsys):
    bad = tmp_path / "bad.list"
    bad.write_text(json.dumps({"key": "k1", "text": "fine"}) + "\n" + json.dumps({"key": "k2", "text": 3}) + "\n")
    with pytest.raises(ValueError, match=r"bad.list:2: key k2: field 'text' must be a string, got int"):
        pretrain_llm.collect_texts([str(bad)], ["text"])
    with pytest.raises(ValueError, match="no text in fields"):
        pretrain_llm.collect_texts([str(bad)], ["response"])
    for change, message in ((("pretrain_conf", {"block": 3}), "unknown pretrain_conf keys: block"),
                            (("model", {**tiny_model_conf(), "llm_conf": {"path": "/some/qwen"}}),
                             "must build the LLM from 'config'")):
        conf = {**setup["conf"], change[0]: change[1]}
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(conf))
        assert pretrain_llm.main(["--config", str(path), "--data_list", setup["list"], "--out_dir",
                                  str(tmp_path / "o"), "--max_steps", "1"]) == 1
        assert message in capsys.readouterr().err
    tok = setup["tok"]
    model = build_model(tiny_model_conf(), tok.vocab_size, tok.eos_id, tok.pad_id)
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        init_llm_weights(model, tmp_path)
    other = build_model({**tiny_model_conf(), "llm_conf": {"config": {**tiny_model_conf()["llm_conf"]["config"],
                                                                      "hidden_size": 64}}},
                        tok.vocab_size, tok.eos_id, tok.pad_id)
    assert run(setup, tmp_path / "llm", "--max_steps", "1") == 0
    with pytest.raises(ValueError, match="shape mismatch"):
        init_llm_weights(other, tmp_path / "llm")
