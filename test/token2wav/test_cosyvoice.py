"""CosyVoice flow.pt / hift.pt: layout inspection, the strict loader's errors and the partial mapping."""

from __future__ import annotations

import re
from collections import OrderedDict

import pytest
import torch

from test.token2wav.fixtures import CODES
from wenet_echat.token2wav.cosyvoice import (
    CosyVoiceMappingError,
    format_layout,
    inspect_cosyvoice_checkpoint,
    load_cosyvoice,
)
from wenet_echat.token2wav.flow import FlowMatching
from wenet_echat.token2wav.vocoder import HiFiGANGenerator

FLOW = {"encoder_dim": 24, "encoder_layers": 2, "encoder_kernel": 3, "regulator_layers": 1, "channels": [24, 32],
        "blocks": 1, "mid_blocks": 1, "kernel": 3}
VOC = {"n_mels": 20, "channels": 16, "upsample_rates": (8, 5, 4), "upsample_kernel_sizes": (16, 11, 8),
       "resblock_kernel_sizes": (3,), "resblock_dilations": ((1, 3),), "activation": "snake"}


def r(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def their_flow(encoder_proj_in: int = 24) -> OrderedDict:
    """A CosyVoice MaskedDiffWithXvec state dict in miniature (their names, our tiny sizes where they map)."""
    return OrderedDict([
        ("input_embedding.weight", r(CODES, 24)),
        ("spk_embed_affine_layer.weight", r(20, 8)), ("spk_embed_affine_layer.bias", r(20)),
        ("encoder.embed.out.0.weight", r(24, 24)), ("encoder.embed.out.1.weight", r(24)),
        ("encoder.encoders.0.self_attn.linear_q.weight", r(24, 24)),
        ("encoder.encoders.0.self_attn.pos_bias_u", r(4, 6)), ("encoder.after_norm.weight", r(24)),
        ("encoder_proj.weight", r(20, encoder_proj_in)), ("encoder_proj.bias", r(20)),
        ("length_regulator.model.0.weight", r(20, 20, 3)), ("length_regulator.model.1.weight", r(20)),
        ("decoder.estimator.time_mlp.linear_1.weight", r(96, 80)),
        ("decoder.estimator.down_blocks.0.0.block1.block.0.weight", r(24, 80, 3)),
        ("decoder.estimator.final_proj.weight", r(20, 24, 1)),
        ("epoch", 3), ("step", 1200),
    ])


def their_hift() -> OrderedDict:
    """HiFT in miniature: our generator's trunk under their (old weight_norm) names plus their extra modules."""
    ours = HiFiGANGenerator(**VOC).state_dict()
    state = OrderedDict()
    for k, v in ours.items():
        if k.startswith(("conv_post.", "up_acts.", "post_act.")):
            continue
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                                  "weight_v")
        state[k] = torch.randn_like(v).abs() + 0.1 if k.endswith("weight_g") else torch.randn_like(v)
    state.update([
        ("conv_post.weight_g", r(18, 1, 1)), ("conv_post.weight_v", r(18, 2, 7)), ("conv_post.bias", r(18)),
        ("m_source.l_linear.weight", r(1, 9)), ("m_source.l_linear.bias", r(1)),
        ("f0_predictor.condnet.0.weight_g", r(16, 1, 1)), ("f0_predictor.condnet.0.weight_v", r(16, 20, 3)),
        ("f0_predictor.classifier.weight", r(1, 16)),
        ("source_downs.0.weight", r(8, 18, 16)), ("source_resblocks.0.convs1.0.weight_g", r(8, 1, 1)),
    ])
    return state


def small_flow(**over) -> FlowMatching:
    torch.manual_seed(0)
    return FlowMatching(CODES, n_mels=20, spk_embed_dim=8, **{**FLOW, **over})


def test_inspect_reports_the_layout(tmp_path):
    path = tmp_path / "flow.pt"
    torch.save(their_flow(), path)
    rep = inspect_cosyvoice_checkpoint(path)
    assert rep["kind"] == "flow" and rep["tensors"] == 15  # the epoch/step numbers are not tensors
    pre = rep["prefixes"]
    assert list(pre) == ["input_embedding.", "spk_embed_affine_layer.", "encoder.", "encoder_proj.",
                         "length_regulator.", "decoder.estimator."]
    assert pre["encoder."]["tensors"] == 5 and pre["decoder.estimator."]["tensors"] == 3
    assert pre["input_embedding."]["shapes"] == {"weight": (CODES, 24)}
    assert pre["encoder_proj."]["params"] == 20 * 24 + 20
    text = format_layout(rep)
    assert "CosyVoice flow, 15 tensors" in text and re.search(r"decoder\.estimator\.\s+3 tensors", text)
    hift = tmp_path / "hift.pt"
    torch.save(their_hift(), hift)
    assert set(inspect_cosyvoice_checkpoint(hift)["prefixes"]) == {
        "conv_pre.", "ups.", "resblocks.", "conv_post.", "m_source.", "f0_predictor.", "source_downs.",
        "source_resblocks."}


