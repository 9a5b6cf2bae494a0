import dataclasses
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf
import torch

from test.infer.chat_fixtures import read_wav
from test.token2wav.fixtures import tiny_model as tiny_token2wav
from wenet_echat.audio.features import compute_features
from wenet_echat.infer.decode import split_output
from wenet_echat.infer.repetition import RepetitionRule, SpeechRepetitionBlocker, find_violations
from wenet_echat.infer.session import (
    ChatConf,
    ChatEngine,
    InputAudioError,
    SessionBusyError,
    ThinkSplitter,
)
from wenet_echat.infer.stream import ContextBuilder, DecodeState, IncrementalDecoder, decode_steps
from wenet_echat.infer.user_audio import load_user_audio, prepare_audio
from wenet_echat.model import GenerateConf, make_inputs
from wenet_echat.text.prompts import system_prompt, user_instruction
from wenet_echat.text.targets import build_example, flatten
from wenet_echat.text.think import THINK_BEGIN, THINK_END

GEN = GenerateConf(max_text_tokens=120, max_speech_tokens=30)


def engine(loaded, **conf):
    return ChatEngine(loaded, tiny_token2wav(), ChatConf(generate=conf.pop("generate", GEN), **conf))


def tone(seconds, sr=16000, f0=220.0):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ decoding
def repeated_ngrams(ids, n):
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) - len(set(grams))


@pytest.mark.parametrize(("task", "ngram"), [("s2s_think", 0), ("asr", 0), ("s2s_think", 2)])
def test_decode_steps_equal_generate(random_loaded, memorised, task, ngram):
    """Greedy token-by-token decoding gives exactly the tokens of the batched EChatModel.generate (also with
    no-repeat-n-gram blocking of the text, which the random model's loops need)."""
    model, tok = random_loaded.model, random_loaded.tokenizer
    rec = memorised[1][0]
    wav, _ = read_wav(rec["wav"])
    blocker = SpeechRepetitionBlocker(RepetitionRule(2, 4, 2))  # strict, so that it changes what is picked
    conf = GenerateConf(max_text_tokens=15, max_speech_tokens=12, speech_processors=[blocker],
                        text_no_repeat_ngram=ngram)
    feats = compute_features("whisper_log_mel", wav, 16000, {})
    dec = IncrementalDecoder(model)
    frames = ChatEngine(random_loaded).encode(wav)
    ContextBuilder(tok, model.speech_bos).user_turn(system_prompt(task), user_instruction(task), frames).feed(dec)
    state = DecodeState()
    steps = list(decode_steps(dec, task == "s2s_think", conf, state, speech_processors=[blocker]))
    batch = {"keys": ["k"], "tasks": [[task]], "feats": feats[None], "feats_lengths": torch.tensor([feats.shape[0]]),
             **{k: [rec[k]] for k in ("text", "labels", "response", "response_emotion", "response_tokens", "think")}}
    inp = make_inputs(batch, task, tok, model.audio_lengths, model.speech_bos, None, True, prompt_only=True)
    out = model.generate(**{k: inp[k] for k in ("input_ids", "kinds", "attention_mask", "position_ids", "feats",
                                               "feats_lengths")}, speak=inp["speak"], conf=conf)[0]
    assert state.text_ids == out["text_ids"] and state.speech_ids == out["speech_ids"]
    assert [t for p, t in steps if p == "text"] == state.text_ids
    assert [t for p, t in steps if p == "speech"] == state.speech_ids
    assert len(state.text_ids) + len(state.speech_ids) > 0
    assert find_violations(state.speech_ids, blocker) == []
    if ngram:
        assert repeated_ngrams(state.text_ids, ngram) == 0, state.text_ids
        loose = model.generate(**{k: inp[k] for k in ("input_ids", "kinds", "attention_mask", "position_ids",
                                                      "feats", "feats_lengths")}, speak=inp["speak"],
                               conf=GenerateConf(max_text_tokens=15, max_speech_tokens=0))[0]
        assert repeated_ngrams(loose["text_ids"], ngram) > 0, loose["text_ids"]  # the blocking changed something


