"""Load Whisper encoder weights (openai-whisper ``.pt`` or a Hugging Face directory) into :class:`WhisperEncoder`.

Nothing here unpickles code: ``.pt``/``.bin`` files are read with ``torch.load(..., weights_only=True)`` and
``.safetensors`` with safetensors. Only encoder tensors are read; decoder tensors are ignored.

Key mapping (``N`` = block index; the ``.weight``/``.bias`` suffix is kept). Our names are WeNet's: what WeNet's
``wenet/[models/]whisper/convert_whisper_to_wenet_config_and_ckpt.py`` writes and what OSUM-EChat checkpoints store
under ``encoder.``.

====================================  ==========================================  =====================================
openai-whisper (`encoder.` stripped)  Hugging Face (`[model.]encoder.` stripped)  ours = WeNet = OSUM-EChat `encoder.*`
====================================  ==========================================  =====================================
conv1                                 conv1                                       embed.conv.0
conv2                                 conv2                                       embed.conv.2
positional_embedding (n_ctx, d)       embed_positions.weight (n_ctx, d)           embed.pos_enc.pe (1, n_ctx, d)
blocks.N.attn.query                   layers.N.self_attn.q_proj                   encoders.N.self_attn.linear_q
blocks.N.attn.key (weight only)       layers.N.self_attn.k_proj (weight only)     encoders.N.self_attn.linear_k
blocks.N.attn.value                   layers.N.self_attn.v_proj                   encoders.N.self_attn.linear_v
blocks.N.attn.out                     layers.N.self_attn.out_proj                 encoders.N.self_attn.linear_out
blocks.N.attn_ln                      layers.N.self_attn_layer_norm               encoders.N.norm1
blocks.N.mlp.0                        layers.N.fc1                                encoders.N.feed_forward.w_1
blocks.N.mlp.2                        layers.N.fc2                                encoders.N.feed_forward.w_2
blocks.N.mlp_ln                       layers.N.final_layer_norm                   encoders.N.norm2
ln_post                               layer_norm                                  after_norm
====================================  ==========================================  =====================================

The positional table is fixed (sinusoids); the checkpoint's copy is loaded as is (a warning is logged if it differs
from Whisper's formula) and, if a checkpoint lacks it, the computed table is kept.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wenet_echat.encoder.whisper import WhisperEncoder, WhisperEncoderConfig
from wenet_echat.nn.transformer import whisper_sinusoids
from wenet_echat.utils.fileio import load_weights_only
from wenet_echat.utils.tensors import dtype_kind_problem, fmt_names

logger = logging.getLogger(__name__)

POS_KEY = "embed.pos_enc.pe"


class WhisperCheckpointError(ValueError):
    """A checkpoint cannot be mapped onto :class:`WhisperEncoder`; the message names the file and the keys."""


@dataclass(frozen=True)
class KeyMap:
    """Two-way name mapping between a Whisper checkpoint layout and ours (module paths, suffix kept)."""

    top: dict[str, str]
    layer: dict[str, str]
    layer_prefix: str
    pos: str

    def to_ours(self, name: str) -> str | None:
        """Our parameter name for a source name (encoder prefix already stripped), or None if unknown."""
        if name == self.pos:
            return POS_KEY
        return _translate(name, self.layer_prefix, "encoders", self.top, self.layer)

    def from_ours(self, name: str) -> str | None:
        """The source name for one of our parameter names, or None if unknown."""
        if name == POS_KEY:
            return self.pos
        top = {v: k for k, v in self.top.items()}
        layer = {v: k for k, v in self.layer.items()}
        return _translate(name, "encoders", self.layer_prefix, top, layer)


def _translate(name: str, src_layers: str, dst_layers: str, top: dict[str, str],
               layer: dict[str, str]) -> str | None:
    module, _, leaf = name.rpartition(".")
    if not module:
        return None
    match = re.fullmatch(rf"{re.escape(src_layers)}\.(\d+)\.(.+)", module)
    if match:
        inner = layer.get(match.group(2))
        return None if inner is None else f"{dst_layers}.{match.group(1)}.{inner}.{leaf}"
    mapped = top.get(module)
    return None if mapped is None else f"{mapped}.{leaf}"


OPENAI_KEYMAP = KeyMap(
    top={"conv1": "embed.conv.0", "conv2": "embed.conv.2", "ln_post": "after_norm"},
    layer={
        "attn.query": "self_attn.linear_q",
        "attn.key": "self_attn.linear_k",
        "attn.value": "self_attn.linear_v",
        "attn.out": "self_attn.linear_out",
        "attn_ln": "norm1",
        "mlp.0": "feed_forward.w_1",
        "mlp.2": "feed_forward.w_2",
        "mlp_ln": "norm2",
    },
    layer_prefix="blocks",
    pos="positional_embedding",
)

HF_KEYMAP = KeyMap(
    top={"conv1": "embed.conv.0", "conv2": "embed.conv.2", "layer_norm": "after_norm"},
    layer={
        "self_attn.q_proj": "self_attn.linear_q",
        "self_attn.k_proj": "self_attn.linear_k",
        "self_attn.v_proj": "self_attn.linear_v",
        "self_attn.out_proj": "self_attn.linear_out",
        "self_attn_layer_norm": "norm1",
        "fc1": "feed_forward.w_1",
        "fc2": "feed_forward.w_2",
        "final_layer_norm": "norm2",
    },
    layer_prefix="layers",
    pos="embed_positions.weight",
)


def load_encoder_state(model: WhisperEncoder, source: dict[str, torch.Tensor], keymap: KeyMap, path: str,
                       src_prefix: str = "") -> None:
    """Map ``source`` (encoder tensors, prefix stripped) through ``keymap`` into ``model``.

    Raises :class:`WhisperCheckpointError` listing every missing key, unexpected key, shape mismatch and
    non-floating tensor (by the checkpoint's own names, plus ours). Non-float32 floating tensors are cast to
    float32 with a log line.
    """
    expected = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unexpected: list[str] = []
    wrong_dtype: list[str] = []
    cast: set[str] = set()
    for name, tensor in source.items():
        ours = keymap.to_ours(name)
        if ours is None or ours not in expected:
            unexpected.append(f"{src_prefix}{name}")
            continue
        problem = dtype_kind_problem(f"{src_prefix}{name}", tensor.dtype, expected[ours].dtype)
        if problem:
            wrong_dtype.append(problem)
            origin[ours] = f"{src_prefix}{name}"
            continue
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            cast.add(str(tensor.dtype).replace("torch.", ""))
            tensor = tensor.float()
        if ours == POS_KEY and tensor.dim() == 2:
            tensor = tensor.unsqueeze(0)
        converted[ours], origin[ours] = tensor, f"{src_prefix}{name}"
    if cast:
        logger.info("%s: casting %s encoder tensors to float32", path, "/".join(sorted(cast)))
    if POS_KEY not in converted:
        logger.info("%s: no positional table in the checkpoint; using Whisper's sinusoids", path)
        converted[POS_KEY] = expected[POS_KEY]
    missing = [f"{src_prefix}{keymap.from_ours(k) or k} (ours: {k})" for k in expected
               if k not in converted and k not in origin]
    mismatched = [
        f"{origin[k]} (ours: {k}): checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in converted.items() if k in expected and v.shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {fmt_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {fmt_names(sorted(unexpected))}")
    if mismatched:
        problems.append(f"shape mismatches: {fmt_names(mismatched)}")
    if wrong_dtype:
        problems.append(f"dtype mismatches: {fmt_names(wrong_dtype)}")
    if problems:
        raise WhisperCheckpointError(f"{path}: cannot load the Whisper encoder: " + "; ".join(problems))
    pe = converted[POS_KEY]
    reference = whisper_sinusoids(pe.size(1), pe.size(2))
    deviation = float((pe[0] - reference).abs().max()) if pe.numel() else 0.0
    if deviation > 1e-3:
        logger.warning("%s: positional table differs from Whisper's sinusoids by up to %.3g; loading it as is",
                       path, deviation)
    model.load_state_dict(converted, strict=True)


def _strip(state: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _require(mapping: dict[str, Any], keys: tuple[str, ...], what: str, path: Path) -> None:
    absent = [k for k in keys if k not in mapping]
    if absent:
        raise WhisperCheckpointError(f"{path}: {what} lacks {', '.join(absent)}")


def load_openai_whisper_encoder(path: str | Path, **overrides: Any) -> tuple[WhisperEncoder, WhisperEncoderConfig]:
    """Build a :class:`WhisperEncoder` from an openai-whisper checkpoint ``{"dims": ..., "model_state_dict": ...}``.

    ``overrides`` set training-only config fields (``dropout``, ``attention_dropout``, ``gradient_checkpointing``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"openai-whisper checkpoint not found: {path}")
    ckpt = load_weights_only(path, WhisperCheckpointError, "a weights-only torch checkpoint")
    if not isinstance(ckpt, dict):
        raise WhisperCheckpointError(f"{path}: expected a dict with 'dims' and 'model_state_dict'")
    _require(ckpt, ("dims", "model_state_dict"), "the checkpoint", path)
    dims = ckpt["dims"]
    _require(dims, ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer"), "'dims'", path)
    config = WhisperEncoderConfig(
        n_mels=int(dims["n_mels"]), d_model=int(dims["n_audio_state"]), n_heads=int(dims["n_audio_head"]),
        n_layers=int(dims["n_audio_layer"]), ffn_dim=4 * int(dims["n_audio_state"]),
        max_positions=int(dims["n_audio_ctx"]), **overrides,
    )
    source = _strip(ckpt["model_state_dict"], "encoder.")
    if not source:
        raise WhisperCheckpointError(f"{path}: 'model_state_dict' has no 'encoder.*' keys")
    model = WhisperEncoder(config)
    load_encoder_state(model, source, OPENAI_KEYMAP, str(path), src_prefix="encoder.")
    return model, config


def _hf_encoder_prefix(keys: list[str], path: Path) -> str:
    for prefix in ("model.encoder.", "encoder."):
        if any(k.startswith(prefix) for k in keys):
            return prefix
    raise WhisperCheckpointError(f"{path}: no 'model.encoder.*' or 'encoder.*' keys found")


def _read_hf_weights(directory: Path) -> tuple[dict[str, torch.Tensor], str, Path]:
    """Encoder tensors (prefix stripped), the prefix and the file they came from."""
    from safetensors import safe_open

    single, index, bin_file = (directory / "model.safetensors", directory / "model.safetensors.index.json",
                               directory / "pytorch_model.bin")
    if single.is_file() or index.is_file():
        if single.is_file():
            files = {single: None}
        else:
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            files = {directory / f: None for f in sorted(set(weight_map.values()))}
        names: dict[Path, list[str]] = {}
        for file in files:
            if not file.is_file():
                raise FileNotFoundError(f"safetensors shard not found: {file}")
            with safe_open(str(file), framework="pt") as handle:
                names[file] = list(handle.keys())
        where = single if single.is_file() else index
        prefix = _hf_encoder_prefix([k for ks in names.values() for k in ks], where)
        out: dict[str, torch.Tensor] = {}
        for file, keys in names.items():
            with safe_open(str(file), framework="pt") as handle:
                out.update({k[len(prefix):]: handle.get_tensor(k) for k in keys if k.startswith(prefix)})
        return out, prefix, where
    if bin_file.is_file():
        state = load_weights_only(bin_file, WhisperCheckpointError, "a weights-only torch checkpoint")
        if not isinstance(state, dict):
            raise WhisperCheckpointError(f"{bin_file}: expected a state dict")
        prefix = _hf_encoder_prefix(list(state), bin_file)
        return _strip(state, prefix), prefix, bin_file
    raise FileNotFoundError(f"no model.safetensors, model.safetensors.index.json or pytorch_model.bin in {directory}")


def load_hf_whisper_encoder(directory: str | Path, **overrides: Any) -> tuple[WhisperEncoder, WhisperEncoderConfig]:
    """Build a :class:`WhisperEncoder` from a Hugging Face Whisper directory (``config.json`` + weights)."""
    directory = Path(directory)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"Hugging Face Whisper config not found: {config_file}")
    hf = json.loads(config_file.read_text())
    fields = ("num_mel_bins", "d_model", "encoder_attention_heads", "encoder_layers", "encoder_ffn_dim",
              "max_source_positions")
    _require(hf, fields, "config.json", config_file)
    activation = hf.get("activation_function", "gelu")
    if activation != "gelu":
        raise WhisperCheckpointError(f"{config_file}: activation_function '{activation}' is not supported (gelu)")
    config = WhisperEncoderConfig(
        n_mels=int(hf["num_mel_bins"]), d_model=int(hf["d_model"]), n_heads=int(hf["encoder_attention_heads"]),
        n_layers=int(hf["encoder_layers"]), ffn_dim=int(hf["encoder_ffn_dim"]),
        max_positions=int(hf["max_source_positions"]), **overrides,
    )
    source, prefix, weights_file = _read_hf_weights(directory)
    model = WhisperEncoder(config)
    load_encoder_state(model, source, HF_KEYMAP, str(weights_file), src_prefix=prefix)
    return model, config


def export_state_dict(model: WhisperEncoder, keymap: KeyMap, prefix: str = "encoder.") -> dict[str, torch.Tensor]:
    """Our encoder's weights under another layout's names (e.g. ``OPENAI_KEYMAP`` → ``encoder.blocks.0...``);
    the positional table is written as (n_ctx, d)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        theirs = keymap.from_ours(name)
        if theirs is None:
            raise WhisperCheckpointError(f"no mapping for our parameter {name}")
        out[prefix + theirs] = tensor[0] if name == POS_KEY else tensor
    return out
