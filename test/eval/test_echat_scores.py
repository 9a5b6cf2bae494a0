"""EChat-eval-style scoring on hand-made references and hypotheses with known answers."""

import json

import numpy as np
import pytest
import soundfile as sf

from wenet_echat.bin import report as report_cli
from wenet_echat.bin import score as score_cli
from wenet_echat.eval.echat import latency_summary, score_chat
from wenet_echat.eval.plots import confusion_matrix, plot_confusion
from wenet_echat.eval.reply import ReplyWeights, chrf, cue_state, load_cue_lexicon, score_reply, scored_cues, token_f1
from wenet_echat.eval.reply_speech import score_reply_audio
from wenet_echat.eval.report import results_markdown
from wenet_echat.eval.speech import SpeechMetric, build_speech_metric
from wenet_echat.text.labels import EMOTIONS
from wenet_echat.text.think import build_natural_think, build_tag_think, wrap_think


def test_chrf_and_token_f1_known_values():
    assert chrf("same words", "same words") == pytest.approx(100.0)
    assert chrf("xyz", "abc") == 0.0 and chrf("", "abc") == 0.0
    # "ab" vs "abc": 1-grams P 1, R 2/3; 2-grams P 1, R 1/2 -> P 1, R 7/12 -> F2 = 5 * 7/12 / (4 + 7/12) = 35/55
    assert chrf("ab", "abc") == pytest.approx(100 * 35 / 55)
    assert chrf("a b", "ab c") == pytest.approx(100 * 35 / 55)  # whitespace is ignored
    assert token_f1("The cat sat.", "the cat ran") == pytest.approx(200 / 3)
    assert token_f1("", "x") == 0.0


def test_cue_state_rules():
    gold = "I can hear an alarm going off; please check it first."
    assert cue_state("There's an alarm, go and check.", gold, "event", "alarm") == 1.0
    assert cue_state("Is that an alarm or a siren?", gold, "event", "alarm") == 0.0  # names another event
    assert cue_state("Okay, tell me more.", gold, "event", "alarm") == 0.0
    assert cue_state("anything", "No event mentioned here.", "event", "alarm") is None  # not scorable
    assert cue_state("Thank you, ma'am.", "Thank you, ma'am.", "gender", "female") == 1.0
    assert cue_state("Thank you, sir.", "Thank you, ma'am.", "gender", "female") == 0.0
    # "sorry" is shared by sad and angry replies: not a contradiction; "wonderful" (happy only) is
    assert cue_state("I'm so sorry.", "I'm sorry, that sounds hard.", "emotion", "sad") == 1.0
    assert cue_state("I'm sorry, how wonderful!", "I'm sorry, that sounds hard.", "emotion", "sad") == 0.0
    assert scored_cues({"age": "child", "emotion": "sad", "event": "none", "gender": "male"}, "multi") == [
        "age", "emotion"]
    assert scored_cues({"age": "old", "gender": "male"}, "gender") == ["gender"]
    assert scored_cues({"age": "old"}, "identity") == []


def test_score_reply_weights():
    gold = "I can hear a siren outside; I hope everyone is safe."
    labels = {"age": "adult", "gender": "male", "emotion": "neutral", "event": "siren"}
    perfect = score_reply(gold, gold, labels, "event")
    assert perfect["reply_score"] == pytest.approx(100.0) and perfect["state_cues"] == {"event": 1.0}
    miss = score_reply("Okay.", gold, labels, "event")
    assert miss["state"] == 0.0 and miss["reply_score"] == pytest.approx(0.4 * miss["chrf"])
    only_state = score_reply("A siren!", gold, labels, "event", ReplyWeights(1.0, 0.0))
    assert only_state["reply_score"] == pytest.approx(100.0)
    no_cue = score_reply("hello", "hello", {"emotion": "neutral"}, "emotion")  # gold addresses no cue
    assert no_cue["state"] is None and no_cue["reply_score"] == pytest.approx(100.0)


def test_cue_lexicon_file(tmp_path):
    (tmp_path / "lex.yaml").write_text("event: {alarm: [beep, Alarm]}\n")
    lex = load_cue_lexicon(tmp_path / "lex.yaml")
    assert lex == {"event": {"alarm": ("beep", "alarm")}}
    assert cue_state("beep beep", "an ALARM", "event", "alarm", lex) == 1.0
    (tmp_path / "bad.yaml").write_text("event: {fire: [x]}\n")
    with pytest.raises(ValueError, match="event value 'fire'"):
        load_cue_lexicon(tmp_path / "bad.yaml")


