import pytest
import torch

from test.echat_fixtures import SPEECH_CODES, tiny_model_conf
from wenet_echat.model import build_model
from wenet_echat.model.convert import (
    OfficialCheckpointError,
    load_official_checkpoint,
    official_to_ours,
    ours_to_official,
)

OFFICIAL_TOPS = {"encoder", "down_sample_2", "speech_transformer", "speech_llama_proj", "llama_model",
                 "speech_token_emded", "speech_head", "ln_speech"}


def make(seed):
    torch.manual_seed(seed)
    return build_model(tiny_model_conf(), 400, 3, 0).eval()


def official_file(tmp_path, model):
    state = ours_to_official(model.state_dict())
    state["ln_speech.weight"] = torch.ones(32)  # present in the released files, unused by the model
    state["ln_speech.bias"] = torch.zeros(32)
    torch.save({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()},
               tmp_path / "tag_think_final.pt")
    return tmp_path / "tag_think_final.pt", state


def test_official_layout_round_trip(tmp_path):
    src = make(0)
    path, state = official_file(tmp_path, src)
    assert {k.split(".")[0] for k in state} == OFFICIAL_TOPS  # the official prefixes, nothing else
    assert "down_sample_2.conv.1.weight" in state and "speech_head.weight" in state
    dst = make(1)
    res = load_official_checkpoint(path, dst)
    assert res["dropped"] == ["ln_speech.weight", "ln_speech.bias"]
    for k, v in src.state_dict().items():  # bf16 on disk, as released; compare at bf16 precision
        assert torch.equal(dst.state_dict()[k], v.to(torch.bfloat16).to(v.dtype)), k
    renamed, _ = official_to_ours(state)
    assert set(renamed) == set(src.state_dict())


def test_mismatches_are_named(tmp_path):
    path, state = official_file(tmp_path, make(0))
    conf = tiny_model_conf()
    conf["speech_codes"] = SPEECH_CODES * 2
    with pytest.raises(OfficialCheckpointError, match="speech_head.weight: file"):
        load_official_checkpoint(path, build_model(conf, 400, 3, 0))
    state["llama_model.model.layers.0.self_attn.q_proj.lora_A.default.weight"] = torch.zeros(2, 32)
    del state["speech_head.bias"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(OfficialCheckpointError, match="missing keys: speech_head.bias.*LoRA"):
        load_official_checkpoint(tmp_path / "bad.pt", make(0))
