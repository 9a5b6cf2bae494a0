"""Per-sample processors. Each is a generator ``fn(samples, ..., stats) -> samples`` over sample dicts.

A sample flows through the chain as a dict; the keys each stage reads/adds:

- source: ``src`` (``file:line`` or ``tar:key``) and ``line`` (raw) or ``json``/``wav``/``response.wav`` bytes (shard)
- :func:`parse`: ``key``, ``record`` (the data.list object; ``line``/``json`` dropped)
- :func:`validate`: nothing (drops bad records)
- :func:`load_audio`: ``wav`` (float32 numpy, mono), ``sample_rate``
- :func:`filter_samples`: nothing (drops samples outside the limits)
- :func:`compute_feats`: ``feats`` (torch float32, frames x dim); ``wav`` kept only when asked
- :func:`spec_augment`, :func:`tokenize` (``text_ids``, ``response_ids``), :func:`shuffle`, :func:`sort`

A dropped sample goes through :meth:`SkipStats.skip`, which counts its reason (or raises in strict mode).
"""

from __future__ import annotations

import io
import logging
import math
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import kaldiio
import numpy as np
import soundfile as sf
import torch

from wenet_echat.dataset.schema import check_record, record_tasks
from wenet_echat.utils.fileio import JsonlError, parse_jsonl_line

logger = logging.getLogger(__name__)

Sample = dict[str, Any]


class DataError(ValueError):
    """A sample was dropped in strict mode; the message names its location/key and the reason."""


