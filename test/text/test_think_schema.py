import pytest

from wenet_echat.dataset.schema import check_record, missing_fields, record_tasks
from wenet_echat.text.labels import EVENTS, REPLY_EMOTIONS, TASKS
from wenet_echat.text.think import MASK_TAG, build_tag_think, parse_tag_think, wrap_think

LABELS = {"age": "old", "gender": "female", "emotion": "sad", "event": "alarm"}


def test_tag_think_round_trip():
    body = build_tag_think("I lost my keys, again", LABELS, "comforting")
    assert body.startswith("the user said: I lost my keys, again, age: <old>, gender: <female>")
    assert "sound event: <alarm>, predicted reply emotion: <comforting>;" in body
    parsed = parse_tag_think(wrap_think(body) + " Oh no, let us look together.")
    assert parsed == {"transcript": "I lost my keys, again", **LABELS, "response_emotion": "comforting"}


def test_tag_think_unknown_label_is_masked_and_parsed_as_none():
    body = build_tag_think("hello", {"age": None, "gender": "male", "emotion": "happy", "event": "none"}, None)
    assert body.count(MASK_TAG) == 2
    parsed = parse_tag_think(body)
    assert parsed["age"] is None and parsed["response_emotion"] is None and parsed["gender"] == "male"


def test_parse_rejects_values_outside_vocab():
    parsed = parse_tag_think("the user said: hi, age: <teen>, gender: <male>, emotion: <bored>")
    assert parsed["age"] is None and parsed["emotion"] is None and parsed["gender"] == "male"
    assert parsed["event"] is None


def _full_record(**kw):
    rec = {
        "key": "utt1", "wav": "a.wav", "duration": 2.5, "text": "hi", "labels": dict(LABELS),
        "response": "Hello!", "response_emotion": "pleasant", "response_wav": "r.wav",
        "think": "t", "category": "multi",
    }
    rec.update(kw)
    return rec


def test_valid_record_serves_every_task():
    rec = _full_record()
    assert check_record(rec) == []
    assert check_record(dict(rec, history=[{"text": "hi", "response": "hello"}])) == []
    assert record_tasks(rec) == list(TASKS)
    assert "none" in EVENTS and "comforting" in REPLY_EMOTIONS


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"key": ""}, "missing field 'key'"),
        ({"key": "a b"}, "contains whitespace"),
        ({"duration": -1}, "duration must be > 0"),
        ({"duration": "2"}, "field 'duration' must be int/float, got str"),
        ({"task": "chat"}, "unknown task 'chat'"),
        ({"task": ["asr", "tts"], "response": ""}, "task 'tts' needs field 'response'"),
        ({"labels": {"emotion": "bored"}}, "label emotion='bored' not in"),
        ({"labels": {"mood": "ok"}}, "unknown label 'mood'"),
        ({"response_emotion": "cheerful"}, "response_emotion 'cheerful' not in"),
        ({"category": "style"}, "category 'style' not in"),
        ({"response_tokens": [1, -2]}, "non-negative integers"),
        ({"text": "bad \ufffd byte"}, "U+FFFD"),
        ({"history": {"text": "hi"}}, "field 'history' must be list"),
        ({"history": ["hi"]}, "history[0] must be an object with 'text' and 'response', got str"),
        ({"history": [{"text": "hi", "response": "hello"}, {"text": " "}]}, "history[1].text must be a non-empty"),
        ({"history": [{"text": "hi", "response": 3}]}, "history[0].response must be a non-empty string"),
    ],
)
def test_record_problems(change, problem):
    problems = check_record(_full_record(**change))
    assert any(problem in p for p in problems), problems


def test_missing_fields_alternatives():
    rec = {"key": "k", "response": "hi"}
    assert missing_fields(rec, "tts") == ["response_tokens|response_wav"]
    assert missing_fields(dict(rec, response_tokens=[1, 2]), "tts") == []
    assert record_tasks(dict(rec, response_tokens=[1])) == ["tts"]


def test_natural_think_round_trips_every_cue():
    from wenet_echat.text.labels import AGES, EMOTIONS, EVENTS, GENDERS, REPLY_EMOTIONS
    from wenet_echat.text.think import build_natural_think, parse_natural_think, parse_think

    for i, (age, gender, emo, event, reply) in enumerate(zip(AGES * 5, GENDERS * 8, EMOTIONS * 3, EVENTS,
                                                            REPLY_EMOTIONS * 2)):
        labels = {"age": age, "gender": gender, "emotion": emo, "event": event}
        text = build_natural_think(f"Sentence number {i}, with a comma.", labels, reply)
        assert "<" not in text  # no tags in the natural form
        got = parse_natural_think(text)
        assert got == {**labels, "transcript": f"Sentence number {i}, with a comma.", "response_emotion": reply}
        assert parse_think(text) == got
    partial = build_natural_think("Hi.", {"age": None, "gender": "female", "emotion": None, "event": "rain"}, None)
    assert parse_natural_think(partial) == {"transcript": "Hi.", "age": None, "gender": "female", "emotion": None,
                                            "event": "rain", "response_emotion": None}


def test_think_style_in_targets():
    from wenet_echat.text.targets import target_text

    rec = {"text": "I lost my keys.", "labels": {"age": "old", "gender": "male", "emotion": "sad", "event": "none"},
           "response": "Oh no.", "response_emotion": "comforting", "think": "a gold paragraph"}
    assert target_text(rec, "s2s_think") == "<think>a gold paragraph<think end>Oh no."
    assert target_text(rec, "s2s_think", think_style="tag").startswith("<think>the user said: I lost my keys.")
    natural = target_text(rec, "s2s_think", think_style="natural")
    assert natural.startswith("<think>This sounds like an elderly man") and natural.endswith("<think end>Oh no.")
    assert target_text(rec, "s2s_think", think=False) == "Oh no."


def test_cue_think_leaves_out_the_transcript_and_parses_back():
    from wenet_echat.text.targets import target_text
    from wenet_echat.text.think import parse_think

    rec = {"text": "I lost my keys.", "labels": LABELS, "response": "Oh no.", "response_emotion": "comforting",
           "think": "a gold paragraph"}
    cues = target_text(rec, "s2s_think", think_style="cues")
    assert cues.startswith("<think>age: <old>, gender: <female>, emotion: <sad>, sound event: <alarm>")
    assert "keys" not in cues and cues.endswith("<think end>Oh no.")
    assert parse_think(cues) == {"transcript": None, **LABELS, "response_emotion": "comforting"}
    with pytest.raises(ValueError, match="think_style must be one of auto, tag, natural, cues"):
        target_text(rec, "s2s_think", think_style="paragraph")
