"""extract_speech_tokens CLI: tokens per record, pass-through, shared wavs, stats, resume from the cache, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from wenet_echat.bin import extract_speech_tokens as ext
from wenet_echat.speech_token import FeatureConfig, KMeansTokenizer, fit_kmeans_tokenizer, stacked_features

SR = 16000


def tone(freq: float, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SR))) / SR
    return (0.4 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture()
def setup(tmp_path):
    """Three reply wavs shared by five records, one record without reply audio, and a k=8 model."""
    wavs = []
    for i, freq in enumerate((200.0, 900.0, 2500.0)):
        path = tmp_path / f"reply{i}.wav"
        sf.write(path, tone(freq, 0.5 + 0.37 * i, seed=i), SR, subtype="PCM_16")
        wavs.append(str(path))
    raw = [stacked_features(tone(f, 1.0, seed=7), SR, FeatureConfig()) for f in (200.0, 900.0, 2500.0)]
    tok, _ = fit_kmeans_tokenizer(raw, FeatureConfig(), k=8, pca_dim=12, iters=10, seed=1)
    model = tmp_path / "kmeans8.npz"
    tok.save(model)
    recs = [{"key": f"u{i}", "text": "ça va", "response_wav": wavs[i % 3]} for i in range(5)]
    lines = [json.dumps(r, ensure_ascii=False) for r in recs]
    lines.insert(2, '{"key":  "no_reply", "text": "kept   as is"}')  # odd spacing: must be copied byte for byte
    data_list = tmp_path / "data.list"
    data_list.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"list": str(data_list), "model": str(model), "wavs": wavs, "out": str(tmp_path / "out" / "data.tok.list"),
            "tok": tok, "lines": lines}


def run(s, *extra: str) -> int:
    return ext.main(["--tokenizer", s["model"], "--in_list", s["list"], "--out_list", s["out"], *extra])


@pytest.fixture()
def encode_calls(monkeypatch):
    """Count KMeansTokenizer.encode calls made in this process (nj=1)."""
    calls: list[int] = []
    original = KMeansTokenizer.encode

    def counting(self, wav, sr):
        calls.append(len(wav))
        return original(self, wav, sr)

    monkeypatch.setattr(KMeansTokenizer, "encode", counting)
    return calls


def read_out(s) -> list[str]:
    with open(s["out"], encoding="utf-8") as f:
        return f.read().splitlines()


def test_end_to_end(setup, encode_calls):
    s = setup
    assert run(s) == 0
    assert len(encode_calls) == 3  # five records, three distinct wavs
    out = read_out(s)
    assert len(out) == 6
    assert out[2] == s["lines"][2]  # record without reply audio: unchanged bytes
    for line in out[:2] + out[3:]:
        rec = json.loads(line)
        wav, _ = sf.read(rec["response_wav"], dtype="float32")
        assert rec["response_tokens"] == s["tok"].encode(wav, SR)
        assert len(rec["response_tokens"]) == len(wav) // 640
        assert rec["text"] == "ça va"
    stats = json.loads(open(s["out"] + ".stats.json").read())
    assert stats["wavs"] == 3 and stats["records"] == 6 and stats["records_with_tokens"] == 5
    assert stats["rate_ok"] and stats["max_rate_deviation"] < 1.0
    assert stats["tokens"] == sum((int(round((0.5 + 0.37 * i) * SR)) // 640) for i in range(3))
    assert stats["tokens_per_second"] == pytest.approx(25, abs=1)
    assert stats["used"] + stats["unused"] == 8 and 1 <= stats["perplexity"] <= 8
    cache = open(s["out"] + ".cache.jsonl").read().splitlines()
    assert len(cache) == 4 and "fingerprint" in json.loads(cache[0])


def test_resume_uses_the_cache(setup, encode_calls):
    s = setup
    assert run(s) == 0
    first = read_out(s)
    encode_calls.clear()
    assert run(s) == 0
    assert encode_calls == [] and read_out(s) == first
    # an interrupted run: last entry lost, a torn line left behind -> only that wav is redone
    cache_path = s["out"] + ".cache.jsonl"
    lines = open(cache_path).read().splitlines()
    open(cache_path, "w").write("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    assert run(s) == 0
    assert len(encode_calls) == 1 and read_out(s) == first
    assert len(open(cache_path).read().splitlines()) == 4


def test_changed_tokenizer_invalidates_the_cache(setup, encode_calls):
    s = setup
    assert run(s) == 0
    encode_calls.clear()
    raw = [stacked_features(tone(f, 1.0, seed=3), SR, FeatureConfig()) for f in (300.0, 1200.0)]
    fit_kmeans_tokenizer(raw, FeatureConfig(), k=4, pca_dim=8, iters=5, seed=2)[0].save(s["model"])
    assert run(s) == 0
    assert len(encode_calls) == 3
    assert max(max(json.loads(line).get("response_tokens", [0])) for line in read_out(s)) < 4


def test_parallel_run_matches_serial(setup):
    s = setup
    assert run(s) == 0
    serial = read_out(s)
    s2 = {**s, "out": s["out"] + ".nj2"}
    assert run(s2, "--nj", "2") == 0
    assert read_out(s2) == serial


def test_bad_line_is_named_and_nothing_is_written(setup, capsys):
    s = setup
    with open(s["list"], "a", encoding="utf-8") as f:
        f.write('{"key": "broken", \n')
        f.write(json.dumps({"key": "num", "response_wav": 5}) + "\n")
    assert run(s) == 1
    err = capsys.readouterr().err
    assert f"{s['list']}:7: invalid JSON" in err
    assert f"{s['list']}:8: 'response_wav' must be a non-empty path" in err
    assert not ext.Path(s["out"]).exists()


def test_missing_wav_names_its_line_and_keeps_the_others_cached(setup, capsys, encode_calls):
    s = setup
    missing = str(ext.Path(s["list"]).parent / "gone.wav")
    with open(s["list"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"key": "x", "response_wav": missing}) + "\n")
    assert run(s) == 1
    err = capsys.readouterr().err
    assert f"{s['list']}:7: response_wav '{missing}'" in err and "no such file" in err
    assert not ext.Path(s["out"]).exists()
    assert len(open(s["out"] + ".cache.jsonl").read().splitlines()) == 4  # header + the three good wavs


def test_bad_tokenizer_conf(setup, capsys):
    s = setup
    argv = ["--in_list", s["list"], "--out_list", s["out"]]
    assert ext.main(["--tokenizer_conf", '{"type": "kmeans", "path": "/no/model.npz"}', *argv]) == 1
    assert "/no/model.npz" in capsys.readouterr().err
    assert ext.main(["--tokenizer_conf", "[1, 2]", *argv]) == 1
    assert "JSON object" in capsys.readouterr().err
    conf = json.dumps({"type": "kmeans", "path": s["model"]})
    assert ext.main(["--tokenizer_conf", conf, *argv]) == 0
