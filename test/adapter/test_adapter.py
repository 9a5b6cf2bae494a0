import math

import pytest
import torch

from wenet_echat.adapter import (
    ADAPTERS,
    CausalConvDownsampler,
    ConvTransformerAdapter,
    ConvTransformerAdapterConfig,
    causal_conv_lengths,
)

ENC, D, LLM = 48, 64, 96


def tiny(**kw) -> ConvTransformerAdapter:
    conf = dict(encoder_dim=ENC, d_model=D, n_heads=4, ffn_dim=128, n_layers=2, llm_dim=LLM, dropout=0.0)
    conf.update(kw)
    return ConvTransformerAdapter(ConvTransformerAdapterConfig(**conf))


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 5, 7, 8, 9, 50, 101])
def test_lengths_match_conv_arithmetic(length):
    expected = math.ceil(math.ceil(length / 2) / 2)
    assert causal_conv_lengths(torch.tensor([length])).item() == expected
    if length:
        conv = CausalConvDownsampler(ENC, ENC)
        out, out_len = conv(torch.randn(1, length, ENC), torch.tensor([length]))
        assert out.shape[1] == out_len.item() == expected


def test_shapes_and_official_names():
    model = tiny().eval()
    x = torch.randn(3, 50, ENC)
    lengths = torch.tensor([50, 23, 1])
    out, out_len = model(x, lengths)
    assert out.shape == (3, 13, LLM)
    assert out_len.tolist() == [13, 6, 1]
    assert torch.all(out[1, 6:] == 0) and torch.all(out[2, 1:] == 0)
    names = set(model.state_dict())
    for key in ("down_sample_2.conv.1.weight", "down_sample_2.conv.4.bias", "down_sample_2.conv.7.weight",
                "speech_transformer.embed.out.0.weight", "speech_transformer.embed.out.1.bias",
                "speech_transformer.embed.pos_enc.pe", "speech_transformer.encoders.1.self_attn.linear_k.bias",
                "speech_transformer.encoders.0.feed_forward.w_2.weight", "speech_transformer.after_norm.weight",
                "speech_llama_proj.weight"):
        assert key in names
    assert all(k.startswith(model.official_prefixes) for k in names)


@pytest.mark.parametrize("norm", [False, True])
def test_conv_part_is_causal(norm):
    torch.manual_seed(0)
    conv = CausalConvDownsampler(ENC, ENC, norm=norm).eval()
    x = torch.randn(1, 40, ENC)
    y = x.clone()
    y[:, 21:] = torch.randn(1, 19, ENC)  # change frames 21.. only
    with torch.no_grad():
        a, _ = conv(x, torch.tensor([40]))
        b, _ = conv(y, torch.tensor([40]))
    # output frame j depends on inputs <= 4 j, so frames 0..5 (inputs <= 20) are unchanged
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


@pytest.mark.parametrize("conv_norm", [False, True])
def test_padding_invariance(conv_norm):
    torch.manual_seed(1)
    model = tiny(conv_norm=conv_norm).eval()
    x = torch.randn(2, 50, ENC)
    x[1, 23:] = 7.0
    with torch.no_grad():
        out, out_len = model(x, torch.tensor([50, 23]))
        alone, alone_len = model(x[1:2, :23], torch.tensor([23]))
    n = int(out_len[1])
    assert n == alone_len.item() == alone.shape[1]
    torch.testing.assert_close(out[1, :n], alone[0], atol=1e-5, rtol=1e-5)


def test_gradient_flows_everywhere():
    model = tiny(gradient_checkpointing=True).train()
    out, out_len = model(torch.randn(2, 30, ENC, requires_grad=True), torch.tensor([30, 17]))
    out.pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_registry_build_from_config():
    conf = {"encoder_dim": 32, "d_model": 32, "n_heads": 2, "ffn_dim": 64, "n_layers": 1, "llm_dim": 40}
    model = ADAPTERS.build("conv_transformer", conf)
    assert isinstance(model, ConvTransformerAdapter)
    assert model.config.llm_dim == 40 and model.config.activation == "relu"
    out, _ = model(torch.randn(1, 9, 32), torch.tensor([9]))
    assert out.shape == (1, 3, 40)
    with pytest.raises(TypeError, match="bad config for adapter 'conv_transformer'"):
        ADAPTERS.build("conv_transformer", {"bogus": 1})
    with pytest.raises(ValueError, match="divisible"):
        ADAPTERS.build("conv_transformer", {"d_model": 30, "n_heads": 4})


def test_default_config_is_osum_echat():
    conf = ConvTransformerAdapterConfig()
    assert (conf.encoder_dim, conf.d_model, conf.n_heads, conf.ffn_dim, conf.n_layers, conf.llm_dim) == (
        1024, 1024, 4, 2560, 4, 2048)


def test_wrong_input_width():
    with pytest.raises(ValueError, match="expected input of shape"):
        tiny()(torch.randn(1, 10, ENC + 1), torch.tensor([10]))


def test_conv_norm_keeps_activations_at_unit_scale():
    torch.manual_seed(2)
    normed = CausalConvDownsampler(ENC, ENC, norm=True)
    x = torch.randn(2, 40, ENC)
    with torch.no_grad():  # whatever the scale of the encoder output, the stack's output stays near unit scale
        stds = [normed(scale * x, torch.tensor([40, 40]))[0].std().item() for scale in (0.01, 1.0, 30.0)]
    assert all(0.3 < s < 2.0 for s in stds), stds
    assert "conv.3.weight" in dict(normed.named_parameters())  # the norm follows each conv's GELU
