import json

import pytest

from wenet_echat.bin import filter_identity
from wenet_echat.text.identity import (
    IdentityFilter,
    claims_human,
    filter_records,
    identity_answer_ok,
    names_self,
    read_names,
)


def test_packaged_list_and_matching():
    names = read_names()
    for name in ("ChatGPT", "Qwen", "Siri", "Alexa", "OSUM-EChat"):
        assert name in names
    flt = IdentityFilter()
    assert flt.find("Hi, I am ChatGPT, made by OpenAI.") == "ChatGPT"
    assert flt.find("as qwen i can help") == "Qwen"
    assert flt.find("I run on gpt4o these days") == "GPT-4o"  # hyphen optional, the longest name wins
    assert flt.find("Hey siri!") == "Siri"
    assert flt.find("I'm OSUM-EChat from a lab") == "OSUM-EChat"
    # whole words only; our own name is not a foreign one
    assert flt.find("Sirius is a bright star, and a Qwentin is no name.") is None
    assert flt.find("I'm EChat, the wenet-echat assistant.") is None
    assert flt.find("") is None and flt.find(None) is None


def test_filter_records_counts_drops():
    recs = [{"key": "a", "response": "I'm EChat.", "text": "Are you Siri?"},  # the user may say it
            {"key": "b", "response": "As ChatGPT, I think so."},
            {"key": "c", "response": "Alexa can't help, but I can."},
            {"key": "d", "response": "Ask ChatGPT.", "think": "fine"},
            {"key": "e", "response": "ok", "think": "I am Qwen"}]
    kept, dropped = filter_records(recs)
    assert [r["key"] for r in kept] == ["a", "e"]
    assert dropped == {"ChatGPT": 2, "Alexa": 1}
    kept, dropped = filter_records(recs, IdentityFilter(["Qwen"]), fields=("response", "think"))
    assert [r["key"] for r in kept] == ["a", "b", "c", "d"] and dropped == {"Qwen": 1}


def test_identity_answer_rule():
    assert identity_answer_ok("I'm EChat, the wenet-echat assistant. I listen to how you speak.") == (True, "ok")
    assert identity_answer_ok("i am echat") == (True, "ok")
    assert identity_answer_ok("I'm not a person; I'm EChat.") == (True, "ok")
    assert identity_answer_ok("I'm EChat, just like ChatGPT.") == (False, "names ChatGPT")
    assert identity_answer_ok("I am a real person named EChat.") == (False, "claims to be human")
    assert identity_answer_ok("I'm a helpful assistant.") == (False, "does not name EChat")
    assert identity_answer_ok("  ") == (False, "empty reply")
    assert names_self("the wenet-echat assistant") and not names_self("OSUM-EChat") and not names_self("EChats")
    assert claims_human("I’m human") and not claims_human("I'm not human")


def test_names_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such names file"):
        read_names(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# only a comment\n\n")
    with pytest.raises(ValueError, match="no names"):
        read_names(tmp_path / "empty.txt")


def test_cli(tmp_path, capsys):
    src = tmp_path / "in.list"
    src.write_text(json.dumps({"key": "a", "response": "I'm EChat."}) + "\n"
                   + json.dumps({"key": "b", "response": "I'm Siri."}) + "\n")
    (tmp_path / "names.txt").write_text("Siri\n")
    out = tmp_path / "out.list"
    assert filter_identity.main(["--in_list", str(src), "--out_list", str(out), "--names",
                                 str(tmp_path / "names.txt")]) == 0
    assert [json.loads(x)["key"] for x in out.read_text().splitlines()] == ["a"]
    stats = json.loads((tmp_path / "out.list.stats.json").read_text())
    assert stats == {"in": 2, "kept": 1, "dropped": 1, "dropped_by_name": {"Siri": 1}, "fields": ["response"]}
    assert json.loads(capsys.readouterr().out)["dropped"] == 1
