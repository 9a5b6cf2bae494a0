"""CosyVoice's supervised semantic speech tokenizer (S3) through the optional ``s3tokenizer`` package.

OSUM-EChat's speech output uses these codes: 25 Hz, 4096 codes for ``v1`` (CosyVoice-300M-25Hz's
``speech_tokenizer_v1.onnx``) and 6561 (3^8 FSQ levels) for ``v2`` (CosyVoice2's ``speech_tokenizer_v2.onnx``). Note
that CosyVoice-300M (not -25Hz) ships a *50 Hz* v1 file under the same name; pass ``frame_rate=50`` for it.

The package (``pip install s3tokenizer``) holds a PyTorch re-implementation whose weights are read from the released
ONNX file (needs the ``onnx`` package) or from a converted torch state dict; it imports ``torchaudio`` at import
time. Neither is a dependency of wenet_echat, so the checks run in an order that gives the most useful error first:

1. the model file exists (``FileNotFoundError`` naming the path);
2. its first bytes look like an ONNX protobuf or a torch checkpoint (zip or pickle) - catches Git LFS pointers,
   HTML error pages and other files before any heavy import (:class:`S3FormatError`);
3. ``s3tokenizer`` imports (``ImportError`` saying how to install it and that it needs torchaudio).

Features are 128-bin Whisper log-mel spectrograms, computed here with
:func:`wenet_echat.audio.features.whisper_log_mel` (the same recipe and Slaney filterbank as the package's own
``log_mel_spectrogram``). Torch checkpoints are read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from wenet_echat.audio.features import whisper_log_mel
from wenet_echat.audio.io import resample
from wenet_echat.speech_token.kmeans import SAMPLE_RATE, SPEECH_TOKENIZERS, SpeechTokenizer

# version -> (model name understood by s3tokenizer's classes, codebook size, class name)
VERSIONS: dict[str, tuple[str, int, str]] = {
    "v1": ("speech_tokenizer_v1_25hz", 4096, "S3Tokenizer"),
    "v2": ("speech_tokenizer_v2_25hz", 6561, "S3TokenizerV2"),
}
N_MELS = 128
INSTALL_HINT = "pip install s3tokenizer (it also needs torchaudio and onnx, which wenet_echat does not install)"


class S3FormatError(ValueError):
    """The S3 model file is neither ONNX nor a torch checkpoint; the message names the file and what it looks like."""


def _read_varint(data: bytes, pos: int) -> tuple[int, int] | None:
    value, shift = 0, 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None


def _looks_like_onnx(head: bytes) -> bool:
    """ONNX is a ``ModelProto`` protobuf; exporters write ``ir_version`` (field 1, varint, tag 0x08) first, then
    ``producer_name`` / ``graph`` / ``opset_import`` (length-delimited fields 2-8)."""
    if len(head) < 4 or head[0] != 0x08:
        return False
    parsed = _read_varint(head, 1)
    if parsed is None:
        return False
    ir_version, pos = parsed
    return 1 <= ir_version <= 64 and pos < len(head) and head[pos] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42)


def sniff_model_format(path: str) -> str:
    """``"onnx"`` or ``"torch"`` from the first bytes of ``path``; :class:`S3FormatError` otherwise."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04"):
        return "torch"  # torch.save's zip container
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "torch"  # legacy pickle-based torch file
    if _looks_like_onnx(head):
        return "onnx"
    if head.startswith(b"version https://git-lfs"):
        what = "a Git LFS pointer (fetch the real file with git lfs pull)"
    elif head.lstrip()[:1] == b"<":
        what = "an HTML/XML page (a failed download?)"
    elif not head:
        what = "empty"
    else:
        what = f"unrecognised (first bytes {head[:8].hex(' ')})"
    raise S3FormatError(f"{path}: not an S3 tokenizer model (expected ONNX or a torch checkpoint); the file is {what}")


def import_s3tokenizer() -> Any:
    """The ``s3tokenizer`` module, or an ``ImportError`` that says what to install."""
    try:
        return importlib.import_module("s3tokenizer")
    except ModuleNotFoundError as e:
        if e.name == "s3tokenizer":
            raise ImportError(f"the S3 speech tokenizer needs the s3tokenizer package: {INSTALL_HINT}") from None
        raise ImportError(f"s3tokenizer is installed but cannot be imported: missing module '{e.name}'; "
                          f"{INSTALL_HINT}") from None


class S3Tokenizer(SpeechTokenizer):
    """CosyVoice S3 codes of 16 kHz speech (resampled if needed); see the module docstring."""

    def __init__(self, model_path: str, version: str = "v1", device: str = "cpu", frame_rate: float = 25,
                 batch_size: int = 16):
        if version not in VERSIONS:
            raise ValueError(f"S3 tokenizer version must be one of {sorted(VERSIONS)}, got '{version}'")
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"S3 tokenizer model {model_path} not found")
        file_format = sniff_model_format(model_path)
        package = import_s3tokenizer()
        name, self.codebook_size, class_name = VERSIONS[version]
        self.version, self.frame_rate, self.batch_size = version, frame_rate, batch_size
        self.device = torch.device(device)
        self.model = getattr(package, class_name)(name)
        if file_format == "onnx":
            self.model.init_from_onnx(model_path)
        else:
            state = torch.load(model_path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state, strict=True)
        self.model.to(self.device).eval()

    def _mel(self, wav: np.ndarray, sr: int) -> torch.Tensor:
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"expected mono audio of shape (samples,), got {wav.shape}")
        if sr != SAMPLE_RATE:
            wav = resample(wav, sr, SAMPLE_RATE)
        return whisper_log_mel(wav, n_mels=N_MELS)  # (frames, 128)

    def encode(self, wav: np.ndarray, sr: int) -> list[int]:
        return self.encode_batch([wav], sr)[0]

    @torch.inference_mode()
    def encode_batch(self, wavs: Sequence[np.ndarray], sr: int) -> list[list[int]]:
        out: list[list[int]] = []
        for start in range(0, len(wavs), self.batch_size):
            mels = [self._mel(w, sr) for w in wavs[start : start + self.batch_size]]
            lens = torch.tensor([m.size(0) for m in mels], dtype=torch.int32)
            batch = torch.nn.utils.rnn.pad_sequence(mels, batch_first=True).transpose(1, 2)  # (B, 128, T)
            codes, code_lens = self.model.quantize(batch.to(self.device), lens.to(self.device))
            out.extend(codes[i, : int(code_lens[i])].tolist() for i in range(len(mels)))
        return out


@SPEECH_TOKENIZERS.register("s3")
def _build_s3(path: str, version: str = "v1", **kwargs: Any) -> S3Tokenizer:
    """Registry factory: ``{"type": "s3", "path": speech_tokenizer_v1.onnx, "version": "v1"}``."""
    return S3Tokenizer(path, version, **kwargs)
