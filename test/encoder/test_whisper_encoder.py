import logging
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from wenet_echat.audio.features import whisper_log_mel  # noqa: E402
from wenet_echat.encoder import (  # noqa: E402
    ENCODERS,
    HF_KEYMAP,
    OPENAI_KEYMAP,
    WhisperCheckpointError,
    WhisperEncoder,
    WhisperEncoderConfig,
    export_state_dict,
    load_hf_whisper_encoder,
    load_openai_whisper_encoder,
)
from wenet_echat.nn import whisper_sinusoids  # noqa: E402

N_CTX, D, HEADS, LAYERS, MELS = 50, 64, 4, 2, 80


def tiny_config(**kw) -> WhisperEncoderConfig:
    conf = dict(n_mels=MELS, d_model=D, n_heads=HEADS, n_layers=LAYERS, ffn_dim=4 * D, max_positions=N_CTX,
                dropout=0.0)
    conf.update(kw)
    return WhisperEncoderConfig(**conf)


def openai_dims():
    from whisper.model import ModelDimensions

    return ModelDimensions(n_mels=MELS, n_audio_ctx=N_CTX, n_audio_state=D, n_audio_head=HEADS,
                           n_audio_layer=LAYERS, n_vocab=64, n_text_ctx=16, n_text_state=D, n_text_head=HEADS,
                           n_text_layer=1)


@pytest.fixture(scope="module")
def openai_ckpt(tmp_path_factory):
    from whisper.model import Whisper

    torch.manual_seed(0)
    dims = openai_dims()
    model = Whisper(dims).eval()
    # random init leaves biases and LayerNorms trivial; perturb every tensor so the mapping is really tested
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path_factory.mktemp("openai") / "tiny.pt"
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict()}, path)
    return path, model


def test_openai_checkpoint_matches_reference(openai_ckpt):
    path, ref = openai_ckpt
    ours, config = load_openai_whisper_encoder(path)
    ours.eval()
    assert config.d_model == D and config.max_positions == N_CTX and config.ffn_dim == 4 * D
    feats = torch.randn(2, 2 * N_CTX, MELS)
    with torch.no_grad():
        expected = ref.encoder(feats.transpose(1, 2))
        out, lengths = ours(feats, torch.tensor([2 * N_CTX, 2 * N_CTX]))
    assert out.shape == expected.shape == (2, N_CTX, D)
    assert lengths.tolist() == [N_CTX, N_CTX]
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    # the stored table is Whisper's sinusoids
    torch.testing.assert_close(ours.embed.pos_enc.pe[0], whisper_sinusoids(N_CTX, D))


def test_openai_export_roundtrip(openai_ckpt):
    path, ref = openai_ckpt
    ours, _ = load_openai_whisper_encoder(path)
    exported = export_state_dict(ours, OPENAI_KEYMAP)
    theirs = {k: v for k, v in ref.state_dict().items() if k.startswith("encoder.")}
    assert set(exported) == set(theirs)
    for k, v in theirs.items():
        torch.testing.assert_close(exported[k], v)


def test_keymaps_two_way():
    model = WhisperEncoder(tiny_config())
    for keymap in (OPENAI_KEYMAP, HF_KEYMAP):
        for name in model.state_dict():
            theirs = keymap.from_ours(name)
            assert theirs is not None and keymap.to_ours(theirs) == name
    assert OPENAI_KEYMAP.to_ours("blocks.3.mlp.0.weight") == "encoders.3.feed_forward.w_1.weight"
    assert HF_KEYMAP.to_ours("layers.1.self_attn.out_proj.bias") == "encoders.1.self_attn.linear_out.bias"
    assert HF_KEYMAP.to_ours("layer_norm.weight") == "after_norm.weight"
    assert OPENAI_KEYMAP.to_ours("ln_post.bias") == "after_norm.bias"
    assert OPENAI_KEYMAP.to_ours("blocks.0.cross_attn.key.weight") is None


