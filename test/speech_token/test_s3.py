"""S3 tokenizer wrapper: error paths (missing file, wrong format, missing package) and the glue around the model."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from wenet_echat.speech_token import S3FormatError, S3Tokenizer, build_speech_tokenizer
from wenet_echat.speech_token import s3 as s3mod

ONNX_HEAD = b"\x08\x08\x12\x07pytorch\x1a\x052.1.0"  # ir_version 8, producer "pytorch", as torch.onnx writes


@pytest.fixture()
def onnx_file(tmp_path):
    path = tmp_path / "speech_tokenizer_v1.onnx"
    path.write_bytes(ONNX_HEAD + bytes(64))
    return path


@pytest.fixture()
def no_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "s3tokenizer", None)  # import fails as if not installed


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "models" / "speech_tokenizer_v1.onnx"
    with pytest.raises(FileNotFoundError, match="speech_tokenizer_v1.onnx"):
        S3Tokenizer(str(path))
    with pytest.raises(FileNotFoundError, match=str(path)):
        build_speech_tokenizer({"type": "s3", "path": str(path), "version": "v2"})


@pytest.mark.parametrize("content, what", [
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "Git LFS pointer"),
    (b"<!DOCTYPE html><html>404</html>", "HTML"),
    (b"", "empty"),
    (b"\x00\x01\x02\x03garbage", "first bytes 00 01 02 03"),
])
def test_wrong_format_is_caught_before_importing_the_package(tmp_path, monkeypatch, content, what):
    def must_not_import():
        raise AssertionError("the package was imported before the format check")

    monkeypatch.setattr(s3mod, "import_s3tokenizer", must_not_import)
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(S3FormatError, match=what) as info:
        S3Tokenizer(str(path))
    assert str(path) in str(info.value)


def test_sniff_recognises_onnx_and_torch_files(tmp_path, onnx_file):
    assert s3mod.sniff_model_format(str(onnx_file)) == "onnx"
    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pt)
    assert s3mod.sniff_model_format(str(pt)) == "torch"
    bad_version = tmp_path / "x.onnx"
    bad_version.write_bytes(b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")  # absurd varint, not ONNX
    with pytest.raises(S3FormatError):
        s3mod.sniff_model_format(str(bad_version))


def test_missing_package_says_how_to_install(onnx_file, no_package):
    with pytest.raises(ImportError, match="pip install s3tokenizer") as info:
        S3Tokenizer(str(onnx_file))
    assert "torchaudio" in str(info.value)


def test_package_without_torchaudio(onnx_file, monkeypatch):
    def broken(name):
        raise ModuleNotFoundError("No module named 'torchaudio'", name="torchaudio")

    monkeypatch.setattr(s3mod.importlib, "import_module", broken)
    with pytest.raises(ImportError, match="missing module 'torchaudio'.*pip install s3tokenizer"):
        S3Tokenizer(str(onnx_file))


def test_bad_version(onnx_file):
    with pytest.raises(ValueError, match="v1, v2|'v1', 'v2'"):
        S3Tokenizer(str(onnx_file), version="v3")


class FakeS3Model(torch.nn.Module):
    """Stands in for s3tokenizer's model: 128-mel input, 4x time reduction (25 Hz), codes from a linear map."""

    seen: list[tuple[int, ...]] = []

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.proj = torch.nn.Linear(128, 16)

    def init_from_onnx(self, path: str) -> None:
        raise AssertionError("torch checkpoints must not go through the ONNX loader")

    def quantize(self, mel: torch.Tensor, mel_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        FakeS3Model.seen.append((self.name, *mel.shape))
        codes = self.proj(mel.transpose(1, 2)[:, ::4]).argmax(-1)
        return codes, mel_len // 4


def test_torch_checkpoint_is_loaded_with_weights_only_and_encodes(tmp_path, monkeypatch):
    fake = types.ModuleType("s3tokenizer")
    fake.S3Tokenizer = fake.S3TokenizerV2 = FakeS3Model
    monkeypatch.setitem(sys.modules, "s3tokenizer", fake)
    loads = []
    real_load = torch.load

    def spy_load(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy_load)
    torch.manual_seed(0)
    path = tmp_path / "s3_v2.pt"
    torch.save(FakeS3Model("x").state_dict(), path)
    tok = build_speech_tokenizer({"type": "s3", "path": str(path), "version": "v2", "batch_size": 2})
    assert loads == [True] and tok.codebook_size == 6561 and tok.frame_rate == 25
    rng = np.random.default_rng(0)
    wavs = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (16000, 8000, 24000)]
    FakeS3Model.seen.clear()
    codes = tok.encode_batch(wavs, 16000)
    assert [len(c) for c in codes] == [25, 12, 37]  # (samples // 160) // 4 mel frames
    assert FakeS3Model.seen == [("speech_tokenizer_v2_25hz", 2, 128, 100), ("speech_tokenizer_v2_25hz", 1, 128, 150)]
    assert codes[1] == tok.encode(wavs[1], 16000)
    assert len(tok.encode(wavs[0][::2].copy(), 8000)) == 25  # resampled to 16 kHz first
