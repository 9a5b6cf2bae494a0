import dataclasses
import json

import pytest
import soundfile as sf
import torch
import yaml

from test.echat_fixtures import make_corpus, make_tokenizer, tiny_dataset_conf, tiny_model_conf
from test.token2wav.fixtures import tiny_model
from wenet_echat.bin import decode as decode_cli
from wenet_echat.bin import score as score_cli
from wenet_echat.bin import train as train_cli
from wenet_echat.infer import decode as decode_mod
from wenet_echat.infer import load_model_dir, split_output
from wenet_echat.infer.decode import attach_speech_processors, hyp_row, prompt_batch, speech_length_stats
from wenet_echat.infer.repetition import RepetitionRule, SpeechRepetitionBlocker, find_violations
from wenet_echat.infer.reply_audio import ReplyAudio, token_arrival_s
from wenet_echat.model import GenerateConf
from wenet_echat.text.think import THINK_BEGIN, THINK_END, build_tag_think, wrap_think
from wenet_echat.token2wav import save_token2wav


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode")
    data_list, recs = make_corpus(root, n=8)
    make_tokenizer(root, recs)
    conf = {"tokenizer": {"type": "sentencepiece", "model": str(root / "spm.model")}, "model": tiny_model_conf(),
            "dataset_conf": tiny_dataset_conf(4),
            "train_conf": {"tasks": {"asr": 1.0, "tag": 1.0, "s2s_think": 1.0}, "optim_conf": {"lr": 3e-3},
                           "scheduler_conf": {"warmup_steps": 2}, "max_steps": 4, "log_interval": 2}}
    (root / "conf.yaml").write_text(yaml.safe_dump(conf))
    train_cli.main(["--config", str(root / "conf.yaml"), "--train_data", data_list, "--model_dir",
                    str(root / "exp"), "--threads", "1"])
    return root, data_list, recs


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_decode_and_score(trained, capsys):
    root, data_list, recs = trained
    hyp = root / "hyp.jsonl"
    assert decode_cli.main(["--model_dir", str(root / "exp"), "--data_list", data_list, "--tasks", "asr", "tag",
                            "s2s_think", "--out", str(hyp), "--batch_size", "3", "--max_text_tokens", "12",
                            "--max_speech_tokens", "5"]) == 0
    rows = read_rows(hyp)
    assert len(rows) == 3 * len(recs)
    assert {r["key"] for r in rows} == {r["key"] for r in recs}
    for r in rows:
        assert r["n_text_tokens"] <= 12 and r["total_s"] > 0
        if r["task"] == "s2s_think":
            assert "think" in r and "reply" in r and len(r["speech_tokens"]) <= 5
    summary = json.loads((root / "hyp.summary.json").read_text())
    assert summary["hypotheses"] == {"asr": 8, "tag": 8, "s2s_think": 8} and summary["think"] is True
    assert summary["speech_blocking"]  # the settings, or why they could not be applied
    speech = [r for r in rows if r["task"] == "s2s_think"]
    stats = summary["speech"]["tasks"]
    assert stats.keys() == {"s2s_think"} and stats["s2s_think"]["rows"] == 8
    assert stats["s2s_think"]["ended"] == sum(r["finished"] for r in speech)
    assert all(len(r["speech_tokens"]) == 5 for r in speech if not r["finished"])  # the others hit the limit
    out = root / "results.md"
    assert score_cli.main(["--ref", data_list, "--hyp", str(hyp), "--out", str(out)]) == 0
    text = out.read_text()
    assert "WER" in text and "| age |" in text and "| emotion |" in text
    scores = json.loads(out.with_suffix(".json").read_text())
    assert scores["asr"]["utts"] == len(recs)


