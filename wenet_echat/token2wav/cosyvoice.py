"""CosyVoice-300M ``flow.pt`` / ``hift.pt`` checkpoints: layout inspection and a partial, explicit weight mapping.

Their layouts (``MaskedDiffWithXvec`` and ``HiFTGenerator`` in FunAudioLLM/CosyVoice; plain state dicts, training
checkpoints may add ``epoch``/``step`` numbers, DDP may add ``module.``)::

    flow.pt  input_embedding.weight (4096, 512)          hift.pt  m_source.l_linear.{weight,bias}
             spk_embed_affine_layer.{weight,bias} (80,192)         conv_pre.{weight_g,weight_v,bias} (512, 80, 7)
             encoder.* (6-layer conformer, rel-pos attn)          ups.{0,1}.* (transposed convs 512->256->128)
             encoder_proj.{weight,bias} (80, 512)                 resblocks.{0..5}.{convs1,convs2}.{0,1,2}.*,
             length_regulator.model.* (conv/GroupNorm/Mish)         .{activations1,activations2}.{0,1,2}.alpha
             decoder.estimator.* (U-Net with transformers)        conv_post.* (18 = n_fft 16 + 2 iSTFT channels)
                                                                  f0_predictor.*, source_downs.*, source_resblocks.*

Our modules reuse their names where a piece plays the same role, but the networks differ (we use local convs
and per-frame normalisation so that streaming windows reproduce whole-utterance synthesis, and a plain HiFiGAN
head instead of NSF + iSTFT). Mapping table (their prefix -> ours, ``None`` = no counterpart):

=========================== ================================ ==================================================
theirs                      ours                             condition / reason
=========================== ================================ ==================================================
flow ``input_embedding.``   ``flow.input_embedding.``        codebook 4096, ``encoder_dim`` 512 (their table has
                                                             no pad row: it fills rows ``[0, 4096)``)
flow ``spk_embed_affine_``  ``flow.spk_embed_affine_layer.`` ``spk_embed_dim`` 192, ``n_mels`` 80
``layer.``
flow ``encoder_proj.``      ``flow.encoder_proj.``           ``encoder_dim`` 512, ``n_mels`` 80
flow ``encoder.``           None                             conformer vs our dilated conv stack
flow ``length_regulator.``  None                             GroupNorm over whole sequences vs per-frame norm
flow ``decoder.estimator.`` None                             transformer U-Net vs our conv U-Net
hift ``conv_pre.``          ``vocoder.conv_pre.``            vocoder ``channels`` 512
hift ``ups.``               ``vocoder.ups.``                 ``upsample_rates`` [8, 8], kernels [16, 16]
hift ``resblocks.``         ``vocoder.resblocks.``           ``activation: snake``, kernels [3, 7, 11], dilations
                                                             [1, 3, 5] (the same type-1 block layout)
hift ``conv_post.``         None                             predicts iSTFT magnitude/phase, ours the wave
hift ``m_source.``,         None                             neural source-filter excitation: not in HiFiGAN
``f0_predictor.``,
``source_downs.``,
``source_resblocks.``
=========================== ================================ ==================================================

Weight-normalised tensors are translated (``weight_g``/``weight_v`` or ``parametrizations.weight.original0/1`` on
their side to our parametrizations); a plain ``weight`` going into a weight-normalised module is split into norm
and direction. :func:`load_cosyvoice` with ``strict=True`` (default) loads nothing and raises
:class:`CosyVoiceMappingError` listing every prefix that cannot be mapped, every shape that does not fit and every
parameter of ours left without a source; ``strict=False`` loads what maps and returns the same report (a warm
start, e.g. of the token table). :func:`inspect_cosyvoice_checkpoint` summarises a file per prefix.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wenet_echat.utils.fileio import load_weights_only
from wenet_echat.utils.tensors import dtype_kind_problem

FLOW_MAPPING: tuple[tuple[str, str | None, str], ...] = (
    ("input_embedding.", "input_embedding.", "token table (rows [0, codebook) of ours)"),
    ("spk_embed_affine_layer.", "spk_embed_affine_layer.", "x-vector projection"),
    ("encoder_proj.", "encoder_proj.", "encoder output -> n_mels"),
    ("encoder.", None, "conformer encoder: ours is a dilated conv stack"),
    ("length_regulator.", None, "conv + GroupNorm regulator: ours normalises per frame"),
    ("decoder.estimator.", None, "transformer U-Net estimator: ours is a conv U-Net"),
)
HIFT_MAPPING: tuple[tuple[str, str | None, str], ...] = (
    ("conv_pre.", "conv_pre.", "mel -> base channels"),
    ("ups.", "ups.", "transposed-conv upsampling"),
    ("resblocks.", "resblocks.", "type-1 residual blocks (needs activation: snake)"),
    ("conv_post.", None, "iSTFT magnitude/phase head: ours outputs the wave"),
    ("m_source.", None, "NSF harmonic source: not in HiFiGAN"),
    ("f0_predictor.", None, "F0 predictor: not in HiFiGAN"),
    ("source_downs.", None, "source downsampling: not in HiFiGAN"),
    ("source_resblocks.", None, "source residual blocks: not in HiFiGAN"),
)
MAPPINGS = {"flow": FLOW_MAPPING, "hift": HIFT_MAPPING}
_WN = re.compile(r"^(.*)\.(weight_g|weight_v|parametrizations\.weight\.original[01])$")


class CosyVoiceMappingError(ValueError):
    """A CosyVoice checkpoint that does not map onto our modules; the message lists every problem."""


@dataclass
class MappingReport:
    """What :func:`load_cosyvoice` did (or would do) with a checkpoint."""

    path: str
    kind: str
    mapped: dict[str, str] = field(default_factory=dict)  # our key -> their key
    unmapped: dict[str, int] = field(default_factory=dict)  # their prefix -> tensors without a counterpart
    mismatched: list[str] = field(default_factory=list)  # "their key shape -> our key shape"
    missing: list[str] = field(default_factory=list)  # our parameters that received nothing

    @property
    def ok(self) -> bool:
        return not (self.unmapped or self.mismatched or self.missing)

    def describe(self) -> str:
        lines = [f"{self.path} ({self.kind}): {len(self.mapped)} tensors map onto ours"]
        if self.unmapped:
            lines.append("  no counterpart here: " + ", ".join(f"{p}* ({n} tensors: {_reason(self.kind, p)})"
                                                              for p, n in self.unmapped.items()))
        if self.mismatched:
            lines.append("  shape mismatch: " + "; ".join(self.mismatched))
        if self.missing:
            lines.append("  ours left without weights: " + ", ".join(_group_prefixes(self.missing)))
        return "\n".join(lines)


def _reason(kind: str, prefix: str) -> str:
    for theirs, _, note in MAPPINGS[kind]:
        if theirs == prefix:
            return note
    return "unknown module"


def _group_prefixes(keys: list[str]) -> list[str]:
    """Our parameter names grouped by their first component (``encoder.*`` (24))."""
    groups: OrderedDict[str, int] = OrderedDict()
    for k in keys:
        head = k.split(".")[0]
        groups[head] = groups.get(head, 0) + 1
    return [f"{h}.* ({n})" for h, n in groups.items()]


def read_checkpoint(path: str | os.PathLike) -> OrderedDict[str, torch.Tensor]:
    """Tensors of a CosyVoice ``.pt`` (weights_only); drops non-tensor entries and a ``module.`` prefix."""
    path = Path(path)
    obj = load_weights_only(path, CosyVoiceMappingError, "a torch checkpoint")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CosyVoiceMappingError(f"{path}: expected a state dict, got {type(obj).__name__}")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            out[k[len("module."):] if k.startswith("module.") else k] = v
    if not out:
        raise CosyVoiceMappingError(f"{path}: holds no tensors")
    return out


def detect_kind(keys: list[str], path: str = "<checkpoint>") -> str:
    """``flow`` or ``hift`` from the top-level names."""
    heads = {k.split(".")[0] for k in keys}
    if heads & {"decoder", "input_embedding", "length_regulator"}:
        return "flow"
    if heads & {"m_source", "f0_predictor", "conv_pre", "source_downs"}:
        return "hift"
    raise CosyVoiceMappingError(f"{path}: neither a CosyVoice flow nor a HiFT checkpoint (top-level names: "
                                f"{', '.join(sorted(heads))})")


def _prefix_of(key: str, kind: str) -> str:
    for theirs, _, _ in MAPPINGS[kind]:
        if key.startswith(theirs):
            return theirs
    return key.split(".")[0] + "."


def inspect_cosyvoice_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "kind", "tensors", "params", "prefixes": {prefix: {"tensors", "params", "shapes"}}}`` where
    ``shapes`` maps each key (relative to the prefix) to its shape; prefixes are those of the mapping table."""
    state = read_checkpoint(path)
    kind = detect_kind(list(state), str(path))
    prefixes: OrderedDict[str, dict[str, Any]] = OrderedDict()
    for key, value in state.items():
        prefix = _prefix_of(key, kind)
        entry = prefixes.setdefault(prefix, {"tensors": 0, "params": 0, "shapes": OrderedDict()})
        entry["tensors"] += 1
        entry["params"] += value.numel()
        entry["shapes"][key[len(prefix):]] = tuple(value.shape)
    return {"path": str(path), "kind": kind, "tensors": len(state), "params": sum(v.numel() for v in state.values()),
            "prefixes": prefixes}


