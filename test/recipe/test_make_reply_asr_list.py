"""local/make_reply_asr_list.py: one record per distinct reply audio, for reply ASR, resynthesis and TTS scoring."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("make_reply_asr_list",
                                               ROOT / "egs/echat/local/make_reply_asr_list.py")
mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mod)


def _records(tmp_path: Path) -> list[dict]:
    wavs = []
    for i, n in enumerate([16000, 8000]):
        wav = tmp_path / f"reply{i}.wav"
        sf.write(wav, np.zeros(n, dtype=np.float32), 16000)
        wavs.append(str(wav))
    base = {"wav": "u.wav", "task": ["s2s_think"], "text": "hi", "response_emotion": "caring"}
    return [dict(base, key="a", response="First reply.", response_wav=wavs[0], response_tokens=[1, 2, 3]),
            dict(base, key="b", response="First reply.", response_wav=wavs[0], response_tokens=[1, 2, 3]),
            dict(base, key="c", response="Second one.", response_wav=wavs[1]),
            dict(base, key="d", response="", response_wav=wavs[1])]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_one_record_per_reply_wav_with_the_tasks_asked(tmp_path):
    src, out = tmp_path / "in.list", tmp_path / "out" / "data.list"
    _write(src, _records(tmp_path))
    assert mod.main([str(src), str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["First reply.", "Second one."]
    assert [r["duration"] for r in rows] == [1.0, 0.5]
    assert all(r["task"] == ["asr"] and r["response"] == r["text"] for r in rows)
    assert rows[0]["response_tokens"] == [1, 2, 3] and "response_tokens" not in rows[1]
    assert rows[0]["key"].startswith("reply-") and rows[0]["key"] != rows[1]["key"]
    assert mod.main([str(src), str(out), "--tasks", "asr", "tts"]) == 0
    again = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["task"] for r in again] == [["asr", "tts"]] * 2
    assert [r["key"] for r in again] == [r["key"] for r in rows]  # keys depend on the audio only


def test_bad_inputs_are_named(tmp_path, capsys):
    src, out = tmp_path / "in.list", tmp_path / "data.list"
    rows = _records(tmp_path)
    rows[2]["response_wav"] = str(tmp_path / "missing.wav")
    _write(src, rows)
    assert mod.main([str(src), str(out)]) == 1
    assert "record 'c': cannot read response_wav" in capsys.readouterr().err and not out.exists()
    _write(src, [dict(r, response="") for r in rows])
    assert mod.main([str(src), str(out)]) == 1
    assert "no record has both response_wav and response" in capsys.readouterr().err
