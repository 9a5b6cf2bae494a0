import json

import pytest
import yaml

from wenet_echat.utils.config import apply_override, load_config, save_config
from wenet_echat.utils.fileio import (
    JsonlError,
    atomic_open,
    parse_jsonl_line,
    read_kv,
    write_jsonl,
    write_kv,
)
from wenet_echat.utils.registry import Registry


def test_atomic_open_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write("half-written")
            raise RuntimeError("crash")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # temp file cleaned up
    with atomic_open(path) as f:
        f.write("new\n")
    assert path.read_text() == "new\n"


def test_jsonl_and_kv_round_trip(tmp_path):
    rows = [{"key": "b", "text": "héllo"}, {"key": "a", "text": "x"}]
    assert write_jsonl(tmp_path / "l.jsonl", rows) == 2
    lines = (tmp_path / "l.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == rows
    write_kv(tmp_path / "text", [("b", "two words"), ("a", "one"), ("B", "upper")])
    assert (tmp_path / "text").read_text().splitlines() == ["B upper", "a one", "b two words"]  # C order
    assert read_kv(tmp_path / "text") == {"B": "upper", "a": "one", "b": "two words"}


def test_read_kv_duplicate_names_line(tmp_path):
    (tmp_path / "wav.scp").write_text("a x.wav\nb y.wav\na z.wav\n")
    with pytest.raises(ValueError, match=r"wav.scp:3: duplicate key 'a'"):
        read_kv(tmp_path / "wav.scp")


@pytest.mark.parametrize(
    "line, reason",
    [(b"\xff\xfe{}", "not UTF-8"), ('{"key": ', "invalid JSON"), ("[1, 2]", "expected a JSON object, got list")],
)
def test_parse_jsonl_line_errors(line, reason):
    with pytest.raises(JsonlError, match=reason) as e:
        parse_jsonl_line(line, "data.list", 7)
    assert str(e.value).startswith("data.list:7: ")
    assert e.value.lineno == 7


def test_registry_build_and_errors():
    reg: Registry = Registry("widget")

    @reg.register("box")
    class Box:
        def __init__(self, size: int = 1):
            self.size = size

    assert reg.build("box", {"size": 3}).size == 3
    assert "box" in reg and reg.names() == ["box"]
    with pytest.raises(KeyError, match="unknown widget 'bag'; known: box"):
        reg.build("bag")
    with pytest.raises(TypeError, match="bad config for widget 'box'"):
        reg.build("box", {"colour": "red"})
    with pytest.raises(KeyError, match="registered twice"):
        reg.register("box")(Box)


def test_config_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"dataset_conf": {"batch_conf": {"batch_size": 8}}, "lr": 0.1}))
    conf = load_config(path, ["dataset_conf.batch_conf.batch_size 16", "lr 1e-3"])
    assert conf["dataset_conf"]["batch_conf"]["batch_size"] == 16
    assert conf["lr"] == pytest.approx(1e-3)
    with pytest.raises(KeyError, match="'dataset_conf.batch_conf.batch_sz' not in"):
        load_config(path, ["dataset_conf.batch_conf.batch_sz 4"])
    with pytest.raises(ValueError, match="expected 'dotted.key value'"):
        apply_override(conf, "lr")
    save_config(conf, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == conf


def test_override_rejects_non_number_for_numeric_key():
    with pytest.raises(ValueError, match="expected a number, got 'fast'"):
        apply_override({"lr": 0.1}, "lr fast")
    assert apply_override({"n": 2}, "n 1e3")["n"] == 1000.0


def test_config_include_deep_merges_and_detects_cycles(tmp_path):
    (tmp_path / "data.yaml").write_text("dataset_conf:\n  batch_conf: {batch_type: dynamic, max_frames: 100}\n"
                                        "  seed: 1\n")
    (tmp_path / "stage.yaml").write_text("include: data.yaml\ndataset_conf:\n  seed: 7\ntrain_conf: {lr: 0.1}\n")
    conf = load_config(tmp_path / "stage.yaml", ["dataset_conf.batch_conf.max_frames 200"])
    assert conf == {"dataset_conf": {"batch_conf": {"batch_type": "dynamic", "max_frames": 200}, "seed": 7},
                    "train_conf": {"lr": 0.1}}
    (tmp_path / "a.yaml").write_text("include: [b.yaml]\nx: 1\n")
    (tmp_path / "b.yaml").write_text("include: a.yaml\n")
    with pytest.raises(ValueError, match="include cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("include: missing.yaml\n")
    with pytest.raises(FileNotFoundError, match="included from"):
        load_config(tmp_path / "c.yaml")


def test_atomic_files_get_normal_permissions(tmp_path):
    import os
    import stat

    from wenet_echat.utils.fileio import atomic_open

    old = os.umask(0o022)
    try:
        with atomic_open(tmp_path / "a.txt") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o644
