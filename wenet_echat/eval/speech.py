"""Scores of spoken replies from independent, offline models: ASR intelligibility, DNSMOS, speaker similarity.

Every measure is a :class:`SpeechMetric` registered in :data:`SPEECH_METRICS`, so a scoring config names them::

    speech_metrics:
      pocketsphinx_asr: {}
      dnsmos: {p808: true}
      speaker_similarity: {ref_wavs: [exp/voice/a.wav, exp/voice/b.wav]}
      prosody: {}

``metric.score(wav, sr, **ref)`` returns a flat dict whose keys carry the metric's prefix (``asr_``, ``dnsmos_``,
``spk_``; prosody keys are distinctive on their own), so the rows of several metrics merge into one row per
reply (:func:`score_all`). Each metric picks the reference fields it understands from ``ref`` (``ref_text``,
``ref_wav``/``ref_sr``, ``ref_embedding``) and ignores the others, so one item dict feeds every metric.

Design points

* Optional packages (``pip install 'wenet_echat[eval]'``; resemblyzer with ``--no-deps``) are imported when a
  metric is *built*, so a missing one fails before any audio is generated, with a :class:`MissingDependency`
  that carries the pip command. This module itself imports none of them.
* Models load lazily on the first score and once per process (:func:`cached_model`, keyed by their options),
  on CPU. The cache is guarded by a lock; the pocketsphinx decoder is stateful, so decoding is serialised by a
  lock of its own. ONNX Runtime sessions and the torch speaker encoder may be shared by threads.
* All models run at 16 kHz; replies at other rates (22.05 kHz vocoders) are resampled with soxr
  (:func:`wenet_echat.audio.io.resample`).
* pocketsphinx (CMU's default US-English model shipped in the wheel) is a weak recogniser next to modern ASR: it
  measures *relative* intelligibility (systems, checkpoints) rather than an absolute WER. Its hypotheses are
  normalised like the understanding scores (:func:`wenet_echat.eval.understanding.normalize_text`), and WER is in
  percent, as there.
* DNSMOS (P.835 SIG/BAK/OVRL, optionally P.808) uses the ONNX models shipped in ``speechmos``; that package
  scores 9.01 s windows, repeating a shorter clip to fill one, and needs samples in [-1, 1] (we clip).
* Speaker similarity is the cosine of Resemblyzer d-vectors (its GE2E LSTM weights ship in the package; torch's
  default ``weights_only=True`` applies to its load). Volume normalisation and VAD trimming follow Resemblyzer's
  own preprocessing; a wav that the VAD finds no speech in is embedded untrimmed, a silent wav scores NaN.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from wenet_echat.audio.io import load_audio, resample
from wenet_echat.eval.prosody_stats import wav_prosody
from wenet_echat.eval.understanding import error_rates
from wenet_echat.utils.registry import Registry

MODEL_SR = 16000
EVAL_EXTRA = "pip install 'wenet_echat[eval]'"


class MissingDependency(ImportError):
    """An optional evaluation package is not installed; the message carries the pip command."""

    def __init__(self, module: str, pip_args: str, purpose: str, reason: str = ""):
        self.pip_command = f"pip install {pip_args}"
        detail = f" ({reason})" if reason else ""
        super().__init__(f"{purpose} needs the Python package '{module}', which cannot be imported{detail}; "
                         f"install it with: {self.pip_command}   (or all evaluation extras: {EVAL_EXTRA})",
                         name=module)


def require(module: str, pip_args: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` naming ``pip install <pip_args>``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(module, pip_args, purpose, reason=str(e)) from e


_MODELS: dict[tuple, Any] = {}
_MODELS_LOCK = threading.Lock()


def cached_model(key: tuple, factory: Callable[[], Any]) -> Any:
    """The process-wide instance for ``key``, built by ``factory`` on first use."""
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = factory()
        return _MODELS[key]


def clear_model_cache() -> None:
    """Drop every loaded model (tests, or to free memory between scoring stages)."""
    with _MODELS_LOCK:
        _MODELS.clear()


def as_mono(wav: Any, sr: Any) -> np.ndarray:
    """Validate one reply: a finite, non-empty mono float32 array at a positive integer rate.

    Integer PCM is scaled to [-1, 1); a (T, 1) array is squeezed. Raises ``ValueError`` otherwise.
    """
    if isinstance(sr, bool) or not isinstance(sr, int | np.integer) or sr <= 0:
        raise ValueError(f"sample rate must be a positive integer, got {sr!r}")
    arr = np.asarray(wav)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"expected a mono wav of shape (T,), got shape {arr.shape}")
    if not len(arr):
        raise ValueError("empty wav")
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max + 1)
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError("wav contains NaN or infinite samples")
    return arr


def to_model_rate(wav: np.ndarray, sr: int) -> np.ndarray:
    return resample(as_mono(wav, sr), int(sr), MODEL_SR)


def _item_audio(item: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    if "wav" in item:
        if "sr" not in item:
            raise KeyError("item has 'wav' but no 'sr'")
        return item["wav"], item["sr"]
    if "path" in item:
        return load_audio(str(item["path"]))
    raise KeyError("item needs 'wav' and 'sr', or 'path'")


def _item_label(item: Mapping[str, Any], index: int) -> str:
    for field in ("key", "path"):
        if field in item:
            return f"item {index} ({field} {item[field]!r})"
    return f"item {index}"


_AUDIO_FIELDS = ("wav", "sr", "path", "key")


class SpeechMetric:
    """Base of every speech measure: ``score`` one reply, ``score_many`` a list of item dicts.

    Subclasses list the optional packages they import in ``requires`` as ``(module, pip arguments)``; they are
    checked when the metric is built.
    """

    name: str = ""
    requires: tuple[tuple[str, str], ...] = ()

    def __init__(self) -> None:
        for module, pip_args in self.requires:
            require(module, pip_args, f"speech metric '{self.name}'")

    def score(self, wav: np.ndarray, sr: int, **ref: Any) -> dict[str, Any]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Compute what every item shares (a reference voice) once, before the metric is sent to worker
        processes (:class:`MetricPool`); a no-op by default."""

    def score_many(self, items: Iterable[Mapping[str, Any]], start: int = 1) -> list[dict[str, Any]]:
        """Score items ``{"wav": array, "sr": int}`` or ``{"path": audio file}``, plus an optional ``key`` (copied
        into the row) and reference fields. A failing item's error names it (numbered from ``start``)."""
        rows = []
        for i, item in enumerate(items, start):
            try:
                wav, sr = _item_audio(item)
                row = self.score(wav, sr, **{k: v for k, v in item.items() if k not in _AUDIO_FIELDS})
            except Exception as e:
                e.add_note(f"while scoring {_item_label(item, i)} with speech metric '{self.name}'")
                raise
            rows.append({"key": item["key"], **row} if "key" in item else row)
        return rows