def format_layout(report: dict[str, Any], max_shapes: int = 4) -> str:
    """Human-readable :func:`inspect_cosyvoice_checkpoint` result, one line per prefix."""
    lines = [f"{report['path']}: CosyVoice {report['kind']}, {report['tensors']} tensors, {report['params']:,} params"]
    for prefix, e in report["prefixes"].items():
        shown = ", ".join(f"{k} {list(s)}" for k, s in list(e["shapes"].items())[:max_shapes])
        more = f", ... (+{e['tensors'] - max_shapes})" if e["tensors"] > max_shapes else ""
        lines.append(f"  {prefix:<24} {e['tensors']:>5} tensors {e['params']:>12,} params  {shown}{more}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- mapping


def _their_tensors(state: OrderedDict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Group weight-norm pairs: ``{module_param: {"g": .., "v": ..}}`` or ``{name: {"plain": ..}}``."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = _WN.match(key)
        if m:
            role = "g" if m.group(2) in ("weight_g", "parametrizations.weight.original0") else "v"
            out.setdefault(f"{m.group(1)}.weight", {})[role] = value
        else:
            out.setdefault(key, {})["plain"] = value
    return out


def _our_targets(module: nn.Module) -> dict[str, dict[str, str]]:
    """Our parameters by logical name: ``{"x.weight": {"g": key, "v": key}}`` or ``{"x.bias": {"plain": key}}``."""
    out: dict[str, dict[str, str]] = {}
    for key in module.state_dict():
        m = _WN.match(key)
        if m:
            role = "g" if m.group(2).endswith("original0") else "v"
            out.setdefault(f"{m.group(1)}.weight", {})[role] = key
        else:
            out.setdefault(key, {})["plain"] = key
    return out


def _convert(src: dict[str, torch.Tensor], dst: dict[str, str]) -> dict[str, torch.Tensor]:
    """Their tensors for one logical parameter -> our state entries (weight norm translated both ways)."""
    if "plain" in dst:
        if "plain" in src:
            value = src["plain"]
        else:  # their weight norm into our plain weight: fold g * v / |v|
            v = src["v"]
            value = src["g"] * v / v.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * (v.dim() - 1))
        return {dst["plain"]: value}
    v = src.get("v", src.get("plain"))
    g = src.get("g")
    if g is None:  # plain weight into our weight norm: split into norm and direction
        g = v.flatten(1).norm(dim=1).view(-1, *[1] * (v.dim() - 1))
    return {dst["g"]: g, dst["v"]: v}


def _fit(value: torch.Tensor, target: torch.Tensor, their_key: str, our_key: str) -> torch.Tensor | str:
    """``value`` shaped as ``target``; an embedding table may fill the first rows of a larger one. A problem
    (shape, or an integer tensor for a floating parameter) comes back as a string."""
    problem = dtype_kind_problem(their_key, value.dtype, target.dtype)
    if problem:
        return f"{problem} ({our_key})"
    if value.shape == target.shape:
        return value
    if our_key.endswith("input_embedding.weight") and value.dim() == 2 and value.shape[1] == target.shape[1] \
            and value.shape[0] == target.shape[0] - 1:
        out = target.clone()
        out[: value.shape[0]] = value
        return out
    return f"{their_key} {list(value.shape)} -> {our_key} {list(target.shape)}"


def map_cosyvoice_state(state: OrderedDict[str, torch.Tensor], module: nn.Module, kind: str,
                        path: str = "<checkpoint>") -> tuple[dict[str, torch.Tensor], MappingReport]:
    """Our state-dict entries built from their tensors, and the report of everything that did not map."""
    report = MappingReport(path=path, kind=kind)
    ours_state = module.state_dict()
    targets = _our_targets(module)
    new_state: dict[str, torch.Tensor] = {}
    for name, src in _their_tensors(state).items():
        prefix = _prefix_of(name, kind)
        rule = next((r for r in MAPPINGS[kind] if r[0] == prefix), None)
        n_src = len(src)
        if rule is None or rule[1] is None:
            report.unmapped[prefix] = report.unmapped.get(prefix, 0) + n_src
            continue
        our_name = rule[1] + name[len(prefix):]
        if our_name not in targets:
            report.unmapped[prefix] = report.unmapped.get(prefix, 0) + n_src
            report.mismatched.append(f"{name} has no counterpart {our_name}")
            continue
        converted = _convert(src, targets[our_name])
        for our_key, value in converted.items():
            fitted = _fit(value, ours_state[our_key], name, our_key)
            if isinstance(fitted, str):
                report.mismatched.append(fitted)
            else:
                new_state[our_key] = fitted.to(ours_state[our_key].dtype)
                report.mapped[our_key] = name
    buffers = {name for name, _ in module.named_buffers()}
    report.missing = [k for k in ours_state if k not in new_state and k not in buffers]
    return new_state, report


def load_cosyvoice(path: str | os.PathLike, module: nn.Module, kind: str | None = None,
                   strict: bool = True) -> MappingReport:
    """Load a CosyVoice ``flow.pt`` (into a :class:`~wenet_echat.token2wav.flow.FlowMatching`) or ``hift.pt``
    (into a :class:`~wenet_echat.token2wav.vocoder.HiFiGANGenerator`) through the mapping table.

    ``strict``: raise :class:`CosyVoiceMappingError` (loading nothing) unless every tensor of theirs maps and
    every parameter of ours is covered; otherwise load what maps and return the report.
    """
    state = read_checkpoint(path)
    kind = kind or detect_kind(list(state), str(path))
    if kind not in MAPPINGS:
        raise ValueError(f"kind must be one of {sorted(MAPPINGS)}, got '{kind}'")
    new_state, report = map_cosyvoice_state(state, module, kind, str(path))
    if strict and not report.ok:
        raise CosyVoiceMappingError("cannot load CosyVoice checkpoint one-to-one:\n" + report.describe())
    module.load_state_dict(new_state, strict=False)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m wenet_echat.token2wav.cosyvoice flow.pt [hift.pt ...]``: print each file's layout."""
    import argparse

    p = argparse.ArgumentParser(description="Print the prefix layout of CosyVoice flow.pt / hift.pt files.")
    p.add_argument("paths", nargs="+")
    args = p.parse_args(argv)
    for path in args.paths:
        try:
            print(format_layout(inspect_cosyvoice_checkpoint(path)))
        except (FileNotFoundError, CosyVoiceMappingError) as e:
            print(f"error: {e}")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
