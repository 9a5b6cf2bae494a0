import os
import random

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch

from wenet_echat.audio.augment import spec_augment
from wenet_echat.audio.features import FEATURES, compute_features, kaldi_fbank, mel_filters, whisper_log_mel
from wenet_echat.audio.io import (
    PROBLEM_KINDS,
    AudioError,
    audio_info,
    check_audio,
    load_audio,
    load_audio_bytes,
    resample,
    save_audio,
)
from wenet_echat.audio.prosody import f0_track, prosody_stats

SR = 16000


def tone(f0: float, seconds: float = 1.0, sr: int = SR, harmonics: int = 1, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, harmonics + 1))).astype(np.float32)


def dominant_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


# ---- io --------------------------------------------------------------------------------------------------


def test_save_load_round_trip_and_bytes(tmp_path):
    x = tone(440)
    save_audio(tmp_path / "a" / "x.wav", x, SR)
    y, sr = load_audio(str(tmp_path / "a" / "x.wav"))
    assert sr == SR and y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() < 1 / 32768 + 1e-6
    z, sr2 = load_audio_bytes((tmp_path / "a" / "x.wav").read_bytes(), target_sr=8000)
    assert sr2 == 8000 and abs(len(z) - len(x) // 2) <= 1
    info = audio_info(str(tmp_path / "a" / "x.wav"))
    assert (info.sample_rate, info.channels, info.frames, info.duration) == (SR, 1, SR, 1.0)


def test_stereo_is_averaged_and_kept_on_request(tmp_path):
    stereo = np.stack([tone(300), np.zeros(SR, np.float32)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, SR)
    mono, _ = load_audio(str(tmp_path / "s.wav"))
    both, _ = load_audio(str(tmp_path / "s.wav"), mono=False)
    assert both.shape == (SR, 2) and mono.shape == (SR,)
    np.testing.assert_allclose(mono, both.mean(axis=1), atol=1e-6)


def test_kaldi_ark_audio(tmp_path):
    pcm = (tone(200) * 32767).astype(np.int16)
    ark = str(tmp_path / "wav.ark")
    with kaldiio.WriteHelper(f"ark,scp:{ark},{tmp_path / 'wav.scp'}") as w:
        w("utt1", (SR, pcm))
    spec = (tmp_path / "wav.scp").read_text().split()[1]
    y, sr = load_audio(spec)
    assert sr == SR and np.abs(y - pcm / 32768).max() < 1e-6
    assert audio_info(spec).frames == SR and check_audio(spec) == []
    with pytest.raises(AudioError, match="cannot read ark entry"):
        load_audio(ark + ":99999999")


def test_resample_keeps_frequency():
    x = tone(1000, sr=22050)
    y = resample(x, 22050, SR)
    assert len(y) == SR and y.dtype == np.float32
    assert abs(dominant_hz(y, SR) - 1000) < 2
    assert resample(x, 22050, 22050) is not None and np.array_equal(resample(x, 22050, 22050), x)


def _write_fixtures(d):
    sf.write(d / "ok.wav", tone(200), SR)
    (d / "text.wav").write_text("not audio at all")
    sf.write(d / "full.wav", tone(200, 2.0), SR)
    data = (d / "full.wav").read_bytes()
    (d / "trunc.wav").write_bytes(data[: len(data) // 2])  # header promises 2 s
    sf.write(d / "empty.wav", np.zeros(0, np.float32), SR)
    sf.write(d / "short.wav", np.zeros(100, np.float32), SR)
    sf.write(d / "odd.wav", tone(200, sr=7000), 7000)
    sf.write(d / "8k.wav", tone(200, sr=8000), 8000)
    sf.write(d / "stereo.wav", np.stack([tone(200)] * 2, axis=1), SR)
    sf.write(d / "long.wav", np.zeros(31 * 8000, np.float32), 8000)
    nan = tone(200)
    nan[10] = np.nan
    sf.write(d / "nan.wav", nan, SR, subtype="FLOAT")


@pytest.mark.parametrize(
    "name, kinds",
    [
        ("ok.wav", []),
        ("missing.wav", ["missing"]),
        ("text.wav", ["unreadable"]),
        ("trunc.wav", ["unreadable"]),
        ("empty.wav", ["empty"]),
        ("short.wav", ["too_short"]),
        ("odd.wav", ["odd_sample_rate"]),
        ("8k.wav", ["sample_rate_mismatch"]),
        ("stereo.wav", ["multi_channel"]),
        ("long.wav", ["sample_rate_mismatch", "too_long"]),
        ("nan.wav", ["nan"]),
    ],
)
def test_check_audio_kinds(tmp_path, name, kinds):
    _write_fixtures(tmp_path)
    problems = check_audio(str(tmp_path / name), expected_sr=SR, max_duration=30.0)
    assert [p.kind for p in problems] == kinds
    assert all(p.kind in PROBLEM_KINDS and name in p.message for p in problems)
    fatal = {p.kind for p in problems if p.fatal}
    assert fatal == set(kinds) - {"sample_rate_mismatch", "multi_channel"}


def test_load_errors_name_the_file(tmp_path):
    _write_fixtures(tmp_path)
    with pytest.raises(AudioError, match="missing.wav: no such file"):
        load_audio(str(tmp_path / "missing.wav"))
    with pytest.raises(AudioError, match="text.wav: cannot decode audio"):
        load_audio(str(tmp_path / "text.wav"))


def test_save_audio_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "x.wav"
    save_audio(path, tone(100), SR)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(sf, "write", boom)
    with pytest.raises(OSError):
        save_audio(path, tone(300), SR)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["x.wav"]


# ---- features ------------------------------------------------------------------------------------------


def test_mel_filters_equal_whisper_assets():
    whisper = pytest.importorskip("whisper")
    ref = np.load(os.path.join(os.path.dirname(whisper.audio.__file__), "assets", "mel_filters.npz"))
    np.testing.assert_allclose(mel_filters(16000, 400, 80), ref["mel_80"], atol=1e-6)
    np.testing.assert_allclose(mel_filters(16000, 400, 128), ref["mel_128"], atol=1e-6)


@pytest.mark.parametrize("seconds, kind", [(0.5, "noise"), (3.37, "tone"), (7.0, "noise"), (1.01, "silence+tone")])
def test_whisper_log_mel_matches_reference(seconds, kind):
    whisper = pytest.importorskip("whisper")
    rng = np.random.default_rng(int(seconds * 100))
    n = int(seconds * SR)
    x = (rng.standard_normal(n) * 0.1).astype(np.float32) if kind == "noise" else tone(150, seconds, harmonics=8)[:n]
    if kind == "silence+tone":
        x[: n // 2] = 0
    ours = whisper_log_mel(x)
    ref = whisper.audio.log_mel_spectrogram(torch.from_numpy(x)).T
    assert ours.shape == ref.shape == (n // 160, 80)
    assert (ours - ref).abs().max().item() < 1e-4


def test_fbank_and_registry():
    x = tone(300, 1.0)
    fb = kaldi_fbank(x)
    assert fb.shape == (98, 80) and torch.isfinite(fb).all()
    np.testing.assert_allclose(compute_features("fbank", x, SR, {"num_mel_bins": 40}), kaldi_fbank(x, num_mel_bins=40))
    assert compute_features("whisper_log_mel", x, SR).shape == (100, 80)
    assert FEATURES.names() == ["fbank", "whisper_log_mel"]
    with pytest.raises(ValueError, match="needs 16000 Hz"):
        compute_features("whisper_log_mel", x, 8000)
    with pytest.raises(KeyError, match="unknown features 'mfcc'"):
        compute_features("mfcc", x, SR)


def test_spec_augment_masks_without_touching_input():
    feats = torch.ones(200, 80)
    out = spec_augment(feats, rng=random.Random(3))
    assert feats.eq(1).all() and out.shape == feats.shape
    zero_cols = int((out == 0).all(dim=0).sum())
    zero_rows = int((out == 0).all(dim=1).sum())
    assert 0 < zero_cols <= 20 and 0 < zero_rows <= 100
    assert torch.equal(out, spec_augment(feats, rng=random.Random(3)))
    assert not torch.equal(out, spec_augment(feats, rng=random.Random(4)))
    tiny = spec_augment(torch.ones(5, 4), max_freq_width=10, max_time_width=50, rng=random.Random(0))
    assert tiny.shape == (5, 4)


# ---- prosody -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("f0", [90.0, 110.0, 220.0, 300.0, 420.0])
def test_f0_of_harmonic_signals(f0):
    rng = np.random.default_rng(0)
    x = tone(f0, 1.5, harmonics=5) + (rng.standard_normal(int(1.5 * SR)) * 0.01).astype(np.float32)
    track = f0_track(x, SR)
    assert (track > 0).mean() > 0.9
    assert abs(np.median(track[track > 0]) - f0) / f0 < 0.03


def test_f0_unvoiced_and_other_rates():
    noise = (np.random.default_rng(1).standard_normal(SR) * 0.2).astype(np.float32)
    assert (f0_track(noise, SR) > 0).mean() < 0.1
    assert (f0_track(np.zeros(SR, np.float32), SR) > 0).sum() == 0
    track = f0_track(tone(150, 1.0, sr=22050, harmonics=3), 22050)
    assert abs(np.median(track[track > 0]) - 150) < 3


def test_prosody_stats():
    x = np.concatenate([np.zeros(SR, np.float32), tone(200, 2.0, harmonics=3)])
    quiet = prosody_stats(x * 0.1, SR, n_words=4)
    loud = prosody_stats(x, SR, n_words=4)
    assert loud["duration"] == pytest.approx(3.0)
    assert loud["active_duration"] == pytest.approx(2.0, abs=0.05)
    assert loud["speaking_rate"] == pytest.approx(4 / loud["active_duration"])
    assert loud["median_f0"] == pytest.approx(200, rel=0.02)
    assert loud["rms_db"] - quiet["rms_db"] == pytest.approx(20, abs=0.5)
    assert np.isnan(prosody_stats(x, SR)["speaking_rate"])