SAD = {"age": "adult", "gender": "female", "emotion": "sad", "event": "none"}
ALARM = {"age": "adult", "gender": "male", "emotion": "neutral", "event": "alarm"}
CHILD = {"age": "child", "gender": "male", "emotion": "happy", "event": "cough"}
OLD = {"age": "old", "gender": "female", "emotion": "neutral", "event": "none"}

REFS = [
    {"key": "e1", "text": "I failed my exam.", "labels": SAD, "category": "emotion", "response_emotion": "comforting",
     "response": "I'm really sorry, that sounds hard."},
    {"key": "v1", "text": "The bus is late.", "labels": ALARM, "category": "event", "response_emotion": "neutral",
     "response": "I can hear an alarm going off; please check it first."},
    {"key": "m1", "text": "We won the game.", "labels": CHILD, "category": "multi", "response_emotion": "happy",
     "response": "That was a big cough! Yay, good for you!"},
    {"key": "i1", "text": "Who are you?", "labels": OLD, "category": "identity", "response_emotion": "pleasant",
     "response": "I'm EChat, the wenet-echat assistant, ma'am."},
    {"key": "i2", "text": "Are you a person?", "labels": SAD, "category": "identity",
     "response_emotion": "comforting", "response": "No, I'm EChat, a voice assistant."},
]


def cot(ref, **wrong):
    labels = {**ref["labels"], **wrong}
    return build_tag_think(ref["text"], labels, ref["response_emotion"])


def think_rows():
    """Hypotheses with known outcomes: e1 right; v1 misses the alarm and says 'happy' emotion in its CoT; m1
    addresses both cues; i1 right; i2 claims another identity."""
    r = {x["key"]: x for x in REFS}
    return [
        {"key": "e1", "task": "s2s_think", "think": cot(r["e1"]), "reply": "I'm so sorry, that sounds hard.",
         "reply_emotion": "comforting", "first_text_s": 0.1, "first_speech_s": 0.5, "first_audio_s": 0.8,
         "total_s": 1.0, "rtf": 0.2},
        {"key": "v1", "task": "s2s_think", "think": cot(r["v1"], emotion="happy", event="none"),
         "reply": "Okay, tell me more.", "reply_emotion": "happy", "first_text_s": 0.2, "first_speech_s": 0.7,
         "first_audio_s": 1.2, "total_s": 2.0, "rtf": 0.4},
        {"key": "m1", "task": "s2s_think", "think": cot(r["m1"]), "reply": "Yay! That's a big cough, though.",
         "reply_emotion": "happy", "first_text_s": 0.3, "first_speech_s": 0.9, "first_audio_s": 1.0,
         "total_s": 3.0, "rtf": 0.6},
        {"key": "i1", "task": "s2s_think", "think": cot(r["i1"]), "reply": "I'm EChat, ma'am, happy to help.",
         "reply_emotion": "pleasant"},
        {"key": "i2", "task": "s2s_think", "think": cot(r["i2"], age="old"), "reply": "I am Siri.",
         "reply_emotion": "neutral"},
    ]


def test_score_chat_known_answers():
    refs = {r["key"]: r for r in REFS}
    res = score_chat(refs, think_rows(), "s2s_think")
    cats = res["categories"]
    assert list(cats) == ["emotion", "event", "multi", "identity"]
    assert cats["emotion"]["state"] == 1.0 and cats["event"]["state"] == 0.0 and cats["multi"]["state"] == 1.0
    assert res["all"]["state_coverage"] == pytest.approx(60.0)  # identity items have no cue to match
    assert cats["identity"]["identity"] == {"n": 2, "accuracy": 50.0}
    assert cats["event"]["cot"]["event"]["accuracy"] == 0.0
    assert cats["event"]["cot"]["event"]["confusion"] == {"alarm": {"none": 1}}
    cot_all = res["all"]["cot"]
    assert cot_all["emotion"]["accuracy"] == pytest.approx(80.0) and cot_all["age"]["accuracy"] == pytest.approx(80.0)
    assert cot_all["gender"]["accuracy"] == 100.0
    assert res["all"]["cot_asr"]["wer"] == 0.0  # the CoTs quote the transcripts exactly
    assert res["all"]["reply_emotion"]["accuracy"] == pytest.approx(60.0)
    assert res["all"]["reply_emotion"]["confusion"]["neutral"] == {"happy": 1}
    assert [it["key"] for it in res["items"]] == ["e1", "v1", "m1", "i1", "i2"]
    assert res["items"][4]["identity_why"] == "names Siri"
    with pytest.raises(KeyError, match="'zz'"):
        score_chat(refs, [{"key": "zz", "task": "s2s_think", "reply": "x"}], "s2s_think")
    assert score_chat(refs, think_rows(), "s2s_chat") is None


