import json

import numpy as np

from wenet_echat.dataset.kaldi import write_kaldi_dir
from wenet_echat.dataset.validate import validate_kaldi_dir, validate_list

from .conftest import load_tool, write_wav


def hostile_list(tmp_path):
    """Every problem kind at a known line. Returns (path, expected {(line, key, kind)})."""
    w = tmp_path / "w"
    w.mkdir()
    good = write_wav(w / "good.wav", 0.5)
    unreadable = w / "junk.wav"
    unreadable.write_bytes(b"RIFF....this is not a wav file")
    empty = write_wav(w / "empty.wav", 0.0)
    nan_wav = w / "nan.wav"
    data = np.full(8000, 0.1, dtype=np.float32)
    data[100] = np.nan
    import soundfile as sf

    sf.write(str(nan_wav), data, 16000, subtype="FLOAT")

    def asr(key, wav, **kw):
        return json.dumps({"key": key, "task": "asr", "wav": wav, "text": "hi", **kw})

    lines = [
        asr("ok1", good),                                                             # 1
        '{"key": "x", ',                                                              # 2 invalid json
        b'{"key": "bad\xff"}',                                                         # 3 not utf8
        "[1, 2, 3]",                                                                  # 4 not an object
        json.dumps({"key": "nofield", "task": "asr", "wav": good}),                   # 5 missing text
        json.dumps({"key": "dance", "task": "dance", "wav": good}),                   # 6 unknown task
        json.dumps({"key": "age", "task": "tag", "wav": good, "labels": {"age": "ancient"}}),  # 7 bad label
        asr("ok1", good),                                                             # 8 duplicate of line 1
        asr("gone", str(w / "nope.wav")),                                             # 9 missing audio
        asr("junk", str(unreadable)),                                                 # 10 unreadable
        asr("empty", empty),                                                          # 11 empty
        asr("sr22", write_wav(w / "sr22.wav", 0.5, 22050)),                           # 12 wrong sample rate
        asr("stereo", write_wav(w / "st.wav", 0.5, 16000, channels=2)),               # 13 multi-channel
        asr("long", write_wav(w / "long.wav", 3.0)),                                  # 14 too long (max 2 s)
        asr("nan", str(nan_wav)),                                                     # 15 NaN
        json.dumps({"key": "resp", "task": "s2s_chat", "wav": good, "response": "r",
                    "response_wav": str(w / "noresp.wav")}),                          # 16 missing response_wav
        asr("odd", write_wav(w / "odd.wav", 0.5, 12345)),                             # 17 odd sample rate
        asr("tiny", write_wav(w / "tiny.wav", 0.01)),                                 # 18 too short
        asr("ok2", good),                                                             # 19
    ]
    path = tmp_path / "hostile.list"
    with open(path, "wb") as f:
        for line in lines:
            f.write((line if isinstance(line, bytes) else line.encode()) + b"\n")
    expected = {
        (2, "-", "invalid_json"), (3, "-", "not_utf8"), (4, "-", "not_object"), (5, "nofield", "missing_field"),
        (6, "dance", "unknown_task"), (7, "age", "bad_label"), (8, "ok1", "duplicate_key"), (9, "gone", "missing"),
        (10, "junk", "unreadable"), (11, "empty", "empty"), (12, "sr22", "sample_rate_mismatch"),
        (13, "stereo", "multi_channel"), (14, "long", "too_long"), (15, "nan", "nan"), (16, "resp", "missing"),
        (17, "odd", "odd_sample_rate"), (18, "tiny", "too_short"),
    }
    return str(path), expected


def test_validator_reports_every_problem(tmp_path):
    path, expected = hostile_list(tmp_path)
    problems = validate_list(path, expected_sr=16000, max_duration=2.0, nj=4)
    got = {(p.lineno, p.key, p.kind) for p in problems}
    assert got == expected
    assert all(p.path == path for p in problems)
    dup = next(p for p in problems if p.kind == "duplicate_key")
    assert dup.message == f"key also at {path}:1"
    resp = next(p for p in problems if p.lineno == 16)
    assert resp.message.startswith("response_wav: ")
    warnings = {p.kind for p in problems if not p.fatal}
    assert warnings == {"sample_rate_mismatch", "multi_channel"}


def test_validator_no_audio(tmp_path):
    path, expected = hostile_list(tmp_path)
    got = {(p.lineno, p.key, p.kind) for p in validate_list(path, audio=False)}
    assert got == {e for e in expected if e[0] <= 8}


def test_validate_cli_output_and_exit_code(tmp_path, capsys):
    tool = load_tool("validate_data")
    path, expected = hostile_list(tmp_path)
    assert tool.main([path, "--max_duration", "2", "--nj", "2"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"{path}:6: dance: unknown_task: unknown task 'dance' (known: asr, tag, s2t_chat, t2t, tts, s2s_chat, " \
           "s2s_think)" in out
    problem_lines = [x for x in out if x.startswith(path)]
    assert len(problem_lines) == len(expected)
    assert any(x.startswith("total") and f"{len(expected)}" in x for x in out)
    # warnings only -> exit 0
    w = tmp_path / "warn"
    w.mkdir()
    stereo = write_wav(w / "s.wav", 0.5, channels=2)
    clean = w / "d.list"
    clean.write_text(json.dumps({"key": "s", "task": "asr", "wav": stereo, "text": "t"}) + "\n")
    assert tool.main([str(clean)]) == 0
    assert "multi_channel" in capsys.readouterr().out


def test_validator_kaldi_dir(tmp_path):
    good = write_wav(tmp_path / "g.wav", 0.5)
    recs = [{"key": "a", "task": "asr", "wav": good, "text": "hi"},
            {"key": "b", "task": "asr", "wav": str(tmp_path / "none.wav"), "text": "hi"},
            {"key": "c", "task": "tag", "wav": good, "labels": {"emotion": "bored"}}]
    write_kaldi_dir(recs, tmp_path / "k")
    with open(tmp_path / "k" / "text", "a") as f:
        f.write("a again\n")
    got = {(p.path.rsplit("/", 1)[1], p.lineno, p.key, p.kind) for p in validate_kaldi_dir(tmp_path / "k")}
    assert got == {("text", 3, "a", "duplicate_key"), ("utt2spk", 2, "b", "missing"),
                   ("utt2spk", 3, "c", "bad_label")}
