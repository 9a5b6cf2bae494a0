"""Discrete 25 Hz speech units by k-means over stacked acoustic frames, and the speech tokenizer interface.

EChat speaks through discrete speech tokens of the reply audio. The paper model uses CosyVoice's supervised S3
tokenizer (:mod:`wenet_echat.speech_token.s3`); the mini recipe cannot download it, so it learns its own codebook
with k-means, trained on the reply audio of ``data/train`` by ``wenet_echat.bin.train_speech_tokenizer``.

Interface
    Every tokenizer is a :class:`SpeechTokenizer`: ``frame_rate`` (tokens per second, 25), ``codebook_size``
    (codes are ints in ``[0, codebook_size)``), ``encode(wav, sr) -> list[int]`` and ``encode_batch``. They are
    built by name from ``SPEECH_TOKENIZERS`` (``kmeans``, ``s3``) with :func:`build_speech_tokenizer`, e.g.
    ``{"type": "kmeans", "path": "data/speech_token/kmeans512.npz"}``.

Feature pipeline of :class:`KMeansTokenizer` (``feature_source``)
    ``log_mel`` (default): Whisper log-mel (100 Hz, 80 mels, :func:`wenet_echat.audio.features.whisper_log_mel`),
    optional per-utterance normalisation over time (``norm``: ``none`` | ``mean`` | ``meanvar``), then ``stack``
    (4) consecutive frames are concatenated into one 25 Hz vector (dim 320); an utterance of ``n`` samples at
    16 kHz gives ``n // 160`` frames and therefore exactly ``floor(duration * 25) == n // 640`` tokens (the last
    partial group of frames, under 40 ms, is dropped; audio shorter than 40 ms gives no token).

    ``encoder``: a callable maps 16 kHz mono audio to hidden states ``(1, T, D)`` or ``(T, D)`` at 50 Hz (e.g. a
    Whisper encoder, see :func:`whisper_encoder_frames`), ``stack`` is then 2. The callable cannot be stored in
    the model file: pass ``encoder=`` when loading, or set ``encoder_ckpt`` (a Whisper checkpoint that
    :mod:`wenet_echat.encoder.loaders` reads). The token count depends on the encoder's own length rule
    (``floor(ceil(frames / 2) / 2)`` for Whisper, within one token of ``duration * 25``).

    The stacked vectors are centred and projected on their ``pca_dim`` (64) leading principal axes, learned at
    training time (``whiten`` also scales each axis to unit variance; ``pca_dim: null`` keeps the raw vectors);
    each vector's token is the index of its nearest centroid (squared Euclidean distance).

Training (:func:`train_kmeans`)
    k-means++ seeding on a subsample, then full-batch Lloyd iterations on at most ``max_frames`` randomly chosen
    frames, stopping early once fewer than ``tol`` of the labels change. A cluster that loses all its frames is
    re-seeded with the frame farthest from its centroid (distinct frames for several empty clusters). Everything is
    drawn from ``numpy.random.default_rng(seed)``, so a seed fixes the codebook.

Model file
    One ``.npz`` (no pickles) written atomically: ``format`` tag, ``config`` (JSON of :class:`FeatureConfig`),
    ``centroids`` (k, dim), ``pca_mean`` (D,) and ``pca_proj`` (D, dim) (empty when there is no projection) and
    ``train_info`` (JSON, informative only).
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wenet_echat.audio.features import whisper_log_mel
from wenet_echat.audio.io import resample
from wenet_echat.utils.fileio import atomic_open
from wenet_echat.utils.registry import Registry

SPEECH_TOKENIZERS: Registry = Registry("speech_tokenizer")
SAMPLE_RATE = 16000
FORMAT_TAG = "wenet_echat.kmeans_speech_tokenizer.v1"
FEATURE_SOURCES = {"log_mel": 100, "encoder": 50}  # source name -> frames per second before stacking
NORMS = ("none", "mean", "meanvar")
MODEL_KEYS = ("format", "config", "centroids", "pca_mean", "pca_proj", "train_info")

EncoderFn = Callable[[np.ndarray], "torch.Tensor | np.ndarray"]


class TokenizerFileError(ValueError):
    """A speech tokenizer model file that cannot be used; the message names the file and the reason."""


class SpeechTokenizer(ABC):
    """Maps audio to discrete speech codes ``[0, codebook_size)`` at ``frame_rate`` codes per second."""

    frame_rate: float = 25
    codebook_size: int

    @abstractmethod
    def encode(self, wav: np.ndarray, sr: int) -> list[int]:
        """Codes of one mono waveform (float samples in [-1, 1]) at sample rate ``sr``."""

    def encode_batch(self, wavs: Sequence[np.ndarray], sr: int) -> list[list[int]]:
        """Codes of several waveforms at the same rate; subclasses may batch the work."""
        return [self.encode(w, sr) for w in wavs]


def build_speech_tokenizer(conf: Mapping[str, Any]) -> SpeechTokenizer:
    """Build a tokenizer from ``{"type": name, **options}``; ``type`` is a ``SPEECH_TOKENIZERS`` name."""
    conf = dict(conf)
    name = conf.pop("type", None)
    if not isinstance(name, str):
        raise KeyError(f"speech tokenizer config needs a 'type' (one of {', '.join(SPEECH_TOKENIZERS.names())}); "
                       f"got {sorted(conf)}")
    return SPEECH_TOKENIZERS.build(name, conf)


# ----------------------------------------------------------------------------------------------- features


@dataclass(frozen=True)
class FeatureConfig:
    """How audio becomes the vectors that are clustered; stored in the model file."""

    feature_source: str = "log_mel"
    n_mels: int = 80
    stack: int = 4
    norm: str = "none"
    input_dim: int | None = None  # stacked vector size, fixed at training time (checked when encoding)
    encoder_ckpt: str | None = None  # default encoder for feature_source "encoder"
    encoder_layer: int | None = None  # feature_source "encoder": output of this block (1-based); None = the last

    def __post_init__(self) -> None:
        if self.feature_source not in FEATURE_SOURCES:
            raise ValueError(f"feature_source must be one of {sorted(FEATURE_SOURCES)}, got '{self.feature_source}'")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got '{self.norm}'")
        if self.stack < 1 or self.n_mels < 1:
            raise ValueError(f"stack and n_mels must be positive, got stack={self.stack} n_mels={self.n_mels}")
        if self.encoder_layer is not None and (self.feature_source != "encoder" or self.encoder_layer < 1):
            raise ValueError(f"encoder_layer must be a block number >= 1 with feature_source 'encoder', got "
                             f"{self.encoder_layer} with '{self.feature_source}'")

    @property
    def frame_rate(self) -> float:
        return FEATURE_SOURCES[self.feature_source] / self.stack

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_stack(feature_source: str) -> int:
    """Frames per token that give 25 Hz for a source (4 for 100 Hz log-mel, 2 for a 50 Hz encoder)."""
    return FEATURE_SOURCES[feature_source] // 25


def stack_frames(x: np.ndarray, stack: int) -> np.ndarray:
    """(T, D) -> (T // stack, stack * D): consecutive frames side by side; a last partial group is dropped."""
    n = x.shape[0] // stack
    return np.ascontiguousarray(x[: n * stack].reshape(n, stack * x.shape[1]))


def normalize_frames(x: np.ndarray, mode: str) -> np.ndarray:
    """Per-utterance normalisation over time: ``none``, ``mean`` (subtract), ``meanvar`` (and divide by std)."""
    if mode == "none" or x.shape[0] == 0:
        return x
    x = x - x.mean(axis=0, keepdims=True)
    if mode == "meanvar":
        x = x / (x.std(axis=0, keepdims=True) + 1e-5)
    return x


def whisper_encoder_frames(encoder: torch.nn.Module, n_mels: int = 80, layer: int | None = None) -> EncoderFn:
    """A ``feature_source: encoder`` callable from a :class:`wenet_echat.encoder.WhisperEncoder`: 16 kHz audio
    -> log-mel -> encoder output (1, T, D) at 50 Hz (at most 30 s of audio, the encoder's position limit); with
    ``layer``, the output of that block (1-based) instead of the last one."""
    encoder.eval()
    if layer is not None and not 1 <= layer <= len(encoder.encoders):
        raise ValueError(f"encoder_layer {layer} is not a block of this encoder (1..{len(encoder.encoders)})")

    @torch.inference_mode()
    def frames(wav: np.ndarray) -> torch.Tensor:
        mel = whisper_log_mel(wav, n_mels=n_mels).unsqueeze(0)
        lengths = torch.tensor([mel.size(1)])
        if layer is None:
            out, _ = encoder(mel, lengths)
        else:
            x, lengths = encoder.embed(mel, lengths)
            out, _ = encoder.forward_layers(x, lengths, n_layers=layer)
        return out

    return frames


def load_trained_encoder(path: str | os.PathLike) -> torch.nn.Module:
    """The ``encoder.*`` weights of a directory written by ``bin/train.py`` (``train.yaml`` + checkpoints: its
    latest checkpoint, e.g. the mini recipe's ``exp/encoder``) or of one of its checkpoint directories, in an
    encoder built from that ``train.yaml``'s ``model.encoder`` / ``encoder_conf`` (dropout off)."""
    from wenet_echat.encoder import ENCODERS
    from wenet_echat.train.checkpoint import load_model_weights, resolve_checkpoint
    from wenet_echat.utils.config import load_config

    path = Path(path)
    model_dir, ckpt = (path, resolve_checkpoint(path)) if (path / "train.yaml").is_file() else (path.parent, path)
    conf = load_config(model_dir / "train.yaml").get("model") or {}
    if "encoder" not in conf:
        raise ValueError(f"{model_dir / 'train.yaml'}: no model.encoder to build the encoder from")
    holder = torch.nn.Module()  # its keys are the checkpoint's encoder.* keys
    holder.encoder = ENCODERS.build(conf["encoder"], {**(conf.get("encoder_conf") or {}), "dropout": 0.0})
    load_model_weights(ckpt, holder, prefixes=["encoder"], strict=True)
    return holder.encoder


def load_whisper_encoder_frames(ckpt: str, layer: int | None = None) -> EncoderFn:
    """Encoder callable from a Whisper checkpoint (a Hugging Face directory or an openai-whisper ``.pt`` file) or
    from a model trained by this toolkit (a ``bin/train.py`` model or checkpoint directory, see
    :func:`load_trained_encoder`); ``layer`` as in :func:`whisper_encoder_frames`."""
    from wenet_echat.encoder.loaders import load_hf_whisper_encoder, load_openai_whisper_encoder

    if not os.path.exists(ckpt):
        raise FileNotFoundError(f"encoder checkpoint {ckpt} not found")
    path = Path(ckpt)
    if (path / "train.yaml").is_file() or (path / "model.pt").is_file():
        encoder = load_trained_encoder(path)
        return whisper_encoder_frames(encoder, int(encoder.config.n_mels), layer)
    loader = load_hf_whisper_encoder if path.is_dir() else load_openai_whisper_encoder
    encoder, enc_conf = loader(ckpt, dropout=0.0)
    return whisper_encoder_frames(encoder, enc_conf.n_mels, layer)


def source_frames(wav: np.ndarray, cfg: FeatureConfig, encoder: EncoderFn | None = None) -> np.ndarray:
    """Frame-level features (T, D) of 16 kHz audio from ``cfg.feature_source``, before stacking."""
    if cfg.feature_source == "log_mel":
        if wav.shape[0] < 160 * cfg.stack:  # too short for one token (and for the centred STFT)
            return np.zeros((0, cfg.n_mels), dtype=np.float32)
        return whisper_log_mel(wav, n_mels=cfg.n_mels).numpy()
    if encoder is None:
        raise ValueError("feature_source 'encoder' needs an encoder callable (pass encoder= or set encoder_ckpt)")
    out = encoder(wav)
    out = out.detach().float().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out, np.float32)
    if out.ndim == 3:
        if out.shape[0] != 1:
            raise ValueError(f"encoder returned a batch of {out.shape[0]} for one utterance")
        out = out[0]
    if out.ndim != 2:
        raise ValueError(f"encoder must return (1, T, D) or (T, D), got shape {out.shape}")
    return out.astype(np.float32, copy=False)