def test_every_speech_task_decodes_without_gold_tokens(trained):
    """A test list like EChat-mini's data.list: reply audio but no speech tokens and no CoT; the prompt needs
    neither."""
    root, _, recs = trained
    bare = root / "bare.list"
    keep = ("key", "wav", "duration", "task", "text", "labels", "response")
    bare.write_text("".join(json.dumps({**{k: r[k] for k in keep}, "response_wav": r["wav"]}) + "\n"
                            for r in recs[:4]))
    hyp = root / "bare_hyp.jsonl"
    assert decode_cli.main(["--model_dir", str(root / "exp"), "--data_list", str(bare), "--tasks", "tts",
                            "s2s_chat", "s2s_think", "t2t", "--out", str(hyp), "--max_text_tokens", "6",
                            "--max_speech_tokens", "4", "--no_think"]) == 0
    rows = read_rows(hyp)
    assert sorted({r["task"] for r in rows}) == ["s2s_chat", "s2s_think", "t2t", "tts"]
    assert len(rows) == 4 * 4
    for r in rows:
        assert ("speech_tokens" in r) == (r["task"] != "t2t")
        if r["task"] != "tts":
            assert r["think"] == "" or r["task"] == "s2s_think"  # --no_think: no CoT is prompted for


def test_history_reaches_the_decoding_prompt_of_chat_tasks(trained, monkeypatch):
    """data.list ``history`` -> dataset -> batch -> prompt: the earlier turns are in the s2t_chat prompt (in
    order, before the current user turn) and not in the asr prompt."""
    from wenet_echat.model import EChatModel
    from wenet_echat.text.targets import KIND_TEXT

    root, _, recs = trained
    turns = [{"text": "my cat ran away", "response": "oh no, I am sorry"},
             {"text": "she came back", "response": "what a relief"}]
    dialog = root / "dialog.list"
    dialog.write_text(json.dumps({**recs[0], "history": turns}) + "\n")
    prompts = []
    generate = EChatModel.generate

    def spy(self, input_ids, kinds, attention_mask, *args, **kwargs):
        prompts.append((input_ids, kinds, attention_mask))
        return generate(self, input_ids, kinds, attention_mask, *args, **kwargs)

    monkeypatch.setattr(EChatModel, "generate", spy)
    hyp = root / "dialog_hyp.jsonl"
    assert decode_cli.main(["--model_dir", str(root / "exp"), "--data_list", str(dialog), "--tasks", "asr",
                            "s2t_chat", "--out", str(hyp), "--max_text_tokens", "3"]) == 0
    tok = load_model_dir(root / "exp").tokenizer
    texts = [tok.decode([int(i) for i, k, m in zip(ids[0], kinds[0], mask[0]) if k == KIND_TEXT and m])
             for ids, kinds, mask in prompts]
    assert len(texts) == 2
    asr, chat = texts
    assert "cat" not in asr
    said = [chat.find(w) for w in ("my cat ran away", "oh no, I am sorry", "she came back", "what a relief")]
    assert -1 not in said and said == sorted(said), chat
    assert chat.rfind("user") > said[-1]  # the current user turn follows the history


def test_missing_audio_is_reported_and_an_empty_decode_fails(trained, capfd):
    root, _, recs = trained
    half = root / "half_missing.list"
    half.write_text("".join(json.dumps({**r, "wav": r["wav"] if i % 2 else str(root / f"gone{i}.wav")}) + "\n"
                            for i, r in enumerate(recs[:4])))
    hyp = root / "half_hyp.jsonl"
    assert decode_cli.main(["--model_dir", str(root / "exp"), "--data_list", str(half), "--tasks", "asr",
                            "--out", str(hyp), "--max_text_tokens", "4"]) == 0
    assert len(read_rows(hyp)) == 2
    assert json.loads((root / "half_hyp.summary.json").read_text())["left_out"] == {"missing": 2}
    assert "half_missing.list: skipped 2 samples (missing=2)" in capfd.readouterr().err
    gone = root / "all_missing.list"
    gone.write_text("".join(json.dumps({**r, "wav": str(root / f"gone{i}.wav")}) + "\n" for i, r in enumerate(recs)))
    with pytest.raises(SystemExit, match=r"all_missing.list: no record could be decoded .*missing=8"):
        decode_cli.main(["--model_dir", str(root / "exp"), "--data_list", str(gone), "--tasks", "asr",
                         "--out", str(root / "none.jsonl")])
    assert not (root / "none.jsonl").exists()


