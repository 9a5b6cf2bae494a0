import json
import tarfile

import kaldiio
import numpy as np
import torch

from wenet_echat.audio.features import compute_features
from wenet_echat.audio.io import load_audio
from wenet_echat.bin import compute_feats
from wenet_echat.dataset.dataset import EChatDataset, iterate_batches

from .conftest import load_tool, write_wav


def make_list(tmp_path, n=5, extra_lines=()):
    (tmp_path / "w").mkdir(exist_ok=True)
    lines = [json.dumps({"key": f"u{i}", "task": "asr", "text": f"t{i}",
                         "wav": write_wav(tmp_path / "w" / f"u{i}.wav", 0.2 + 0.1 * i)}) for i in range(n)]
    lines += list(extra_lines)
    path = tmp_path / "data.list"
    path.write_text("".join(x + "\n" for x in lines))
    return str(path)


def test_make_shard_list(tmp_path, capsys):
    tool = load_tool("make_shard_list")
    path = make_list(tmp_path, 5)
    out_list = tmp_path / "shards.list"
    assert tool.main(["--num_utts_per_shard", "2", "--num_threads", "2", path, str(tmp_path / "sh"),
                      str(out_list)]) == 0
    tars = out_list.read_text().split()
    assert len(tars) == 3
    with tarfile.open(tars[0]) as t:
        assert t.getnames() == ["u0.json", "u0.wav", "u1.json", "u1.wav"]
        meta = json.loads(t.extractfile("u1.json").read())
    assert meta == {"key": "u1", "task": "asr", "text": "t1"}
    assert sorted(p.name for p in (tmp_path / "sh").iterdir()) == [f"shards_{i:06d}.tar" for i in range(3)]


def test_make_shard_list_reports_bad_lines(tmp_path, capsys):
    tool = load_tool("make_shard_list")
    path = make_list(tmp_path, 2, extra_lines=['{"key": ', json.dumps({"key": "z", "task": "asr"})])
    assert tool.main([path, str(tmp_path / "sh"), str(tmp_path / "shards.list")]) == 1
    err = capsys.readouterr().err
    assert f"{path}:3: invalid JSON" in err
    assert f"{path}:4: z: task 'asr' needs field 'wav'" in err
    assert not (tmp_path / "shards.list").exists() and not list((tmp_path / "sh").glob("*.tar"))


def test_make_shard_list_unreadable_audio_fails(tmp_path, capsys):
    tool = load_tool("make_shard_list")
    path = make_list(tmp_path, 2, extra_lines=[json.dumps({"key": "q", "task": "asr", "text": "x",
                                                            "wav": str(tmp_path / "none.wav")})])
    assert tool.main([path, str(tmp_path / "sh"), str(tmp_path / "shards.list")]) == 1
    assert f"{path}:3: q: cannot read audio" in capsys.readouterr().err
    assert not (tmp_path / "shards.list").exists()


def test_compute_feats_dump_and_resume(tmp_path):
    path = make_list(tmp_path, 5)
    out = tmp_path / "feats"
    args = ["--data_list", path, "--feats_type", "whisper_log_mel", "--out_dir", str(out), "--nj", "2"]
    assert compute_feats.main(args) == 0
    recs = [json.loads(x) for x in (out / "data.list").read_text().splitlines()]
    assert [r["key"] for r in recs] == [f"u{i}" for i in range(5)]
    scp = dict(line.split(" ", 1) for line in (out / "feats.scp").read_text().splitlines())
    assert [r["feat"] for r in recs] == [scp[f"u{i}"] for i in range(5)]
    for r in recs:
        wav, sr = load_audio(r["wav"], target_sr=16000)
        ref = compute_features("whisper_log_mel", wav, sr, {}).numpy()
        np.testing.assert_array_equal(kaldiio.load_mat(r["feat"]), ref)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("feats.*.ark")}
    assert compute_feats.main(args) == 0  # resume: finished jobs are skipped
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("feats.*.ark")} == mtimes
    # the dumped features feed the dataset exactly like computed ones
    conf = {"shuffle": False, "sort": False, "batch_conf": {"batch_size": 5}}
    a = list(iterate_batches(EChatDataset("raw", path, conf, train=False)))
    b = list(iterate_batches(EChatDataset("raw", str(out / "data.list"), conf, train=False)))
    assert torch.equal(a[0]["feats"], b[0]["feats"]) and a[0]["keys"] == b[0]["keys"]


def test_compute_feats_reports_bad_audio(tmp_path, capsys):
    path = make_list(tmp_path, 1, extra_lines=[json.dumps({"key": "q", "wav": str(tmp_path / "none.wav")})])
    assert compute_feats.main(["--data_list", path, "--out_dir", str(tmp_path / "f")]) == 1
    assert f"{path}:2: q:" in capsys.readouterr().err
    assert not (tmp_path / "f" / "data.list").exists()