@pytest.mark.parametrize("task", ["s2s_think", "s2s_chat", "s2t_chat", "asr", "tag", "tts", "t2t"])
def test_first_turn_is_the_training_prompt(random_loaded, task):
    tok, model = random_loaded.tokenizer, random_loaded.model
    rec = {"key": "k", "text": "hello there", "response": "hi, how are you?", "labels": {"age": "adult"},
           "response_tokens": [1, 2], "think": "x"}
    ex = build_example(rec, task, tok, None, True, model.speech_bos).prompt()
    audio = task not in ("tts", "t2t")
    frames = torch.zeros(7, 32)
    want = flatten(ex, 7 if audio else None)
    user = {"tts": rec["response"], "t2t": rec["text"]}.get(task, user_instruction(task))
    got = ContextBuilder(tok, model.speech_bos).user_turn(system_prompt(task), user, frames if audio else None)
    assert got.ids == want.ids and got.kinds == want.kinds


# ------------------------------------------------------------------------------------------------ events
def test_memorised_turn_streams_think_reply_tokens_audio(memorised):
    loaded, recs, _ = memorised
    rec = recs[0]
    eng = engine(loaded)
    events = list(eng.session().stream("s2s_think", audio=read_wav(rec["wav"])))
    kinds = [e.kind for e in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1
    res = events[-1].result
    gold_think = rec["think"]
    assert res.think == gold_think and res.reply == rec["response"] and res.finished
    assert res.speech_tokens == rec["response_tokens"]
    # order: CoT deltas, CoT done, reply deltas, reply done, then speech
    assert kinds.index("think_done") < kinds.index("reply_delta") < kinds.index("reply_done") < kinds.index("audio")
    assert max(i for i, k in enumerate(kinds) if k == "think_delta") < kinds.index("think_done")
    assert "".join(e.text for e in events if e.kind == "think_delta") == gold_think
    assert "".join(e.text for e in events if e.kind == "reply_delta") == rec["response"]
    assert sum(e.kind == "think_delta" for e in events) > 10  # streamed token by token, not in one piece
    assert [t for e in events if e.kind == "speech_tokens" for t in e.tokens] == rec["response_tokens"]
    audio = [e.audio for e in events if e.kind == "audio"]
    assert all(e.sample_rate == 16000 for e in events if e.kind == "audio")
    assert sum(a.size for a in audio) == eng.token2wav.expected_samples(len(rec["response_tokens"]))
    np.testing.assert_array_equal(res.audio, np.concatenate(audio))
    t = res.timings
    assert 0 < t["encode_s"] <= t["prefill_s"] <= t["first_text_s"] <= t["text_done_s"] <= t["first_speech_s"]
    assert t["first_speech_s"] <= t["first_audio_s"] <= t["total_s"]
    assert t["text_tokens"] == len(loaded.tokenizer.encode(f"{THINK_BEGIN}{gold_think}{THINK_END}{rec['response']}"))


def test_speech_token_events_follow_a_growing_chunk_schedule(random_loaded):
    eng = engine(random_loaded, generate=GenerateConf(max_text_tokens=5, max_speech_tokens=60))
    eng.token2wav.streaming = dataclasses.replace(eng.token2wav.streaming, hop_growth=2.0, max_hop=16)
    events = list(eng.session().stream("s2s_chat", audio=(tone(1.0), 16000)))
    groups = [len(e.tokens) for e in events if e.kind == "speech_tokens"]
    n = len(events[-1].result.speech_tokens)
    assert n > 6 + 4 + 8 and sum(groups) == n
    sizes = [6, 4, 8] + [16] * 10  # first_chunk 6, hop 4 doubling up to 16
    full = [s for i, s in enumerate(sizes) if sum(sizes[: i + 1]) <= n]
    assert groups[: len(full)] == full and sum(groups[len(full):]) == n - sum(full)
    assert sum(e.audio.size for e in events if e.kind == "audio") == eng.token2wav.expected_samples(n)


def test_streaming_and_whole_synthesis_give_the_same_reply(memorised):
    loaded, recs, _ = memorised
    audio = read_wav(recs[0]["wav"])
    streamed = engine(loaded).session().respond("s2s_think", audio=audio)
    whole = engine(loaded, stream_audio=False).session().respond("s2s_think", audio=audio)
    assert streamed.speech_tokens == whole.speech_tokens and streamed.reply == whole.reply
    assert streamed.audio.size == whole.audio.size
    assert np.abs(streamed.audio - whole.audio).mean() < 0.05 * (np.abs(whole.audio).mean() + 1e-3) + 0.05


def test_threaded_and_inline_synthesis_give_the_same_audio(memorised):
    loaded, recs, _ = memorised
    audio = read_wav(recs[0]["wav"])
    inline = engine(loaded).session().respond("s2s_think", audio=audio)
    threaded = engine(loaded, synth_thread=True).session().respond("s2s_think", audio=audio)
    np.testing.assert_array_equal(inline.audio, threaded.audio)


def test_tasks_without_thinking_asr_tts(memorised):
    loaded, recs, _ = memorised
    rec = recs[0]
    sess = engine(loaded).session()
    chat = sess.respond("s2s_chat", audio=read_wav(rec["wav"]))
    assert chat.think == "" and chat.reply == rec["response"] and chat.speech_tokens == rec["response_tokens"]
    asr = engine(loaded).session().respond("asr", audio=read_wav(rec["wav"]))
    assert asr.reply == rec["text"] and asr.speech_tokens == [] and asr.audio is None
    tts = engine(loaded).session().respond("tts", text=rec["response"])
    assert tts.text == "" and tts.speech_tokens == rec["response_tokens"] and tts.audio.size > 0


def test_rate_and_width_of_the_input_do_not_matter(memorised):
    loaded, recs, _ = memorised
    wav, sr = read_wav(recs[0]["wav"])
    ref = engine(loaded).session().respond("asr", audio=(wav, sr))
    pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16)
    import soxr

    up = soxr.resample(wav, sr, 44100).astype(np.float32)
    stereo = np.stack([up, up], 1)
    res = engine(loaded).session().respond("asr", audio=(stereo, 44100))
    res16 = engine(loaded).session().respond("asr", audio=(pcm, sr))
    assert res.reply == ref.reply == res16.reply == recs[0]["text"]