def test_natural_cot_and_no_think_rows():
    refs = {r["key"]: r for r in REFS[:2]}
    natural = [{"key": "e1", "task": "s2s_chat", "think": build_natural_think("I failed my exam.", SAD, "comforting"),
                "reply": "Sorry."},
               {"key": "v1", "task": "s2s_chat", "think": "", "reply": "An alarm!", "reply_emotion": None}]
    res = score_chat(refs, natural, "s2s_chat")
    assert res["all"]["cot_n"] == 1 and res["all"]["cot"]["emotion"]["accuracy"] == 100.0
    assert res["all"]["reply_emotion"]["n"] == 1  # parsed from the natural CoT of e1 only
    assert res["categories"]["event"]["state"] == 1.0


def test_latency_summary():
    lat = latency_summary(think_rows())
    assert lat["first_audio_s"]["n"] == 3 and lat["first_audio_s"]["median"] == pytest.approx(1.0)
    assert lat["rtf"]["mean"] == pytest.approx(0.4) and "rtf_e2e" not in lat


def test_confusion_matrix_and_png(tmp_path):
    conf = {"sad": {"sad": 2, "happy": 1}, "happy": {"(none)": 1}, "angry": {"angry": 1, "weird": 2}}
    rows, cols, counts = confusion_matrix(conf, EMOTIONS)
    assert rows == ["happy", "sad", "angry"] and cols == ["happy", "sad", "angry", "(none)", "weird"]
    assert counts.tolist() == [[0, 0, 0, 1, 0], [1, 2, 0, 0, 0], [0, 0, 1, 0, 2]]
    path = plot_confusion(conf, tmp_path / "emo.png", "emotion", EMOTIONS)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="empty"):
        plot_confusion({}, tmp_path / "x.png", "nothing")


class FixedASR(SpeechMetric):
    name = "fixed_asr"

    def score(self, wav, sr, **_):
        return {"asr_hyp": "i am so sorry"}


class Loudness(SpeechMetric):
    name = "loudness"

    def score(self, wav, sr, **_):
        return {"dnsmos_ovrl": float(np.abs(wav).max()) * 4}


def tone(path, f0, seconds=1.2, amp=0.5, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), (amp * np.sin(2 * np.pi * f0 * t)).astype(np.float32), sr)
    return str(path)


