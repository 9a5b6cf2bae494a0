"""train_token2wav / synthesize / bench on a tiny generated reply corpus: tokens on the fly, resume, both vocoders."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from test.token2wav.fixtures import CODES, SR, make_reply_corpus, tiny_conf
from wenet_echat.bin import synthesize, train_token2wav
from wenet_echat.speech_token import FeatureConfig, KMeansTokenizer, fit_kmeans_tokenizer, stacked_features
from wenet_echat.token2wav import load_token2wav
from wenet_echat.token2wav.model import read_part

TRAIN = {"flow": {"batch_size": 3, "segment_tokens": 12, "warmup_steps": 2, "log_interval": 2, "stats_batches": 2,
                  "valid_batches": 1},
         "vocoder": {"batch_size": 2, "segment_frames": 8, "warmup_steps": 2, "log_interval": 2, "valid_batches": 1,
                     "stft_resolutions": [[256, 40, 160]], "gan": {"disc_width": 0.0625, "periods": [2, 3],
                                                                    "scales": 2}}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2w")
    data_list, wavs = make_reply_corpus(root / "data", n_replies=4)
    raw = [stacked_features(sf.read(w, dtype="float32")[0], SR, FeatureConfig()) for w in wavs]
    tok, _ = fit_kmeans_tokenizer(raw, FeatureConfig(), k=CODES, pca_dim=16, iters=5, seed=1)
    tok.save(root / "kmeans.npz")
    conf = root / "token2wav.yaml"
    conf.write_text(yaml.safe_dump({**tiny_conf(), "train": TRAIN}), encoding="utf-8")
    return {"root": root, "list": data_list, "wavs": wavs, "kmeans": str(root / "kmeans.npz"), "conf": str(conf),
            "tok": tok}


def train(c, model_dir, part, *extra):
    return train_token2wav.main(["--config", c["conf"], "--part", part, "--data_list", c["list"],
                                 "--model_dir", str(model_dir), *extra])


def test_flow_training_tokenizes_on_the_fly_and_resumes(corpus, tmp_path, monkeypatch):
    md = tmp_path / "exp"
    assert train(corpus, md, "flow", "--speech_tokenizer", corpus["kmeans"], "--valid_list", corpus["list"],
                 "--max_steps", "3") == 0
    for name in ("token2wav.yaml", "flow.pt", "flow.train.pt", "flow.train.json", "tokens.jsonl"):
        assert (md / name).is_file(), name
    cache = (md / "tokens.jsonl").read_text().splitlines()
    assert len(cache) == 1 + 4  # header + one entry per distinct reply
    entry = json.loads(cache[1])
    wav, _ = sf.read(entry["wav"], dtype="float32")
    assert entry["tokens"] == corpus["tok"].encode(wav, SR)
    assert read_part(md / "flow.pt", "flow")["step"] == 3
    hist = json.loads((md / "flow.train.json").read_text())
    assert [row["step"] for row in hist["log"]] == [2, 3] and len(hist["valid"]) == 2
    assert np.isfinite(hist["log"][-1]["loss"]) and "mel_l1" in hist["valid"][-1]
    model = load_token2wav(md)
    assert model.trained_parts == {"flow"} and float(model.flow.mel_std.mean()) != 1.0  # statistics were set
    # resume: continues from step 3, and the token cache is reused (the tokenizer is not loaded again)
    def no_load(*args, **kwargs):
        raise AssertionError("tokenizer loaded although the cache is valid")

    monkeypatch.setattr(KMeansTokenizer, "load", no_load)
    assert train(corpus, md, "flow", "--speech_tokenizer", corpus["kmeans"], "--max_steps", "5") == 0
    assert read_part(md / "flow.pt", "flow")["step"] == 5
    assert [row["step"] for row in json.loads((md / "flow.train.json").read_text())["log"]] == [2, 3, 4, 5]


def test_flow_training_errors(corpus, tmp_path, capsys):
    assert train(corpus, tmp_path / "a", "flow", "--max_steps", "1") == 1
    assert "4 replies have no tokens" in capsys.readouterr().err
    assert train(corpus, tmp_path / "a", "flow", "--max_steps", "1", "--speech_tokenizer", "/nonexistent.npz") == 1
    assert "speech tokenizer /nonexistent.npz not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**tiny_conf(), "train": {"flow": {"batch": 3}}}))
    assert train_token2wav.main(["--config", str(bad), "--part", "flow", "--data_list", corpus["list"],
                                 "--model_dir", str(tmp_path / "b"), "--max_steps", "1",
                                 "--speech_tokenizer", corpus["kmeans"]]) == 1
    assert "unknown train.flow keys: batch" in capsys.readouterr().err
    # a model dir built from another config is refused
    assert train(corpus, tmp_path / "c", "vocoder", "--max_steps", "1") == 0
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**tiny_conf(flow={"channels": [16, 16]}), "train": TRAIN}))
    assert train_token2wav.main(["--config", str(other), "--part", "flow", "--data_list", corpus["list"],
                                 "--model_dir", str(tmp_path / "c"), "--max_steps", "1"]) == 1
    assert "differs from the token2wav config" in capsys.readouterr().err
    # inference-only sections may change: they are stored, the weights are kept
    faster = tmp_path / "faster.yaml"
    faster.write_text(yaml.safe_dump({**tiny_conf(flow={"n_steps": 2, "inference_cfg_rate": 0.3},
                                                  streaming={"first_chunk": 9, "lookahead": 4}), "train": TRAIN}))
    assert train_token2wav.main(["--config", str(faster), "--part", "vocoder", "--data_list", corpus["list"],
                                 "--model_dir", str(tmp_path / "c"), "--max_steps", "2"]) == 0
    model = load_token2wav(tmp_path / "c")
    assert model.streaming.first_chunk == 9 and model.streaming.lookahead == 4
    assert model.flow.n_steps == 2 and model.flow.inference_cfg_rate == 0.3


def test_vocoder_training_with_cosine_decay_ends_on_the_final_rate(corpus, tmp_path, capsys):
    decay = {**TRAIN, "vocoder": {**TRAIN["vocoder"], "lr": 1e-3, "lr_decay": "cosine", "min_lr_ratio": 0.2,
                                  "log_interval": 1}}
    conf = tmp_path / "decay.yaml"
    conf.write_text(yaml.safe_dump({**tiny_conf(), "train": decay}))
    args = ["--config", str(conf), "--part", "vocoder", "--data_list", corpus["list"], "--model_dir",
            str(tmp_path / "d"), "--max_steps", "6"]
    assert train_token2wav.main(args) == 0
    lrs = [row["lr"] for row in json.loads((tmp_path / "d" / "vocoder.train.json").read_text())["log"]]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3 * (0.2 + 0.8 * 0.5 * (1 + np.cos(np.pi / 6))))
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:])) and lrs[-1] == pytest.approx(
        1e-3 * (0.2 + 0.8 * 0.5 * (1 + np.cos(np.pi * 5 / 6))))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**tiny_conf(), "train": {"vocoder": {"lr_decay": "linear"}}}))
    assert train_token2wav.main([*args[:1], str(bad), *args[2:]]) == 1
    assert "train.vocoder.lr_decay must be one of none, cosine, got 'linear'" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["regression", "gan"])
def test_vocoder_training(corpus, tmp_path, mode):
    md = tmp_path / mode
    assert train(corpus, md, "vocoder", "--mode", mode, "--max_steps", "2", "--valid_list", corpus["list"]) == 0
    payload = read_part(md / "vocoder.pt", "vocoder")
    assert payload["step"] == 2
    state = torch.load(md / "vocoder.train.pt", weights_only=True)
    assert ("disc" in state) == (mode == "gan")
    row = json.loads((md / "vocoder.train.json").read_text())["log"][-1]
    assert row["step"] == 2 and np.isfinite(row["mel_l1"]) and (("d_loss" in row) == (mode == "gan"))


def test_istft_vocoder_trains_with_phase_losses(corpus, tmp_path, capsys):
    phase_train = {**TRAIN, "vocoder": {**TRAIN["vocoder"], "phase_weight": 1.0}}
    voc = {"n_fft": 512, "dim": 16, "intermediate_dim": 32, "layers": 2, "kernel": 3}
    confs = {name: tmp_path / f"{name}.yaml" for name in ("istft", "hifigan")}
    confs["istft"].write_text(yaml.safe_dump({**tiny_conf(vocoder_type="istft", vocoder=voc), "train": phase_train}))
    confs["hifigan"].write_text(yaml.safe_dump({**tiny_conf(), "train": phase_train}))
    args = ["--part", "vocoder", "--data_list", corpus["list"], "--max_steps", "2"]
    for mode in ("regression", "gan"):
        md = tmp_path / mode
        assert train_token2wav.main([*args, "--config", str(confs["istft"]), "--model_dir", str(md),
                                     "--mode", mode]) == 0
        row = json.loads((md / "vocoder.train.json").read_text())["log"][-1]
        assert all(np.isfinite(row[k]) for k in ("ip_loss", "gd_loss", "iaf_loss", "mel_l1")), row
        assert type(load_token2wav(md).vocoder).__name__ == "ISTFTVocoder"
    # the phase losses need a vocoder that predicts phase
    assert train_token2wav.main([*args, "--config", str(confs["hifigan"]), "--model_dir", str(tmp_path / "h")]) == 1
    assert "needs an iSTFT vocoder" in capsys.readouterr().err


def test_synthesize_and_bench(corpus, tmp_path, capsys):
    md = tmp_path / "exp"
    assert train(corpus, md, "flow", "--speech_tokenizer", corpus["kmeans"], "--max_steps", "1") == 0
    hyp = tmp_path / "hyp.jsonl"
    hyp.write_text(json.dumps({"key": "a", "speech_tokens": [1, 2, 3, 4, 5]}) + "\n"
                   + json.dumps({"key": "b", "response_tokens": [7] * 9}) + "\n"
                   + json.dumps({"key": "c", "text": "no tokens"}) + "\n")
    # the neural vocoder is not trained yet
    assert synthesize.main(["--model_dir", str(md), "--in_list", str(hyp), "--out_dir", str(tmp_path / "o")]) == 1
    assert "vocoder.pt not found" in capsys.readouterr().err
    out = tmp_path / "gl"
    assert synthesize.main(["--model_dir", str(md), "--in_list", str(hyp), "--out_dir", str(out),
                            "--vocoder", "griffinlim", "--n_steps", "2"]) == 0
    scp = dict(line.split(" ", 1) for line in (out / "wav.scp").read_text().splitlines())
    assert sorted(scp) == ["a", "b"]
    for key, n in (("a", 5), ("b", 9)):
        wav, sr = sf.read(scp[key])
        assert sr == SR and len(wav) == n * 4 * 160
    summary = json.loads((out / "synth.json").read_text())
    assert summary["utts"] == 2 and summary["skipped"] == 1 and summary["rtf"] > 0
    assert train(corpus, md, "vocoder", "--max_steps", "1") == 0
    streamed = tmp_path / "st"
    assert synthesize.main(["--model_dir", str(md), "--in_list", str(hyp), "--out_dir", str(streamed),
                            "--stream", "--field", "speech_tokens"]) == 0
    assert json.loads((streamed / "synth.json").read_text())["utts"] == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"key": "x", "speech_tokens": [1, 99]}) + "\n")
    assert synthesize.main(["--model_dir", str(md), "--in_list", str(bad), "--out_dir", str(tmp_path / "x")]) == 1
    assert f"bad.jsonl:1: tokens must be ints in [0, {CODES})" in capsys.readouterr().err

    # copy synthesis: each record's own audio -> log-mel -> vocoder (no flow); one output frame per hop
    copy = tmp_path / "copy"
    assert synthesize.main(["--model_dir", str(md), "--in_list", corpus["list"], "--out_dir", str(copy),
                            "--copy_synthesis", "--wav_field", "response_wav", "--max_utts", "2"]) == 0
    scp = dict(line.split(" ", 1) for line in (copy / "wav.scp").read_text().splitlines())
    assert len(scp) == 2 and json.loads((copy / "synth.json").read_text())["copy_synthesis"] is True
    for src, (_key, path) in zip(corpus["wavs"], sorted(scp.items())):
        ref, _ = sf.read(src)
        out_wav, sr = sf.read(path)
        assert sr == SR and len(out_wav) == len(ref) // 160 * 160 and np.abs(out_wav).max() > 0
    gone = tmp_path / "gone.list"
    gone.write_text(json.dumps({"key": "g", "wav": str(tmp_path / "missing.wav")}) + "\n")
    assert synthesize.main(["--model_dir", str(md), "--in_list", str(gone), "--out_dir", str(tmp_path / "g"),
                            "--copy_synthesis"]) == 1
    assert "gone.list: key g:" in capsys.readouterr().err and not (tmp_path / "g" / "wav.scp").exists()

    spec = importlib.util.spec_from_file_location("bench_t2w", Path(__file__).parents[2] / "bench" / "token2wav.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--model_dir", str(md), "--seconds", "1", "--repeats", "1", "--eval_list", corpus["list"],
                       "--n_eval", "2", "--speech_tokenizer", corpus["kmeans"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [" ".join(w for w in line.split() if "=" not in w or w.startswith("vocoder=")) for line in lines]
    assert names == ["rtf vocoder=neural", "rtf vocoder=griffinlim", "first_chunk", "stream_vs_whole", "eval flow",
                     "eval copy vocoder=neural", "eval resynth vocoder=neural", "eval copy vocoder=griffinlim",
                     "eval resynth vocoder=griffinlim"]
    assert "same_length=True" in lines[3] and "trained=flow,vocoder" in lines[0]