def test_prompt_batch_fills_only_target_fields():
    batch = {"keys": ["a", "b"], "response": [None, "hi"], "response_tokens": [None, [3, 4]], "text": ["x", None],
             "labels": [{}, {"age": "old"}], "think": [None, None]}
    s2s = prompt_batch(batch, "s2s_chat")
    assert s2s["response_tokens"] == [[0], [3, 4]] and s2s["response"] == ["-", "hi"]
    assert s2s["labels"][1] == {"age": "old"} and s2s["labels"][0]["age"] is None
    assert batch["response"] == [None, "hi"]  # the input batch is not changed
    assert prompt_batch(batch, "tts")["response"] == [None, "hi"]  # tts reads the reply: never invented
    assert prompt_batch(batch, "t2t")["text"] == ["x", None]


@pytest.mark.parametrize("text,think,reply", [
    (f"{THINK_BEGIN}the user said: hi, age: <adult>{THINK_END}Hello there!",
     "the user said: hi, age: <adult>", "Hello there!"),
    ("Just a reply.", "", "Just a reply."),
    (f"{THINK_BEGIN}unfinished thought", "unfinished thought", ""),
    (f"  {THINK_BEGIN}a{THINK_END}b  ", "a", "b"),  # one-character reply right after the marker is kept
    (f"noise {THINK_BEGIN}cot{THINK_END}reply", "cot", "reply"),  # junk before <think> is dropped
    (f"cot without begin{THINK_END}reply", "cot without begin", "reply"),
    (f"{THINK_BEGIN}cot{THINK_END}reply{THINK_END} more", "cot", "reply more"),  # a repeated marker
    (f"{THINK_BEGIN}{THINK_END}", "", ""),
])
def test_split_output_boundaries(text, think, reply):
    assert split_output(text) == (think, reply)


def test_think_reply_split_keeps_boundary_tokens(trained):
    """Through the real tokenizer: the last CoT token, the first and the last reply token survive the split."""
    root, _, _ = trained
    tok = load_model_dir(root / "exp", "final").tokenizer
    cot = build_tag_think("I lost my keys again.", {"age": "adult", "gender": "female", "emotion": "sad",
                                                    "event": "none"}, "comforting")
    for reply in ("I hear you, sad friend.", "Okay!", "x"):
        ids = tok.encode(wrap_think(cot) + reply)
        assert ids[-1] != tok.eos_id
        row = hyp_row("k", "s2s_think", {"text_ids": ids, "speech_ids": [4, 5], "finished": True,
                                         "first_text_s": 0.1, "first_speech_s": 0.2, "total_s": 0.3}, tok, True)
        assert row["think"] == cot and row["reply"] == reply
        assert row["reply_emotion"] == "comforting" and row["speech_tokens"] == [4, 5]


def test_repetition_rules():
    b = SpeechRepetitionBlocker(RepetitionRule(max_run=3, window=6, max_in_window=4), {7: RepetitionRule(5, 0, 0)})
    assert b.blocked([]) == []
    assert b.blocked([1, 2, 2]) == [] and b.blocked([1, 2, 2, 2]) == [2]  # run of 3: a 4th is blocked
    assert b.blocked([1, 2, 2, 3, 2, 2]) == [2]  # 4 of the last 5: a 5th in 6 is blocked
    assert b.blocked([2, 2, 2, 3, 2, 1]) == []  # 3 in the last 5 (the first 2 left the window)
    assert b.blocked([7, 7, 7, 7]) == [] and b.blocked([7] * 5) == [7]  # own rule for code 7, no window
    logits = torch.zeros(10)
    out = b([1, 2, 2, 2], logits)
    assert out[2] == float("-inf") and torch.isfinite(out[torch.arange(10) != 2]).all()
    assert torch.equal(logits, torch.zeros(10))  # not modified in place
    assert torch.isfinite(b([9, 9, 9, 9], torch.zeros(10))).all()  # the last class (speech EOS) is never blocked
    assert find_violations([2, 2, 2, 2, 1], b) == [3]
    assert RepetitionRule.parse("1446:10:13:10") == (1446, RepetitionRule(10, 13, 10))
    with pytest.raises(ValueError, match="CODE:MAX_RUN:WINDOW:MAX_IN_WINDOW"):
        RepetitionRule.parse("1446:10")
    with pytest.raises(ValueError, match="max_in_window"):
        RepetitionRule(5, 4, 4)


