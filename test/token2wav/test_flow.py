"""FlowMatching: frame counts, inference shapes, OT-CFM training, the Euler/CFG sampler, fixed noise, windows."""

from __future__ import annotations

import pytest
import torch

from test.token2wav.fixtures import CODES, tiny_model, tokens
from wenet_echat.token2wav.flow import FlowMatching, mel_frames

SMALL = {"encoder_dim": 24, "encoder_layers": 2, "encoder_kernel": 3, "regulator_layers": 1, "channels": [24, 32],
         "blocks": 1, "mid_blocks": 1, "kernel": 3, "n_steps": 4}


def small_flow(seed: int = 0, **over) -> FlowMatching:
    torch.manual_seed(seed)
    flow = FlowMatching(CODES, n_mels=20, **{**SMALL, **over}).eval()
    with torch.no_grad():
        flow.estimator.final_proj.weight.normal_(0, 0.05)
    return flow


def test_mel_frames_rounds_half_up():
    assert [mel_frames(t, 4.0) for t in (0, 1, 13)] == [0, 4, 52]
    assert mel_frames(1, 2.5) == 3 and mel_frames(3, 2.5) == 8  # 2.5 -> 3, 7.5 -> 8
    ratio = 22050 / 256 / 25  # paper: 3.445 frames per token
    assert mel_frames(10, ratio) == 34 and mel_frames(100, ratio) == 345


@pytest.mark.parametrize("mel_rate, n_tok", [(100.0, 13), (22050 / 256, 10), (22050 / 256, 29)])
def test_inference_length_follows_the_ratio(mel_rate, n_tok):
    flow = small_flow(mel_rate=mel_rate)
    mel = flow.inference(tokens(n_tok))
    assert mel.shape == (1, 20, mel_frames(n_tok, mel_rate / 25))
    batch = flow.inference(torch.tensor([tokens(n_tok, 1), tokens(n_tok, 2)]))
    assert batch.shape == (2, 20, mel_frames(n_tok, mel_rate / 25))
    assert torch.isfinite(batch).all()


def test_bad_tokens_and_shapes_are_rejected():
    flow = small_flow()
    with pytest.raises(ValueError, match="code 16 is outside"):
        flow.inference([1, 16])
    with pytest.raises(ValueError, match="code -1"):
        flow.inference([-1])
    with pytest.raises(ValueError, match=r"mel must be \(B=2, 20, >= 16\)"):
        flow.compute_loss(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 20, 10))
    with pytest.raises(ValueError, match="prompt_mel"):
        flow.inference([1, 2], prompt_tokens=[3])
    with pytest.raises(ValueError, match="t_scheduler"):
        FlowMatching(CODES, t_scheduler="exp")