def stacked_features(wav: np.ndarray, sr: int, cfg: FeatureConfig, encoder: EncoderFn | None = None) -> np.ndarray:
    """The raw (pre-PCA) vectors of one utterance: (tokens, stack * D) float32."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected mono audio of shape (samples,), got {wav.shape}")
    if sr != SAMPLE_RATE:
        wav = resample(wav, sr, SAMPLE_RATE)
    frames = normalize_frames(source_frames(wav, cfg, encoder), cfg.norm)
    return stack_frames(frames, cfg.stack).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------- PCA


def fit_pca(x: np.ndarray, dim: int | None, whiten: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean (D,) and projection (D, dim) onto the leading principal axes of ``x`` (N, D); None for no PCA.

    Axis signs are fixed (largest-magnitude entry positive) so the result does not depend on the eigen-solver.
    """
    if dim is None or dim <= 0:
        return None
    n, d = x.shape
    if dim > d:
        raise ValueError(f"pca_dim {dim} exceeds the feature dimension {d}")
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=0)
    centred = x64 - mean
    cov = centred.T @ centred / max(n - 1, 1)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1][:dim]
    eigval, eigvec = np.maximum(eigval[order], 0.0), eigvec[:, order]
    signs = np.sign(eigvec[np.abs(eigvec).argmax(axis=0), np.arange(dim)])
    eigvec = eigvec * np.where(signs == 0, 1.0, signs)
    if whiten:
        eigvec = eigvec / np.sqrt(eigval + 1e-6 * max(float(eigval.max()), 1e-12))
    return mean.astype(np.float32), eigvec.astype(np.float32)