SPEECH_METRICS: Registry[SpeechMetric] = Registry("speech_metric")


def register_speech_metric(name: str) -> Callable[[type[SpeechMetric]], type[SpeechMetric]]:
    """Class decorator: register under ``name`` and set the class's ``name``."""

    def deco(cls: type[SpeechMetric]) -> type[SpeechMetric]:
        cls.name = name
        SPEECH_METRICS.register(name)(cls)
        return cls

    return deco


def build_speech_metric(name: str, **conf: Any) -> SpeechMetric:
    """Build a registered metric from its config keys."""
    return SPEECH_METRICS.build(name, conf)


def build_speech_metrics(conf: Mapping[str, Mapping[str, Any] | None]) -> dict[str, SpeechMetric]:
    """Build every metric of a ``{name: {config}}`` mapping (a YAML ``speech_metrics`` section)."""
    if not isinstance(conf, Mapping):
        raise TypeError(f"speech_metrics must map metric names to configs, got {type(conf).__name__}")
    return {name: build_speech_metric(name, **(c or {})) for name, c in conf.items()}


def score_all(metrics: Mapping[str, SpeechMetric] | Sequence[SpeechMetric],
              items: Iterable[Mapping[str, Any]], start: int = 1) -> list[dict[str, Any]]:
    """One merged row per item with the outputs of every metric (items are loaded once per metric)."""
    items = list(items)
    rows: list[dict[str, Any]] = [{"key": it["key"]} if "key" in it else {} for it in items]
    for metric in (metrics.values() if isinstance(metrics, Mapping) else metrics):
        for row, out in zip(rows, metric.score_many(items, start), strict=True):
            row.update(out)
    return rows


