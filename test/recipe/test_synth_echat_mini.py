"""EChat-mini synthesis and corpus report: a tiny corpus end to end (CLIs run as subprocesses)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from wenet_echat.dataset.schema import check_record
from wenet_echat.text.labels import CATEGORIES, LABEL_VOCABS, REPLY_EMOTIONS
from wenet_echat.text.think import build_tag_think

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "egs" / "echat"
SYNTH = RECIPE / "local" / "synth_echat_mini.py"
REPORT = RECIPE / "local" / "corpus_report.py"
SPLITS = ("train", "dev", "test")
EVENT_WORDS = {"alarm": "alarm", "siren": "siren", "doorbell": "door", "knock": "knock", "cough": "cough",
               "rain": "rain"}

pytestmark = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("flite")),
                                reason="needs espeak-ng and flite")


def synth(out_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SYNTH), "--out_dir", str(out_dir), "--tiny", "--nj", "2", "--no_progress", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=RECIPE, timeout=300)


def read(out_dir: Path, split: str) -> list[dict]:
    with open(out_dir / split / "data.list", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("echat") / "data"
    r = synth(out, "--seed", "777")
    assert r.returncode == 0, r.stderr
    return out


def test_files_and_records(corpus):
    for split in SPLITS:
        recs = read(corpus, split)
        assert recs, split
        for name in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2emotion", "response", "think"):
            assert (corpus / split / name).is_file(), (split, name)
        for rec in recs:
            assert check_record(rec) == [], rec["key"]
            for name, value in rec["labels"].items():
                assert value in LABEL_VOCABS[name]
            assert set(rec["labels"]) == {"age", "gender", "emotion", "event"}
            assert rec["category"] in CATEGORIES and rec["response_emotion"] in REPLY_EMOTIONS
            assert rec["think"] == build_tag_think(rec["text"], rec["labels"], rec["response_emotion"])
            assert Path(rec["wav"]).is_file() and Path(rec["response_wav"]).is_file()
            assert rec["duration"] > 0.5
    meta = json.loads((corpus / "meta.json").read_text())
    assert meta["seed"] == 777 and set(meta["splits"]) == set(SPLITS)
    assert (corpus / ".done").is_file()


def test_audio_format(corpus):
    import soundfile as sf

    rec = read(corpus, "train")[0]
    info = sf.info(rec["wav"])
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert abs(info.frames / info.samplerate - rec["duration"]) < 0.01
    assert sf.info(rec["response_wav"]).subtype == "PCM_16"


def test_held_out_sentences_and_voices(corpus):
    train = read(corpus, "train")
    train_text, train_spk = {r["text"] for r in train}, {r["speaker"] for r in train}
    for split in ("dev", "test"):
        for rec in read(corpus, split):
            assert rec["text"] not in train_text
            assert rec["speaker"] not in train_spk


def test_same_sentence_in_several_states(corpus):
    by_text: dict[str, list[dict]] = defaultdict(list)
    for rec in read(corpus, "train"):
        by_text[rec["text"]].append(rec)
    multi = [g for g in by_text.values() if len({json.dumps(r["labels"], sort_keys=True) for r in g}) >= 2]
    assert multi
    for group in multi:
        states = {json.dumps(r["labels"], sort_keys=True) + r["category"]: r["response"] for r in group}
        assert len(set(states.values())) >= 2


def test_replies_follow_the_cues(corpus):
    recs = [r for s in SPLITS for r in read(corpus, s)]
    for rec in recs:
        lab = rec["labels"]
        assert not rec["text"].startswith("("), rec["text"]  # valence markers of content.yaml are stripped
        if lab["event"] != "none":
            assert EVENT_WORDS[lab["event"]] in rec["response"].lower(), rec["response"]
        if lab["emotion"] == "sad":
            assert rec["response_emotion"] == "comforting"
        if lab["emotion"] == "happy":
            assert rec["response_emotion"] in ("happy", "pleasant")
        non_default = [lab["age"] != "adult", lab["emotion"] != "neutral", lab["event"] != "none"]
        if rec["category"] == "multi":
            assert sum(non_default) >= 2
        elif rec["category"] in ("emotion", "age", "event"):
            assert sum(non_default) == 1
        if lab["age"] == "old":
            assert ("sir" if lab["gender"] == "male" else "ma'am") in rec["response"]


def test_rerun_skips_and_changed_args_fail(corpus):
    t0 = time.time()
    r = synth(corpus, "--seed", "777")
    assert r.returncode == 0 and "nothing to do" in r.stderr
    assert time.time() - t0 < 10
    r = synth(corpus, "--seed", "778")
    assert r.returncode == 2 and "--overwrite" in r.stderr


def test_deterministic(corpus, tmp_path):
    lists = {s: (corpus / s / "data.list").read_bytes() for s in SPLITS}
    recs = read(corpus, "train")
    sample = [recs[0]["wav"], recs[-1]["wav"], recs[0]["response_wav"]]
    sample += [r["wav"] for r in recs if r["labels"]["event"] != "none"][:2]
    wavs = {p: Path(p).read_bytes() for p in sample}
    shutil.rmtree(corpus / "wavs" / "reply")  # the reply cache survives --overwrite; make it re-render
    r = synth(corpus, "--seed", "777", "--overwrite", "--nj", "1")  # also: output independent of nj
    assert r.returncode == 0, r.stderr
    for s in SPLITS:
        assert (corpus / s / "data.list").read_bytes() == lists[s], s
    for p, data in wavs.items():
        assert Path(p).read_bytes() == data, p
    other = tmp_path / "other"
    r = synth(other, "--seed", "5")
    assert r.returncode == 0, r.stderr
    other_recs = read(other, "train")
    assert [(r["text"], r["labels"]) for r in other_recs] != [(r["text"], r["labels"]) for r in recs]


def test_acoustic_cues(corpus):
    from wenet_echat.audio.io import load_audio
    from wenet_echat.audio.prosody import prosody_stats

    sys.path.insert(0, str(RECIPE / "local"))
    from echat_mini.voices import EMOTION_STYLES, VOICE_BY_ID, synthesize

    text = "I got my exam results today and I can hardly believe it."

    def stats(voice_id, emotion):
        wav, sr = synthesize(text, VOICE_BY_ID[voice_id], EMOTION_STYLES[emotion], np.random.default_rng(0))
        return prosody_stats(wav, sr, n_words=len(text.split()))

    child = [v for v in VOICE_BY_ID if v.startswith("cf")][0]
    man = [v for v in VOICE_BY_ID if v.startswith("am")][0]
    woman = [v for v in VOICE_BY_ID if v.startswith("af")][0]
    old = [v for v in VOICE_BY_ID if v.startswith("om")][0]
    assert stats(child, "neutral")["median_f0"] > 1.5 * stats(man, "neutral")["median_f0"]
    assert stats(old, "neutral")["speaking_rate"] < stats(man, "neutral")["speaking_rate"]
    happy, sad, angry = (stats(woman, e) for e in ("happy", "sad", "angry"))
    assert sad["speaking_rate"] < happy["speaking_rate"]
    assert sad["median_f0"] < happy["median_f0"]
    assert angry["rms_db"] > sad["rms_db"] + 6
    # and in the corpus itself: children's event-free speech is higher than adult men's
    recs = [r for s in SPLITS for r in read(corpus, s) if r["labels"]["event"] == "none"]
    f0 = defaultdict(list)
    for r in recs:
        lab = r["labels"]
        group = "child" if lab["age"] == "child" else f"{lab['age']}_{lab['gender']}"
        wav, sr = load_audio(r["wav"])
        f0[group].append(prosody_stats(wav, sr)["median_f0"])
    if f0["child"] and f0["adult_male"]:
        assert np.median(f0["child"]) > np.median(f0["adult_male"])


def test_report(corpus, tmp_path):
    out = tmp_path / "report"
    cmd = [sys.executable, str(REPORT), "--data_dir", str(corpus), "--out_dir", str(out), "--max_per_value", "5"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=RECIPE, timeout=120)
    assert r.returncode == 0, r.stderr
    for name in ("report.md", "acoustic_stats.md", "label_distribution.png", "spectrograms.png"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    for field in ("age", "gender", "emotion", "event", "category", "response_emotion"):
        assert f"## {field}" in report
    assert "median F0" in r.stdout
    assert "## Transcript vocabulary" in report and "| test |" in report.split("## Transcript vocabulary")[1]


def test_report_vocabulary_coverage():
    import importlib.util

    spec = importlib.util.spec_from_file_location("corpus_report", REPORT)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    data = {"train": [{"text": "My roses bloom.", "response": "How lovely, roses!"}, {"text": "It rains."}],
            "test": [{"text": "My tulips bloom, lovely!"}, {"text": "It's raining"}]}
    table = report.vocabulary_table(data)
    # test tokens: my tulips bloom lovely it's raining -> unseen in train text: tulips lovely it's raining (4 of 6),
    # with the replies: tulips it's raining (3 of 6)
    assert table[-1] == "| test | 6 | 6 | 66.7 | 50.0 |"
    assert report.vocabulary_table({"train": data["train"]}) == []


def test_content_and_voice_inventory():
    sys.path.insert(0, str(RECIPE / "local"))
    from echat_mini.plan import split_assets
    from echat_mini.replies import all_sentences
    from echat_mini.voices import VOICES

    sents = all_sentences()
    assert len(sents) >= 150 and len({s.text for s in sents}) == len(sents)
    assert len(VOICES) >= 40 and len({v.vid for v in VOICES}) == len(VOICES)
    split_sents, split_voices = split_assets(777)
    for split in ("dev", "test"):
        assert not {s.text for s in split_sents[split]} & {s.text for s in split_sents["train"]}
        assert not {v.vid for v in split_voices[split]} & {v.vid for v in split_voices["train"]}
    # no held-out voice is the last of its engine in its age x gender group: train has every engine/age/gender
    train_kinds = {(v.engine, v.age, v.gender) for v in split_voices["train"]}
    for split in ("dev", "test"):
        assert {(v.engine, v.age, v.gender) for v in split_voices[split]} <= train_kinds
    assert ("flite", "adult", "female") in train_kinds
    for voices in split_voices.values():  # every split covers every age x gender
        assert {(v.age, v.gender) for v in voices} == {(a, g) for a in ("child", "adult", "old")
                                                       for g in ("male", "female")}


def test_identity_turns_in_corpus(corpus):
    from wenet_echat.text.identity import identity_answer_ok

    train_questions = {r["text"] for r in read(corpus, "train") if r["category"] == "identity"}
    for split in SPLITS:
        recs = [r for r in read(corpus, split) if r["category"] == "identity"]
        assert len(recs) >= 4, split
        for rec in recs:
            assert identity_answer_ok(rec["response"]) == (True, "ok"), rec["response"]
            assert rec["labels"]["event"] == "none" and rec["text"].endswith(("?", "."))
            if split != "train":
                assert rec["text"] not in train_questions
    meta = json.loads((corpus / "meta.json").read_text())
    assert meta["identity_filter"] == {s: {"dropped": 0, "by_name": {}} for s in SPLITS}
    assert meta["splits"]["test"]["category"]["identity"] >= 4


def test_identity_plan():
    sys.path.insert(0, str(RECIPE / "local"))
    from echat_mini.identity import ANSWERS, INTENT_PHRASINGS, intent_of, split_phrasings
    from echat_mini.plan import IDENTITY_SHARE, make_plan, plan_split, split_assets

    from wenet_echat.text.identity import IdentityFilter, identity_answer_ok

    hours = {"train": 0.5, "dev": 0.1, "test": 0.1}
    plan = make_plan(777, hours)
    phr = split_phrasings(777)
    assert sum(len(v) for v in phr.values()) == sum(len(v) for v in INTENT_PHRASINGS.values())
    for split in ("dev", "test"):  # held-out phrasings, every intent asked
        assert not {s.text for s in phr[split]} & {s.text for s in phr["train"]}
        assert {intent_of(s) for s in phr[split]} == set(INTENT_PHRASINGS)
    sents, voices = split_assets(777)
    flt = IdentityFilter()
    for split, examples in plan.items():
        regular = [e for e in examples if e.category != "identity"]
        ident = [e for e in examples if e.category == "identity"]
        assert examples[: len(regular)] == regular  # identity turns are appended ...
        again = plan_split(split, hours[split], 777, sents[split], voices[split])
        assert [(e.key, e.response) for e in again] == [(e.key, e.response) for e in regular]  # ... and change nothing
        assert len(ident) == max(4, round(IDENTITY_SHARE * len(regular)))
        assert len({e.key for e in examples}) == len(examples)
        for e in ident:
            adult_or_old, child = ANSWERS[intent_of(e.sentence)]
            assert (child if e.labels["age"] == "child" else adult_or_old) in e.response  # one consistent answer
            assert identity_answer_ok(e.response, flt)[0]
            if e.labels["age"] == "old":
                assert ("sir" if e.labels["gender"] == "male" else "ma'am") in e.response
        # no corpus reply names another assistant: the filter keeps everything synthesis makes
        assert all(flt.find(e.response) is None for e in examples)
    assert make_plan(777, hours)["test"][-1].response == plan["test"][-1].response  # deterministic