# ------------------------------------------------------------------------------------------------ cancel
def test_cancel_stops_before_the_next_token_and_keeps_history(memorised):
    loaded, recs, _ = memorised
    audio = read_wav(recs[0]["wav"])
    sess = engine(loaded).session()
    events = []
    for ev in sess.stream("s2s_think", audio=audio):
        events.append(ev)
        if ev.kind == "think_delta":
            sess.cancel()
    res = events[-1].result
    first = next(e.text for e in events if e.kind == "think_delta")
    assert res.cancelled and not res.finished
    assert res.think == first.strip() and res.reply == ""  # nothing was decoded after the cancelling token
    assert res.speech_tokens == [] and res.audio is None and [e.kind for e in events][-2:] == ["think_delta", "done"]
    assert sess.turns == [] and sess.context_length() == 0
    again = sess.respond("s2s_think", audio=audio)  # the flag is cleared for the next turn
    assert again.finished and again.reply == recs[0]["response"] and again.history_turns == 0


def test_cancel_from_another_thread(random_loaded, memorised):
    rec = memorised[1][0]
    eng = engine(random_loaded, generate=GenerateConf(max_text_tokens=5000, max_speech_tokens=0))
    sess = eng.session()
    timer = threading.Timer(0.3, sess.cancel)  # the turn has started by then (it would run for many seconds)
    timer.start()
    res = sess.respond("s2t_chat", audio=read_wav(rec["wav"]))
    timer.join()
    assert res.cancelled and 0 < res.timings["text_tokens"] < 5000


def test_cancel_during_speech_keeps_the_history_unchanged(memorised):
    loaded, recs, _ = memorised
    audio = read_wav(recs[0]["wav"])
    sess = engine(loaded, synth_thread=True).session()
    first = sess.respond("s2s_think", audio=audio)
    length = sess.context_length()
    res = sess.respond("s2s_think", audio=audio,
                       on_event=lambda ev: sess.cancel() if ev.kind == "speech_tokens" else None)
    assert res.cancelled and 0 < len(res.speech_tokens) < 30
    assert len(sess.turns) == 1 and sess.turns[0].reply == first.reply and sess.context_length() == length
    for t in threading.enumerate():  # the token-to-wave worker of the cancelled turn has stopped
        if t.name == "token2wav":
            t.join(5)
            assert not t.is_alive()


