"""Background sound events made in numpy (16 kHz) and mixed with the speech at a given SNR and placement.

Every generator takes a seeded ``numpy.random.Generator``, so each example gets its own variant (frequencies,
timing, number of beeps/knocks, filter colour) while the corpus stays reproducible. The sounds:

- rain: low-passed (pink-ish) noise with random droplet clicks, always *under* the whole utterance;
- alarm: square/sine beep trains around 2-3.5 kHz;
- siren: a sweeping (wail) or two-tone (hi-lo) tone with harmonics;
- doorbell: a two-tone "ding-dong" of decaying bell partials;
- knock: groups of short resonant low-frequency bursts;
- cough: one to three band-passed noise bursts with a sharp attack and a voiced onset.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, lfilter

SR = 16000
PLACEMENTS: tuple[str, ...] = ("under", "before", "after", "overlap")


def _t(dur: float) -> np.ndarray:
    return np.arange(int(dur * SR)) / SR


def _bandpass(x: np.ndarray, lo: float, hi: float, order: int = 2) -> np.ndarray:
    b, a = butter(order, [lo / (SR / 2), hi / (SR / 2)], btype="band")
    return lfilter(b, a, x)


def _fade(x: np.ndarray, ms: float = 10.0) -> np.ndarray:
    n = min(int(ms * SR / 1000), len(x) // 2)
    if n > 0:
        ramp = np.linspace(0, 1, n)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def rain(rng: np.random.Generator, dur: float) -> np.ndarray:
    n = int(dur * SR)
    cutoff = rng.uniform(1500, 4000)
    b, a = butter(1, cutoff / (SR / 2))
    x = lfilter(b, a, rng.standard_normal(n))
    drops = np.zeros(n)
    k = int(dur * rng.uniform(20, 60))
    drops[rng.integers(0, n, k)] = rng.uniform(0.5, 2.0, k)
    drops = _bandpass(drops, 2000, 6000) * 4
    return _fade(x + drops, 200)


def alarm(rng: np.random.Generator, dur: float) -> np.ndarray:
    f = rng.uniform(2000, 3500)
    on, off = rng.uniform(0.08, 0.2), rng.uniform(0.06, 0.15)
    t = _t(dur)
    tone = np.sign(np.sin(2 * np.pi * f * t)) * 0.6 if rng.random() < 0.5 else np.sin(2 * np.pi * f * t)
    gate = ((t % (on + off)) < on).astype(float)
    gate = lfilter([0.05], [1, -0.95], gate)  # soften the clicks
    return _fade(tone * gate)


def siren(rng: np.random.Generator, dur: float) -> np.ndarray:
    t = _t(dur)
    lo, hi = rng.uniform(500, 800), rng.uniform(1100, 1600)
    if rng.random() < 0.5:  # wail: slow sinusoidal sweep
        rate = rng.uniform(0.2, 0.5)
        f = lo + (hi - lo) * 0.5 * (1 - np.cos(2 * np.pi * rate * t))
    else:  # hi-lo two-tone
        period = rng.uniform(0.8, 1.4)
        f = np.where((t % period) < period / 2, hi, lo)
        f = lfilter([0.01], [1, -0.99], f) + f[0] * (1 - 0.99 ** np.arange(len(t)))  # glide, start at f[0]
    phase = 2 * np.pi * np.cumsum(f) / SR
    return _fade(np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase), 100)


def doorbell(rng: np.random.Generator, dur: float) -> np.ndarray:
    pairs = [(659.3, 523.3), (784.0, 659.3), (880.0, 698.5), (987.8, 784.0)]
    f1, f2 = pairs[int(rng.integers(len(pairs)))]
    gap = rng.uniform(0.45, 0.7)
    t = _t(dur)
    out = np.zeros(len(t))
    for start, f in ((0.0, f1), (gap, f2)):
        tt = t - start
        m = tt >= 0
        env = np.exp(-tt[m] / rng.uniform(0.35, 0.6))
        out[m] += env * (np.sin(2 * np.pi * f * tt[m]) + 0.4 * np.sin(2 * np.pi * 2.76 * f * tt[m])
                         + 0.2 * np.sin(2 * np.pi * 5.4 * f * tt[m]))
    return _fade(out, 5)


def knock(rng: np.random.Generator, dur: float) -> np.ndarray:
    out = np.zeros(int(dur * SR))
    f = rng.uniform(150, 400)
    pos = rng.uniform(0.0, 0.2)
    for _ in range(int(rng.integers(1, 3))):  # one or two groups of knocks
        for _ in range(int(rng.integers(2, 5))):
            n = int(rng.uniform(0.03, 0.06) * SR)
            i = int(pos * SR)
            if i + n >= len(out):
                break
            burst = rng.standard_normal(n) * np.exp(-np.arange(n) / (0.008 * SR))
            out[i:i + n] += _bandpass(burst, f * 0.6, f * 2.5) * 6 + np.sin(2 * np.pi * f * np.arange(n) / SR) \
                * np.exp(-np.arange(n) / (0.012 * SR))
            pos += rng.uniform(0.15, 0.25)
        pos += rng.uniform(0.5, 0.8)
    return out


def cough(rng: np.random.Generator, dur: float) -> np.ndarray:
    out = np.zeros(int(dur * SR))
    pos = rng.uniform(0.0, 0.1)
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.uniform(0.2, 0.35) * SR)
        i = int(pos * SR)
        if i + n >= len(out):
            break
        k = np.arange(n) / SR
        env = (1 - np.exp(-k / 0.005)) * np.exp(-k / rng.uniform(0.05, 0.1))
        noise = _bandpass(rng.standard_normal(n), rng.uniform(300, 600), rng.uniform(2500, 4000))
        f0 = rng.uniform(150, 300)
        voiced = np.sign(np.sin(2 * np.pi * f0 * k)) * np.exp(-k / 0.03) * 0.3
        out[i:i + n] += env * (noise + voiced)
        pos += n / SR + rng.uniform(0.1, 0.3)
    return out


GENERATORS = {"rain": rain, "alarm": alarm, "siren": siren, "doorbell": doorbell, "knock": knock, "cough": cough}
# (min, max) event duration in seconds; rain is sized to the utterance
DURATIONS = {"alarm": (1.2, 2.5), "siren": (1.5, 3.0), "doorbell": (1.4, 1.8), "knock": (1.0, 2.0),
             "cough": (0.8, 1.6)}
# SNR range (dB, speech over event) per event
SNR_DB = {"rain": (5.0, 20.0), "alarm": (0.0, 15.0), "siren": (0.0, 15.0), "doorbell": (0.0, 12.0),
          "knock": (0.0, 12.0), "cough": (0.0, 12.0)}


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2) + 1e-12))


def mix_event(speech: np.ndarray, event: str, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Mix a fresh variant of ``event`` with ``speech`` (16 kHz); returns the mixture and how it was mixed.

    Placement: ``under`` (rain: the whole utterance), ``before`` / ``after`` (the sound, then a short gap, then the
    speech, or the reverse: the output grows), ``overlap`` (starts inside the speech). The SNR compares the speech
    RMS with the event's RMS over the event's own active span.
    """
    lo, hi = SNR_DB[event]
    snr = float(rng.uniform(lo, hi))
    if event == "rain":
        placement = "under"
        lead, tail = rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.6)
        total = len(speech) + int((lead + tail) * SR)
        sound = rain(rng, total / SR)
        sound = np.pad(sound, (0, max(total - len(sound), 0)))[:total]  # int(dur * SR) may round down
        out = np.zeros(total)
        out[int(lead * SR): int(lead * SR) + len(speech)] = speech
    else:
        placement = PLACEMENTS[1 + int(rng.integers(3))]
        sound = GENERATORS[event](rng, float(rng.uniform(*DURATIONS[event])))
        gap = int(rng.uniform(0.1, 0.4) * SR)
        if placement == "before":
            out = np.concatenate([np.zeros(len(sound) + gap), speech])
            start = 0
        elif placement == "after":
            out = np.concatenate([speech, np.zeros(gap + len(sound))])
            start = len(speech) + gap
        else:
            start = int(rng.uniform(0.0, max(len(speech) - len(sound) // 2, 1)))
            out = np.concatenate([speech, np.zeros(max(start + len(sound) - len(speech), 0))])
        padded = np.zeros(len(out))
        padded[start:start + len(sound)] = sound
        sound = padded
    active = np.abs(sound) > 1e-4
    gain = _rms(speech) / (_rms(sound[active]) if active.any() else 1.0) * 10 ** (-snr / 20)
    out = out + gain * sound
    peak = np.abs(out).max()
    if peak > 0.98:
        out *= 0.98 / peak
    return out.astype(np.float32), {"event": event, "placement": placement, "snr_db": round(snr, 2)}