SUMMARY_MEANS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "spk_sim")


def summarize_rows(rows: Sequence[Mapping[str, Any]], ref_texts: Sequence[str]) -> dict[str, Any]:
    """``n``; with ASR rows (``asr_hyp``) the corpus ``wer`` / ``cer`` against ``ref_texts`` (percent,
    :func:`~wenet_echat.eval.understanding.error_rates`); the mean of each :data:`SUMMARY_MEANS` field the rows
    carry (finite values only: a silent reply's speaker similarity is NaN)."""
    out: dict[str, Any] = {"n": len(rows)}
    if rows and "asr_hyp" in rows[0]:
        rates = error_rates(list(ref_texts), [r["asr_hyp"] for r in rows])
        out["wer"], out["cer"] = rates["wer"], rates["cer"]
    for name in SUMMARY_MEANS:
        vals = [r[name] for r in rows if name in r and np.isfinite(r[name])]
        if vals:
            out[name] = float(np.mean(vals))
    return out


_WORKER_METRICS: dict[str, SpeechMetric] = {}


def _init_worker(metrics: dict[str, SpeechMetric]) -> None:
    _WORKER_METRICS.clear()
    _WORKER_METRICS.update(metrics)


def _score_chunk(names: tuple[str, ...], items: list[Mapping[str, Any]], start: int) -> list[dict[str, Any]]:
    return score_all([_WORKER_METRICS[n] for n in names], items, start)