def test_blocker_in_a_greedy_loop_stops_loops():
    """The hook contract (processor(history, logits) before picking): a model stuck on code 3 still obeys."""
    blocker = SpeechRepetitionBlocker()
    logits = torch.tensor([0.0, 1.0, 2.0, 9.0, 0.5])  # code 3 always wins, 4 = EOS
    codes: list[int] = []
    for _ in range(40):
        codes.append(int(blocker(codes, logits).argmax()))
    assert find_violations(codes, blocker) == []
    assert codes[:5] == [3] * 5 and codes[5] == 2 and codes.count(3) < 40


def test_attach_speech_processors(monkeypatch):
    gen = GenerateConf()
    has_hook = "speech_processors" in GenerateConf.__dataclass_fields__
    assert attach_speech_processors(gen, [SpeechRepetitionBlocker()]) is has_hook

    @dataclasses.dataclass
    class HookedConf(GenerateConf):
        speech_processors: list = dataclasses.field(default_factory=list)

    monkeypatch.setattr(decode_mod, "GenerateConf", HookedConf)
    hooked = HookedConf()
    blocker = SpeechRepetitionBlocker()
    assert attach_speech_processors(hooked, [blocker]) and hooked.speech_processors == [blocker]


def test_token_arrival():
    row = {"key": "k", "speech_tokens": [1, 2, 3, 4, 5], "first_speech_s": 1.0, "total_s": 3.0}
    assert token_arrival_s(row, 1) == (1.0, True)
    assert token_arrival_s(row, 3) == (pytest.approx(2.0), True)
    assert token_arrival_s(row, 99) == (pytest.approx(3.0), True)  # a short reply: its last token
    assert token_arrival_s({**row, "speech_times": [0.5, 0.6, 0.7]}, 2) == (0.6, False)
    with pytest.raises(ValueError, match="'k'"):
        token_arrival_s({"key": "k", "speech_tokens": []}, 1)


def test_reply_audio_rows(tmp_path):
    model = tiny_model()
    audio = ReplyAudio(model, tmp_path / "wavs")
    row = {"key": "u1", "task": "s2s_think", "speech_tokens": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
           "first_speech_s": 0.5, "total_s": 1.4}
    audio.add_to_row(row)
    wav, sr = sf.read(row["reply_wav"])
    assert row["reply_wav"].endswith("s2s_think/u1.wav") and sr == model.sample_rate
    assert len(wav) == model.expected_samples(10) and row["audio_s"] == pytest.approx(len(wav) / sr, abs=1e-3)
    assert row["first_chunk_tokens"] == 6  # the tiny streaming config's first chunk
    assert row["first_audio_s"] >= 0.5 + 5 * 0.1 - 1e-6 and row["latency_estimated"] is True
    assert row["rtf"] > 0 and row["rtf_e2e"] > row["rtf"]
    short = audio.add_to_row({"key": "u2", "task": "tts", "speech_tokens": [1, 2], "first_speech_s": 0.1,
                              "total_s": 0.2})
    assert short["first_chunk_tokens"] == 2  # flushed whole
    assert audio.add_to_row({"key": "u3", "task": "s2s_chat", "speech_tokens": []}) == {
        "key": "u3", "task": "s2s_chat", "speech_tokens": []}
    with pytest.raises(ValueError, match="outside the token2wav codebook"):
        audio.add_to_row({"key": "u4", "task": "tts", "speech_tokens": [99], "first_speech_s": 0, "total_s": 0})
    with pytest.raises(ValueError, match="safe file name"):
        audio.add_to_row({"key": "../x", "task": "tts", "speech_tokens": [1], "first_speech_s": 0, "total_s": 0})


def decode_with_audio(trained, name: str, *args: str) -> list[dict]:
    """Decode the fixture list with a tiny token2wav model into ``<name>_hyp.jsonl``; its rows."""
    root, data_list, _ = trained
    t2w = root / f"t2w_{name}"
    save_token2wav(t2w, tiny_model())
    hyp = root / f"{name}_hyp.jsonl"
    assert decode_cli.main(["--model_dir", str(root / "exp"), "--data_list", data_list, "--out", str(hyp),
                            "--token2wav_dir", str(t2w), *args]) == 0
    return read_rows(hyp)


