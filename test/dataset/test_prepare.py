"""Data preparation of real corpora: Kaldi dirs (with segments) and CSV/JSONL manifests -> validated data.list."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from wenet_echat.audio.io import load_audio
from wenet_echat.dataset.kaldi import read_kaldi_dir, write_kaldi_dir
from wenet_echat.dataset.manifest import osum_echat_row, parse_columns, prepare_manifest
from wenet_echat.dataset.prepare import PrepareError, normalise_tag, prepare_kaldi_dir

from .conftest import tone, write_wav

ROOT = Path(__file__).resolve().parents[2]


def load_script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cli():
    return load_script(ROOT / "egs" / "echat" / "local" / "prepare_data.py", "prepare_data")


def write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")


def kaldi_dir(tmp_path: Path) -> Path:
    d = tmp_path / "kaldi"
    d.mkdir()
    wavs = {k: write_wav(tmp_path / f"{k}.wav", s, seed=i) for i, (k, s) in enumerate([("a1", 0.5), ("b2", 0.75)])}
    write(d / "wav.scp", [f"{k} {p}" for k, p in wavs.items()])
    write(d / "text", ["a1 I lost my keys", "b2 what a day"])
    write(d / "utt2spk", ["a1 spkA", "b2 spkB"])
    write(d / "utt2emotion", ["a1 <Sad>", "b2 ang"])
    write(d / "utt2gender", ["a1 Female", "b2 male"])
    write(d / "utt2age", ["a1 adult", "b2 null"])
    write(d / "utt2event", ["a1 throat clearing"])
    write(d / "response", ["a1 I am sorry to hear that.", "b2 Calm down, let us fix it."])
    write(d / "utt2response_emotion", ["a1 comforting", "b2 Apologetic"])
    write(d / "utt2task", ["a1 asr tag s2t_chat", "b2 asr tag s2t_chat"])
    return d


def test_kaldi_dir_to_records_normalised_and_validated(tmp_path, cli):
    d = kaldi_dir(tmp_path)
    (tmp_path / "map.yaml").write_text("emotion: {ang: angry}\n")
    out = tmp_path / "out" / "data.list"
    assert cli.main(["kaldi", str(d), str(out), "--value_map", str(tmp_path / "map.yaml")]) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["key"] for r in recs] == ["a1", "b2"]
    a, b = recs
    assert a["labels"] == {"age": "adult", "gender": "female", "emotion": "sad", "event": "throat_clearing"}
    assert b["labels"] == {"age": None, "gender": "male", "emotion": "angry"}
    assert b["response_emotion"] == "apologetic" and a["task"] == ["asr", "tag", "s2t_chat"]
    assert a["speaker"] == "spkA" and a["text"] == "I lost my keys"
    assert a["duration"] == pytest.approx(0.5) and b["duration"] == pytest.approx(0.75)  # read from the headers


def test_kaldi_bad_label_names_file_and_line(tmp_path, cli, capsys):
    d = kaldi_dir(tmp_path)
    write(d / "utt2emotion", ["a1 sad", "b2 furious"])
    write(d / "utt2task", ["a1 asr", "b2 asr chat"])
    out = tmp_path / "data.list"
    assert cli.main(["kaldi", str(d), str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{d / 'utt2emotion'}:2: b2: label emotion='furious' not in" in err
    assert f"{d / 'utt2task'}:2: b2: unknown task 'chat'" in err
    assert "nothing written" in err and not out.exists()
    # --skip_bad writes the good record only
    assert cli.main(["kaldi", str(d), str(out), "--skip_bad"]) == 0
    assert [json.loads(x)["key"] for x in out.read_text().splitlines()] == ["a1"]


def test_kaldi_segments_are_cut_into_an_ark(tmp_path):
    d = tmp_path / "seg"
    d.mkdir()
    sr = 16000
    long = tone(2.0, sr, seed=3)
    import soundfile as sf

    sf.write(str(tmp_path / "rec1.wav"), long, sr, subtype="PCM_16")
    write(d / "wav.scp", [f"rec1 {tmp_path / 'rec1.wav'}"])
    write(d / "segments", ["rec1-000 rec1 0.00 0.50", "rec1-001 rec1 0.75 1.50", "rec1-002 rec1 1.5 -1"])
    write(d / "utt2spk", ["rec1-000 s1", "rec1-001 s1", "rec1-002 s1"])
    write(d / "text", ["rec1-000 one", "rec1-001 two", "rec1-002 three"])
    res = prepare_kaldi_dir(d, seg_ark=tmp_path / "out" / "segments.ark")
    assert res.issues == []
    assert [r["duration"] for r in res.records] == [0.5, 0.75, 0.5]
    ref, _ = load_audio(str(tmp_path / "rec1.wav"))
    for rec, (a, b) in zip(res.records, [(0, 8000), (12000, 24000), (24000, 32000)]):
        assert rec["wav"].startswith(str(tmp_path / "out" / "segments.ark") + ":")
        wav, got_sr = load_audio(rec["wav"])
        assert got_sr == sr and np.abs(wav - ref[a:b]).max() < 1e-4


def test_kaldi_segment_errors(tmp_path):
    d = tmp_path / "seg"
    d.mkdir()
    write_wav(tmp_path / "rec1.wav", 1.0)
    write(d / "wav.scp", [f"rec1 {tmp_path / 'rec1.wav'}"])
    write(d / "segments", ["u1 rec1 0.5 0.2", "u2 rec9 0 0.5", "u3 rec1 0.2 3.0"])
    write(d / "utt2spk", ["u1 s", "u2 s", "u3 s"])
    write(d / "text", ["u1 a", "u2 b", "u3 c"])
    res = prepare_kaldi_dir(d, seg_ark=tmp_path / "s.ark")
    msgs = {str(i) for i in res.issues}
    seg = d / "segments"
    assert f"{seg}:1: -: bad segment bounds start=0.5 end=0.2" in msgs
    assert f"{seg}:2: u2: recording 'rec9' is not in wav.scp" in msgs
    assert any(m.startswith(f"{seg}:3: u3: segment ends at 3.0 s") for m in msgs)
    assert res.records == []


def test_kaldi_round_trip_with_list_to_kaldi(tmp_path):
    d = kaldi_dir(tmp_path)
    first = prepare_kaldi_dir(d, value_map={"emotion": {"ang": "angry"}})
    assert not first.issues
    write_kaldi_dir(first.records, tmp_path / "again")
    assert read_kaldi_dir(tmp_path / "again") == first.records
    second = prepare_kaldi_dir(tmp_path / "again")
    assert second.records == first.records and not second.issues


def test_csv_manifest_with_column_map(tmp_path, cli, capsys):
    (tmp_path / "audio").mkdir()
    write_wav(tmp_path / "audio" / "x.wav", 0.4)
    write_wav(tmp_path / "audio" / "y.wav", 0.6)
    write(tmp_path / "m.csv", [
        "utt_id,path,transcript,emo,sex,reply,notes",
        'x,x.wav,"hello, there",Happy,F,"Glad to hear it!",ok',
        "y,y.wav,bye,neu,M,,",
    ])
    (tmp_path / "map.yaml").write_text("emotion: {neu: neutral}\ngender: {f: female, m: male}\n")
    out = tmp_path / "data.list"
    args = ["manifest", str(tmp_path / "m.csv"), str(out), "--column", "key=utt_id", "wav=path", "text=transcript",
            "emotion=emo", "gender=sex", "response=reply", "--audio_root", str(tmp_path / "audio"),
            "--value_map", str(tmp_path / "map.yaml"), "--task", "asr", "tag"]
    assert cli.main(args) == 0, capsys.readouterr().err
    x, y = [json.loads(v) for v in out.read_text().splitlines()]
    assert x == {"key": "x", "wav": str(tmp_path / "audio" / "x.wav"), "duration": 0.4, "task": ["asr", "tag"],
                 "text": "hello, there", "labels": {"gender": "female", "emotion": "happy"},
                 "response": "Glad to hear it!"}
    assert "response" not in y and y["labels"] == {"gender": "male", "emotion": "neutral"}


def test_csv_bad_lines_are_named(tmp_path, cli, capsys):
    write_wav(tmp_path / "x.wav", 0.4)
    write(tmp_path / "m.csv", [
        "key,wav,text,emotion,duration",
        f"x,{tmp_path / 'x.wav'},fine,happy,0.4",
        f"y,{tmp_path / 'x.wav'},bad label,joyful,0.4",
        f"z,{tmp_path / 'x.wav'},bad number,sad,long",
        f"w,{tmp_path / 'missing.wav'},no audio,sad,",
        f"v,{tmp_path / 'x.wav'},too,many,cells,here",
        f"x,{tmp_path / 'x.wav'},same key,sad,0.4",
    ])
    m = tmp_path / "m.csv"
    assert cli.main(["manifest", str(m), str(tmp_path / "o.list"), "--task", "asr"]) == 1
    err = capsys.readouterr().err
    assert f"{m}:3: y: label emotion='joyful' not in" in err
    assert f"{m}:4: z: column 'duration' (duration): 'long'" in err
    assert f"{m}:5: w: cannot read audio" in err
    assert f"{m}:6: -: 5 columns in the header but more in this row" in err
    assert f"{m}:7: x: duplicate key (first at {m}:2)" in err
    with pytest.raises(PrepareError, match="column.*transcript.*not in the header"):
        prepare_manifest(m, {"text": "transcript"})
    with pytest.raises(PrepareError, match="unknown field"):
        parse_columns(["txt=transcript"])


def test_jsonl_manifest_nested_columns_and_bad_json(tmp_path):
    wav = write_wav(tmp_path / "a.wav", 0.3)
    rows = [json.dumps({"id": "a", "audio": wav, "meta": {"q": "hi", "emotion": "<SAD>"}, "reply": "there there",
                        "codes": "1 2 3", "task": "s2s_chat"}),
            "{not json",
            json.dumps({"id": "b", "audio": wav, "meta": {"q": "yo"}, "reply": "x", "codes": [4, -5],
                        "task": "s2s_chat"})]
    write(tmp_path / "m.jsonl", rows)
    res = prepare_manifest(tmp_path / "m.jsonl", {"key": "id", "wav": "audio", "text": "meta.q",
                                                  "emotion": "meta.emotion", "response": "reply",
                                                  "response_tokens": "codes"}, durations=False)
    assert res.records == [{"key": "a", "wav": wav, "task": "s2s_chat", "text": "hi", "labels": {"emotion": "sad"},
                            "response": "there there", "response_tokens": [1, 2, 3]}]
    msgs = [str(i) for i in res.issues]
    assert msgs[0].startswith(f"{tmp_path / 'm.jsonl'}:2: -: invalid JSON")
    assert msgs[1] == f"{tmp_path / 'm.jsonl'}:3: b: response_tokens must be a list of non-negative integers"


def test_osum_echat_preset(tmp_path, cli):
    wav = write_wav(tmp_path / "q.wav", 0.5)
    lines = [
        {"key": "e1", "wav": wav, "txt": "Oh no, I am here for you.", "task": "<S2TCHAT> <TEXT2TOKEN> <THINK>",
         "extra": {"question": "I failed my exam", "age": "<ADULT>", "gender": "<FEMALE>", "q_emotion": "<SAD>",
                   "caption": "<Cry>", "think_str": "She sounds sad and is crying.", "speech_token": [5, 6, 7],
                   "duration": 0.5}},
        {"key": "e2", "wav": wav, "txt": "hello world", "task": "<TRANSCRIBE>", "extra": {}},
        {"key": "e3", "wav": wav, "txt": "x", "task": "<ALIGN>", "extra": {}},
    ]
    write(tmp_path / "echat.jsonl", [json.dumps(x) for x in lines])
    res = prepare_manifest(tmp_path / "echat.jsonl", preset="osum_echat")
    assert res.records[0] == {
        "key": "e1", "wav": wav, "duration": 0.5, "task": "s2s_think", "text": "I failed my exam",
        "labels": {"age": "adult", "gender": "female", "emotion": "sad", "event": "cry"},
        "response": "Oh no, I am here for you.", "response_tokens": [5, 6, 7],
        "think": "She sounds sad and is crying."}
    assert res.records[1]["task"] == "asr" and res.records[1]["text"] == "hello world"
    assert len(res.records) == 2
    assert str(res.issues[0]).startswith(f"{tmp_path / 'echat.jsonl'}:3: e3: OSUM task tag '<ALIGN>'")
    assert osum_echat_row({"key": "t", "task": "<TEXT2TEXT>", "txt": "r", "extra": {"question": "q"}}) == {
        "key": "t", "task": "t2t", "text": "q", "response": "r"}


def test_manifest_segments_and_shards(tmp_path, cli):
    import soundfile as sf

    sf.write(str(tmp_path / "long.wav"), tone(1.0, seed=1), 16000, subtype="PCM_16")
    write(tmp_path / "m.tsv", ["key\twav\tstart\tend\ttext", f"s1\t{tmp_path / 'long.wav'}\t0.1\t0.4\tone",
                               f"s2\t{tmp_path / 'long.wav'}\t0.5\t\ttwo"])
    out = tmp_path / "d" / "data.list"
    assert cli.main(["manifest", str(tmp_path / "m.tsv"), str(out), "--task", "asr", "--shards_dir",
                     str(tmp_path / "d" / "shards"), "--num_utts_per_shard", "1"]) == 0
    recs = [json.loads(v) for v in out.read_text().splitlines()]
    assert [r["duration"] for r in recs] == [0.3, 0.5]
    assert all(r["wav"].startswith(str(tmp_path / "d" / "segments.ark")) for r in recs)
    assert "start" not in recs[0] and "end" not in recs[0]
    shards = (tmp_path / "d" / "data.shards.list").read_text().split()
    assert len(shards) == 2 and all(Path(s).is_file() for s in shards)


def test_normalise_tag():
    assert normalise_tag(" <Throat Clearing> ") == "throat_clearing"
    assert normalise_tag("NEUTRAL") == "neutral"