class MetricPool:
    """Score items with named metrics in ``nj`` worker processes, or in this process when ``nj`` is 1.

    The workers are spawned once and keep the models they load (:func:`cached_model` is per process), so one pool
    serves every system or subset a scoring run asks for. Items are sent in contiguous chunks; rows come back in
    item order, merged as by :func:`score_all`, and an item's error is raised here, naming the item. The scorers
    are single-threaded (pocketsphinx decodes under a lock), so on an otherwise idle machine ``nj`` workers score
    about ``nj`` times as fast. Use as a context manager, or call :meth:`close`.
    """

    CHUNKS_PER_WORKER = 4  # smaller chunks even out long and short replies

    def __init__(self, metrics: Mapping[str, SpeechMetric], nj: int = 1):
        if nj < 1:
            raise ValueError(f"nj must be >= 1, got {nj}")
        self.metrics = dict(metrics)
        self.nj = int(nj)
        self._executor: Any = None

    def _pool(self) -> Any:
        if self._executor is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            for metric in self.metrics.values():
                metric.prepare()
            # spawn, not fork: the parent may hold torch / ONNX Runtime thread pools, which do not survive a fork
            self._executor = ProcessPoolExecutor(self.nj, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_init_worker, initargs=(self.metrics,))
        return self._executor

    def score(self, items: Iterable[Mapping[str, Any]], names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Merged rows of the metrics ``names`` (default: all) for ``items``."""
        items = list(items)
        names = tuple(self.metrics) if names is None else tuple(names)
        unknown = [n for n in names if n not in self.metrics]
        if unknown:
            raise KeyError(f"MetricPool has no metric {unknown[0]!r}; it has {', '.join(self.metrics) or 'none'}")
        if self.nj == 1 or len(items) < 2:
            return score_all([self.metrics[n] for n in names], items)
        size = max(1, math.ceil(len(items) / (self.nj * self.CHUNKS_PER_WORKER)))
        starts = list(range(0, len(items), size))
        futures = [self._pool().submit(_score_chunk, names, items[s: s + size], s + 1) for s in starts]
        return [row for f in futures for row in f.result()]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def __enter__(self) -> MetricPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------- ASR


@register_speech_metric("pocketsphinx_asr")
class PocketsphinxASR(SpeechMetric):
    """Offline English ASR with pocketsphinx 5 and its bundled US-English acoustic model, LM and dictionary.

    ``decoder_options`` are extra ``pocketsphinx.Decoder`` settings (e.g. ``{"beam": 1e-60}``, ``{"lm": path}``).
    """

    requires = (("pocketsphinx", "pocketsphinx"),)

    def __init__(self, decoder_options: Mapping[str, Any] | None = None, loglevel: str = "FATAL"):
        super().__init__()
        self.options = {"samprate": MODEL_SR, "loglevel": loglevel, **(decoder_options or {})}
        if self.options["samprate"] != MODEL_SR:
            raise ValueError(f"pocketsphinx_asr: samprate must be {MODEL_SR} (audio is resampled to it)")

    def _decoder(self) -> tuple[Any, threading.Lock]:
        def load() -> tuple[Any, threading.Lock]:
            pocketsphinx = require("pocketsphinx", "pocketsphinx", "speech metric 'pocketsphinx_asr'")
            return pocketsphinx.Decoder(**self.options), threading.Lock()

        return cached_model(("pocketsphinx", tuple(sorted(self.options.items()))), load)

    def transcribe(self, wav: np.ndarray, sr: int) -> str:
        """Best hypothesis, lower case words ('' when nothing is recognised)."""
        pcm = (np.clip(to_model_rate(wav, sr), -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        decoder, lock = self._decoder()
        with lock:
            # pocketsphinx adapts its feature normalisation from utterance to utterance; resetting the feature
            # computation makes a transcript independent of what was decoded before (same audio, same words)
            decoder.reinit_feat()
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""

    def score(self, wav: np.ndarray, sr: int, ref_text: str | None = None, **_: Any) -> dict[str, Any]:
        """``asr_hyp`` and, given ``ref_text``, the utterance ``asr_wer`` in percent."""
        hyp = self.transcribe(wav, sr)
        out: dict[str, Any] = {"asr_hyp": hyp}
        if ref_text is not None:
            out["asr_wer"] = error_rates([ref_text], [hyp])["wer"]
        return out

    def intelligibility(self, items: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Corpus WER/CER (percent, :func:`~wenet_echat.eval.understanding.error_rates`) of items that carry a
        ``ref_text``, under ``"corpus"``; the per-item rows of :meth:`score_many` under ``"items"``."""
        items = list(items)
        for i, item in enumerate(items, 1):
            if not item.get("ref_text"):
                raise KeyError(f"intelligibility: {_item_label(item, i)} has no 'ref_text'")
        rows = self.score_many(items)
        corpus = error_rates([it["ref_text"] for it in items], [r["asr_hyp"] for r in rows])
        return {"corpus": corpus, "items": rows}


# ---------------------------------------------------------------------------------------------------- DNSMOS


def _load_dnsmos(personalized: bool, num_threads: int) -> Any:
    purpose = "speech metric 'dnsmos'"
    ort = require("onnxruntime", "onnxruntime", purpose)
    dnsmos_mod = require("speechmos.dnsmos", "speechmos onnxruntime librosa", purpose)
    root = os.path.dirname(os.path.abspath(dnsmos_mod.__file__))
    primary = os.path.join(root, "pdnsmos_models" if personalized else "dnsmos_models", "sig_bak_ovr.onnx")
    p808 = os.path.join(root, "dnsmos_models", "model_v8.onnx")
    for path in (primary, p808):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: DNSMOS model missing from the speechmos package; reinstall it")

    def session(path: str) -> Any:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])

    class CpuDNSMOS(dnsmos_mod.DNSMOS):
        """speechmos' scorer with its two sessions pinned to the CPU provider and a fixed thread count."""

        def __init__(self) -> None:  # replaces the parent's session setup, which takes no options
            self.primary_model_path = primary
            self.onnx_sess = session(primary)
            self.p808_onnx_sess = session(p808)

    return CpuDNSMOS()


