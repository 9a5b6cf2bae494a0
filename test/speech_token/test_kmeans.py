"""k-means speech tokenizer: training determinism, token rate, persistence, statistics and the training CLI."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from wenet_echat.audio.features import whisper_log_mel
from wenet_echat.bin import train_speech_tokenizer
from wenet_echat.encoder import WhisperEncoder, WhisperEncoderConfig
from wenet_echat.speech_token import (
    FeatureConfig,
    KMeansTokenizer,
    TokenizerFileError,
    build_speech_tokenizer,
    codebook_stats,
    fit_kmeans_tokenizer,
    stacked_features,
    train_kmeans,
)
from wenet_echat.speech_token.kmeans import (
    _update_centroids,
    assign,
    fit_pca,
    load_whisper_encoder_frames,
    whisper_encoder_frames,
)

SR = 16000


def sound(kind: str, seconds: float, seed: int = 0) -> np.ndarray:
    """``low``/``high`` tones (with a little noise) or white ``noise``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SR))) / SR
    if kind == "noise":
        return (0.3 * rng.standard_normal(t.size)).astype(np.float32)
    f0 = {"low": 220.0, "high": 3000.0}[kind]
    return (0.5 * np.sin(2 * np.pi * f0 * t) + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


KINDS = ("low", "high", "noise")


@pytest.fixture(scope="module")
def trained() -> KMeansTokenizer:
    raw = [stacked_features(sound(kind, 1.0, seed), SR, FeatureConfig()) for kind in KINDS for seed in range(2)]
    tok, _ = fit_kmeans_tokenizer(raw, FeatureConfig(), k=8, pca_dim=16, iters=20, seed=3)
    return tok


def test_train_kmeans_is_deterministic_for_a_seed():
    x = np.random.default_rng(0).standard_normal((3000, 6)).astype(np.float32)
    a = train_kmeans([x[:1000], x[1000:]], k=12, iters=10, seed=5, max_frames=2000)
    b = train_kmeans(x, k=12, iters=10, seed=5, max_frames=2000)
    c = train_kmeans(x, k=12, iters=10, seed=6, max_frames=2000)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert a.inertia == b.inertia and a.n_frames == 2000
    assert not np.array_equal(a.centroids, c.centroids)


def test_train_kmeans_finds_separated_blobs_and_reports_inertia():
    rng = np.random.default_rng(1)
    means = np.array([[0, 0], [10, 0], [0, 10]], dtype=np.float32)
    x = np.concatenate([m + 0.1 * rng.standard_normal((200, 2)) for m in means]).astype(np.float32)
    res = train_kmeans(x, k=3, iters=20, seed=0)
    order = np.lexsort(res.centroids.T[::-1])
    np.testing.assert_allclose(res.centroids[order], means[np.lexsort(means.T[::-1])], atol=0.05)
    labels, dists = assign(x, res.centroids)
    manual = ((x - res.centroids[labels]) ** 2).sum()
    assert res.inertia == pytest.approx(float(manual), rel=1e-4)
    assert sorted(res.counts.tolist()) == [200, 200, 200]


def test_empty_cluster_is_reseeded_with_the_farthest_frame():
    x = np.array([[0.0], [1.0], [2.0], [50.0]], dtype=np.float32)
    labels = np.array([0, 0, 0, 0])
    dists = np.array([1.0, 0.0, 1.0, 2401.0])
    centroids = _update_centroids(x, labels, dists, k=2)
    assert centroids[0, 0] == pytest.approx(13.25)
    assert centroids[1, 0] == 50.0


def test_train_kmeans_rejects_too_few_frames():
    with pytest.raises(ValueError, match="at least 8 frames"):
        train_kmeans(np.zeros((5, 3), np.float32), k=8)


def test_pca_axes_are_orthonormal_and_whitening_gives_unit_variance():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((5000, 4)) * np.array([5.0, 2.0, 1.0, 0.1])).astype(np.float32)
    mean, proj = fit_pca(x, 2)
    np.testing.assert_allclose(proj.T @ proj, np.eye(2), atol=1e-5)
    assert abs(proj[0, 0]) > 0.99 and abs(proj[1, 1]) > 0.99  # largest-variance axes first
    mean_w, proj_w = fit_pca(x, 3, whiten=True)
    np.testing.assert_allclose(((x - mean_w) @ proj_w).std(axis=0), 1.0, rtol=0.02)
    assert fit_pca(x, None) is None


@pytest.mark.parametrize("seconds", [0.03, 0.04, 0.5, 1.0, 1.23, 2.999])
def test_token_rate_is_floor_of_duration_times_25(trained, seconds):
    n = int(round(seconds * SR))
    tokens = trained.encode(sound("low", seconds), SR)
    assert len(tokens) == n // 640 == math.floor(n / SR * 25)
    assert all(isinstance(t, int) and 0 <= t < trained.codebook_size for t in tokens)
    assert trained.frame_rate == 25


