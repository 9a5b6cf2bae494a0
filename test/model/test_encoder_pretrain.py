"""Encoder pre-training (CTC + cue classifiers): targets, losses that fall, the trainer, and stage-1 init."""

import random
from pathlib import Path

import pytest
import torch
import yaml

from test.echat_fixtures import make_corpus, make_tokenizer, tiny_dataset_conf, tiny_model_conf
from wenet_echat.bin import train as train_cli
from wenet_echat.dataset import EChatDataset
from wenet_echat.dataset.dataset import iterate_batches
from wenet_echat.model import EChatModel, EncoderPretrainModel, build_model, to_device
from wenet_echat.model.encoder_pretrain import CHARS, CUES, char_ids, ctc_greedy_errors
from wenet_echat.text.labels import LABEL_VOCABS
from wenet_echat.train.checkpoint import load_model_weights, read_state_dict


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    data_list, recs = make_corpus(root, n=12)
    tok = make_tokenizer(root, recs)
    return root, data_list, recs, tok


def pretrain_conf(**pconf) -> dict:
    return {**tiny_model_conf(), "arch": "encoder_pretrain", "pretrain_conf": pconf}


def first_batch(data_list, tok, n=6):
    return next(iterate_batches(EChatDataset("raw", data_list, tiny_dataset_conf(n), train=False, tokenizer=tok)))


def test_char_ids():
    assert char_ids("Hi, it's  ME!") == [CHARS.index(c) for c in "hi it's me"]
    assert char_ids("  ...  ") == []


def test_ctc_greedy_errors_merge_repeats_and_drop_blanks():
    blank = 10
    # best paths: row 0 "1 1 _ 1 2 _" -> [1, 1, 2] (exact); row 1 "3 3 3 _" (length 4 of 6) -> [3] (3 deletions);
    # row 2 "1 9 9 3 4 _" -> [1, 9, 3, 4] against [1, 2, 3] (a substitution and an insertion)
    paths = [[1, 1, blank, 1, 2, blank], [3, 3, 3, blank, 4, 4], [1, 9, 9, 3, 4, blank]]
    logp = torch.full((3, 6, blank + 1), -10.0)
    for b, path in enumerate(paths):
        for t, u in enumerate(path):
            logp[b, t, u] = 0.0
    refs = torch.tensor([[1, 1, 2, -1], [3, 4, 4, 4], [1, 2, 3, -1]])
    errs, units = ctc_greedy_errors(logp.transpose(0, 1), torch.tensor([6, 4, 6]), refs, torch.tensor([3, 4, 3]),
                                    blank)
    assert (float(errs), float(units)) == (0 + 3 + 2, 3 + 4 + 3)


def test_build_and_config_errors(corpus):
    *_, tok = corpus
    model = build_model(pretrain_conf(), tok.vocab_size, tok.eos_id, tok.pad_id)
    assert isinstance(model, EncoderPretrainModel)
    assert model.ctc_head.out_features == len(CHARS) + 1
    assert {k for k in model.state_dict() if not k.startswith(("encoder.", "ctc_head.", "cue_heads."))} == set()
    tok_units = build_model(pretrain_conf(ctc_units="tokenizer"), tok.vocab_size, tok.eos_id, tok.pad_id)
    assert tok_units.ctc_head.out_features == tok.vocab_size + 1
    with pytest.raises(KeyError, match="pretrain_conf key"):
        build_model(pretrain_conf(ctc_wieght=1.0), tok.vocab_size, tok.eos_id, tok.pad_id)
    with pytest.raises(ValueError, match="ctc_units"):
        build_model(pretrain_conf(ctc_units="phone"), tok.vocab_size, tok.eos_id, tok.pad_id)
    with pytest.raises(ValueError, match="model.arch"):
        build_model({**tiny_model_conf(), "arch": "rnnt"}, tok.vocab_size, tok.eos_id, tok.pad_id)


