import numpy as np
import pytest

from wenet_echat.dataset import processor as P

from .conftest import record, write_wav


def run(gen):
    return list(gen)


def test_parse_reasons():
    stats = P.SkipStats()
    data = [{"src": "d.list:1", "line": b'{"key": "a"}'}, {"src": "d.list:2", "line": b"{oops"},
            {"src": "d.list:3", "line": b'{"key": "\xff"}'}, {"src": "d.list:4", "line": b"[1]"},
            {"src": "s.tar:k9", "key": "k9", "json": b'{"task": "asr"}'}]
    out = run(P.parse(data, stats))
    assert [s["key"] for s in out] == ["a", "k9"] and out[1]["record"] == {"task": "asr", "key": "k9"}
    assert stats.skipped == {"invalid_json": 2, "not_utf8": 1}


def test_strict_names_location_and_reason():
    stats = P.SkipStats(strict=True)
    with pytest.raises(P.DataError, match=r"^d.list:7: invalid_json: invalid JSON"):
        run(P.parse([{"src": "d.list:7", "line": b"{"}], stats))
    rec = {"key": "u1", "task": "asr", "wav": "x.wav"}  # no text
    with pytest.raises(P.DataError, match=r"d.list:2: u1: bad_record: task 'asr' needs field 'text'"):
        run(P.validate([{"src": "d.list:2", "key": "u1", "record": rec}], stats))


def test_validate_sets_tasks():
    stats = P.SkipStats()
    rec = {"key": "u", "wav": "a.wav", "text": "t", "response": "r", "response_tokens": [1]}
    out = run(P.validate([{"src": "l:1", "key": "u", "record": rec}], stats))
    assert out[0]["tasks"] == ["asr", "s2t_chat", "t2t", "tts", "s2s_chat"]


def test_load_audio_resample_downmix_missing(tmp_path):
    stats = P.SkipStats()
    ok = write_wav(tmp_path / "a.wav", 0.5, 16000)
    hi = write_wav(tmp_path / "b.wav", 0.5, 22050)
    st = write_wav(tmp_path / "c.wav", 0.5, 16000, channels=2)
    bad = tmp_path / "d.wav"
    bad.write_bytes(b"not audio at all")
    data = [{"src": f"l:{i}", "key": k, "record": record(k, w)}
            for i, (k, w) in enumerate([("a", ok), ("b", hi), ("c", st), ("d", str(bad)), ("e", "/no/such.wav")])]
    out = run(P.load_audio(data, stats, 16000))
    assert [s["key"] for s in out] == ["a", "b", "c"]
    assert [len(s["wav"]) for s in out] == [8000, 8000, 8000]
    assert all(s["wav"].dtype == np.float32 and s["sample_rate"] == 16000 for s in out)
    assert stats.skipped == {"unreadable": 1, "missing": 1}
    assert stats.notes == {"resampled": 1, "downmixed": 1}


def test_filter_reasons():
    stats = P.SkipStats()

    def s(key, secs, **rec):
        return {"src": "l:1", "key": key, "wav": np.zeros(int(secs * 100), np.float32), "sample_rate": 100,
                "record": {"key": key, **rec}}

    data = [s("ok", 1.0, text="abc", response_tokens=[1, 2]), s("short", 0.05), s("long", 9.0),
            s("txt", 1.0, text="x" * 11), s("tok", 1.0, response_tokens=[1] * 6),
            {"src": "l:2", "key": "noaudio", "record": {"key": "noaudio"}}]
    out = run(P.filter_samples(data, stats, min_duration=0.1, max_duration=5, max_text_len=10,
                               max_response_tokens=5))
    assert [x["key"] for x in out] == ["ok", "noaudio"]
    assert stats.skipped == {"too_short": 1, "too_long": 1, "text_too_long": 1, "tokens_too_long": 1}


def test_tokenize():
    class Tok:
        def encode(self, text):
            return [ord(c) for c in text]

    history = [{"text": "hi", "response": "hey"}, {"text": "x", "response": "yz"}]
    out = run(P.tokenize([{"record": {"text": "ab", "response": "c"}}, {"record": {}},
                          {"record": {"text": "ab", "history": history}}], Tok()))
    assert out[0]["text_ids"] == [97, 98] and out[0]["response_ids"] == [99] and "text_ids" not in out[1]
    assert "history_tokens" not in out[0] and out[2]["history_tokens"] == 2 + 3 + 1 + 2