def test_loss_falls_when_overfitting_a_few_examples():
    torch.manual_seed(0)
    flow = FlowMatching(CODES, n_mels=20, **SMALL, prior_loss_weight=0.5)
    gen = torch.Generator().manual_seed(1)
    toks = torch.randint(0, CODES, (4, 12), generator=gen)
    # a target that depends on the tokens, so there is something to learn
    table = torch.randn(CODES, 20, generator=gen)
    mel = table[toks].repeat_interleave(4, dim=1).transpose(1, 2)
    flow.set_mel_stats(mel.mean((0, 2)), mel.std((0, 2)))

    def held_loss() -> float:  # the same t, x0, prompts and dropout draws every time
        with torch.no_grad():
            return sum(float(flow.compute_loss(toks, mel, generator=torch.Generator().manual_seed(1000 + i))["fm_loss"])
                       for i in range(8)) / 8

    before = held_loss()
    untrained = (flow.inference(toks, cfg_rate=0.0) - mel).abs().mean()
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    for step in range(150):
        out = flow.compute_loss(toks, mel, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    after = held_loss()
    assert after < 0.5 * before, (before, after)
    # and the sampler now lands much nearer the targets than the untrained model
    trained = (flow.inference(toks, cfg_rate=0.0, n_steps=8) - mel).abs().mean()
    assert trained < 0.7 * untrained, (untrained, trained)


def test_compute_loss_masks_the_prompt_and_reports_parts():
    flow = small_flow(prompt_prob=1.0, prompt_max_ratio=1.0)
    toks = torch.tensor([tokens(8)])
    mel = torch.randn(1, 20, 32)
    out = flow.compute_loss(toks, mel, generator=torch.Generator().manual_seed(3))
    assert set(out) == {"loss", "fm_loss", "prior_loss"} and out["loss"].requires_grad
    assert torch.isfinite(out["loss"])


def manual_euler(flow, x0, mu, spk, cond, n_steps, cfg):
    grid = flow.time_grid(n_steps).tolist()
    x = x0
    for t0, t1 in zip(grid[:-1], grid[1:]):
        t = torch.full((x.shape[0],), t0)
        v = flow._field(x, mu, spk, cond, t)
        if cfg:
            z = torch.zeros_like
            v = (1 + cfg) * v - cfg * flow._field(x, z(mu), z(spk), z(cond), t)
        x = x + (t1 - t0) * v
    return x


@torch.no_grad()
def test_euler_and_cfg_match_the_formulas():
    flow = small_flow()
    gen = torch.Generator().manual_seed(0)
    x0, mu, cond = (torch.randn(2, 20, 24, generator=gen) for _ in range(3))
    spk = torch.randn(2, 20, generator=gen)
    no_cfg = flow.solve_euler(x0, mu, spk, cond, 3, 0.0)
    torch.testing.assert_close(no_cfg, manual_euler(flow, x0, mu, spk, cond, 3, 0.0))
    guided = flow.solve_euler(x0, mu, spk, cond, 3, 0.7)
    torch.testing.assert_close(guided, manual_euler(flow, x0, mu, spk, cond, 3, 0.7), rtol=1e-5, atol=1e-5)
    assert (guided - no_cfg).abs().max() > 1e-4
    # one step is x0 + v(x0, t=0); the cosine grid runs from 0 to 1
    one = flow.solve_euler(x0, mu, spk, cond, 1, 0.0)
    torch.testing.assert_close(one, x0 + flow._field(x0, mu, spk, cond, torch.zeros(2)))
    grid = flow.time_grid(10)
    assert grid[0] == 0 and abs(grid[-1] - 1) < 1e-6 and (grid.diff() > 0).all()
    with pytest.raises(ValueError, match="n_steps"):
        flow.solve_euler(x0, mu, spk, cond, 0, 0.0)


def test_inference_cfg_zero_is_the_conditional_path():
    flow = small_flow()
    toks = tokens(10)
    a = flow.inference(toks, cfg_rate=0.0)
    with torch.no_grad():
        mu = flow.length_regulator.refine(flow.length_regulator.expand(flow.encode(torch.tensor([toks])), 0, 40))
        x0 = flow.fixed_noise(0, 40).unsqueeze(0)
        ref = flow.denormalize(manual_euler(flow, x0, mu, flow.speaker(None, 1), torch.zeros_like(mu), 4, 0.0))
    torch.testing.assert_close(a, ref)
    assert (flow.inference(toks) - a).abs().max() > 1e-4  # the configured 0.7 differs


def test_fixed_noise_is_indexed_by_absolute_frame():
    flow = small_flow()
    whole = flow.fixed_noise(0, 700)
    torch.testing.assert_close(flow.fixed_noise(100, 350), whole[:, 100:350])
    torch.testing.assert_close(flow.fixed_noise(250, 700), whole[:, 250:])
    assert flow.fixed_noise(5, 5).shape == (20, 0)
    assert not torch.equal(flow.fixed_noise(0, 50, stream=1), whole[:, :50])
    other = small_flow(noise_seed=3)
    assert not torch.equal(other.fixed_noise(0, 50), whole[:, :50])
    assert abs(float(whole.std()) - 1) < 0.05


def test_window_inference_reproduces_whole_synthesis_away_from_the_edge():
    flow = small_flow(n_steps=2)
    toks = tokens(60)
    whole = flow.inference(toks)
    w0, f0 = 10, 40  # f0 is a multiple of frame_multiple (2)
    assert f0 % flow.frame_multiple == 0
    part = flow.inference(toks[w0:], token_offset=w0, frame_start=f0, frame_end=whole.shape[-1])
    assert part.shape[-1] == whole.shape[-1] - f0
    # frames well past the window's left edge are those of whole-utterance synthesis
    torch.testing.assert_close(part[..., 80:], whole[..., f0 + 80 :], rtol=1e-4, atol=1e-4)
    assert (part[..., :4] - whole[..., f0 : f0 + 4]).abs().max() > 1e-3  # the cut edge itself differs


def test_prompt_conditions_the_output():
    flow = small_flow()
    toks = tokens(10)
    plain = flow.inference(toks)
    prompted = flow.inference(toks, prompt_tokens=tokens(5, 1), prompt_mel=torch.randn(20, 21))
    assert prompted.shape == plain.shape
    assert (prompted - plain).abs().max() > 1e-4


def test_speaker_embedding_modes():
    fixed = small_flow()
    with pytest.raises(ValueError, match="one fixed voice"):
        fixed.inference([1, 2], spk_embedding=torch.randn(8))
    multi = small_flow(spk_embed_dim=8)
    with pytest.raises(ValueError, match="8-d speaker embedding"):
        multi.inference([1, 2])
    a = multi.inference([1, 2, 3], spk_embedding=torch.randn(8))
    b = multi.inference([1, 2, 3], spk_embedding=torch.randn(8) + 3)
    assert a.shape == (1, 20, 12) and (a - b).abs().max() > 1e-5
    assert hasattr(multi, "spk_embed_affine_layer") and not hasattr(multi, "spk_embed")


def test_tiny_model_flow_is_deterministic():
    model = tiny_model()
    torch.testing.assert_close(model.token2mel(tokens(9)), model.token2mel(tokens(9)))
