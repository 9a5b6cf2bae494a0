"""Round trips between the data formats: raw data.list <-> Kaldi dir, raw <-> shards (docs/data.md)."""

import json

import pytest

from wenet_echat.dataset.kaldi import KaldiDirError, read_kaldi_dir, write_kaldi_dir

FULL = [
    {"key": "b-02", "wav": "/d/b.wav", "duration": 2.5, "task": ["asr", "s2s_think"], "text": "héllo there",
     "labels": {"age": "adult", "gender": "female", "emotion": "sad", "event": None},
     "response": "I hear you.", "response_emotion": "comforting", "response_wav": "/d/b.resp.wav",
     "response_tokens": [1, 2, 30], "think": "the user said: héllo", "speaker": "spk1", "category": "emotion"},
    {"key": "a-01", "wav": "/d/a.ark:123", "duration": 1, "task": "tag", "labels": {"age": "child"}},
    {"key": "B-03", "task": "tts", "response": "hi", "response_tokens": [], "speaker": "spk1"},
    {"key": "c", "wav": "/d/c.wav", "feat": "/f/feats.ark:77", "text": "x", "task": "asr"},
]


def test_kaldi_round_trip_is_lossless(tmp_path):
    assert write_kaldi_dir(FULL, tmp_path / "k") == 4
    back = read_kaldi_dir(tmp_path / "k")
    assert back == sorted(FULL, key=lambda r: r["key"].encode())


def test_kaldi_files_sorted_c_locale(tmp_path):
    write_kaldi_dir(FULL, tmp_path / "k")
    assert (tmp_path / "k" / "utt2spk").read_text() == "B-03 spk1\na-01 a-01\nb-02 spk1\nc c\n"
    assert (tmp_path / "k" / "spk2utt").read_text() == "a-01 a-01\nc c\nspk1 B-03 b-02\n"
    assert (tmp_path / "k" / "utt2task").read_text() == "B-03 tts\na-01 tag\nb-02 asr s2s_think\nc asr\n"
    assert (tmp_path / "k" / "utt2event").read_text() == "b-02 null\n"
    assert (tmp_path / "k" / "response_tokens").read_text() == "B-03 \nb-02 1 2 30\n"
    assert (tmp_path / "k" / "utt2dur").read_text() == "a-01 1\nb-02 2.5\n"


def test_kaldi_bad_lines_name_file_and_line(tmp_path):
    write_kaldi_dir(FULL, tmp_path / "k")
    with open(tmp_path / "k" / "utt2dur", "a") as f:
        f.write("c abc\n")
    with pytest.raises(KaldiDirError, match=r"utt2dur:3: duration 'abc' is not a number"):
        read_kaldi_dir(tmp_path / "k")
    (tmp_path / "k" / "utt2dur").write_text("a-01 1\nzz 2\n")
    with pytest.raises(KaldiDirError, match=r"utt2dur:2: key 'zz' is not in utt2spk"):
        read_kaldi_dir(tmp_path / "k")


def test_write_kaldi_rejects_duplicates_and_newlines(tmp_path):
    with pytest.raises(ValueError, match="duplicate key 'a'"):
        write_kaldi_dir([{"key": "a"}, {"key": "a"}], tmp_path / "k")
    with pytest.raises(ValueError, match="newline"):
        write_kaldi_dir([{"key": "a", "text": "x\ny"}], tmp_path / "k")


def test_list_kaldi_list_via_cli(tmp_path):
    import importlib.util
    from pathlib import Path

    def load(name):
        path = Path(__file__).resolve().parents[2] / "tools" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    src = tmp_path / "in.list"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in FULL), encoding="utf-8")
    assert load("list_to_kaldi").main([str(src), str(tmp_path / "k")]) == 0
    assert load("kaldi_to_list").main([str(tmp_path / "k"), str(tmp_path / "out.list")]) == 0
    back = [json.loads(x) for x in (tmp_path / "out.list").read_text(encoding="utf-8").splitlines()]
    assert back == sorted(FULL, key=lambda r: r["key"].encode())