def test_abandoned_turn_releases_the_session(memorised):
    loaded, recs, _ = memorised
    audio = read_wav(recs[0]["wav"])
    sess = engine(loaded, busy_timeout_s=0.2).session()
    running = sess.stream("s2s_think", audio=audio)
    next(running)
    with pytest.raises(SessionBusyError, match="still running"):
        sess.respond("s2s_think", audio=audio)
    running.close()  # e.g. the browser went away
    assert sess.turns == [] and sess.context_length() == 0
    assert sess.respond("s2s_think", audio=audio).finished


# ------------------------------------------------------------------------------------------------ history
def test_history_is_cached_and_equals_a_rebuilt_context(random_loaded, memorised):
    rec = memorised[1][0]
    audio = read_wav(rec["wav"])
    conf = dict(generate=GenerateConf(max_text_tokens=8, max_speech_tokens=0), max_history_turns=3)
    a = engine(random_loaded, **conf).session()
    first = a.respond("s2t_chat", audio=audio)
    assert first.history_turns == 0 and len(a.turns) == 1
    cached_len = a.context_length()
    builder = a._history_builder("s2t_chat")
    assert cached_len == len(builder)
    second = a.respond("s2t_chat", audio=(tone(0.7), 16000))
    b = engine(random_loaded, **conf).session()
    b.turns = list(a.turns[:1])  # same history, no cache: rebuilt from the kept frames
    rebuilt = b.respond("s2t_chat", audio=(tone(0.7), 16000))
    assert second.history_turns == rebuilt.history_turns == 1
    assert second.text == rebuilt.text
    assert second.timings["prompt_tokens"] == rebuilt.timings["prompt_tokens"] == rebuilt.timings["fed_tokens"]
    assert second.timings["fed_tokens"] == second.timings["prompt_tokens"] - cached_len  # only the new turn was fed


def test_history_keeps_the_last_n_turns(random_loaded):
    conf = dict(generate=GenerateConf(max_text_tokens=4, max_speech_tokens=0), max_history_turns=2)
    sess = engine(random_loaded, **conf).session()
    seen = []
    for i, f0 in enumerate((150.0, 250.0, 350.0, 450.0)):
        res = sess.respond("s2t_chat", audio=(tone(0.6, f0=f0), 16000))
        seen.append(res.history_turns)
        assert len(sess.turns) == min(i + 1, 2)
    assert seen == [0, 1, 2, 2]
    kept = [t.frames for t in sess.turns]
    fresh = engine(random_loaded, **conf).session()
    fresh_frames = [fresh.engine.encode(tone(0.6, f0=f0)) for f0 in (350.0, 450.0)]
    for k, f in zip(kept, fresh_frames):
        torch.testing.assert_close(k, f)
    # the context is rebuilt from the two kept turns only
    sess.respond("s2t_chat", audio=(tone(0.6), 16000))
    assert len(sess.turns) == 2
    sess.reset()
    assert sess.turns == [] and sess.context_length() == 0
    no_history = engine(random_loaded, max_history_turns=0, generate=conf["generate"]).session()
    no_history.respond("s2t_chat", audio=(tone(0.6), 16000))
    assert no_history.turns == [] and no_history.respond("s2t_chat", audio=(tone(0.6), 16000)).history_turns == 0


def test_understanding_tasks_leave_the_history_alone(random_loaded):
    conf = dict(generate=GenerateConf(max_text_tokens=4, max_speech_tokens=3))
    sess = engine(random_loaded, **conf).session()
    sess.respond("s2t_chat", audio=(tone(0.6), 16000))
    length = sess.context_length()
    for task, kw in (("asr", {"audio": (tone(0.5), 16000)}), ("tag", {"audio": (tone(0.5), 16000)}),
                     ("tts", {"text": "hello"})):
        assert sess.respond(task, **kw).history_turns == 0
    assert len(sess.turns) == 1 and sess.context_length() == length


