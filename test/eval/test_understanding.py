import pytest

from wenet_echat.eval.understanding import (
    error_rates,
    normalize_text,
    score_understanding,
    tag_accuracy,
    understanding_markdown,
)


def test_normalize_and_error_rates():
    assert normalize_text("  Hello, World!  It's  me. ") == "hello world it's me"
    perfect = error_rates(["I got my exam results."], ["i got my exam results"])
    assert perfect["wer"] == 0 and perfect["cer"] == 0
    r = error_rates(["the cat sat", "a dog"], ["the bat sat", "a dog ran"])
    assert r["words"] == 5 and r["sub"] == 1 and r["ins"] == 1 and r["del"] == 0
    assert r["wer"] == pytest.approx(40.0)
    # cer counts characters without spaces: "thecatsat"+"adog" = 13 chars, 1 sub + 3 ins
    assert r["cer"] == pytest.approx(100 * 4 / 13)
    with pytest.raises(ValueError, match="2 references but 1"):
        error_rates(["a", "b"], ["a"])


def test_tag_accuracy_with_chance_and_missing_labels():
    refs = [{"age": "adult", "gender": "male", "emotion": "sad", "event": "none"},
            {"age": "adult", "gender": "female", "emotion": "happy", "event": "rain"},
            {"age": "child", "gender": None, "emotion": "sad", "event": "none"}]
    hyps = ["<adult> <male> <sad> <none>", "<adult> <male> <happy> <alarm>", "<female> <sad>"]
    t = tag_accuracy(refs, hyps)
    assert t["age"]["accuracy"] == pytest.approx(200 / 3) and t["age"]["chance_majority"] == pytest.approx(200 / 3)
    assert t["gender"]["n"] == 2 and t["gender"]["accuracy"] == 50.0  # the unknown gender is not counted
    assert t["emotion"]["accuracy"] == 100.0 and t["emotion"]["chance_uniform"] == 50.0
    assert t["event"]["confusion"]["rain"] == {"alarm": 1}
    assert t["age"]["confusion"]["child"] == {"(none)": 1}


def test_score_understanding_matches_keys():
    refs = {"u1": {"text": "good morning", "labels": {"age": "old"}}, "u2": {"text": "hi there", "labels": {}}}
    hyps = [{"key": "u2", "task": "asr", "text": "hi there"}, {"key": "u1", "task": "tag", "text": "<old>"}]
    s = score_understanding(refs, hyps)
    assert s["asr"]["utts"] == 1 and s["asr"]["wer"] == 0
    assert s["tag"]["age"]["accuracy"] == 100.0
    md = understanding_markdown(s)
    assert "| age | 1 | 100.0 |" in md and "WER" in md
    with pytest.raises(KeyError, match="'u9'"):
        score_understanding(refs, [{"key": "u9", "task": "asr", "text": "x"}])
