"""bench/latency.py runs end to end on the random mini model and prints every line it promises."""

import importlib.util
import json
from pathlib import Path

import pytest


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_latency", Path(__file__).parents[2] / "bench" / "latency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_latency_bench_prints_turns_shares_and_decode_speed(tmp_path, capsys):
    bench = load_bench()
    out = tmp_path / "lat.json"
    assert bench.main(["--random", "--repeats", "1", "--text_tokens", "4", "--speech_tokens", "30",
                       "--stream_conf", '{"first_chunk": 10, "hop_growth": 2.0, "max_hop": 16}',
                       "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    heads = [" ".join(w for w in line.split() if w.split("=")[0] in ("task", "audio") or "=" not in w)
             for line in lines]
    assert heads[0].startswith("models") and heads[-1] == "decode"
    modes = ("stream", "stream_inline", "whole")
    assert heads[1:-1] == [*(f"turn task=s2s_think audio={m}" for m in modes), "share task=s2s_think",
                           *(f"turn task=s2s_chat audio={m}" for m in modes), "share task=s2s_chat"]
    assert "first_chunk=10" in lines[0] and "hop_growth=2.0 max_hop=16" in lines[0]
    res = json.loads(out.read_text())
    turns = {(r["task"], r["audio"]): r for r in res["turns"]}
    for task in ("s2s_think", "s2s_chat"):
        whole = turns[task, "whole"]
        assert whole["speech_tokens"] <= 30 and whole["text_tokens"] <= 4
        for mode in ("stream", "stream_inline"):
            assert res["share"][task][mode] == pytest.approx(turns[task, mode]["first_audio_s"] / whole["total_s"])
            assert turns[task, mode]["first_audio_s"] <= turns[task, mode]["total_s"]
    assert res["decode"]["new_tokens"] == 4


def test_latency_bench_names_a_bad_schedule_key():
    with pytest.raises(TypeError, match="bad streaming config"):
        load_bench().main(["--random", "--repeats", "1", "--stream_conf", '{"hopp": 3}'])
