"""Voice settings (user speakers), emotion styles and the assistant voice, rendered with espeak-ng / flite + numpy.

A *voice setting* is an engine voice plus pitch, rate and post-processing:

- ``warp`` > 1 plays the synthesis back faster (resampling), raising F0 *and* formants together: a smaller vocal
  tract, used for children (with a higher base pitch and a slightly faster rate);
- old voices speak slower, with tremolo (amplitude modulation), vibrato (a small periodic time warp) and
  breathiness (envelope-shaped high-passed noise); espeak's grandma/grandpa variants add their own flutter.

Emotions are prosody: pitch level (espeak ``-p`` / flite ``int_f0_target_mean``), pitch range (SSML
``<prosody range>`` / ``int_f0_target_stddev``), rate, loudness (gain after level normalisation) and, for anger,
a harder, slightly saturated voice. Everything is deterministic: the engines are, and noise is seeded.
"""

from __future__ import annotations

import io
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from wenet_echat.audio.io import resample

USER_SR = 16000
EMOTIONS_USED: tuple[str, ...] = ("neutral", "happy", "sad", "angry")


@dataclass(frozen=True)
class Voice:
    vid: str  # stable id, used as the speaker field
    engine: str  # espeak | flite
    base: str  # espeak voice "en-us+f3" or flite voice name
    gender: str
    age: str
    pitch: float  # espeak -p (0-99) or flite F0 mean in Hz
    rate: float  # speaking-rate factor (1.0 = engine default)
    warp: float = 1.0  # vocal-tract/pitch scaling by resampling
    tremolo: float = 0.0  # amplitude-modulation depth
    vibrato: float = 0.0  # relative F0 modulation depth
    breath: float = 0.0  # breath-noise level relative to the speech

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Style:
    """Prosodic style relative to a voice's base setting."""

    pitch: float  # espeak -p offset / flite F0 factor exponent (semitones)
    range: str  # SSML range name for espeak
    range_factor: float  # flite F0 stddev factor
    rate: float  # rate factor
    gain_db: float
    drive: float = 0.0  # tanh saturation amount (anger)


# user emotions: semitone-ish pitch shifts, range, rate and loudness chosen to be measurably distinct
EMOTION_STYLES: dict[str, Style] = {
    "neutral": Style(pitch=0, range="medium", range_factor=1.0, rate=1.0, gain_db=0.0),
    "happy": Style(pitch=3.5, range="x-high", range_factor=2.0, rate=1.12, gain_db=3.0),
    "sad": Style(pitch=-3.0, range="x-low", range_factor=0.35, rate=0.74, gain_db=-7.0),
    "angry": Style(pitch=1.0, range="high", range_factor=1.5, rate=1.18, gain_db=6.0, drive=2.5),
}
# the assistant's styles per reply emotion
REPLY_STYLES: dict[str, Style] = {
    "neutral": Style(pitch=0, range="medium", range_factor=1.0, rate=1.0, gain_db=0.0),
    "pleasant": Style(pitch=1.0, range="high", range_factor=1.3, rate=1.0, gain_db=0.0),
    "happy": Style(pitch=2.5, range="x-high", range_factor=1.8, rate=1.1, gain_db=1.5),
    "comforting": Style(pitch=-1.5, range="low", range_factor=0.6, rate=0.85, gain_db=-3.0),
    "apologetic": Style(pitch=-1.0, range="low", range_factor=0.7, rate=0.9, gain_db=-2.0),
}
ASSISTANT_SR = 16000  # flite slt's native rate
ASSISTANT = Voice("assistant_slt", "flite", "slt", "female", "adult", pitch=175.0, rate=1.0)
FLITE_F0 = {"kal": 105.0, "kal16": 105.0, "awb": 115.0, "rms": 100.0, "slt": 175.0}
ESPEAK_RATE = 165  # words per minute at rate 1.0