def test_decode_writes_reply_wavs(trained):
    root = trained[0]
    rows = decode_with_audio(trained, "wav", "--tasks", "s2s_think", "--batch_size", "1", "--limit", "2",
                             "--max_text_tokens", "8", "--max_speech_tokens", "8", "--min_speech_tokens", "7")
    assert len(rows) == 2 and all(len(r["speech_tokens"]) >= 7 for r in rows)
    scp = (root / "reply_wavs" / "s2s_think" / "wav.scp").read_text().split("\n")
    with_audio = [r for r in rows if r["speech_tokens"]]
    assert len([line for line in scp if line]) == len(with_audio)
    for r in with_audio:
        assert sf.info(r["reply_wav"]).frames > 0 and r["first_audio_s"] >= r["first_speech_s"]
    summary = json.loads((root / "wav_hyp.summary.json").read_text())
    assert summary["reply_audio"]["wavs"] == len(with_audio)


def test_load_model_dir_errors(trained, tmp_path):
    root, _, _ = trained
    with pytest.raises(FileNotFoundError, match="train.yaml"):
        load_model_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a path nor a tag"):
        load_model_dir(root / "exp", "epoch_99")
    assert load_model_dir(root / "exp", "final").checkpoint.endswith("final")


@pytest.mark.skipif("speech_processors" not in GenerateConf.__dataclass_fields__,
                    reason="EChatModel.generate has no speech_processors hook")
def test_decode_blocks_repeated_codes_inside_generation(trained):
    root = trained[0]
    rows = decode_with_audio(trained, "hook", "--tasks", "s2s_chat", "--limit", "3", "--batch_size", "3",
                             "--max_text_tokens", "4", "--min_speech_tokens", "30", "--max_speech_tokens", "30",
                             "--speech_max_run", "2", "--speech_window", "4", "--speech_max_in_window", "2")
    blocker = SpeechRepetitionBlocker(RepetitionRule(2, 4, 2))
    assert len(rows) == 3
    for r in rows:
        assert len(r["speech_tokens"]) == 30 and find_violations(r["speech_tokens"], blocker) == []
        assert len(r["speech_times"]) == 30 and r["latency_estimated"] is False
    assert json.loads((root / "hook_hyp.summary.json").read_text())["speech_blocking"]["rule"]["max_run"] == 2


def test_tokenizer_path_resolves_from_any_directory(tmp_path, monkeypatch):
    from wenet_echat.infer.decode import resolve_tokenizer_paths

    recipe = tmp_path / "recipe"
    (recipe / "data" / "lang").mkdir(parents=True)
    (recipe / "data" / "lang" / "spm.model").write_bytes(b"x")
    model_dir = recipe / "exp" / "stage1"
    model_dir.mkdir(parents=True)
    conf = {"type": "sentencepiece", "model": "data/lang/spm.model"}
    monkeypatch.chdir(tmp_path)
    assert resolve_tokenizer_paths(conf, model_dir)["model"] == str(recipe.resolve() / "data/lang/spm.model")
    monkeypatch.chdir(recipe)  # found from the working directory: kept as written
    assert resolve_tokenizer_paths(conf, model_dir)["model"] == "data/lang/spm.model"
    missing = {"type": "sentencepiece", "model": "data/lang/other.model"}
    assert resolve_tokenizer_paths(missing, model_dir) == missing


def test_speech_length_stats_counts_endings_and_openings():
    rows = [{"task": "tts", "speech_tokens": [1, 2, 3, 4], "finished": False},
            {"task": "tts", "speech_tokens": [1, 2, 3, 4], "finished": False},
            {"task": "tts", "speech_tokens": [1, 2, 9], "finished": True},
            {"task": "tts", "speech_tokens": [7], "finished": True},
            {"task": "s2s_think", "speech_tokens": [5, 6], "finished": True},
            {"task": "asr", "text": "no speech phase"}]
    stats = speech_length_stats(rows, opening=2)
    assert stats == {"opening_tokens": 2,
                     "tasks": {"tts": {"rows": 4, "ended": 2, "mean_tokens": 3.0, "distinct_openings": 2},
                               "s2s_think": {"rows": 1, "ended": 1, "mean_tokens": 2.0, "distinct_openings": 1}}}
    assert speech_length_stats(rows[-1:]) == {"opening_tokens": 30, "tasks": {}}