def test_strict_load_lists_what_cannot_be_mapped_and_loads_nothing(tmp_path):
    path = tmp_path / "flow.pt"
    torch.save(their_flow(), path)
    flow = small_flow()
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    with pytest.raises(CosyVoiceMappingError) as err:
        load_cosyvoice(path, flow)
    msg = str(err.value)
    for prefix in ("encoder.* (5 tensors: conformer", "length_regulator.* (2", "decoder.estimator.* (3"):
        assert prefix in msg
    assert "ours left without weights: encoder.*" in msg and "estimator.*" in msg
    assert all(torch.equal(before[k], v) for k, v in flow.state_dict().items())


def test_partial_load_copies_the_mapped_tensors(tmp_path):
    state = their_flow()
    path = tmp_path / "flow.pt"
    torch.save({"module." + k: v for k, v in state.items()}, path)  # DDP prefix is stripped
    flow = small_flow()
    pad_row = flow.input_embedding.weight[CODES].clone()
    report = load_cosyvoice(path, flow, strict=False)
    assert not report.ok
    torch.testing.assert_close(flow.input_embedding.weight[:CODES], state["input_embedding.weight"])
    torch.testing.assert_close(flow.input_embedding.weight[CODES], pad_row)  # our pad row stays
    torch.testing.assert_close(flow.encoder_proj.weight, state["encoder_proj.weight"])
    torch.testing.assert_close(flow.spk_embed_affine_layer.bias, state["spk_embed_affine_layer.bias"])
    assert set(report.mapped) == {"input_embedding.weight", "spk_embed_affine_layer.weight",
                                  "spk_embed_affine_layer.bias", "encoder_proj.weight", "encoder_proj.bias"}
    assert "mel_mean" not in report.missing  # buffers are not expected from them


def test_shape_mismatches_are_reported(tmp_path):
    path = tmp_path / "flow.pt"
    torch.save(their_flow(encoder_proj_in=512), path)
    report = load_cosyvoice(path, small_flow(), strict=False)
    assert any("encoder_proj.weight [20, 512] -> encoder_proj.weight [20, 24]" in m for m in report.mismatched)
    with pytest.raises(CosyVoiceMappingError, match="shape mismatch"):
        load_cosyvoice(path, small_flow())


def test_hift_weight_norm_is_translated(tmp_path):
    state = their_hift()
    path = tmp_path / "hift.pt"
    torch.save(state, path)
    gen = HiFiGANGenerator(**VOC)
    with pytest.raises(CosyVoiceMappingError, match="conv_post.* \\(3 tensors: iSTFT"):
        load_cosyvoice(path, gen)
    report = load_cosyvoice(path, gen, strict=False)
    g, v = state["conv_pre.weight_g"], state["conv_pre.weight_v"]
    expected = g * v / v.flatten(1).norm(dim=1).view(-1, 1, 1)
    torch.testing.assert_close(gen.conv_pre.weight, expected)  # the effective (parametrized) weight
    torch.testing.assert_close(gen.resblocks[1].activations2[0].alpha, state["resblocks.1.activations2.0.alpha"])
    torch.testing.assert_close(gen.ups[2].bias, state["ups.2.bias"])
    assert set(report.unmapped) == {"conv_post.", "m_source.", "f0_predictor.", "source_downs.", "source_resblocks."}
    assert {k.split(".")[0] for k in report.missing} == {"conv_post", "up_acts", "post_act"}
    # a plain (already folded) weight into our weight norm is split into norm and direction
    plain = HiFiGANGenerator(**{**VOC, "weight_norm": False}).state_dict()
    torch.save(OrderedDict((k, v) for k, v in plain.items() if k.startswith("conv_pre.")), tmp_path / "plain.pt")
    load_cosyvoice(tmp_path / "plain.pt", gen, kind="hift", strict=False)
    torch.testing.assert_close(gen.conv_pre.weight, plain["conv_pre.weight"])


def test_unreadable_or_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        inspect_cosyvoice_checkpoint(tmp_path / "missing.pt")
    torch.save({"linear.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(CosyVoiceMappingError, match="neither a CosyVoice flow nor a HiFT"):
        load_cosyvoice(tmp_path / "other.pt", small_flow())
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(CosyVoiceMappingError, match="cannot read"):
        inspect_cosyvoice_checkpoint(tmp_path / "junk.pt")
    torch.save({"epoch": 1}, tmp_path / "empty.pt")
    with pytest.raises(CosyVoiceMappingError, match="holds no tensors"):
        inspect_cosyvoice_checkpoint(tmp_path / "empty.pt")


def test_layout_command(tmp_path, capsys):
    from wenet_echat.token2wav.cosyvoice import main

    torch.save(their_flow(), tmp_path / "flow.pt")
    assert main([str(tmp_path / "flow.pt")]) == 0
    assert "decoder.estimator." in capsys.readouterr().out
    assert main([str(tmp_path / "nope.pt")]) == 1


def test_integer_tensors_are_reported_not_cast(tmp_path):
    state = their_flow()
    state["encoder_proj.weight"] = state["encoder_proj.weight"].long()
    torch.save(state, tmp_path / "flow.pt")
    with pytest.raises(CosyVoiceMappingError, match=r"encoder_proj\.weight: stored int64, model float32"):
        load_cosyvoice(tmp_path / "flow.pt", small_flow(), strict=True)
