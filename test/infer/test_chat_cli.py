import io
import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from wenet_echat.bin import chat


def test_one_turn_prints_think_and_reply_and_writes_the_wav(chat_dirs, tmp_path, capsys):
    model_dir, t2w_dir, rec = chat_dirs
    out = tmp_path / "reply.wav"
    log = tmp_path / "chat.jsonl"
    assert chat.main(["--model_dir", str(model_dir), "--token2wav_dir", str(t2w_dir), "--wav", rec["wav"],
                      "--out", str(out), "--log", str(log), "--max_text_tokens", "120",
                      "--max_speech_tokens", "30"]) == 0
    text = capsys.readouterr().out
    assert f"think: {rec['think']}\n" in text and f"reply: {rec['response']}\n" in text
    assert "first audio" in text and str(out) in text
    wav, sr = sf.read(out)
    assert sr == 16000 and wav.size == 160 * round(len(rec["response_tokens"]) * 100 / 25)
    row = json.loads(log.read_text())
    assert row["turn"] == 1 and row["input"] == rec["wav"] and row["reply"] == rec["response"]
    assert row["reply_wav"] == str(out) and row["timings"]["first_audio_s"] > 0


def test_tts_and_quiet(chat_dirs, tmp_path, capsys):
    model_dir, t2w_dir, rec = chat_dirs
    out = tmp_path / "tts.wav"
    assert chat.main(["--model_dir", str(model_dir), "--token2wav_dir", str(t2w_dir), "--task", "tts",
                      "--text", rec["response"], "--out", str(out), "--quiet", "--no_stream"]) == 0
    assert "[tts]" in capsys.readouterr().out and sf.info(str(out)).frames > 0


def test_interactive_conversation(chat_dirs, tmp_path, capsys, monkeypatch):
    model_dir, t2w_dir, rec = chat_dirs
    lines = [rec["wav"], str(tmp_path / "missing.wav"), ":task sing", rec["wav"], ":reset", ":task tts",
             rec["response"], ":quit", rec["wav"]]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    log = tmp_path / "session.jsonl"
    assert chat.main(["--model_dir", str(model_dir), "--token2wav_dir", str(t2w_dir), "--interactive",
                      "--out_dir", str(tmp_path / "turns"), "--log", str(log), "--max_text_tokens", "120",
                      "--max_speech_tokens", "30", "--history", "2"]) == 0
    text = capsys.readouterr().out
    assert "missing.wav: no such file" in text and "unknown task 'sing'" in text and "history cleared" in text
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["task"] for r in rows] == ["s2s_think", "s2s_think", "tts"]  # nothing after :quit
    assert [r["history_turns"] for r in rows] == [0, 1, 0]
    assert rows[0]["reply"] == rec["response"]
    assert sorted(p.name for p in (tmp_path / "turns").iterdir()) == ["turn_001.wav", "turn_002.wav", "turn_003.wav"]


def test_errors_are_named(chat_dirs, tmp_path):
    model_dir, _, rec = chat_dirs
    with pytest.raises(SystemExit, match="does not exist"):
        chat.main(["--model_dir", str(tmp_path / "nope"), "--wav", rec["wav"]])
    with pytest.raises(SystemExit, match="needs --text"):
        chat.main(["--model_dir", str(model_dir), "--task", "tts"])
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not really")
    with pytest.raises(SystemExit, match="bad.wav is not an audio file that can be read"):
        chat.main(["--model_dir", str(model_dir), "--wav", str(bad)])


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_vad_cuts_a_recording_into_turns(chat_dirs, tmp_path, capsys):
    pytest.importorskip("silero_vad")
    model_dir, t2w_dir, _ = chat_dirs
    parts = []
    for i, sentence in enumerate(("My exam is tomorrow and I am scared.", "The train was late again today.")):
        path = tmp_path / f"{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(path), sentence], check=True)
        wav, sr = sf.read(path, dtype="float32")
        parts += [wav, np.zeros(sr, np.float32)]
    sf.write(tmp_path / "long.wav", np.concatenate(parts), sr)
    log = tmp_path / "vad.jsonl"
    assert chat.main(["--model_dir", str(model_dir), "--token2wav_dir", str(t2w_dir),
                      "--wav", str(tmp_path / "long.wav"), "--vad", "--vad_silence_ms", "500",
                      "--out_dir", str(tmp_path / "turns"), "--log", str(log),
                      "--max_text_tokens", "10", "--max_speech_tokens", "10", "--history", "0"]) == 0
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["turn"] for r in rows] == [1, 2]
    for r, part in zip(rows, parts[::2]):
        assert r["input"].endswith(f"user_{r['turn']:03d}.wav")
        assert abs(sf.info(r["input"]).duration - part.size / sr) < 0.8