class SkipStats:
    """Counts of dropped samples per reason, plus non-fatal notes (``resampled``, ``downmixed``).

    Inside a reader it counts (:meth:`skip`, :meth:`note`) and hands out deltas (:meth:`take_delta`) that travel
    with the batches; in the main process :meth:`update` sums those deltas.
    """

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.skipped: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()
        self._sent_skipped: Counter[str] = Counter()
        self._sent_notes: Counter[str] = Counter()

    def skip(self, reason: str, where: str, message: str = "") -> None:
        text = f"{where}: {reason}" + (f": {message}" if message else "")
        if self.strict:
            raise DataError(text)
        self.skipped[reason] += 1
        logger.debug("skip %s", text)

    def note(self, kind: str, n: int = 1) -> None:
        self.notes[kind] += n

    def take_delta(self) -> tuple[dict[str, int], dict[str, int]]:
        """(skipped, notes) counts added since the previous call."""
        ds = dict(self.skipped - self._sent_skipped)
        dn = dict(self.notes - self._sent_notes)
        self._sent_skipped = Counter(self.skipped)
        self._sent_notes = Counter(self.notes)
        return ds, dn

    def update(self, skipped: dict[str, int] | None, notes: dict[str, int] | None = None) -> None:
        for k, v in (skipped or {}).items():
            self.skipped[k] += int(v)
        for k, v in (notes or {}).items():
            self.notes[k] += int(v)

    def update_from_batch(self, batch: dict[str, Any]) -> None:
        self.update(batch.get("skipped"), batch.get("notes"))

    @property
    def total(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        def fmt(c: Counter[str]) -> str:
            return ", ".join(f"{k}={v}" for k, v in sorted(c.items())) or "none"

        return f"skipped {self.total} samples ({fmt(self.skipped)}); notes: {fmt(self.notes)}"


def parse(data: Iterable[Sample], stats: SkipStats) -> Iterator[Sample]:
    """Decode the JSON of each sample (``line`` for raw lists, ``json`` for shards) into ``record``."""
    for s in data:
        if "error" in s:  # unreadable shard reported by the source
            stats.skip("bad_shard", s["src"], s["error"])
            continue
        raw = s.pop("line", None)
        if raw is None:
            raw = s.pop("json", None)
        if raw is None:
            stats.skip("bad_record", s["src"], "shard member has no .json")
            continue
        path, _, lineno = s["src"].rpartition(":")
        try:
            rec = parse_jsonl_line(raw, path, int(lineno) if lineno.isdigit() else 0)
        except JsonlError as e:
            stats.skip("not_utf8" if e.reason.startswith("not UTF-8") else "invalid_json", s["src"], e.reason)
            continue
        if "key" in s:  # shard: the member name is the key
            rec.setdefault("key", s["key"])
        s["record"] = rec
        s["key"] = rec.get("key")
        yield s


def validate(data: Iterable[Sample], stats: SkipStats) -> Iterator[Sample]:
    """Drop records that fail :func:`check_record` (reason ``bad_record``)."""
    for s in data:
        rec = s["record"]
        if "wav" in s:  # shard: the audio travels as bytes, not as a path
            rec = {**rec, "wav": s["src"]}
        if "response.wav" in s:
            rec = {**rec, "response_wav": s["src"] + ".response"}
        problems = check_record(rec)
        if problems:
            stats.skip("bad_record", f"{s['src']}: {s.get('key')}", "; ".join(problems))
            continue
        s["tasks"] = record_tasks(rec)
        yield s


def _decode(s: Sample, resample_rate: int) -> tuple[np.ndarray, int, int, int]:
    """(wav, out_sr, orig_sr, orig_channels) of a sample's user audio; raises ``AudioError``/``OSError``."""
    from wenet_echat.audio.io import audio_info, load_audio, load_audio_bytes

    if "wav" in s:
        data = s["wav"]
        info = sf.info(io.BytesIO(data))
        wav, sr = load_audio_bytes(data, target_sr=resample_rate, mono=True)
        return wav, sr, info.samplerate, info.channels
    spec = s["record"]["wav"]
    info = audio_info(spec)
    wav, sr = load_audio(spec, target_sr=resample_rate, mono=True)
    return wav, sr, info.sample_rate, info.channels


def _audio_missing(spec: str) -> bool:
    if os.path.exists(spec):
        return False
    path, sep, offset = spec.rpartition(":")
    return not (sep and offset.isdigit() and os.path.exists(path))


def load_audio(data: Iterable[Sample], stats: SkipStats, resample_rate: int = 16000) -> Iterator[Sample]:
    """Load the user audio as mono float32 at ``resample_rate``.

    Samples with precomputed ``feat`` or without audio (e.g. tts-only records) pass through without ``wav``.
    Fatal reasons: ``missing``, ``unreadable``, ``empty``, ``nan``; notes: ``resampled``, ``downmixed``.
    """
    from wenet_echat.audio.io import AudioError

    for s in data:
        rec = s["record"]
        if rec.get("feat") or ("wav" not in s and not rec.get("wav")):
            s.pop("wav", None)
            yield s
            continue
        where = f"{s['src']}: {s['key']}"
        try:
            wav, sr, orig_sr, channels = _decode(s, resample_rate)
        except (AudioError, OSError, RuntimeError, sf.LibsndfileError, ValueError) as e:
            missing = "wav" not in s and _audio_missing(rec["wav"])
            stats.skip("missing" if missing else "unreadable", where, str(e))
            continue
        if wav.size == 0:
            stats.skip("empty", where, "audio has no samples")
            continue
        if not np.isfinite(wav).all():
            stats.skip("nan", where, "audio holds NaN/Inf")
            continue
        if orig_sr != sr:
            stats.note("resampled")
        if channels > 1:
            stats.note("downmixed")
        s["wav"] = np.asarray(wav, dtype=np.float32)
        s["sample_rate"] = sr
        yield s


def duration_of(s: Sample) -> float | None:
    """Seconds of user audio: from the loaded wav, else the record's ``duration``, else None (no audio)."""
    if "wav" in s:
        return len(s["wav"]) / s["sample_rate"]
    return s["record"].get("duration")


def filter_samples(data: Iterable[Sample], stats: SkipStats, min_duration: float = 0.0,
                   max_duration: float = math.inf, max_text_len: int | None = None,
                   max_response_tokens: int | None = None) -> Iterator[Sample]:
    """Drop samples outside the limits: ``too_short``/``too_long`` (seconds of user audio; samples without audio
    are not length-filtered), ``text_too_long`` (characters of ``text``), ``tokens_too_long`` (``response_tokens``).
    """
    for s in data:
        where = f"{s['src']}: {s['key']}"
        rec = s["record"]
        dur = duration_of(s)
        if dur is not None and dur < min_duration:
            stats.skip("too_short", where, f"{dur:.3f}s < {min_duration}s")
            continue
        if dur is not None and dur > max_duration:
            stats.skip("too_long", where, f"{dur:.3f}s > {max_duration}s")
            continue
        text = rec.get("text") or ""
        if max_text_len is not None and len(text) > max_text_len:
            stats.skip("text_too_long", where, f"{len(text)} chars > {max_text_len}")
            continue
        toks = rec.get("response_tokens") or []
        if max_response_tokens is not None and len(toks) > max_response_tokens:
            stats.skip("tokens_too_long", where, f"{len(toks)} tokens > {max_response_tokens}")
            continue
        yield s


def feats_dim(feats_type: str, feats_conf: dict[str, Any]) -> int:
    if feats_type == "whisper_log_mel":
        return int(feats_conf.get("n_mels", 80))
    return int(feats_conf.get("num_mel_bins", 80))


def compute_feats(data: Iterable[Sample], stats: SkipStats, feats_type: str = "whisper_log_mel",
                  feats_conf: dict[str, Any] | None = None, keep_wav: bool = False) -> Iterator[Sample]:
    """Add ``feats`` (frames x dim, float32): loaded from ``record["feat"]`` when present, else computed from
    ``wav``; a sample without audio gets an empty (0 x dim) matrix. Reason ``bad_feat`` if a dump is unreadable."""
    from wenet_echat.audio.features import compute_features

    conf = dict(feats_conf or {})
    dim = feats_dim(feats_type, conf)
    for s in data:
        feat_spec = s["record"].get("feat")
        if feat_spec:
            try:
                mat = kaldiio.load_mat(feat_spec)
            except Exception as e:  # kaldiio raises many kinds
                stats.skip("bad_feat", f"{s['src']}: {s['key']}", f"{feat_spec}: {e}")
                continue
            feats = torch.from_numpy(np.array(mat, dtype=np.float32))  # copy: kaldiio may return read-only
        elif "wav" in s:
            feats = compute_features(feats_type, s["wav"], s["sample_rate"], conf).to(torch.float32)
        else:
            feats = torch.zeros(0, dim)
        s["feats"] = feats
        if not keep_wav:
            s.pop("wav", None)
        yield s


def spec_augment(data: Iterable[Sample], rng: random.Random, **conf: Any) -> Iterator[Sample]:
    """SpecAugment on ``feats`` (train only); ``conf`` goes to :func:`wenet_echat.audio.augment.spec_augment`."""
    from wenet_echat.audio.augment import spec_augment as _spec_augment

    for s in data:
        if s["feats"].shape[0] > 0:
            s["feats"] = _spec_augment(s["feats"], rng=rng, **conf)
        yield s


def tokenize(data: Iterable[Sample], tokenizer: Any) -> Iterator[Sample]:
    """Add ``text_ids``/``response_ids`` with ``tokenizer.encode(str) -> list[int]`` (only for present fields), and
    ``history_tokens``, the token count of a dialogue's earlier turns (for ``max_tokens_in_batch``)."""
    for s in data:
        rec = s["record"]
        if rec.get("text"):
            s["text_ids"] = list(tokenizer.encode(rec["text"]))
        if rec.get("response"):
            s["response_ids"] = list(tokenizer.encode(rec["response"]))
        if rec.get("history"):
            s["history_tokens"] = sum(len(tokenizer.encode(str(turn.get(k) or ""))) for turn in rec["history"]
                                      for k in ("text", "response"))
        yield s


def shuffle(data: Iterable[Sample], rng: random.Random, shuffle_size: int = 1000) -> Iterator[Sample]:
    """Local shuffle with a buffer of ``shuffle_size`` samples."""
    buf: list[Sample] = []
    for s in data:
        buf.append(s)
        if len(buf) >= shuffle_size:
            rng.shuffle(buf)
            yield from buf
            buf = []
    rng.shuffle(buf)
    yield from buf


def num_frames(s: Sample) -> int:
    return int(s["feats"].shape[0])


def sample_tokens(s: Sample) -> int:
    """Token count used by ``max_tokens_in_batch``: text ids + response ids + response speech tokens + the
    tokens of a dialogue's earlier turns."""
    return len(s.get("text_ids") or ()) + len(s.get("response_ids") or ()) + len(
        s["record"].get("response_tokens") or ()) + int(s.get("history_tokens") or 0)


# log-mel frames per LLM audio position: 100 Hz -> 50 Hz Whisper conv stem -> 12.5 Hz adapter
# (EChatModel.audio_lengths)
FRAMES_PER_POSITION = 8


def sequence_length(s: Sample) -> int:
    """About the LLM sequence a sample makes: its audio positions plus :func:`sample_tokens`. Sorting by it keeps
    the padding of the LLM batch low when the LLM, not the encoder, takes the step time (a frozen or cached
    encoder; speech-output tasks, whose hundreds of codes do not follow the input audio's length)."""
    return num_frames(s) // FRAMES_PER_POSITION + sample_tokens(s)


# dataset_conf.sort_conf.key: what sorting makes similar within a batch
SORT_KEYS: dict[str, Callable[[Sample], int]] = {"frames": num_frames, "sequence": sequence_length}


def sort(data: Iterable[Sample], sort_size: int = 500, key: Callable[[Sample], int] = num_frames) -> Iterator[Sample]:
    """Sort by ``key`` (log-mel frames by default) within consecutive buffers of ``sort_size`` samples (stable,
    ascending)."""
    buf: list[Sample] = []
    for s in data:
        buf.append(s)
        if len(buf) >= sort_size:
            buf.sort(key=key)
            yield from buf
            buf = []
    buf.sort(key=key)
    yield from buf
