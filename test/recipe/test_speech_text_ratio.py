"""local/speech_text_ratio.py: text ids per speech code of the distinct replies, and the [N, M] it suggests."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("speech_text_ratio", ROOT / "egs/echat/local/speech_text_ratio.py")
mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mod)


def test_distinct_replies_and_summary():
    rows = [{"response": "a b", "response_tokens": [0] * 20}, {"response": "a b", "response_tokens": [0] * 20},
            {"response": "c d e f", "response_tokens": [0] * 20}, {"response": "no codes"},
            {"response": "", "response_tokens": [1]}]
    lengths = mod.reply_lengths(rows, lambda s: s.split())
    assert sorted(lengths) == [(2, 20), (4, 20)]
    out = mod.summarize(lengths, n_text=4)
    assert out["replies"] == 2 and out["text_ids_per_code"]["max"] == 0.2 and out["text_ids_per_code"]["p5"] > 0.1
    p95 = out["text_ids_per_code"]["p95"]
    n, m = out["suggested"]
    assert n == 4 and n / m >= p95 and n / (m + 1) < p95  # the largest M keeping N / M at or above the p95
    # [4, 20]: the 4-id reply is fed whole before code 0; the 2-id one too: both used up before their 20 codes end
    assert out["text_used_up_before_speech_ends"] == 1.0
    with pytest.raises(ValueError, match="response_tokens"):
        mod.summarize([], 4)


def test_cli_names_a_list_without_speech_tokens(tmp_path, capsys):
    from test.echat_fixtures import make_corpus, make_tokenizer

    data_list, recs = make_corpus(tmp_path, n=3)
    make_tokenizer(tmp_path, recs)
    spm = str(tmp_path / "spm.model")
    assert mod.main(["--data_list", data_list, "--spm", spm, "--text", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["replies"] == 3 and out["suggested"][0] == 3
    bare = tmp_path / "bare.list"
    bare.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "response_tokens"}) + "\n" for r in recs))
    assert mod.main(["--data_list", str(bare), "--spm", spm]) == 1
    assert "bare.list" in capsys.readouterr().err
