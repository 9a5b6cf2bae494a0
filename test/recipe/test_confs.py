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


RECIPE = Path(__file__).resolve().parents[2] / "egs" / "echat"


@pytest.mark.parametrize("path", [p for p in CONFS if p.name.startswith("train_stage")],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_stage_configs_parse(path):
    from wenet_echat.train.trainer import TrainConf

    conf = load_config(path)
    assert {"tokenizer", "model", "dataset_conf", "train_conf"} <= set(conf)
    tconf = TrainConf.from_dict(conf["train_conf"])
    if tconf.train_engine == "deepspeed":
        assert (RECIPE / tconf.deepspeed_config).is_file()  # paths are relative to egs/echat (run.sh's cwd)


def test_mini_model_builds_at_the_documented_size():
    from wenet_echat.model import build_model

    conf = load_config(RECIPE / "conf" / "mini" / "train_stage1.yaml")
    model = build_model(conf["model"], 1000, 3, 0)
    n = sum(p.numel() for p in model.parameters())
    assert 5e6 < n < 12e6  # "~10 M parameters" (model.yaml)
    assert model.speech_codes == 512


@pytest.mark.parametrize("path", [p for p in CONFS if p.name.startswith("token2wav")],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_token2wav_configs_build_and_train_sections_fit(path):
    from wenet_echat.bin.train_token2wav import part_conf
    from wenet_echat.token2wav import ISTFTVocoder, build_token2wav

    conf = load_config(path)
    model = build_token2wav(conf)
    assert model.vocoder.hop == model.hop_length and model.vocoder.n_mels == model.mel_config.n_mels
    part_conf(conf, "flow", None)
    vocoder = part_conf(conf, "vocoder", None)
    assert not vocoder["phase_weight"] or isinstance(model.vocoder, ISTFTVocoder)


@pytest.mark.parametrize("path", [p for p in CONFS if p.name == "pretrain_llm.yaml"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_llm_pretrain_configs_fit_the_stage_models(path):
    """The pre-trained LLM is the one the stage configs build, so --init_llm fits them."""
    from wenet_echat.bin.pretrain_llm import pretrain_conf

    conf = load_config(path)
    pretrain_conf(conf, str(path))
    stage1 = load_config(path.parent / "train_stage1.yaml")
    assert conf["model"]["llm_conf"] == stage1["model"]["llm_conf"] and conf["tokenizer"] == stage1["tokenizer"]