def apply_pca(x: np.ndarray, pca: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Centre and project rows of ``x`` with a :func:`fit_pca` result (identity for None)."""
    if pca is None:
        return x
    mean, proj = pca
    return (x - mean) @ proj


# ----------------------------------------------------------------------------------------------- k-means


@dataclass
class KMeansResult:
    centroids: np.ndarray  # (k, dim) float32
    inertia: float  # sum of squared distances of the training frames to their centroids
    n_frames: int  # frames the centroids were fitted on
    iterations: int
    counts: np.ndarray = field(repr=False)  # frames per centroid in the final assignment

    @property
    def mean_sq_distance(self) -> float:
        return self.inertia / self.n_frames if self.n_frames else 0.0


def assign(x: np.ndarray, centroids: np.ndarray, chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row of ``x``: (labels int64 (N,), squared distances float64 (N,))."""
    c32 = np.ascontiguousarray(centroids, dtype=np.float32)
    c_sq = (c32.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)
    labels = np.empty(x.shape[0], dtype=np.int64)
    dists = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk].astype(np.float32, copy=False)
        # |x|^2 is the same for every centroid: rank by |c|^2 - 2 x.c, add |x|^2 back for the chosen one
        score = block @ c32.T
        score *= -2.0
        score += c_sq
        idx = score.argmin(axis=1)
        x_sq = (block.astype(np.float64) ** 2).sum(axis=1)
        labels[start : start + chunk] = idx
        dists[start : start + chunk] = np.maximum(x_sq + score[np.arange(len(idx)), idx], 0.0)
    return labels, dists


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centre is drawn with probability proportional to the squared distance to the
    nearest centre chosen so far (uniformly among unused rows once every row coincides with a centre)."""
    n = x.shape[0]
    x64 = x.astype(np.float64)
    x_sq = (x64**2).sum(axis=1)
    chosen = [int(rng.integers(n))]
    closest = np.maximum(x_sq - 2.0 * x64 @ x64[chosen[0]] + x_sq[chosen[0]], 0.0)
    for _ in range(1, k):
        total = closest.sum()
        if total > 0:
            idx = int(rng.choice(n, p=closest / total))
        else:
            unused = np.setdiff1d(np.arange(n), chosen)
            idx = int(rng.choice(unused))
        chosen.append(idx)
        closest = np.minimum(closest, np.maximum(x_sq - 2.0 * x64 @ x64[idx] + x_sq[idx], 0.0))
    return x[chosen].astype(np.float32)


def _update_centroids(x: np.ndarray, labels: np.ndarray, dists: np.ndarray, k: int) -> np.ndarray:
    """Means of the clusters; an empty cluster takes the frame farthest from its centroid (not reused)."""
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, x.astype(np.float64))
    centroids = sums / np.maximum(counts, 1)[:, None]
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        farthest = np.argsort(-dists, kind="stable")[: empty.size]
        centroids[empty] = x[farthest]
    return centroids.astype(np.float32)


def _sample_rows(x: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    if limit is None or x.shape[0] <= limit:
        return x
    return x[np.sort(rng.choice(x.shape[0], size=limit, replace=False))]


def train_kmeans(features: Sequence[np.ndarray] | np.ndarray, k: int, iters: int = 30, seed: int = 777,
                 max_frames: int | None = 200_000, init_frames: int | None = None,
                 tol: float = 1e-4) -> KMeansResult:
    """Cluster the rows of ``features`` (a list of (T_i, dim) arrays, or one (N, dim) array) into ``k`` centroids.

    ``max_frames`` frames (all if None) are drawn at random; k-means++ seeds on ``init_frames`` of them (default
    ``max(40 k, 10000)``); at most ``iters`` Lloyd iterations follow, stopping early when fewer than ``tol`` of
    the labels change. The same inputs and ``seed`` give the same centroids.
    """
    x = features if isinstance(features, np.ndarray) else np.concatenate([np.asarray(f) for f in features if len(f)])
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (frames, dim), got shape {x.shape}")
    if k < 1 or x.shape[0] < k:
        raise ValueError(f"k-means with k={k} needs at least {k} frames, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or inf")
    rng = np.random.default_rng(seed)
    x = _sample_rows(x, max_frames, rng)
    init_n = init_frames if init_frames is not None else max(40 * k, 10_000)
    centroids = kmeans_plus_plus(_sample_rows(x, max(init_n, k), rng), k, rng)
    labels, dists = assign(x, centroids)
    iterations = 0
    while iterations < iters:
        iterations += 1
        centroids = _update_centroids(x, labels, dists, k)
        new_labels, dists = assign(x, centroids)
        changed = int((new_labels != labels).sum())
        labels = new_labels
        if changed <= tol * x.shape[0]:
            break
    return KMeansResult(centroids, float(dists.sum()), int(x.shape[0]), iterations,
                        np.bincount(labels, minlength=k))


def codebook_stats(token_lists: Iterable[Sequence[int]], k: int) -> dict[str, float | int]:
    """Usage of a codebook of size ``k``: ``entropy_bits`` of the code distribution, ``perplexity`` (2**entropy,
    the effective number of codes; 0 when there are no tokens), ``used``/``unused`` codes and ``tokens``."""
    counts = np.zeros(k, dtype=np.int64)
    for tokens in token_lists:
        arr = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() >= k):
            bad = arr[(arr < 0) | (arr >= k)][0]
            raise ValueError(f"speech code {int(bad)} is outside [0, {k})")
        counts += np.bincount(arr, minlength=k)
    total = int(counts.sum())
    if total == 0:
        return {"tokens": 0, "used": 0, "unused": k, "entropy_bits": 0.0, "perplexity": 0.0}
    p = counts[counts > 0] / total
    entropy = float(-(p * np.log2(p)).sum())
    used = int((counts > 0).sum())
    return {"tokens": total, "used": used, "unused": k - used, "entropy_bits": entropy, "perplexity": 2.0**entropy}


# ----------------------------------------------------------------------------------------------- tokenizer


class KMeansTokenizer(SpeechTokenizer):
    """Nearest-centroid codes of stacked (and PCA-projected) frames; see the module docstring."""

    def __init__(self, centroids: np.ndarray, config: FeatureConfig, pca: tuple[np.ndarray, np.ndarray] | None = None,
                 encoder: EncoderFn | None = None, train_info: dict[str, Any] | None = None):
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.config = config
        self.pca = pca
        self.train_info = dict(train_info or {})
        if config.feature_source == "encoder" and encoder is None and config.encoder_ckpt:
            encoder = load_whisper_encoder_frames(config.encoder_ckpt, config.encoder_layer)
        self.encoder = encoder
        self.codebook_size = int(self.centroids.shape[0])
        self.frame_rate = config.frame_rate

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def project(self, raw: np.ndarray) -> np.ndarray:
        """Raw stacked vectors (N, input_dim) -> the clustering space (N, dim)."""
        if self.config.input_dim is not None and raw.shape[0] and raw.shape[1] != self.config.input_dim:
            raise ValueError(f"features have dimension {raw.shape[1]} but the tokenizer was trained on "
                             f"{self.config.input_dim} (feature_source '{self.config.feature_source}')")
        return apply_pca(raw, self.pca)

    def features(self, wav: np.ndarray, sr: int) -> np.ndarray:
        """Vectors of one utterance in the clustering space (tokens, dim)."""
        return self.project(stacked_features(wav, sr, self.config, self.encoder))

    def encode(self, wav: np.ndarray, sr: int) -> list[int]:
        return self.encode_batch([wav], sr)[0]

    def encode_batch(self, wavs: Sequence[np.ndarray], sr: int) -> list[list[int]]:
        feats = [self.features(w, sr) for w in wavs]
        if not feats:
            return []
        labels, _ = assign(np.concatenate(feats), self.centroids)
        bounds = np.cumsum([0] + [len(f) for f in feats])
        return [labels[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])]

    # ---- persistence

    def save(self, path: str | os.PathLike) -> None:
        """Write the model atomically as one ``.npz`` (see the module docstring for its keys)."""
        mean, proj = self.pca if self.pca is not None else (np.zeros(0, np.float32), np.zeros((0, 0), np.float32))
        with atomic_open(path, "wb") as f:
            np.savez(f, format=np.array(FORMAT_TAG), config=np.array(json.dumps(self.config.to_dict())),
                     centroids=self.centroids, pca_mean=mean, pca_proj=proj,
                     train_info=np.array(json.dumps(self.train_info)))

    @classmethod
    def load(cls, path: str | os.PathLike, encoder: EncoderFn | None = None,
             encoder_ckpt: str | None = None) -> KMeansTokenizer:
        """Read a model written by :meth:`save`; raises ``FileNotFoundError`` / :class:`TokenizerFileError`.

        For ``feature_source: encoder`` models, ``encoder`` (a callable) or ``encoder_ckpt`` (overrides the stored
        checkpoint path) supplies the encoder.
        """
        arrays = _read_model_arrays(Path(path))
        try:
            config = FeatureConfig(**json.loads(str(arrays["config"])))
            if encoder_ckpt:
                config = replace(config, encoder_ckpt=encoder_ckpt)
            train_info = json.loads(str(arrays["train_info"]))
        except (TypeError, ValueError) as e:
            raise TokenizerFileError(f"{path}: bad tokenizer config ({e})") from None
        centroids, mean, proj = arrays["centroids"], arrays["pca_mean"], arrays["pca_proj"]
        pca = None if proj.size == 0 else (mean.astype(np.float32), proj.astype(np.float32))
        _check_shapes(str(path), centroids, pca, config)
        return cls(centroids, config, pca, encoder=encoder, train_info=train_info)


def _read_model_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"speech tokenizer model {path} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except Exception as e:  # zipfile / format errors come in many types
        raise TokenizerFileError(f"{path}: not a k-means speech tokenizer .npz ({type(e).__name__}: {e})") from None
    missing = [k for k in MODEL_KEYS if k not in arrays]
    if missing:
        raise TokenizerFileError(f"{path}: not a k-means speech tokenizer (missing {', '.join(missing)})")
    if str(arrays["format"]) != FORMAT_TAG:
        raise TokenizerFileError(f"{path}: unsupported format '{arrays['format']}', expected '{FORMAT_TAG}'")
    return arrays


def _check_shapes(path: str, centroids: np.ndarray, pca: tuple[np.ndarray, np.ndarray] | None,
                  config: FeatureConfig) -> None:
    if centroids.ndim != 2 or centroids.shape[0] < 1 or not np.isfinite(centroids).all():
        raise TokenizerFileError(f"{path}: centroids must be a finite (k, dim) matrix, got shape {centroids.shape}")
    if pca is not None:
        mean, proj = pca
        if proj.ndim != 2 or mean.shape != (proj.shape[0],) or proj.shape[1] != centroids.shape[1]:
            raise TokenizerFileError(f"{path}: PCA mean {mean.shape} / matrix {proj.shape} do not fit centroids "
                                     f"{centroids.shape}")
    in_dim = pca[1].shape[0] if pca is not None else centroids.shape[1]
    if config.input_dim is not None and config.input_dim != in_dim:
        raise TokenizerFileError(f"{path}: config input_dim {config.input_dim} != model input size {in_dim}")


def fit_kmeans_tokenizer(raw_features: Sequence[np.ndarray], config: FeatureConfig, k: int = 512,
                         pca_dim: int | None = 64, whiten: bool = False, iters: int = 30, seed: int = 777,
                         max_frames: int | None = 200_000,
                         encoder: EncoderFn | None = None) -> tuple[KMeansTokenizer, KMeansResult]:
    """Learn PCA and centroids from per-utterance raw stacked vectors (:func:`stacked_features` outputs)."""
    raw = [f for f in raw_features if len(f)]
    if not raw:
        raise ValueError("no feature frames to train on (all utterances shorter than one token?)")
    x = np.concatenate(raw).astype(np.float32, copy=False)
    rng = np.random.default_rng(seed)
    x = _sample_rows(x, max_frames, rng)  # PCA and k-means see the same frames
    pca = fit_pca(_sample_rows(x, 100_000, rng), pca_dim, whiten)
    result = train_kmeans(apply_pca(x, pca), k, iters=iters, seed=seed, max_frames=None)
    info = {"k": k, "frames": result.n_frames, "inertia": result.inertia, "iterations": result.iterations,
            "seed": seed, "pca_dim": pca_dim, "whiten": whiten}
    config = replace(config, input_dim=int(x.shape[1]))
    return KMeansTokenizer(result.centroids, config, pca, encoder=encoder, train_info=info), result


@SPEECH_TOKENIZERS.register("kmeans")
def _build_kmeans(path: str, encoder: EncoderFn | None = None, encoder_ckpt: str | None = None) -> KMeansTokenizer:
    """Registry factory: ``{"type": "kmeans", "path": model.npz[, "encoder_ckpt": whisper checkpoint]}``."""
    return KMeansTokenizer.load(path, encoder=encoder, encoder_ckpt=encoder_ckpt)