def test_reply_audio_scores(tmp_path):
    refs = [dict(REFS[0], response_wav=tone(tmp_path / "g.wav", 100.0)), REFS[1]]
    rows = [{"key": "e1", "task": "s2s_think", "reply": "I am so sorry that is hard",
             "reply_wav": tone(tmp_path / "r.wav", 200.0)},
            {"key": "v1", "task": "s2s_think", "reply": "Alarm!"}]  # no audio
    res = score_reply_audio(list(zip(refs, rows)), {"pocketsphinx_asr": FixedASR(), "dnsmos": Loudness(),
                                                    "prosody": build_speech_metric("prosody")})
    assert res["no_audio"] == 1 and res["all"]["n"] == 1
    assert res["all"]["wer"] == pytest.approx(100 * 3 / 7)  # 7 reference words, 3 deleted
    assert res["all"]["dnsmos_ovrl"] == pytest.approx(2.0, abs=0.01)
    assert list(res["categories"]) == ["emotion"]
    assert res["prosody"]["comforting"]["f0_diff_st"] == pytest.approx(12.0, abs=0.3)  # an octave above gold
    assert score_reply_audio([(REFS[1], rows[1])], {"dnsmos": Loudness()}) is None


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_score_and_report_cli(tmp_path, capsys):
    ref = write_jsonl(tmp_path / "ref.list", REFS)
    full = tmp_path / "full"
    full.mkdir()
    hyp_full = write_jsonl(full / "hyp.jsonl", think_rows() + [{"key": "e1", "task": "asr", "text": "i failed my"}])
    nothink_rows = [{**r, "think": "", "reply_emotion": None} for r in think_rows()]
    hyp_no = write_jsonl(tmp_path / "nothink.jsonl", [{**r, "task": "s2s_chat"} for r in nothink_rows])
    assert score_cli.main(["--ref", ref, "--hyp", hyp_full, "--out", str(full / "results.md"), "--title", "t"]) == 0
    scores = json.loads((full / "results.json").read_text())
    assert scores["asr"]["utts"] == 1 and scores["understanding_by_category"]["emotion"]["asr"]["del"] == 1
    assert scores["chat"]["s2s_think"]["categories"]["identity"]["identity"]["accuracy"] == 50.0
    assert scores["latency"]["s2s_think"]["first_audio_s"]["n"] == 3
    pngs = {p.split("/")[-1] for p in scores["plots"]}
    assert {"s2s_think_cot_emotion.png", "s2s_think_reply_emotion.png"} <= pngs
    md = (full / "results.md").read_text()
    assert "| full |" in md and "### Identity" in md and "WER" in md
    assert score_cli.main(["--ref", ref, "--hyp", hyp_no, "--out", str(tmp_path / "no.md"), "--system", "x",
                           "--no_plots"]) == 0
    no = json.loads((tmp_path / "no.json").read_text())
    assert no["chat"]["s2s_chat"]["all"]["cot_n"] == 0 and "plots" not in no
    capsys.readouterr()
    out = tmp_path / "RESULTS.md"
    assert report_cli.main(["--systems", f"full={full / 'results.json'}", f"no_think={tmp_path / 'no.json'}",
                            "--out", str(out), "--title", "EChat-mini"]) == 0
    printed = capsys.readouterr().out
    text = out.read_text()
    assert printed.strip() in text
    summary = [line for line in text.splitlines() if line.startswith("| full |")][0].split("|")
    cells = [c.strip() for c in summary[2:-1]]
    emo = scores["chat"]["s2s_think"]["categories"]["emotion"]["reply_score"]
    event = scores["chat"]["s2s_think"]["categories"]["event"]["reply_score"]
    assert cells[0] == f"{emo:.1f}" and cells[1:3] == ["-", "-"] and cells[3] == f"{event:.1f}"
    assert cells[-1] == "50.0"
    assert "| no_think |" in text and "### Multi" in text and "### Latency" in text
    assert "(plots/s2s_think_cot_emotion.png)" not in text  # links are relative to RESULTS.md's folder
    assert "(full/plots/s2s_think_cot_emotion.png)" in text
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert numbers["full"]["identity"]["identity"] == 50.0 and numbers["no_think"]["task"] == "s2s_chat"
    with pytest.raises(ValueError, match="NAME=results.json"):
        report_cli.main(["--systems", "oops", "--out", str(out)])
    with pytest.raises(FileNotFoundError, match="bin/score.py"):
        report_cli.main(["--systems", f"x={tmp_path / 'missing.json'}", "--out", str(out)])


def test_report_without_chat_rows():
    md = results_markdown({"s1": {"asr": {"utts": 3, "wer": 12.5, "cer": 5.0}}}, "understanding only")
    assert "Summary" not in md and "| s1 | 3 | 12.50 | 5.00 |" in md


def test_wrap_think_rows_split_like_decoding():
    # the reference CoT form is what decoding parses back: a sanity link between the two modules
    assert wrap_think(cot(REFS[0])).startswith("<think>")


@pytest.mark.skipif(__import__("shutil").which("espeak-ng") is None, reason="needs espeak-ng")
def test_score_cli_reply_audio(tmp_path):
    """--speech on real reply audio: pocketsphinx hears the spoken reply, prosody compares with the gold wav."""
    pytest.importorskip("pocketsphinx")
    import subprocess

    def speak(path, text, pitch):
        subprocess.run(["espeak-ng", "-v", "en-us+klatt4", "-s", "160", "-p", str(pitch), "-w", str(path), text],
                       check=True)
        return str(path)

    ref = dict(REFS[0], response_wav=speak(tmp_path / "gold.wav", REFS[0]["response"], 30))
    row = {"key": "e1", "task": "s2s_chat", "reply": "hello world this is a test",
           "reply_wav": speak(tmp_path / "reply.wav", "hello world this is a test", 70)}
    (tmp_path / "ref.list").write_text(json.dumps(ref) + "\n")
    (tmp_path / "hyp.jsonl").write_text(json.dumps(row) + "\n")
    assert score_cli.main(["--ref", str(tmp_path / "ref.list"), "--hyp", str(tmp_path / "hyp.jsonl"), "--out",
                           str(tmp_path / "r.md"), "--no_plots", "--speech", "--speech_metrics", "pocketsphinx_asr",
                           "prosody"]) == 0
    sp = json.loads((tmp_path / "r.json").read_text())["speech"]["s2s_chat"]
    assert sp["all"]["n"] == 1 and sp["all"]["wer"] < 50
    assert sp["prosody"]["comforting"]["f0_diff_st"] > 2  # espeak pitch 70 vs 30
    assert "Reply prosody vs gold style" in (tmp_path / "r.md").read_text()