def _voices() -> list[Voice]:
    v: list[Voice] = []

    def add(engine, base, gender, age, pitch, rate, **kw):
        name = base.replace("en-us+", "").replace("en-gb-x-rp+", "rp-").replace("en-us", "us").replace("+", "-")
        v.append(Voice(f"{age[0]}{gender[0]}{len(v):02d}_{engine[0]}_{name}", engine, base, gender, age,
                       pitch, rate, **kw))

    # adult female (8)
    for i, var in enumerate(["f1", "f2", "f3", "f4", "f5", "Annie", "linda"]):
        add("espeak", f"en-us+{var}" if i % 2 == 0 else f"en-gb-x-rp+{var}", "female", "adult", 48 + 3 * (i % 3),
            0.95 + 0.04 * (i % 3))
    add("flite", "slt", "female", "adult", 195.0, 1.05)
    # adult male (8)
    for i, var in enumerate(["m1", "m2", "m3", "m4", "m6", "m7"]):
        add("espeak", f"en-us+{var}" if i % 2 == 0 else f"en-gb-x-rp+{var}", "male", "adult", 38 + 4 * (i % 3),
            0.95 + 0.04 * (i % 3))
    add("flite", "kal", "male", "adult", 110.0, 1.0)
    add("flite", "awb", "male", "adult", 118.0, 1.05)
    # old female (8): slower, lower, tremolo / vibrato / breath
    for i, var in enumerate(["grandma", "f2", "f4", "grandma", "aunty", "f5", "grandma"]):
        add("espeak", f"en-us+{var}" if i % 2 == 0 else f"en-gb-x-rp+{var}", "female", "old", 32 + 3 * (i % 4),
            0.74 + 0.03 * (i % 3), tremolo=0.15 + 0.05 * (i % 3), vibrato=0.02 + 0.006 * (i % 3),
            breath=0.05 + 0.02 * (i % 2))
    add("flite", "slt", "female", "old", 160.0, 0.75, tremolo=0.25, vibrato=0.03, breath=0.06)
    # old male (8)
    for i, var in enumerate(["grandpa", "m3", "m5", "grandpa", "m8", "m6"]):
        add("espeak", f"en-us+{var}" if i % 2 == 0 else f"en-gb-x-rp+{var}", "male", "old", 22 + 3 * (i % 4),
            0.74 + 0.03 * (i % 3), tremolo=0.15 + 0.05 * (i % 3), vibrato=0.02 + 0.006 * (i % 3),
            breath=0.05 + 0.02 * (i % 2))
    add("flite", "rms", "male", "old", 92.0, 0.76, tremolo=0.25, vibrato=0.03, breath=0.06)
    add("flite", "awb", "male", "old", 98.0, 0.74, tremolo=0.2, vibrato=0.025, breath=0.05)
    # child female (8): high pitch, vocal tract scaled by warp, faster
    for i, var in enumerate(["f1", "f2", "f3", "f4", "f5", "Annie", "belinda"]):
        add("espeak", f"en-us+{var}" if i % 2 == 0 else f"en-gb-x-rp+{var}", "female", "child", 70 + 4 * (i % 3),
            1.08 + 0.03 * (i % 3), warp=1.18 + 0.03 * (i % 3))
    add("flite", "slt", "female", "child", 250.0, 1.1, warp=1.15)
    # child male (8): from male variants, pitched well up and warped (children's voices are hardly gendered)
    for i, var in enumerate(["m1", "m2", "m3", "m4", "m7", "Andy"]):
        add("espeak", f"en-us+{var}" if i % 2 == 0 else f"en-gb-x-rp+{var}", "male", "child", 80 + 4 * (i % 3),
            1.08 + 0.03 * (i % 3), warp=1.25 + 0.03 * (i % 3))
    add("flite", "kal", "male", "child", 215.0, 1.1, warp=1.25)
    add("flite", "rms", "male", "child", 260.0, 1.1, warp=1.28)
    return v


VOICES: tuple[Voice, ...] = tuple(_voices())
VOICE_BY_ID: dict[str, Voice] = {v.vid: v for v in VOICES}


def engine_versions() -> dict[str, str]:
    out = {}
    for name, cmd in (("espeak-ng", ["espeak-ng", "--version"]), ("flite", ["flite", "--version"]),
                      ("sox", ["sox", "--version"])):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            lines = [ln.strip() for ln in (r.stdout or r.stderr).strip().splitlines()]
            out[name] = next((ln for ln in lines if "version" in ln.lower()), lines[0])
        except (OSError, subprocess.SubprocessError, IndexError):
            out[name] = "unavailable"
    return out


def _espeak(text: str, voice: Voice, style: Style) -> tuple[np.ndarray, int]:
    pitch = int(np.clip(round(voice.pitch + 4.0 * style.pitch), 0, 99))
    rate = int(round(ESPEAK_RATE * voice.rate * style.rate / voice.warp))
    ssml = f'<speak><prosody range="{style.range}">{_xml_escape(text)}</prosody></speak>'
    cmd = ["espeak-ng", "-m", "-v", voice.base, "-p", str(pitch), "-s", str(max(rate, 80)), "--stdout", ssml]
    r = subprocess.run(cmd, capture_output=True, check=True)
    wav, sr = sf.read(io.BytesIO(r.stdout), dtype="float32")
    return wav, sr


