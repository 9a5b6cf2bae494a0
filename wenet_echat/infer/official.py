"""Official OSUM-EChat checkpoints -> a model directory that ``bin/decode.py`` (and every other user of
:func:`wenet_echat.infer.decode.load_model_dir`) loads like one written by ``bin/train.py``.

The released files (``tag_think_final.pt``, ``language_think_final.pt``) are flat state dicts holding *every*
weight, the LLM included; the official code builds Qwen2.5-3B-Instruct from its ``config.json`` with random weights
and loads the ``.pt`` over it. So does :func:`convert_official`:

1. the model config (``model:`` of a stage config such as ``conf/paper/train_stage3.yaml``) loses its weight
   sources: ``init`` is dropped and ``llm_conf.path`` becomes ``llm_conf.config`` (the LLM directory's
   ``config.json``), so the output directory never reads the LLM directory's weights;
2. the tokenizer files of the LLM directory are copied to ``<model_dir>/tokenizer`` (``tokenizer: {type: hf}``);
3. every tensor is checked against the model built from that config and loaded
   (:func:`wenet_echat.model.convert.load_official_checkpoint`: names, shapes, integer-vs-floating dtypes); any
   problem is one error naming the file and the keys;
4. ``<model_dir>/final/`` (``model.pt`` + info) and ``<model_dir>/train.yaml`` are written atomically, with
   ``train_conf.think_style`` set from the variant: ``tag_think*`` -> ``tag``, ``language_think*`` -> ``natural``
   (or ``--think_style``).

Files are read with ``torch.load(weights_only=True)`` (or safetensors): no code is unpickled. Note that the model
is prompted with this toolkit's task prompts (``wenet_echat/text/prompts.py``), not the official prompt table.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from wenet_echat.model import build_model
from wenet_echat.model.convert import load_official_checkpoint
from wenet_echat.text.tokenizer import build_tokenizer
from wenet_echat.train.checkpoint import save_checkpoint
from wenet_echat.train.trainer import TrainConf
from wenet_echat.utils.config import load_config, save_config
from wenet_echat.utils.fileio import atomic_path

log = logging.getLogger(__name__)

# released file-name stem -> think_style of this toolkit
THINK_VARIANTS: dict[str, str] = {"tag_think": "tag", "language_think": "natural"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja", "generation_config.json")
# config.json entries that describe the saved files, not the architecture
_HF_FILE_KEYS = ("architectures", "transformers_version", "torch_dtype", "dtype", "auto_map", "_name_or_path")


class OfficialConversionError(ValueError):
    """The inputs of a conversion do not fit together; the message names the file and what is wrong."""


def think_style_of(checkpoint: str | os.PathLike, given: str | None = None) -> str:
    """``given``, or the think style the released file name implies."""
    if given:
        if given not in THINK_VARIANTS.values():
            raise OfficialConversionError(f"think_style must be one of {sorted(THINK_VARIANTS.values())}, "
                                          f"got {given!r}")
        return given
    name = Path(checkpoint).name
    for stem, style in THINK_VARIANTS.items():
        if name.startswith(stem):
            return style
    raise OfficialConversionError(f"{checkpoint}: cannot tell the think variant from the name (released files are "
                                  f"{', '.join(s + '_final.pt' for s in THINK_VARIANTS)}); give --think_style "
                                  "tag|natural")


def official_model_conf(model_conf: dict[str, Any], llm_dir: str | os.PathLike,
                        dtype: str | None = None) -> dict[str, Any]:
    """The model config with its weight sources replaced by shapes (see the module docstring, step 1)."""
    llm_dir = Path(llm_dir)
    cfg_file = llm_dir / "config.json"
    if not cfg_file.is_file():
        raise OfficialConversionError(f"{cfg_file} not found: --llm_dir must be the LLM's Hugging Face directory "
                                      "(only config.json and the tokenizer files are read)")
    try:
        llm_config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise OfficialConversionError(f"{cfg_file}: invalid JSON ({e})") from None
    for key in _HF_FILE_KEYS:
        llm_config.pop(key, None)
    conf = {k: v for k, v in model_conf.items() if k != "init"}
    llm_conf = {k: v for k, v in (conf.get("llm_conf") or {}).items() if k not in ("path", "config")}
    llm_conf["config"] = llm_config
    llm_conf.pop("gradient_checkpointing", None)
    if dtype is not None:
        llm_conf["torch_dtype"] = dtype
    conf["llm_conf"] = llm_conf
    for part in ("encoder_conf", "adapter_conf"):  # inference: no dropout, no recomputation
        if isinstance(conf.get(part), dict):
            conf[part] = {k: v for k, v in conf[part].items() if k != "gradient_checkpointing"}
    return conf


def copy_tokenizer(llm_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[str]:
    """Copy the tokenizer files of ``llm_dir`` into ``out_dir`` (each atomically); returns their names."""
    src, dst = Path(llm_dir), Path(out_dir)
    names = [n for n in TOKENIZER_FILES if (src / n).is_file()]
    if "tokenizer.json" not in names and not {"vocab.json", "merges.txt"} <= set(names):
        raise OfficialConversionError(f"{src}: no tokenizer (tokenizer.json, or vocab.json + merges.txt)")
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        with atomic_path(dst / name) as tmp:
            shutil.copyfile(src / name, tmp)
    return names


def convert_official(checkpoint: str | os.PathLike, config: str | os.PathLike, llm_dir: str | os.PathLike,
                     model_dir: str | os.PathLike, think_style: str | None = None,
                     dtype: str | None = None) -> dict[str, Any]:
    """Write ``model_dir`` from an official ``.pt`` (see the module docstring); returns a summary."""
    checkpoint, model_dir = Path(checkpoint), Path(model_dir)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no such file (the official OSUM-EChat checkpoint)")
    style = think_style_of(checkpoint, think_style)
    conf = load_config(config)
    if "model" not in conf:
        raise OfficialConversionError(f"{config}: no 'model' section (give a stage config or model.yaml)")
    model_conf = official_model_conf(conf["model"], llm_dir, dtype)
    tok_dir = model_dir / "tokenizer"
    copy_tokenizer(llm_dir, tok_dir)
    tok_conf = {"type": "hf", "path": str(tok_dir)}
    tok = build_tokenizer(tok_conf)
    model = build_model(model_conf, tok.vocab_size, tok.eos_id, tok.pad_id)
    loaded = load_official_checkpoint(checkpoint, model)
    info = {"source": str(checkpoint), "think_style": style, "tensors": loaded["loaded"],
            "dropped": loaded["dropped"]}
    save_checkpoint(model_dir, "final", model, info=info)
    out = {"tokenizer": tok_conf, "model": model_conf, "dataset_conf": conf.get("dataset_conf") or {},
           "train_conf": asdict(TrainConf.from_dict({"think_style": style}))}
    save_config(out, model_dir / "train.yaml")
    n_params = sum(p.numel() for p in model.parameters())
    log.info("converted %s (%d tensors, %.1f M parameters, think_style %s) into %s", checkpoint, loaded["loaded"],
             n_params / 1e6, style, model_dir)
    return {**info, "params": n_params, "model_dir": str(model_dir)}


__all__ = ["OfficialConversionError", "THINK_VARIANTS", "convert_official", "copy_tokenizer", "official_model_conf",
           "think_style_of"]
