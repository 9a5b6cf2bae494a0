"""Every recipe config must load and build what it names (a cheap guard against config/code drift)."""

from pathlib import Path

import pytest

from wenet_echat.dataset.dataset import EChatDataset, resolve_conf
from wenet_echat.utils.config import load_config

CONFS = sorted((Path(__file__).resolve().parents[2] / "egs" / "echat" / "conf").rglob("*.yaml"))


def test_there_are_mini_and_paper_configs():
    dirs = {p.parent.name for p in CONFS}
    assert {"mini", "paper"} <= dirs


@pytest.mark.parametrize("path", CONFS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_dataset_conf_builds(path, tmp_path):
    conf = load_config(path)
    if "dataset_conf" not in conf:
        pytest.skip("no dataset_conf")
    resolved = resolve_conf(conf["dataset_conf"])
    assert resolved["resample_rate"] == 16000
    (tmp_path / "data.list").write_text("")
    ds = EChatDataset("raw", str(tmp_path / "data.list"), conf["dataset_conf"], train=True)
    assert list(ds) == []
