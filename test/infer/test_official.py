"""Official OSUM-EChat checkpoints (flat state dict, both think variants) -> a model dir -> bin/decode.py."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml

from test.echat_fixtures import SPEECH_CODES, make_corpus, tiny_model_conf
from test.llm.test_qwen_dir import write_qwen_dir
from wenet_echat.bin import convert_official as cli
from wenet_echat.bin import decode as decode_cli
from wenet_echat.infer import load_model_dir
from wenet_echat.infer.official import OfficialConversionError, think_style_of
from wenet_echat.model import build_model
from wenet_echat.model.convert import ours_to_official
from wenet_echat.text.tokenizer import build_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A Qwen2 dir, a paper-style config (LLM by path, encoder init from a file that does not exist here) and the
    model an official checkpoint is made from, with bf16-representable weights (the release is bf16)."""
    root = tmp_path_factory.mktemp("official")
    qwen = root / "Qwen2-tiny-Instruct"
    write_qwen_dir(qwen)
    model_conf = {**tiny_model_conf(), "llm_conf": {"path": str(qwen), "torch_dtype": "bfloat16"},
                  "init": {"encoder": {"format": "openai", "path": str(root / "whisper-medium.pt")}}}
    (root / "model.yaml").write_text(yaml.safe_dump({"model": model_conf}))
    tok = build_tokenizer({"type": "hf", "path": str(qwen)})
    src_conf = {k: v for k, v in model_conf.items() if k != "init"}
    torch.manual_seed(3)
    src = build_model(src_conf, tok.vocab_size, tok.eos_id, tok.pad_id)
    with torch.no_grad():
        for v in src.state_dict().values():  # parameters and buffers (the positional tables)
            if v.is_floating_point():
                v.copy_((v.float() + 0.02 * torch.randn_like(v.float())).to(torch.bfloat16))
    state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in ours_to_official(src.state_dict())
             .items()}
    state["ln_speech.weight"], state["ln_speech.bias"] = torch.ones(32), torch.zeros(32)
    return root, qwen, src, state


def write_official(path, state):
    torch.save(state, path)
    return str(path)


@pytest.mark.parametrize("name,style", [("tag_think_final.pt", "tag"), ("language_think_final.pt", "natural")])
def test_convert_and_decode(setup, tmp_path, name, style):
    root, qwen, src, state = setup
    ckpt = write_official(tmp_path / name, state)
    model_dir = tmp_path / "osum_echat"
    assert cli.main(["--checkpoint", ckpt, "--config", str(root / "model.yaml"), "--llm_dir", str(qwen),
                     "--model_dir", str(model_dir), "--dtype", "float32"]) == 0
    train_yaml = yaml.safe_load((model_dir / "train.yaml").read_text())
    assert train_yaml["train_conf"]["think_style"] == style
    assert train_yaml["model"]["llm_conf"]["torch_dtype"] == "float32"
    assert "init" not in train_yaml["model"] and "path" not in train_yaml["model"]["llm_conf"]
    assert train_yaml["tokenizer"] == {"type": "hf", "path": str(model_dir / "tokenizer")}

    loaded = load_model_dir(model_dir)
    ours = loaded.model.state_dict()
    for k, v in src.state_dict().items():  # every weight is the checkpoint's, the LLM included
        assert torch.equal(ours[k].float(), v.float()), k

    rows = decode(model_dir, tmp_path)
    assert sorted((r["key"], r["task"]) for r in rows) == [("u000", "asr"), ("u000", "s2s_think"),
                                                           ("u001", "asr"), ("u001", "s2s_think")]
    spoken = [r["speech_tokens"] for r in rows if r["task"] == "s2s_think"]
    assert len(spoken) == 2 and all(0 <= c < SPEECH_CODES for codes in spoken for c in codes)


def decode(model_dir, tmp_path):
    data_list, _ = make_corpus(tmp_path / "corpus", n=2)
    out = tmp_path / "hyp.jsonl"
    assert decode_cli.main(["--model_dir", str(model_dir), "--data_list", data_list, "--tasks", "asr", "s2s_think",
                            "--out", str(out), "--max_text_tokens", "4", "--max_speech_tokens", "3",
                            "--batch_size", "2"]) == 0
    return [json.loads(x) for x in out.read_text().splitlines()]


def test_decode_with_the_paper_bf16_llm(setup, tmp_path):
    root, qwen, _, state = setup
    model_dir = tmp_path / "bf16"
    assert cli.main(["--checkpoint", write_official(tmp_path / "tag_think_final.pt", state), "--config",
                     str(root / "model.yaml"), "--llm_dir", str(qwen), "--model_dir", str(model_dir)]) == 0
    assert yaml.safe_load((model_dir / "train.yaml").read_text())["model"]["llm_conf"]["torch_dtype"] == "bfloat16"
    rows = decode(model_dir, tmp_path)  # the speech head runs in its own dtype
    assert len(rows) == 4


def test_think_variant_needs_a_name_or_a_flag(tmp_path):
    assert think_style_of("x/tag_think_final.pt") == "tag"
    assert think_style_of("language_think_epoch3.pt") == "natural"
    assert think_style_of("my.pt", "natural") == "natural"
    with pytest.raises(OfficialConversionError, match="--think_style"):
        think_style_of("my.pt")


def test_errors_name_files_and_keys(setup, tmp_path, capsys):
    root, qwen, _, state = setup
    args = ["--config", str(root / "model.yaml"), "--llm_dir", str(qwen)]

    def run(ckpt, model_dir="out", extra=()):
        code = cli.main(["--checkpoint", str(ckpt), *args, "--model_dir", str(tmp_path / model_dir), *extra])
        return code, capsys.readouterr().err

    code, err = run(tmp_path / "tag_think_final.pt")
    assert code == 1 and "tag_think_final.pt: no such file" in err

    bad = dict(state)
    bad["speech_head.weight"] = torch.zeros(SPEECH_CODES + 5, 32, dtype=torch.bfloat16)
    del bad["adapter" if "adapter" in bad else "speech_head.bias"]
    code, err = run(write_official(tmp_path / "tag_think_bad.pt", bad))
    assert code == 1 and "tag_think_bad.pt: does not fit the model" in err
    assert "missing keys: speech_head.bias" in err and "speech_head.weight: file (21, 32) vs model (17, 32)" in err
    assert not (tmp_path / "out" / "final").exists()

    ints = dict(state)
    ints["encoder.encoders.0.norm1.weight"] = torch.ones(32, dtype=torch.int64)
    code, err = run(write_official(tmp_path / "tag_think_int.pt", ints))
    assert code == 1 and "encoder.encoders.0.norm1.weight: stored int64, model float32" in err

    (tmp_path / "no_tok").mkdir()
    (tmp_path / "no_tok" / "config.json").write_bytes((qwen / "config.json").read_bytes())
    code = cli.main(["--checkpoint", write_official(tmp_path / "tag_think_final.pt", state), "--config",
                     str(root / "model.yaml"), "--llm_dir", str(tmp_path / "no_tok"), "--model_dir",
                     str(tmp_path / "o2")])
    assert code == 1 and "no tokenizer" in capsys.readouterr().err