def test_hf_checkpoint_matches_reference(tmp_path):
    from transformers import WhisperConfig, WhisperModel

    torch.manual_seed(1)
    cfg = WhisperConfig(num_mel_bins=MELS, d_model=D, encoder_layers=LAYERS, encoder_attention_heads=HEADS,
                        encoder_ffn_dim=2 * D, decoder_layers=1, decoder_attention_heads=HEADS, decoder_ffn_dim=2 * D,
                        max_source_positions=N_CTX, max_target_positions=16, vocab_size=64, dropout=0.0,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3,
                        begin_suppress_tokens=None, suppress_tokens=None)
    model = WhisperModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.encoder.named_parameters():
            if "embed_positions" not in name:
                p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    ours, config = load_hf_whisper_encoder(tmp_path)
    ours.eval()
    assert config.ffn_dim == 2 * D
    feats = torch.randn(1, 2 * N_CTX, MELS)
    with torch.no_grad():
        expected = model.encoder(input_features=feats.transpose(1, 2)).last_hidden_state
        out, _ = ours(feats, torch.tensor([2 * N_CTX]))
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)

    # the same weights as a WhisperForConditionalGeneration-style pytorch_model.bin (keys "model.encoder.*")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text((tmp_path / "config.json").read_text())
    torch.save({f"model.{k}": v for k, v in model.state_dict().items()}, bin_dir / "pytorch_model.bin")
    from_bin, _ = load_hf_whisper_encoder(bin_dir)
    with torch.no_grad():
        out_bin, _ = from_bin.eval()(feats, torch.tensor([2 * N_CTX]))
    torch.testing.assert_close(out_bin, expected, atol=1e-4, rtol=1e-4)


