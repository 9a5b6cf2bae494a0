import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from wenet_echat.bin import score_speech

pytest.importorskip("pocketsphinx")
pytest.importorskip("speechmos")
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")

SENTENCES = ["hello world this is a test", "the weather is nice today"]


def speak(path, text, voice="en-us+klatt4"):
    subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(path), text], check=True)
    wav, sr = sf.read(str(path))
    return wav, sr


def test_reference_and_systems_side_by_side(tmp_path):
    recs, scp_clean, scp_noisy = [], [], []
    rng = np.random.default_rng(0)
    for i, text in enumerate(SENTENCES):
        ref = tmp_path / f"ref{i}.wav"
        wav, sr = speak(ref, text)
        noisy = tmp_path / f"noisy{i}.wav"
        sf.write(str(noisy), wav + 0.3 * rng.standard_normal(wav.shape), sr)
        recs.append({"key": f"r{i}", "response": text, "response_wav": str(ref)})
        scp_clean.append(f"r{i} {ref}")
        scp_noisy.append(f"r{i} {noisy}")
    spk_ref = tmp_path / "spk.wav"
    speak(spk_ref, "I am the assistant voice speaking")
    (tmp_path / "ref.list").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "spk.list").write_text(json.dumps({"key": "s", "text": "x", "wav": str(spk_ref)}) + "\n")
    (tmp_path / "clean.scp").write_text("\n".join(scp_clean) + "\n")
    (tmp_path / "noisy.scp").write_text("\n".join(scp_noisy) + "\n")
    out = tmp_path / "res.md"
    assert score_speech.main(["--ref_list", str(tmp_path / "ref.list"), "--system", f"same={tmp_path / 'clean.scp'}",
                              "--system", f"noisy={tmp_path / 'noisy.scp'}", "--spk_ref_list",
                              str(tmp_path / "spk.list"), "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert list(res) == ["reference", "same", "noisy"]
    assert res["same"]["wer"] == res["reference"]["wer"]  # the same audio scores the same
    assert res["noisy"]["dnsmos_ovrl"] < res["reference"]["dnsmos_ovrl"] - 0.5
    assert 0.5 < res["reference"]["spk_sim"] <= 1.0
    assert "| same | 2 |" in out.read_text()
    # two worker processes give the same rows and numbers as one process
    out2 = tmp_path / "res2.md"
    assert score_speech.main(["--ref_list", str(tmp_path / "ref.list"), "--system", f"same={tmp_path / 'clean.scp'}",
                              "--system", f"noisy={tmp_path / 'noisy.scp'}", "--spk_ref_list",
                              str(tmp_path / "spk.list"), "--out", str(out2), "--nj", "2"]) == 0
    res2 = json.loads(out2.with_suffix(".json").read_text())
    for name in res:
        for k, v in res[name].items():
            if k != "seconds":
                assert res2[name][k] == pytest.approx(v, abs=1e-6) if isinstance(v, float) else res2[name][k] == v
    with pytest.raises(KeyError, match="no wav for 1"):
        (tmp_path / "short.scp").write_text(scp_clean[0] + "\n")
        score_speech.main(["--ref_list", str(tmp_path / "ref.list"), "--system", f"x={tmp_path / 'short.scp'}",
                           "--out", str(out)])