def test_other_sample_rates_are_resampled(trained):
    wav16 = sound("high", 1.0)
    wav8 = wav16[::2].copy()
    assert len(trained.encode(wav8, 8000)) == 25


def test_different_sounds_get_different_dominant_codes(trained):
    dominant = {kind: np.bincount(trained.encode(sound(kind, 1.0, seed=9), SR)).argmax() for kind in KINDS}
    assert len(set(dominant.values())) == len(KINDS), dominant


def test_encode_batch_matches_encode(trained):
    wavs = [sound(kind, 0.4 + 0.3 * i) for i, kind in enumerate(KINDS)]
    assert trained.encode_batch(wavs, SR) == [trained.encode(w, SR) for w in wavs]


def test_save_load_round_trip_gives_identical_tokens(trained, tmp_path):
    path = tmp_path / "tok" / "kmeans8.npz"
    trained.save(path)
    assert os.listdir(path.parent) == ["kmeans8.npz"]  # no temporary left behind
    loaded = build_speech_tokenizer({"type": "kmeans", "path": str(path)})
    np.testing.assert_array_equal(loaded.centroids, trained.centroids)
    assert loaded.config == trained.config and loaded.config.input_dim == 320
    assert loaded.train_info["k"] == 8
    for kind in KINDS:
        wav = sound(kind, 0.8, seed=4)
        assert loaded.encode(wav, SR) == trained.encode(wav, SR)


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        KMeansTokenizer.load(missing)
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("hello")
    with pytest.raises(TokenizerFileError, match="garbage.npz"):
        KMeansTokenizer.load(garbage)
    other = tmp_path / "other.npz"
    np.savez(other, centroids=np.zeros((2, 2)))
    with pytest.raises(TokenizerFileError, match="missing format, config"):
        KMeansTokenizer.load(other)


def test_registry_errors():
    with pytest.raises(KeyError, match="needs a 'type'"):
        build_speech_tokenizer({"path": "x.npz"})
    with pytest.raises(KeyError, match="known: kmeans, s3"):
        build_speech_tokenizer({"type": "hubert"})


def test_codebook_stats_on_a_hand_made_example():
    stats = codebook_stats([[0, 0], [1, 1]], k=4)
    assert stats == {"tokens": 4, "used": 2, "unused": 2, "entropy_bits": 1.0, "perplexity": 2.0}
    stats = codebook_stats([[0, 1, 2, 3], []], k=4)
    assert stats["entropy_bits"] == pytest.approx(2.0) and stats["perplexity"] == pytest.approx(4.0)
    skewed = codebook_stats([[0, 0, 0, 1]], k=2)  # p = 3/4, 1/4
    assert skewed["entropy_bits"] == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    assert codebook_stats([], k=3) == {"tokens": 0, "used": 0, "unused": 3, "entropy_bits": 0.0, "perplexity": 0.0}
    with pytest.raises(ValueError, match="speech code 4 is outside"):
        codebook_stats([[1, 4]], k=4)


def test_feature_normalisation_and_config_checks():
    wav = sound("low", 1.0)
    raw = stacked_features(wav, SR, FeatureConfig(norm="meanvar"))
    frames = raw.reshape(-1, 80)  # un-stack: rows are consecutive 10 ms frames
    assert np.abs(frames.mean(axis=0)).max() < 1e-4
    with pytest.raises(ValueError, match="feature_source"):
        FeatureConfig(feature_source="mfcc")
    with pytest.raises(ValueError, match="norm"):
        FeatureConfig(norm="cmvn")


def test_encoder_layer_and_a_trained_model_dir_as_source(tmp_path):
    """Units from a middle block of an encoder trained by this toolkit: read from its model dir's train.yaml and
    latest checkpoint, they equal the frames of the same weights run by hand."""
    from wenet_echat.train.checkpoint import save_checkpoint
    from wenet_echat.utils.config import save_config

    torch.manual_seed(0)
    enc_conf = {"n_mels": 80, "d_model": 16, "n_heads": 2, "n_layers": 2, "ffn_dim": 32, "dropout": 0.1}
    encoder = WhisperEncoder(WhisperEncoderConfig(**enc_conf))
    model = torch.nn.Module()
    model.encoder, model.cue_head = encoder, torch.nn.Linear(16, 3)  # other weights of the checkpoint are ignored
    model_dir = tmp_path / "exp_encoder"
    save_checkpoint(model_dir, "final", model)
    save_config({"model": {"arch": "encoder_pretrain", "encoder": "whisper", "encoder_conf": enc_conf}},
                model_dir / "train.yaml")
    wav = sound("high", 1.0)
    mel = whisper_log_mel(wav).unsqueeze(0)
    lengths = torch.tensor([mel.size(1)])
    encoder.eval()
    with torch.no_grad():
        last = encoder(mel, lengths)[0]
        first_block = encoder.forward_layers(*encoder.embed(mel, lengths), n_layers=1)[0]
    for source in (model_dir, model_dir / "final"):
        torch.testing.assert_close(load_whisper_encoder_frames(str(source))(wav), last)
        torch.testing.assert_close(load_whisper_encoder_frames(str(source), layer=1)(wav), first_block)
    assert not torch.allclose(first_block, last, atol=1e-3)
    with pytest.raises(ValueError, match=r"encoder_layer 3 is not a block of this encoder \(1..2\)"):
        load_whisper_encoder_frames(str(model_dir), layer=3)
    with pytest.raises(ValueError, match="n_layers must lie in"):
        encoder.forward_layers(*encoder.embed(mel, lengths), n_layers=0)
    with pytest.raises(ValueError, match="encoder_layer must be a block number"):
        FeatureConfig(feature_source="log_mel", encoder_layer=2)
    cfg = FeatureConfig(feature_source="encoder", stack=2, encoder_ckpt=str(model_dir), encoder_layer=1)
    raw = [stacked_features(sound(kind, 1.0), SR, cfg, load_whisper_encoder_frames(str(model_dir), 1))
           for kind in KINDS]
    tok, _ = fit_kmeans_tokenizer(raw, cfg, k=4, pca_dim=8, iters=5, seed=0)
    tok.save(tmp_path / "layer1.npz")
    again = KMeansTokenizer.load(tmp_path / "layer1.npz")  # the stored checkpoint and layer rebuild the encoder
    assert again.config.encoder_layer == 1 and again.encode(wav, SR) == tok.encode(wav, SR)


