import json
import os

import numpy as np
import pytest
import soundfile as sf

from test.infer.browser import audio_states, headless_chromium
from wenet_echat.bin import make_gallery

SENT = "I lost my keys again."
STATES = [
    {"age": "adult", "gender": "female", "emotion": "happy", "event": "none"},
    {"age": "old", "gender": "male", "emotion": "sad", "event": "none"},
    {"age": "child", "gender": "female", "emotion": "angry", "event": "cough"},
]


def tone(path, f0, seconds=0.4, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), sr)
    return str(path)


@pytest.fixture()
def decoded(tmp_path):
    """A data.list, the hyp.jsonl decoded from it (with reply wavs) and a chat log."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    recs, hyps = [], []
    for i, (text, labels) in enumerate([(SENT, s) for s in STATES] + [("The train was late.", STATES[0]),
                                                                      ("The train was late.", STATES[0])]):
        key = f"utt{i}"
        recs.append({"key": key, "wav": tone(tmp_path / "in" / f"{key}.wav", 150 + 50 * i), "text": text,
                     "labels": labels})
        reply_wav = tone(tmp_path / "out" / f"{key}.wav", 300) if i != 1 else str(tmp_path / "out" / "gone.wav")
        hyps.append({"key": key, "task": "s2s_think", "think": f"the user said: {text}, emotion: <{labels['emotion']}>",
                     "reply": f"Reply {i} <script>alert(1)</script> & more", "reply_wav": reply_wav,
                     "first_text_s": 0.01, "total_s": 0.5})
    hyps.append({"key": "utt0", "task": "asr", "text": SENT})
    (tmp_path / "data.list").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "hyp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hyps))
    log = [{"turn": t + 1, "input": recs[t]["wav"], "task": "s2s_think", "think": "thinking", "reply": f"turn {t}",
            "reply_wav": tone(tmp_path / "out" / f"turn{t}.wav", 400), "timings": {"first_text_s": 0.02,
            "first_audio_s": 0.1 * (t + 1), "total_s": 0.5}} for t in range(2)]
    (tmp_path / "session.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return tmp_path


def run(decoded, out, *extra):
    return make_gallery.main(["--out_dir", str(out), "--hyp", str(decoded / "hyp.jsonl"), "--data_list",
                              str(decoded / "data.list"), "--session", str(decoded / "session.jsonl"), *extra])


def srcs(page):
    import re

    return re.findall(r'<audio controls preload="metadata" src="([^"]+)"', page)


def test_gallery_sections_audio_and_escaping(decoded, tmp_path):
    out = tmp_path / "gallery"
    assert run(decoded, out) == 0
    page = (out / "index.html").read_text()
    for section in ("Empathetic Interaction", "Real-time Spoken Dialogue", "Cross-Scenario"):
        assert section in page
    assert "<script>" not in page and "Reply 0 &lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    # one group: the sentence spoken in three states (the other sentence has one state only)
    group = page.split('id="empathetic"')[1].split('id="dialogue"')[0]
    assert group.count('class="item"') == 3 and "The train was late." not in group
    assert "emotion: sad" in group and "event: cough" in group
    # the conversation with its latency figures
    dialogue = page.split('id="dialogue"')[1].split('id="cross"')[0]
    assert "2 turns; mean time to first audio 150 ms" in dialogue and "200 ms" in dialogue
    cross = page.split('id="cross"')[1]
    for caption in ("age: child", "age: adult", "age: old", "gender: male", "emotion: angry", "event: cough"):
        assert caption in cross
    assert "event: none" not in cross
    # every audio path is relative and exists; the missing reply wav is shown as missing
    paths = srcs(page)
    assert paths and all(not p.startswith("/") and (out / p).is_file() for p in paths)
    assert page.count("(no audio)") >= 1
    assert len(set(paths)) == len(list((out / "audio").iterdir()))  # each source copied once


def test_gallery_links_instead_of_copying(decoded, tmp_path):
    out = tmp_path / "linked"
    assert run(decoded, out, "--link") == 0
    files = list((out / "audio").iterdir())
    assert files and all(f.is_symlink() and not os.path.isabs(os.readlink(f)) and f.exists() for f in files)


def test_gallery_errors_are_named(decoded, tmp_path):
    with pytest.raises(SystemExit, match="needs the --data_list"):
        make_gallery.main(["--out_dir", str(tmp_path / "g"), "--hyp", str(decoded / "hyp.jsonl")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "utt0", "task": "s2s_think"}\nnot json\n')
    with pytest.raises(SystemExit, match=r"bad.jsonl:2: invalid JSON"):
        make_gallery.main(["--out_dir", str(tmp_path / "g"), "--hyp", str(bad), "--data_list",
                           str(decoded / "data.list")])
    stray = tmp_path / "stray.jsonl"
    stray.write_text('{"key": "nope", "task": "s2s_think", "reply": "x"}\n')
    with pytest.raises(SystemExit, match="stray.jsonl:1: key 'nope' is in none of the data lists"):
        make_gallery.main(["--out_dir", str(tmp_path / "g"), "--hyp", str(stray), "--data_list",
                           str(decoded / "data.list")])


@pytest.mark.browser
def test_gallery_audio_loads_in_chromium(decoded, tmp_path):
    out = tmp_path / "gallery"
    assert run(decoded, out) == 0
    driver = headless_chromium()
    try:
        driver.get((out / "index.html").as_uri())
        from selenium.webdriver.support.ui import WebDriverWait

        n = len(srcs((out / "index.html").read_text()))
        WebDriverWait(driver, 30).until(lambda d: all(a["ready"] >= 1 or a["error"] for a in audio_states(d)))
        states = audio_states(driver)
        assert len(states) == n > 5
        assert all(a["error"] is None and a["ready"] >= 1 and a["src"].startswith("file://") for a in states), states
        driver.save_screenshot(str(tmp_path / "gallery.png"))
        assert (tmp_path / "gallery.png").stat().st_size > 0
    finally:
        driver.quit()