# ------------------------------------------------------------------------------------------------ inputs
def test_bad_inputs_are_named(random_loaded, tmp_path):
    sess = engine(random_loaded).session()
    with pytest.raises(InputAudioError, match="empty"):
        sess.stream("s2s_think", audio=(np.zeros(0, np.float32), 16000))
    with pytest.raises(InputAudioError, match="too long"):
        sess.stream("s2s_think", audio=(np.zeros(31 * 16000, np.float32), 16000))
    with pytest.raises(InputAudioError, match="too short"):
        sess.stream("s2s_think", audio=(np.zeros(100, np.float32), 16000))
    with pytest.raises(InputAudioError, match="NaN"):
        sess.stream("asr", audio=(np.full(8000, np.nan, np.float32), 16000))
    with pytest.raises(InputAudioError, match="needs audio"):
        sess.stream("asr")
    with pytest.raises(ValueError, match="needs text"):
        sess.stream("tts", text="  ")
    with pytest.raises(ValueError, match="unknown task"):
        sess.stream("sing", audio=(tone(1.0), 16000))
    with pytest.raises(InputAudioError, match="sample rate"):
        prepare_audio(tone(1.0), 0)
    text_file = tmp_path / "notes.wav"
    text_file.write_text("this is not audio")
    with pytest.raises(InputAudioError, match="notes.wav is not an audio file"):
        load_user_audio(text_file)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(InputAudioError, match="empty"):
        load_user_audio(empty)
    with pytest.raises(InputAudioError, match="no such file"):
        load_user_audio(tmp_path / "missing.wav")
    assert sess.turns == [] and sess.context_length() == 0


def test_prepare_audio_resamples_and_scales():
    out = prepare_audio((tone(1.0, 8000) * 32767).astype(np.int16), 8000)
    assert out.dtype == np.float32 and out.size == 16000 and 0.25 < np.abs(out).max() < 0.35
    stereo = np.stack([tone(0.5, 48000), -tone(0.5, 48000)], 1)
    assert np.abs(prepare_audio(stereo, 48000)).max() < 1e-6 and prepare_audio(stereo, 48000).size == 8000


def test_engine_rejects_a_token2wav_with_fewer_codes(random_loaded):
    from test.token2wav.fixtures import tiny_conf
    from wenet_echat.token2wav import build_token2wav

    conf = tiny_conf()
    conf["token2wav_conf"]["codebook_size"] = 8
    with pytest.raises(ValueError, match="16 speech codes but the token2wav model knows 8"):
        ChatEngine(random_loaded, build_token2wav(conf))


def test_missing_model_dir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ChatEngine.from_dirs(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="train.yaml"):
        ChatEngine.from_dirs(tmp_path)


# ------------------------------------------------------------------------------------------------ text split
def test_think_splitter_holds_back_partial_markers():
    text = f"{THINK_BEGIN}the user said: hi, age: <adult>{THINK_END}Hello there!"
    sp = ThinkSplitter()
    events = []
    for i in range(1, len(text) + 1):
        events += sp.push(text[:i])
    think = "".join(t for k, t in events if k == "think_delta")
    reply = "".join(t for k, t in events if k == "reply_delta")
    assert (think, reply) == split_output(text)
    assert "<" not in think.replace("<adult>", "") and [k for k, _ in events].count("think_done") == 1
    plain = ThinkSplitter()
    assert plain.push("<th") == [] and plain.push("<tho") == [("reply_delta", "<tho")]


# ------------------------------------------------------------------------------------------------ VAD
def test_vad_missing_package_is_a_clear_error(monkeypatch):
    from wenet_echat.infer import vad

    monkeypatch.setitem(sys.modules, "silero_vad", None)
    with pytest.raises(vad.VadUnavailableError, match="pip install"):
        vad.load_vad_model()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_end_of_turn_detection_splits_two_utterances(tmp_path):
    pytest.importorskip("silero_vad")
    from wenet_echat.infer.vad import EndOfTurnDetector, split_turns

    parts = []
    for i, sentence in enumerate(("I lost my keys again and I feel sad.", "What a lovely sunny day it is.")):
        path = tmp_path / f"{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(path), sentence], check=True)
        parts.append(load_user_audio(path))
    silence = np.zeros(16000, np.float32)
    wav = np.concatenate([silence[:4000], parts[0], silence, parts[1], silence[:4000]])
    turns = split_turns(wav, min_silence_ms=500)
    assert len(turns) == 2
    for turn, part in zip(turns, parts):
        assert abs(turn.size - part.size) < 0.5 * 16000
    det = EndOfTurnDetector(min_silence_ms=500)
    assert det.push(silence) == [] and not det.in_speech and det.flush() is None
