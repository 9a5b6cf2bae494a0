import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("gradio")

from test.token2wav.fixtures import tiny_model as tiny_token2wav  # noqa: E402
from wenet_echat.bin import chat_app  # noqa: E402
from wenet_echat.infer.session import ChatConf, ChatEngine  # noqa: E402
from wenet_echat.model import GenerateConf  # noqa: E402


@pytest.fixture()
def app(memorised):
    loaded = memorised[0]
    conf = ChatConf(generate=GenerateConf(max_text_tokens=120, max_speech_tokens=30))
    return chat_app.ChatApp(ChatEngine(loaded, tiny_token2wav(), conf))


def last(gen):
    out = list(gen)
    return out, out[-1]


def test_spoken_turn_fills_every_output(app, memorised):
    rec = memorised[1][0]
    updates, final = last(app.respond(rec["wav"], "", "s2s_think", None, []))
    chatbot, think, reply, _, whole, status, session, messages = final
    assert think == rec["think"] and reply == rec["response"]
    assert status.startswith("**done**") and "first audio" in status
    rate, samples = whole
    assert rate == 16000 and samples.dtype == np.int16 and samples.size == 160 * 4 * len(rec["response_tokens"])
    assert [m["role"] for m in messages] == ["user", "assistant"] and messages[1]["content"] == rec["response"]
    assert chatbot == messages and len(session.turns) == 1
    assert len(updates) >= 3  # the "thinking" update, streamed text, the final one
    # the next turn of the same tab sees the history
    _, final2 = last(app.respond(rec["wav"], "", "s2s_think", session, messages))
    assert final2[6] is session and len(final2[7]) == 4 and "1 earlier turn(s)" in final2[5]
    cleared = app.reset(session)
    assert cleared[0] == [] and cleared[6].turns == [] and cleared[7] == []


def test_bad_uploads_get_a_message(app, tmp_path):
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("hello")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(31 * 8000, np.float32), 8000)
    for path, message in ((None, "record or upload some audio first"),
                          (str(not_audio), "notes.wav is not an audio file that can be read (wav, flac, ogg or mp3)"),
                          (str(empty), "empty.wav is empty (no samples)"),
                          (str(long), "long.wav is too long (31.0 s; at most 30 s)")):
        out = list(app.respond(path, "", "s2s_think", None, []))
        assert len(out) == 1 and out[0][5] == f"**Error:** {message}", out[0][5]
        assert out[0][7] == []  # nothing added to the conversation
    out = list(app.respond(None, "   ", "tts", None, []))
    assert "type the text" in out[0][5]


def test_other_rates_are_resampled(app, memorised, tmp_path):
    rec = memorised[1][0]
    wav, sr = sf.read(rec["wav"], dtype="float32")
    import soxr

    path = tmp_path / "in44k.wav"
    sf.write(path, soxr.resample(wav, sr, 44100), 44100)
    _, final = last(app.respond(str(path), "", "asr", None, []))
    assert final[2] == rec["text"]


def test_tts_and_text_chat(app, memorised):
    rec = memorised[1][0]
    _, final = last(app.respond(None, rec["response"], "tts", None, []))
    assert final[4][1].size > 0 and final[5].startswith("**done**")
    _, final = last(app.respond(None, "hello", "t2t", None, []))
    assert final[7][0] == {"role": "user", "content": "hello"} and final[4] is None


def test_text_only_model_says_so(memorised):
    app = chat_app.ChatApp(ChatEngine(memorised[0], None, ChatConf(generate=GenerateConf(max_text_tokens=120,
                                                                                         max_speech_tokens=10))))
    _, final = last(app.respond(memorised[1][0]["wav"], "", "s2s_think", None, []))
    assert final[4] is None and "no token2wav model loaded" in final[5] and not app.stream_audio


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="cannot load the model: .*does not exist"):
        chat_app.main(["--model_dir", str(tmp_path / "exp" / "stage3")])


def test_binds_loopback_by_default():
    args = chat_app.get_parser().parse_args(["--model_dir", "x"])
    assert args.host == "127.0.0.1" and args.port == 7860


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_hands_free_turns_end_at_a_pause(app, tmp_path):
    pytest.importorskip("silero_vad")
    import soxr

    path = tmp_path / "said.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "I lost my keys again and I feel sad."], check=True)
    speech, sr = sf.read(path, dtype="float32")
    mic = soxr.resample(np.concatenate([np.zeros(sr // 2, np.float32), speech, np.zeros(2 * sr, np.float32)]),
                        sr, 48000)
    pcm = (mic * 32767).astype(np.int16)  # what the browser microphone sends
    detector, turns, statuses = None, [], []
    for i in range(0, pcm.size, 24000):  # 0.5 s chunks
        turn, detector, status = app.listen((48000, pcm[i:i + 24000]), detector)
        statuses.append(status)
        if isinstance(turn, str):
            turns.append(turn)
    assert len(turns) == 1 and "*end of turn*" in statuses and "*listening…*" in statuses
    cut = sf.info(turns[0])
    assert cut.samplerate == 16000 and abs(cut.duration - speech.size / sr) < 0.8
    _, final = last(app.respond(turns[0], "", "asr", None, []))
    assert final[5].startswith("**")  # answered (the tiny model's transcript is arbitrary here)