def test_encoder_feature_source(tmp_path):
    torch.manual_seed(0)
    encoder = WhisperEncoder(WhisperEncoderConfig(d_model=16, n_heads=2, n_layers=1, ffn_dim=32, dropout=0.0))
    frames_of = whisper_encoder_frames(encoder)
    cfg = FeatureConfig(feature_source="encoder", stack=2)
    assert cfg.frame_rate == 25
    raw = [stacked_features(sound(kind, 1.0), SR, cfg, frames_of) for kind in KINDS]
    tok, _ = fit_kmeans_tokenizer(raw, cfg, k=4, pca_dim=8, iters=5, seed=0, encoder=frames_of)
    wav = sound("high", 1.01)
    mel_frames = len(wav) // 160
    tokens = tok.encode(wav, SR)
    assert len(tokens) == math.ceil(mel_frames / 2) // 2
    assert abs(len(tokens) - len(wav) / SR * 25) <= 1
    path = tmp_path / "enc.npz"
    tok.save(path)
    with pytest.raises(ValueError, match="needs an encoder"):
        KMeansTokenizer.load(path).encode(wav, SR)
    assert KMeansTokenizer.load(path, encoder=frames_of).encode(wav, SR) == tokens


def _write_list(tmp_path) -> str:
    lines = []
    for i, kind in enumerate(KINDS * 2):
        wav = tmp_path / f"{kind}{i}.wav"
        sf.write(wav, sound(kind, 0.6 + 0.1 * i, seed=i), SR, subtype="PCM_16")
        lines.append({"key": f"u{i}", "response_wav": str(wav)})
    lines.append({"key": "dup", "response_wav": lines[0]["response_wav"]})
    lines.append({"key": "text_only"})
    path = tmp_path / "data.list"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return str(path)


def test_train_cli_writes_model_and_summary_then_skips(tmp_path, capsys):
    data_list = _write_list(tmp_path)
    out = tmp_path / "exp" / "kmeans8.npz"
    argv = ["--data_list", data_list, "--k", "8", "--out", str(out), "--iters", "10", "--pca_dim", "16"]
    assert train_speech_tokenizer.main(argv) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["k"] == 8 and summary["wavs"] == 6
    assert summary["frames_total"] == sum(int(round((0.6 + 0.1 * i) * SR)) // 640 for i in range(6))
    assert 1.0 < summary["train_usage"]["perplexity"] <= 8 and summary["train_usage"]["used"] >= 3
    tok = KMeansTokenizer.load(out)
    assert tok.codebook_size == 8
    mtime = out.stat().st_mtime_ns
    capsys.readouterr()
    assert train_speech_tokenizer.main(argv) == 0
    assert "up to date" in capsys.readouterr().out and out.stat().st_mtime_ns == mtime
    assert train_speech_tokenizer.main(argv + ["--seed", "1"]) == 0  # other options: retrained
    assert out.stat().st_mtime_ns != mtime


def test_train_cli_max_hours_and_bad_wav(tmp_path, capsys):
    data_list = _write_list(tmp_path)
    out = tmp_path / "k.npz"
    argv = ["--data_list", data_list, "--k", "4", "--out", str(out), "--iters", "3", "--pca_dim", "8"]
    assert train_speech_tokenizer.main(argv + ["--max_hours", str(2.0 / 3600)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["hours"] * 3600 <= 2.0
    with open(data_list, "a") as f:
        f.write(json.dumps({"key": "bad", "response_wav": str(tmp_path / "missing.wav")}) + "\n")
    assert train_speech_tokenizer.main(argv + ["--force"]) == 1
    assert f"{data_list}:9:" in capsys.readouterr().err