@register_speech_metric("dnsmos")
class DNSMOS(SpeechMetric):
    """Non-intrusive MOS of speech quality: ``dnsmos_sig``, ``dnsmos_bak``, ``dnsmos_ovrl`` (P.835, 1-5) and, with
    ``p808``, ``dnsmos_p808``. ``personalized`` selects the pDNSMOS model that penalises interfering talkers."""

    requires = (("onnxruntime", "onnxruntime"), ("librosa", "librosa"),
                ("speechmos.dnsmos", "speechmos onnxruntime librosa"))

    def __init__(self, p808: bool = False, personalized: bool = False, num_threads: int = 1):
        super().__init__()
        if num_threads < 1:
            raise ValueError(f"dnsmos: num_threads must be >= 1, got {num_threads}")
        self.p808, self.personalized, self.num_threads = bool(p808), bool(personalized), int(num_threads)

    def _model(self) -> Any:
        key = ("dnsmos", self.personalized, self.num_threads)
        return cached_model(key, functools.partial(_load_dnsmos, self.personalized, self.num_threads))

    def score(self, wav: np.ndarray, sr: int, **_: Any) -> dict[str, Any]:
        audio = np.clip(to_model_rate(wav, sr), -1.0, 1.0).astype(np.float32)
        res = self._model()(audio, MODEL_SR, self.personalized)
        out = {"dnsmos_sig": float(res["sig_mos"]), "dnsmos_bak": float(res["bak_mos"]),
               "dnsmos_ovrl": float(res["ovrl_mos"])}
        if self.p808:
            out["dnsmos_p808"] = float(res["p808_mos"])
        return out


# ---------------------------------------------------------------------------------------------------- speaker


_SPEAKER_PURPOSE = "speaker similarity"
_SPEAKER_REQUIRES = (("webrtcvad", "webrtcvad-wheels"), ("librosa", "librosa"),
                     ("resemblyzer", "--no-deps resemblyzer webrtcvad-wheels"))


def _voice_encoder() -> tuple[Any, threading.Lock]:
    def load() -> tuple[Any, threading.Lock]:
        resemblyzer = require("resemblyzer", _SPEAKER_REQUIRES[-1][1], _SPEAKER_PURPOSE)
        return resemblyzer.VoiceEncoder(device="cpu", verbose=False), threading.Lock()

    return cached_model(("resemblyzer",), load)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run torch ops with ``n`` intra-op threads, restoring the process setting afterwards. A small LSTM gains
    nothing from more threads, and on a busy machine their spin-waits cost seconds per utterance."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def speaker_embedding(wav: np.ndarray, sr: int, num_threads: int = 1) -> np.ndarray:
    """L2-normalised 256-d Resemblyzer d-vector of one wav (NaNs for a silent wav)."""
    x = to_model_rate(wav, sr)
    encoder, lock = _voice_encoder()
    if not np.any(x):
        return np.full(encoder.linear.out_features, np.nan, dtype=np.float32)
    audio = require("resemblyzer.audio", _SPEAKER_REQUIRES[-1][1], _SPEAKER_PURPOSE)
    trimmed = audio.preprocess_wav(x)  # no source_sr: already at the encoder's rate, only normalise + trim
    if len(trimmed) < MODEL_SR // 10:  # the VAD kept under 0.1 s: embed the whole normalised wav instead
        trimmed = audio.normalize_volume(x, audio.audio_norm_target_dBFS, increase_only=True)
    with lock, _torch_threads(num_threads):  # the lock keeps our own threads from fighting over the setting
        emb = encoder.embed_utterance(trimmed.astype(np.float32))
    return emb.astype(np.float32)


def mean_speaker_embedding(wavs: Iterable[tuple[np.ndarray, int]], num_threads: int = 1) -> np.ndarray:
    """Normalised mean d-vector of ``(wav, sr)`` pairs (a voice profile, e.g. of the assistant voice)."""
    embs = [e for e in (speaker_embedding(w, sr, num_threads) for w, sr in wavs) if np.isfinite(e).all()]
    if not embs:
        raise ValueError("no non-silent wav to build a speaker embedding from")
    mean = np.mean(embs, axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"embedding sizes differ: {a.shape[0]} vs {b.shape[0]}")
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 and np.isfinite(denom) else math.nan