def _flite(text: str, voice: Voice, style: Style) -> tuple[np.ndarray, int]:
    f0 = voice.pitch * 2 ** (style.pitch / 12)
    stddev = 0.12 * f0 * style.range_factor
    stretch = 1.0 / (voice.rate * style.rate / voice.warp)
    tmpdir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    fd, tmp = tempfile.mkstemp(suffix=".wav", dir=tmpdir)
    os.close(fd)
    try:
        cmd = ["flite", "-voice", voice.base, "--setf", f"duration_stretch={stretch:.4f}",
               "--setf", f"int_f0_target_mean={f0 / voice.warp:.2f}", "--setf", f"int_f0_target_stddev={stddev:.2f}",
               "-t", text, "-o", tmp]
        subprocess.run(cmd, capture_output=True, check=True)
        wav, sr = sf.read(tmp, dtype="float32")
    finally:
        os.unlink(tmp)
    return wav, sr


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _active_rms(x: np.ndarray, sr: int) -> float:
    hop = sr // 100
    n = len(x) // hop
    if n == 0:
        return float(np.sqrt(np.mean(x**2) + 1e-12))
    e = np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1)
    thr = e.max() * 10 ** (-35 / 10)
    return float(np.sqrt(np.mean(e[e > thr]) + 1e-12))


def _trim(x: np.ndarray, sr: int, pad: float = 0.08) -> np.ndarray:
    """Cut leading/trailing silence, keep ``pad`` seconds."""
    idx = np.flatnonzero(np.abs(x) > 0.01 * (np.abs(x).max() + 1e-9))
    if len(idx) == 0:
        return x
    p = int(pad * sr)
    return x[max(idx[0] - p, 0): idx[-1] + p]


def post_process(wav: np.ndarray, sr: int, voice: Voice, style: Style, rng: np.random.Generator,
                 out_sr: int) -> np.ndarray:
    """Warp, age effects, level and emotion loudness; returns float32 at ``out_sr``."""
    wav = _trim(wav.astype(np.float32), sr)
    wav = resample(wav, int(round(sr * voice.warp)), out_sr)
    t = np.arange(len(wav), dtype=np.float64) / out_sr
    if voice.vibrato > 0:  # time warp t + a*sin(2 pi f t)/(2 pi f): instantaneous F0 factor 1 + a*cos(...)
        f = 5.5
        src = (t + voice.vibrato * np.sin(2 * np.pi * f * t) / (2 * np.pi * f)) * out_sr
        wav = np.interp(np.clip(src, 0, len(wav) - 1), np.arange(len(wav)), wav).astype(np.float32)
    if voice.tremolo > 0:
        wav = wav * (1 - voice.tremolo * 0.5 * (1 + np.sin(2 * np.pi * 6.0 * t))).astype(np.float32)
    if voice.breath > 0:  # envelope-following high-passed noise
        env = lfilter([0.005], [1, -0.995], np.abs(wav))
        noise = lfilter([1, -1], [1], rng.standard_normal(len(wav)))
        wav = wav + (voice.breath * 3.0 * env * noise).astype(np.float32)
    wav = wav * (0.1 / _active_rms(wav, out_sr))  # -20 dBFS active level
    if style.drive > 0:
        wav = np.tanh(style.drive * wav * 3) / (style.drive * 3) * 1.6
        wav = wav * (0.1 / _active_rms(wav, out_sr))
    wav = wav * 10 ** (style.gain_db / 20)
    peak = np.abs(wav).max()
    if peak > 0.95:  # soft limit instead of clipping
        wav = wav * (0.95 / peak)
    return wav.astype(np.float32)


def synthesize(text: str, voice: Voice, style: Style, rng: np.random.Generator,
               out_sr: int | None = USER_SR) -> tuple[np.ndarray, int]:
    """Speak ``text`` with ``voice`` in ``style``; ``out_sr=None`` keeps the engine's native rate."""
    wav, sr = (_espeak if voice.engine == "espeak" else _flite)(text, voice, style)
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    target = sr if out_sr is None else out_sr
    return post_process(wav, sr, voice, style, rng, target), target