def test_make_inputs_targets(corpus):
    _, data_list, recs, tok = corpus
    model = build_model(pretrain_conf(), tok.vocab_size, tok.eos_id, tok.pad_id)
    batch = first_batch(data_list, tok)
    batch["labels"][1] = {**batch["labels"][1], "event": None}  # a missing label is -1, not a class
    batch["text"][2] = None
    batch["labels"][3], batch["text"][3] = None, None  # neither: dropped and counted
    from collections import Counter

    dropped = Counter()
    inp = model.make_inputs(batch, "asr", tok, random.Random(0), dropped=dropped)
    assert inp["keys"] == [batch["keys"][i] for i in (0, 1, 2, 4, 5)]
    assert dropped == Counter({"asr: no text and no labels": 1})
    by_key = {r["key"]: r for r in recs}
    for row, key in enumerate(inp["keys"]):
        labels = by_key[key]["labels"]
        for k, cue in enumerate(CUES):
            want = -1 if (row == 1 and cue == "event") else LABEL_VOCABS[cue].index(labels[cue])
            assert int(inp["cue_ids"][row, k]) == want
    assert int(inp["ctc_lengths"][2]) == 0  # the record without a transcript
    first = char_ids(by_key[inp["keys"][0]]["text"])
    assert inp["ctc_ids"][0, : len(first)].tolist() == first and int(inp["ctc_lengths"][0]) == len(first)
    assert inp["feats"].shape[0] == 5 and inp["attention_mask"].shape == inp["feats"].shape[:2]


def overfit(corpus, pconf: dict, task: str, n: int, steps: int):
    """A fresh pre-training model fitted to the first ``n`` records; (first losses, outputs after, in eval mode)."""
    _, data_list, _, tok = corpus
    torch.manual_seed(0)
    model = build_model(pretrain_conf(**pconf), tok.vocab_size, tok.eos_id, tok.pad_id)
    inp = to_device(model.make_inputs(first_batch(data_list, tok, n=n), task, tok), "cpu")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(steps):
        out = model(**inp)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first or {k: float(out[k].detach()) for k in ("loss", "ctc") if k in out}
    model.eval()
    with torch.no_grad():
        return first, model(**inp)


def test_cues_are_learned(corpus):
    first, out = overfit(corpus, {"ctc_weight": 0.0}, "tag", n=12, steps=40)
    assert "ctc" not in out and float(out["loss"]) < 0.2 * first["loss"]
    # the fixture's pitch follows the labels: every cue is separable
    assert float(out["acc"]) == 1.0 and all(float(out[f"acc_{c}"]) == 1.0 for c in ("age", "gender", "emotion"))


def test_ctc_falls(corpus):
    first, out = overfit(corpus, {"cue_weight": 0.0}, "asr", n=2, steps=80)
    assert float(out["ctc"]) < 0.3 * first["ctc"]
    # evaluation reports greedy-decoding errors over the reference characters
    assert float(out["ctc_units"]) == sum(len(char_ids(t)) for t in first_batch(corpus[1], corpus[3], 2)["text"])
    assert 0 <= float(out["ctc_errs"]) < float(out["ctc_units"])


def test_task_losses_choose_what_a_batch_trains(corpus):
    _, data_list, _, tok = corpus
    torch.manual_seed(0)
    model = build_model(pretrain_conf(task_losses={"asr": ["ctc"], "tag": ["cue"]}), tok.vocab_size, tok.eos_id,
                        tok.pad_id)
    batch = first_batch(data_list, tok)
    asr = model(**to_device(model.make_inputs(batch, "asr", tok), "cpu"))  # as the trainer calls it
    tag = model(**to_device(model.make_inputs(batch, "tag", tok), "cpu"))
    assert "ctc" in asr and not any(k.startswith("acc_") for k in asr) and asr["loss"].item() == asr["ctc"].item()
    assert "ctc" not in tag and {f"acc_{c}" for c in ("age", "gender", "emotion")} <= set(tag)
    # a CTC-only batch leaves the cue heads without gradient; the default trains both on every batch
    asr["loss"].backward()
    assert all(p.grad is None for p in model.cue_heads.parameters())
    both = build_model(pretrain_conf(), tok.vocab_size, tok.eos_id, tok.pad_id)
    out = both(**both.make_inputs(batch, "asr", tok))
    assert "ctc" in out and "acc_age" in out
    for bad, match in (({"s2s_chat": ["ctc"]}, "unknown task"), ({"asr": []}, "non-empty list"),
                       ({"asr": ["kl"]}, "non-empty list"), (["ctc"], "mapping")):
        with pytest.raises(ValueError, match=match):
            build_model(pretrain_conf(task_losses=bad), tok.vocab_size, tok.eos_id, tok.pad_id)


