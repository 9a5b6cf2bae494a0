"""Token2Wav: registry and config building, synthesis lengths, save/load round trips and file errors."""

from __future__ import annotations

import pytest
import torch

from test.token2wav.fixtures import TINY, tiny_conf, tiny_model, tokens
from wenet_echat.token2wav import TOKEN2WAV, Token2WavFileError, build_token2wav, load_token2wav, save_token2wav
from wenet_echat.token2wav.model import read_part, save_part


def test_registry_and_config_errors():
    assert "flow_hifigan" in TOKEN2WAV
    with pytest.raises(KeyError, match="needs a 'token2wav' name"):
        build_token2wav({"token2wav_conf": {}})
    with pytest.raises(KeyError, match="unknown token2wav 'nope'"):
        build_token2wav({"token2wav": "nope", "token2wav_conf": {}})
    with pytest.raises(TypeError, match="bad token2wav flow config"):
        build_token2wav(tiny_conf(flow={"layers": 3}))
    bad_hop = tiny_conf(vocoder={**TINY["token2wav_conf"]["vocoder"], "upsample_rates": [8, 5, 2],
                                 "upsample_kernel_sizes": [16, 11, 4]})
    with pytest.raises(ValueError, match="upsamples by 80"):
        build_token2wav(bad_hop)


@pytest.mark.parametrize("n_tok", [1, 9, 30])
def test_synthesis_lengths(n_tok):
    model = tiny_model()
    toks = tokens(n_tok)
    mel = model.token2mel(toks)
    assert mel.shape == (20, 4 * n_tok)  # 100 frames/s over 25 tokens/s
    for vocoder in ("neural", "griffinlim"):
        wav = model.synthesize(toks, vocoder=vocoder)
        assert wav.shape == (4 * n_tok * 160,) == (model.expected_samples(n_tok),)
        assert torch.isfinite(wav).all()
    assert model.synthesize([]).numel() == 0
    with pytest.raises(ValueError, match="vocoder must be one of"):
        model.synthesize(toks, vocoder="wavenet")
    chunks = list(model.stream([toks[:5], toks[5:]]))
    assert sum(c.numel() for c in chunks) == model.expected_samples(n_tok)


def test_save_load_round_trip(tmp_path):
    model = tiny_model(seed=3)
    save_token2wav(tmp_path, model)
    assert {p.name for p in tmp_path.iterdir()} == {"token2wav.yaml", "flow.pt", "vocoder.pt"}
    raw = torch.load(tmp_path / "flow.pt", weights_only=True)  # plain tensors and numbers only
    assert raw["part"] == "flow" and "estimator.final_proj.weight" in raw["state_dict"]
    loaded = load_token2wav(tmp_path, require=("flow", "vocoder"))
    assert loaded.trained_parts == {"flow", "vocoder"} and not loaded.training
    toks = tokens(11)
    torch.testing.assert_close(loaded.synthesize(toks), model.synthesize(toks))
    torch.testing.assert_close(loaded.flow.mel_std, model.flow.mel_std)


def test_parts_are_saved_and_loaded_separately(tmp_path):
    model = tiny_model()
    save_part(tmp_path, model, "flow", step=7, info={"loss": 1.5})
    assert read_part(tmp_path / "flow.pt", "flow")["step"] == 7
    loaded = load_token2wav(tmp_path)
    assert loaded.trained_parts == {"flow"}
    torch.testing.assert_close(loaded.token2mel(tokens(5)), model.token2mel(tokens(5)))
    with pytest.raises(FileNotFoundError, match="vocoder.pt not found.*--part vocoder"):
        load_token2wav(tmp_path, require=("vocoder",))


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a token2wav model directory"):
        load_token2wav(tmp_path)
    model = tiny_model()
    save_token2wav(tmp_path / "a", model)
    # same part file under a config with other sizes
    other = build_token2wav(tiny_conf(flow={"channels": [16, 16]}))
    save_token2wav(tmp_path / "b", other, parts=())
    (tmp_path / "b" / "flow.pt").write_bytes((tmp_path / "a" / "flow.pt").read_bytes())
    with pytest.raises(Token2WavFileError, match="do not fit the configured flow"):
        load_token2wav(tmp_path / "b")
    (tmp_path / "b" / "flow.pt").write_bytes((tmp_path / "a" / "vocoder.pt").read_bytes())
    with pytest.raises(Token2WavFileError, match="holds part 'vocoder', expected 'flow'"):
        load_token2wav(tmp_path / "b")
    (tmp_path / "b" / "flow.pt").write_text("not a checkpoint")
    with pytest.raises(Token2WavFileError, match="flow.pt: cannot read as token2wav flow file"):
        load_token2wav(tmp_path / "b")