def test_padding_invariance():
    torch.manual_seed(2)
    model = WhisperEncoder(tiny_config()).eval()
    long, short = 2 * N_CTX, 37
    feats = torch.randn(2, long, MELS)
    feats[1, short:] = 5.0  # garbage in the padding must not leak
    with torch.no_grad():
        out, lengths = model(feats, torch.tensor([long, short]))
        alone, alone_len = model(feats[1:2, :short], torch.tensor([short]))
    assert lengths.tolist() == [N_CTX, (short + 1) // 2]
    assert alone.shape[1] == alone_len.item() == lengths[1].item()
    n = int(lengths[1])
    torch.testing.assert_close(out[1, :n], alone[0], atol=1e-5, rtol=1e-5)
    assert torch.all(out[1, n:] == 0)


def test_too_long_input_and_bad_lengths():
    model = WhisperEncoder(tiny_config()).eval()
    with pytest.raises(ValueError, match="exceeds the encoder limit"):
        model(torch.zeros(1, 2 * N_CTX + 1, MELS), torch.tensor([2 * N_CTX + 1]))
    with pytest.raises(ValueError, match="feats_lengths"):
        model(torch.zeros(1, 10, MELS), torch.tensor([11]))


def test_registry_and_gradient_checkpointing():
    model = ENCODERS.build("whisper", dict(n_mels=MELS, d_model=32, n_heads=2, n_layers=2, ffn_dim=64,
                                           max_positions=20, gradient_checkpointing=True))
    assert isinstance(model, WhisperEncoder)
    model.train()
    out, _ = model(torch.randn(2, 30, MELS), torch.tensor([30, 12]))
    out.sum().backward()
    assert model.embed.conv[0].weight.grad is not None
    with pytest.raises(TypeError, match="bad config for encoder 'whisper'"):
        ENCODERS.build("whisper", {"n_layer": 2})


def test_loader_errors(tmp_path, openai_ckpt, caplog):
    path, ref = openai_ckpt
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_openai_whisper_encoder(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_whisper_encoder(tmp_path)

    ckpt = torch.load(path, weights_only=True)
    state = dict(ckpt["model_state_dict"])
    del state["encoder.blocks.1.mlp.0.weight"]
    missing = tmp_path / "missing.pt"
    torch.save({"dims": ckpt["dims"], "model_state_dict": state}, missing)
    with pytest.raises(WhisperCheckpointError, match=r"missing\.pt.*missing keys: encoder\.blocks\.1\.mlp\.0\.weight"):
        load_openai_whisper_encoder(missing)

    state = dict(ckpt["model_state_dict"])
    state["encoder.blocks.0.attn.query.weight"] = torch.zeros(D, D + 1)
    state["encoder.extra.weight"] = torch.zeros(3)
    bad = tmp_path / "bad_shape.pt"
    torch.save({"dims": ckpt["dims"], "model_state_dict": state}, bad)
    with pytest.raises(WhisperCheckpointError) as err:
        load_openai_whisper_encoder(bad)
    msg = str(err.value)
    assert "bad_shape.pt" in msg and "encoder.blocks.0.attn.query.weight" in msg and "(64, 65)" in msg
    assert "unexpected keys: encoder.extra.weight" in msg

    dims = dict(ckpt["dims"])
    del dims["n_audio_head"]
    nodims = tmp_path / "nodims.pt"
    torch.save({"dims": dims, "model_state_dict": ckpt["model_state_dict"]}, nodims)
    with pytest.raises(WhisperCheckpointError, match="n_audio_head"):
        load_openai_whisper_encoder(nodims)

    # the positional table is optional: Whisper's sinusoids are computed when a checkpoint lacks it
    state = {k: v for k, v in ckpt["model_state_dict"].items() if k != "encoder.positional_embedding"}
    nopos = tmp_path / "nopos.pt"
    torch.save({"dims": ckpt["dims"], "model_state_dict": state}, nopos)
    model, _ = load_openai_whisper_encoder(nopos)
    torch.testing.assert_close(model.embed.pos_enc.pe[0], whisper_sinusoids(N_CTX, D))

    # half precision is cast to float32 with a log line
    half = tmp_path / "half.pt"
    torch.save({"dims": ckpt["dims"], "model_state_dict": {k: v.half() for k, v in ckpt["model_state_dict"].items()}},
               half)
    with caplog.at_level(logging.INFO, logger="wenet_echat.encoder.loaders"):
        model, _ = load_openai_whisper_encoder(half)
    assert "float16" in caplog.text
    assert model.embed.conv[0].weight.dtype == torch.float32


def test_end_to_end_on_log_mel():
    sr = 16000
    t = np.arange(int(0.73 * sr)) / sr
    wav = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    feats = whisper_log_mel(wav)
    assert feats.shape[1] == MELS
    model = WhisperEncoder(tiny_config(max_positions=100)).eval()
    with torch.no_grad():
        out, lengths = model(feats.unsqueeze(0), torch.tensor([feats.shape[0]]))
    assert out.shape == (1, (feats.shape[0] + 1) // 2, D)
    assert lengths.item() == out.shape[1]
    assert torch.isfinite(out).all()


def test_loader_rejects_integer_tensors(tmp_path, openai_ckpt):
    path, _ = openai_ckpt
    ckpt = torch.load(path, weights_only=True)
    state = dict(ckpt["model_state_dict"])
    state["encoder.blocks.0.attn.query.weight"] = state["encoder.blocks.0.attn.query.weight"].long()
    bad = tmp_path / "int_weight.pt"
    torch.save({"dims": ckpt["dims"], "model_state_dict": state}, bad)
    with pytest.raises(WhisperCheckpointError) as err:
        load_openai_whisper_encoder(bad)
    msg = str(err.value)
    assert "int_weight.pt" in msg
    assert "dtype mismatches: encoder.blocks.0.attn.query.weight: stored int64, model float32" in msg
    assert "missing keys" not in msg  # the tensor is there, only its dtype is wrong