def test_trainer_run_then_stage1_init(tmp_path, corpus):
    root, data_list, _, tok = corpus
    conf = {"tokenizer": {"type": "sentencepiece", "model": str(root / "spm.model")},
            "model": pretrain_conf(), "dataset_conf": tiny_dataset_conf(4),
            "train_conf": {"tasks": {"asr": 1.0, "tag": 1.0}, "optim_conf": {"lr": 3e-3}, "max_epoch": 2,
                           "scheduler_conf": {"warmup_steps": 2}, "log_interval": 1}}
    cfg = tmp_path / "enc.yaml"
    cfg.write_text(yaml.safe_dump(conf))
    enc_dir = tmp_path / "encoder"
    assert train_cli.main(["--config", str(cfg), "--train_data", data_list, "--cv_data", data_list,
                           "--model_dir", str(enc_dir), "--threads", "1"]) == 0
    rows = [yaml.safe_load(line) for line in (enc_dir / "train_log.jsonl").read_text().splitlines()]
    cv = [r for r in rows if r["kind"] == "cv"]
    assert len(cv) == 2 and {"cv_loss_asr", "cv_acc_tag", "cv_ctc_asr", "cv_ctc_err_asr"} <= set(cv[-1])
    assert 0 <= cv[-1]["cv_ctc_err_asr"] <= 2
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert all("ctc_asr" in r or "ctc_tag" in r for r in train_rows)
    # stage 1 takes exactly the encoder from it
    state = read_state_dict(enc_dir / "final")
    echat = build_model(tiny_model_conf(), tok.vocab_size, tok.eos_id, tok.pad_id)
    assert isinstance(echat, EChatModel)
    res = load_model_weights(enc_dir / "final", echat, ["encoder."])
    assert res["loaded"] == sum(1 for k in state if k.startswith("encoder."))
    for k, v in echat.encoder.state_dict().items():
        assert torch.equal(v, state[f"encoder.{k}"])
    assert Path(enc_dir / "final" / "model.pt").is_file()


def test_mini_recipe_config_builds_the_stage1_encoder():
    """conf/mini/train_encoder.yaml builds exactly the encoder stage 1 (conf/mini/train_stage1.yaml) loads."""
    from wenet_echat.train.trainer import TrainConf
    from wenet_echat.utils.config import load_config

    conf_dir = Path(__file__).resolve().parents[2] / "egs" / "echat" / "conf" / "mini"
    stage1 = build_model(load_config(conf_dir / "train_stage1.yaml")["model"], 1000, 2, 0)
    want = {k: v.shape for k, v in stage1.encoder.state_dict().items()}
    built = {}
    for name in ("train_encoder.yaml", "train_encoder_joint.yaml"):
        pre = load_config(conf_dir / name)
        train_conf = TrainConf.from_dict(pre["train_conf"])
        pretrain = build_model(pre["model"], 1000, 2, 0)
        assert isinstance(pretrain, EncoderPretrainModel) and pretrain.ctc_units == "char"
        assert {k: v.shape for k, v in pretrain.encoder.state_dict().items()} == want
        built[name] = (pretrain, train_conf)
    # the default curriculum: CTC-only asr batches first, then tag batches train both losses
    pretrain, train_conf = built["train_encoder.yaml"]
    assert pretrain.task_losses == {"asr": {"ctc"}, "tag": {"ctc", "cue"}}
    assert train_conf.task_schedule[0]["until_step"] == 200 and train_conf.optim_conf["lr"] == 0.002
    assert train_conf.tasks == {"asr": 1.0, "tag": 2.0}
    # the joint variant: both losses on every batch from step 0
    pretrain, train_conf = built["train_encoder_joint.yaml"]
    assert pretrain.task_losses == {"asr": {"ctc", "cue"}, "tag": {"ctc", "cue"}}
    assert not train_conf.task_schedule and train_conf.optim_conf["lr"] == 0.001
