"""StreamingSynthesizer: chunk schedule, lengths, closeness to whole-utterance synthesis, determinism, errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from test.token2wav.fixtures import tiny_model, tokens
from wenet_echat.token2wav.streaming import StreamConfig, fade_in_curve


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def run_stream(model, toks, config=None, piece=1, vocoder="neural"):
    """(chunks, synthesizer, token counts at which each chunk arrived) pushing ``piece`` tokens at a time."""
    synth = model.streamer(vocoder, config)
    chunks, arrivals = [], []
    for i in range(0, len(toks), piece):
        out = synth.push(toks[i : i + piece])
        chunks += out
        arrivals += [min(i + piece, len(toks))] * len(out)
    tail = synth.finish()
    chunks += tail
    arrivals += ["finish"] * len(tail)
    return chunks, synth, arrivals


def test_first_chunk_after_first_chunk_tokens_then_every_hop(model):
    cfg = StreamConfig(first_chunk=18, hop=12, lookahead=3, context=24)
    chunks, _, arrivals = run_stream(model, tokens(60), cfg)
    assert arrivals == [18, 30, 42, 54, "finish"]
    # the first chunk holds (18 - lookahead) tokens of frames minus the held-back overlap
    assert chunks[0].numel() == (model.flow.mel_frames(15) - cfg.overlap) * model.hop_length
    assert all(c.dim() == 1 and c.numel() > 0 for c in chunks)


def test_growing_hop_keeps_the_first_chunk_and_makes_later_ones_longer(model):
    cfg = StreamConfig(first_chunk=18, hop=12, lookahead=3, context=24, hop_growth=2.0, max_hop=48)
    chunks, _, arrivals = run_stream(model, tokens(160), cfg)
    assert arrivals == [18, 30, 54, 102, 150, "finish"]  # hops 12, 24, 48, 48
    fixed, _, fixed_arrivals = run_stream(model, tokens(160), StreamConfig(first_chunk=18, hop=12, lookahead=3,
                                                                          context=24))
    assert len(fixed_arrivals) == 13 and chunks[0].numel() == fixed[0].numel()
    assert torch.cat(chunks).numel() == torch.cat(fixed).numel() == model.expected_samples(160)
    rounded = StreamConfig(first_chunk=5, hop=3, lookahead=1, hop_growth=1.5).triggers()
    assert [next(rounded) for _ in range(6)] == [5, 8, 12, 18, 28, 43]  # hops 3, 4.5, 6.75, ... rounded down


@pytest.mark.parametrize("n_tok, growth", [(7, 1.0), (25, 1.0), (61, 1.0), (61, 2.0)])
def test_streamed_output_matches_whole_synthesis(model, n_tok, growth):
    toks = tokens(n_tok, seed=n_tok)
    chunks, synth, _ = run_stream(model, toks, dataclasses.replace(model.streaming, hop_growth=growth))
    whole_mel = model.token2mel(toks)
    whole = model.mel2wav(whole_mel)
    streamed = torch.cat(chunks)
    assert streamed.numel() == whole.numel() == model.expected_samples(n_tok)
    assert synth.mel.shape == whole_mel.shape
    mel_diff = (synth.mel - whole_mel).abs()
    assert mel_diff.mean() < 0.01 and mel_diff.max() < 0.2, (mel_diff.mean(), mel_diff.max())
    wav_diff = (streamed - whole).abs()
    assert wav_diff.mean() < 0.01 * whole.abs().mean() + 1e-3 and wav_diff.max() < 0.25 * whole.abs().max()


def test_enough_lookahead_and_context_reproduce_whole_synthesis_exactly(model):
    toks = tokens(80, seed=5)
    cfg = StreamConfig(first_chunk=40, hop=10, lookahead=30, context=40, vocoder_context=16, overlap=8)
    chunks, synth, _ = run_stream(model, toks, cfg)
    whole_mel = model.token2mel(toks)
    torch.testing.assert_close(synth.mel, whole_mel, rtol=1e-5, atol=1e-5)
    whole = model.mel2wav(whole_mel)
    assert (torch.cat(chunks) - whole).abs().max() < 0.05 * whole.abs().max()


def test_output_does_not_depend_on_how_tokens_are_grouped(model):
    toks = tokens(45, seed=2)
    one, _, _ = run_stream(model, toks, piece=1)
    many, _, arrivals = run_stream(model, toks, piece=45)
    assert arrivals == [45, 45, 45, 45, 45, 45, 45, 45, 45, 45, "finish"]  # triggers at 6, 10, ..., 42
    assert len(one) == len(many)
    for a, b in zip(one, many):
        torch.testing.assert_close(a, b)


def test_short_and_empty_utterances(model):
    chunks, _, arrivals = run_stream(model, tokens(4))
    assert arrivals == ["finish"] and chunks[0].numel() == model.expected_samples(4)
    chunks, _, _ = run_stream(model, [])
    assert chunks == []
    gl, _, _ = run_stream(model, tokens(12), vocoder="griffinlim")
    assert sum(c.numel() for c in gl) == model.expected_samples(12)


def test_errors(model):
    synth = model.streamer()
    with pytest.raises(ValueError, match="outside"):
        synth.push([99])
    synth.finish()
    assert synth.finish() == []
    with pytest.raises(RuntimeError, match="after finish"):
        synth.push([1])
    with pytest.raises(ValueError, match="lookahead"):
        StreamConfig(first_chunk=3, lookahead=3)
    with pytest.raises(ValueError, match="hop_growth"):
        StreamConfig(hop_growth=0.5)
    with pytest.raises(ValueError, match="max_hop 8 must be >= hop 12"):
        StreamConfig(hop=12, max_hop=8)
    with pytest.raises(ValueError, match="fade"):
        StreamConfig(fade="cosine")
    with pytest.raises(TypeError, match="bad streaming config"):
        StreamConfig.from_dict({"first": 3})


@pytest.mark.parametrize("shape", ["hann", "linear"])
def test_fade_curves(shape):
    w = fade_in_curve(64, shape)
    assert w.shape == (64,) and w[0] < 0.05 and w[-1] > 0.95 and (w.diff() > 0).all()
    torch.testing.assert_close(w + w.flip(0), torch.ones(64))