def _load_embedding(spec: str | Sequence[float]) -> np.ndarray:
    if isinstance(spec, str | os.PathLike):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"speaker_similarity: ref_embedding file {spec} does not exist")
        return np.load(spec, allow_pickle=False).astype(np.float32)
    return np.asarray(spec, dtype=np.float32)


@register_speech_metric("speaker_similarity")
class SpeakerSimilarity(SpeechMetric):
    """``spk_sim``: cosine similarity of the reply's d-vector to a reference voice.

    The reference is, by priority: the item's ``ref_embedding`` (array), the item's ``ref_wav`` (array with
    ``ref_sr``, or an audio path), then the metric's own ``ref_embedding`` (a ``.npy`` path or a list of floats)
    or the mean embedding of ``ref_wavs`` (audio paths), computed on first use.
    """

    requires = _SPEAKER_REQUIRES

    def __init__(self, ref_wavs: Sequence[str] | None = None, ref_embedding: str | Sequence[float] | None = None,
                 num_threads: int = 1):
        super().__init__()
        if num_threads < 1:
            raise ValueError(f"speaker_similarity: num_threads must be >= 1, got {num_threads}")
        self.num_threads = int(num_threads)
        if ref_wavs is not None and ref_embedding is not None:
            raise ValueError("speaker_similarity: give ref_wavs or ref_embedding, not both")
        if isinstance(ref_wavs, str):
            raise TypeError("speaker_similarity: ref_wavs must be a list of paths")
        self.ref_wavs = list(ref_wavs) if ref_wavs is not None else None
        for path in self.ref_wavs or []:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"speaker_similarity: ref_wavs file {path} does not exist")
        self._fixed = _load_embedding(ref_embedding) if ref_embedding is not None else None

    def prepare(self) -> None:
        self.reference_embedding  # noqa: B018 (computed once here, not in every worker)

    @functools.cached_property
    def reference_embedding(self) -> np.ndarray | None:
        """The configured voice profile, or None when every item brings its own reference."""
        if self._fixed is not None:
            return self._fixed
        if self.ref_wavs:
            return mean_speaker_embedding((load_audio(p) for p in self.ref_wavs), self.num_threads)
        return None

    def _reference(self, ref_wav: Any, ref_sr: int | None, ref_embedding: Any) -> np.ndarray:
        if ref_embedding is not None:
            return np.asarray(ref_embedding, dtype=np.float32)
        if ref_wav is not None:
            if isinstance(ref_wav, str | os.PathLike):
                return speaker_embedding(*load_audio(str(ref_wav)), self.num_threads)
            if ref_sr is None:
                raise ValueError("speaker_similarity: ref_wav given as an array needs ref_sr")
            return speaker_embedding(ref_wav, ref_sr, self.num_threads)
        if self.reference_embedding is None:
            raise ValueError("speaker_similarity: no reference voice (pass ref_wav or ref_embedding, or configure "
                             "ref_wavs / ref_embedding)")
        return self.reference_embedding

    def score(self, wav: np.ndarray, sr: int, ref_wav: Any = None, ref_sr: int | None = None,
              ref_embedding: Any = None, **_: Any) -> dict[str, Any]:
        ref = self._reference(ref_wav, ref_sr, ref_embedding)
        return {"spk_sim": cosine(speaker_embedding(wav, sr, self.num_threads), ref)}


# ---------------------------------------------------------------------------------------------------- prosody


@register_speech_metric("prosody")
class Prosody(SpeechMetric):
    """Median F0, speaking/articulation rate (needs ``ref_text``, the words the reply speaks) and energy; see
    :mod:`wenet_echat.eval.prosody_stats`. Pure numpy, no optional package."""

    def score(self, wav: np.ndarray, sr: int, ref_text: str | None = None, **_: Any) -> dict[str, Any]:
        return wav_prosody(as_mono(wav, sr), int(sr), text=ref_text)
