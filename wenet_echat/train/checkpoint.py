"""Training checkpoints: one directory per checkpoint, written atomically, resumable bit-for-bit.

Layout of ``<model_dir>/<tag>/`` (``tag`` such as ``step_2000``, ``epoch_3``, ``final``):

* ``model.pt`` -- the flat state dict of the bare model (what ``model.state_dict()`` returns after unwrapping
  DDP / ``torch.compile``), on CPU; half-precision floating tensors are stored as fp32. It is also the format of
  averaged (:mod:`wenet_echat.train.average`) and converted DeepSpeed (:func:`deepspeed_to_state_dict`) weights.
* ``train_state.pt`` -- optimizer and scheduler state dicts, ``step``, ``epoch``, the data-loader position
  (``data_state``), the random generators of python ``random``, numpy, torch CPU and (when present) CUDA, and a free
  ``extra`` dict. Everything in it loads with ``torch.load(weights_only=True)``; ``data_state`` and ``extra`` are
  therefore checked at save time to hold only tensors, numbers, strings, ``None`` and lists/tuples/dicts of them.
* ``info.yaml`` -- human-readable summary: tag, step, epoch, time, and the ``info`` dict (``cv_loss`` ...).

Atomicity: the files are written and fsynced in a hidden temporary directory next to the target, which is then
renamed into place. An existing ``<tag>/`` is renamed away first and deleted only after the new one is in place (and
renamed back if that fails), so a crash never leaves a half-written ``<tag>/``. Only then is ``<model_dir>/latest``
(a text file holding the tag) replaced atomically; :func:`load_checkpoint` on a ``model_dir`` follows it.

Call the save functions on one process only (rank 0). The RNG states stored are that process's; other ranks of a
multi-process run resume with rank 0's generators. With DeepSpeed ZeRO the module's parameters are partitioned:
save with the engine and turn the result into ``model.pt`` with :func:`deepspeed_to_state_dict`.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from wenet_echat.train.optim import name_matches
from wenet_echat.utils.fileio import atomic_open, atomic_path, current_umask, load_weights_only

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
TRAIN_STATE_FILE = "train_state.pt"
INFO_FILE = "info.yaml"
LATEST_FILE = "latest"
FORMAT_VERSION = 1
STEP_TAG = re.compile(r"step_(\d+)")
_HALF_TYPES = (torch.float16, torch.bfloat16)

StateDict = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------------------------------------- model
def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP/DataParallel and ``torch.compile`` wrappers so state-dict keys carry no wrapper prefix."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _to_cpu_fp32(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach()
    return tensor.to("cpu", torch.float32) if tensor.dtype in _HALF_TYPES else tensor.to("cpu")


def model_state_dict(model: nn.Module) -> StateDict:
    """The bare model's state dict on CPU, half-precision floats as fp32."""
    return {key: _to_cpu_fp32(value) for key, value in unwrap_model(model).state_dict().items()}


def _save_torch(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Atomically write a flat state dict (the ``model.pt`` format) to ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        _save_torch(dict(state_dict), tmp)
    return path


def read_state_dict(path: str | os.PathLike, mmap: bool = False) -> StateDict:
    """Read a flat state dict from a checkpoint directory, a ``.pt`` file or a ``.safetensors`` file."""
    path = Path(path)
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise FileNotFoundError(f"{path}: checkpoint directory without {MODEL_FILE}")
        path = path / MODEL_FILE
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        state = load_file(path, device="cpu")
    else:
        state = load_weights_only(path, RuntimeError, "a checkpoint file", mmap=mmap)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        head = list(state)[:5] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not a flat state dict of tensors (top level: {head})")
    return state


# ------------------------------------------------------------------------------------------------------------- rng
def rng_state() -> dict[str, Any]:
    """Snapshot of python ``random``, numpy's global generator, torch CPU and CUDA generators."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            logger.warning("checkpoint has CUDA RNG states for %d devices, this process sees %d: not restored",
                           len(cuda), torch.cuda.device_count())


# ----------------------------------------------------------------------------------------------------------- saving
def _check_plain(obj: Any, where: str) -> None:
    """Raise ``TypeError`` naming the path of the first value that ``torch.load(weights_only=True)`` would reject."""
    if obj is None or isinstance(obj, bool | int | float | str | torch.Tensor):
        return
    if isinstance(obj, list | tuple):
        for i, item in enumerate(obj):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{where}: key {key!r} must be a str or int")
            _check_plain(value, f"{where}[{key!r}]")
        return
    raise TypeError(f"{where}: {type(obj).__name__} cannot be stored in a checkpoint "
                    "(use tensors, numbers, strings, None, lists/tuples/dicts)")


def _yaml_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor | np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _yaml_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_yaml_value(v) for v in value]
    return value


def _check_tag(tag: str) -> None:
    if not tag or tag != tag.strip() or tag.startswith(".") or "/" in tag or os.sep in tag or tag == LATEST_FILE:
        raise ValueError(f"invalid checkpoint tag {tag!r} (non-empty, no '/', no leading '.', not '{LATEST_FILE}')")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _swap_in(new: Path, dst: Path) -> None:
    """Rename directory ``new`` to ``dst``; an existing ``dst`` is replaced and restored if the rename fails."""
    if not dst.exists():
        os.rename(new, dst)
        return
    old = dst.with_name(f".{dst.name}.old.{uuid.uuid4().hex[:8]}")
    os.rename(dst, old)
    try:
        os.rename(new, dst)
    except BaseException:
        os.rename(old, dst)
        raise
    shutil.rmtree(old)


def _remove_dir(path: Path) -> None:
    """Delete a checkpoint directory; it is renamed to a hidden name first so it never looks half-deleted."""
    doomed = path.with_name(f".{path.name}.del.{uuid.uuid4().hex[:8]}")
    os.rename(path, doomed)
    shutil.rmtree(doomed)


def save_checkpoint(model_dir: str | os.PathLike, tag: str, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, step: int = 0,
                    epoch: int = 0, data_state: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                    info: dict[str, Any] | None = None) -> Path:
    """Write ``<model_dir>/<tag>/`` atomically and point ``<model_dir>/latest`` at it; returns the directory."""
    _check_tag(tag)
    _check_plain(data_state, "data_state")
    _check_plain(extra, "extra")
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    train_state = {
        "format": FORMAT_VERSION, "step": int(step), "epoch": int(epoch),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "data_state": data_state, "rng": rng_state(), "extra": extra or {},
    }
    summary: dict[str, Any] = {"tag": tag, "step": int(step), "epoch": int(epoch)}
    summary.update({k: v for k, v in _yaml_value(info or {}).items() if k not in summary})
    summary["time"] = time.strftime("%Y-%m-%d %H:%M:%S")
    tmp = Path(tempfile.mkdtemp(prefix=f".{tag}.", suffix=".tmp", dir=model_dir))
    os.chmod(tmp, 0o777 & ~current_umask())  # a normal directory, not mkdtemp's private 0700
    try:
        _save_torch(model_state_dict(model), tmp / MODEL_FILE)
        _save_torch(train_state, tmp / TRAIN_STATE_FILE)
        with atomic_open(tmp / INFO_FILE) as f:
            yaml.safe_dump(summary, f, sort_keys=False, allow_unicode=True)
        _fsync_dir(tmp)
        _swap_in(tmp, model_dir / tag)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with atomic_open(model_dir / LATEST_FILE) as f:
        f.write(tag + "\n")
    _fsync_dir(model_dir)
    logger.info("saved checkpoint %s (step %d, epoch %d)", model_dir / tag, step, epoch)
    return model_dir / tag


# ---------------------------------------------------------------------------------------------------------- loading
def latest_checkpoint(model_dir: str | os.PathLike) -> Path | None:
    """The checkpoint named by ``<model_dir>/latest``, or ``None`` when there is no ``latest`` file yet."""
    latest = Path(model_dir) / LATEST_FILE
    if not latest.is_file():
        return None
    tag = latest.read_text(encoding="utf-8").strip()
    if not tag:
        raise ValueError(f"{latest}: empty file")
    path = latest.parent / tag
    if not (path / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{latest} names '{tag}' but {path} is not a complete checkpoint")
    return path


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory as given, or the latest one of a ``model_dir``."""
    path = Path(path)
    if (path / MODEL_FILE).is_file():
        return path
    if (path / LATEST_FILE).is_file():
        return latest_checkpoint(path)  # type: ignore[return-value]
    raise FileNotFoundError(f"{path}: neither a checkpoint directory (no {MODEL_FILE}) "
                            f"nor a model_dir with a '{LATEST_FILE}' file")


def read_info(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The ``info.yaml`` of a checkpoint directory (empty when absent)."""
    path = Path(checkpoint) / INFO_FILE
    if not path.is_file():
        return {}
    try:
        info = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(info).__name__}")
    return info


def load_checkpoint(path_or_dir: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, restore_rng: bool = True, strict: bool = True) -> dict[str, Any]:
    """Restore model (and optimizer, scheduler, RNGs) from a checkpoint directory or a ``model_dir``'s latest.

    Returns ``{"path", "step", "epoch", "data_state", "extra", "info"}``. To initialise weights only (from another
    stage or a pretrained file) use :func:`load_model_weights`.
    """
    ckpt = resolve_checkpoint(path_or_dir)
    state_path = ckpt / TRAIN_STATE_FILE
    if not state_path.is_file():
        raise FileNotFoundError(f"{state_path}: missing, {ckpt} holds weights only (use load_model_weights)")
    state = load_weights_only(state_path, RuntimeError, "a train-state file")
    version = state.get("format") if isinstance(state, dict) else None
    if version != FORMAT_VERSION:
        raise ValueError(f"{state_path}: unsupported train-state format {version!r} (expected {FORMAT_VERSION})")
    result = unwrap_model(model).load_state_dict(read_state_dict(ckpt), strict=strict)
    if result.missing_keys or result.unexpected_keys:
        logger.warning("%s: missing keys %s, unexpected keys %s", ckpt / MODEL_FILE, result.missing_keys,
                       result.unexpected_keys)
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is None:
            continue
        if state[name] is None:
            raise ValueError(f"{state_path}: no {name} state was saved")
        obj.load_state_dict(state[name])
    if restore_rng:
        set_rng_state(state["rng"])
    return {"path": ckpt, "step": state["step"], "epoch": state["epoch"], "data_state": state["data_state"],
            "extra": state["extra"], "info": read_info(ckpt)}


def _abbrev(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_model_weights(path: str | os.PathLike, model: nn.Module, prefixes: Iterable[str] | None = None,
                       strict: bool = False, key_prefix: str = "") -> dict[str, Any]:
    """Initialise ``model`` from a checkpoint directory, a ``model.pt`` or a ``.safetensors`` file.

    ``key_prefix`` is put before every key of the file (a bare LLM's ``model.layers.0...`` becomes
    ``llama_model.model.layers.0...``).

    ``prefixes`` restricts the loaded keys (dot-boundary prefixes, each must match some key of the file). Shape
    mismatches always raise ``ValueError`` naming the keys; so does a file of which no key fits the model, and, with
    ``strict``, any missing or unexpected key. Returns ``{"loaded": n, "missing": [...], "unexpected": [...]}``
    where ``missing`` counts model keys (under ``prefixes``) absent from the file.
    """
    state = {key_prefix + k: v for k, v in read_state_dict(path).items()}
    prefixes = [p.strip(".") for p in prefixes] if prefixes else []
    for prefix in prefixes:
        if not any(name_matches(key, prefix) for key in state):
            tops = sorted({key.split(".", 1)[0] for key in state})
            raise ValueError(f"{path}: prefix '{prefix}' matches no key; top-level names in the file: {tops}")

    def wanted(key: str) -> bool:
        return not prefixes or any(name_matches(key, p) for p in prefixes)

    state = {k: v for k, v in state.items() if wanted(k)}
    target = unwrap_model(model).state_dict()
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                  for k, v in state.items() if k in target and v.shape != target[k].shape]
    if mismatched:
        raise ValueError(f"{path}: shape mismatch for {len(mismatched)} key(s): {_abbrev(mismatched)}")
    common = [k for k in state if k in target]
    if not common:
        raise ValueError(f"{path}: none of its {len(state)} keys fits the model "
                         f"(file: {_abbrev(list(state), 3)}; model: {_abbrev(list(target), 3)})")
    missing = [k for k in target if wanted(k) and k not in state]
    unexpected = [k for k in state if k not in target]
    if strict and (missing or unexpected):
        raise ValueError(f"{path}: strict load failed; missing: {_abbrev(missing) or '-'}; "
                         f"unexpected: {_abbrev(unexpected) or '-'}")
    unwrap_model(model).load_state_dict({k: state[k] for k in common}, strict=False)
    logger.info("loaded %d tensors from %s (%d missing, %d unexpected)", len(common), path, len(missing),
                len(unexpected))
    return {"loaded": len(common), "missing": missing, "unexpected": unexpected}


LLM_ATTR = "llama_model"  # the EChat model's LLM (the official checkpoints' prefix)
HF_WEIGHTS = "model.safetensors"


def init_llm_weights(model: nn.Module, hf_dir: str | os.PathLike) -> int:
    """Load a Hugging Face causal-LM directory's ``model.safetensors`` into the EChat model's LLM; returns the
    number of tensors. Every LLM tensor must come from the file, except an output head tied to the input
    embedding (``save_pretrained`` stores it once); anything else missing or left over is a ``ValueError``."""
    path = Path(hf_dir) / HF_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{hf_dir}: no {HF_WEIGHTS} (a Hugging Face model directory, e.g. from "
                                "bin/pretrain_llm.py, is expected)")
    res = load_model_weights(path, model, prefixes=[LLM_ATTR], key_prefix=f"{LLM_ATTR}.")
    llm = getattr(unwrap_model(model), LLM_ATTR)
    embedding = llm.get_input_embeddings().weight
    tied = {f"{LLM_ATTR}.{name}" for name, p in llm.named_parameters(remove_duplicate=False) if p is embedding}
    missing = [k for k in res["missing"] if k not in tied]
    if missing or res["unexpected"]:
        raise ValueError(f"{path} does not fit the model's LLM: missing {_abbrev(missing) or '-'}; "
                         f"unexpected {_abbrev(res['unexpected']) or '-'}")
    return res["loaded"]


# -------------------------------------------------------------------------------------------------------- retention
def step_checkpoints(model_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete ``step_<N>`` checkpoint in ``model_dir``, oldest first."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    found = []
    for path in model_dir.iterdir():
        match = STEP_TAG.fullmatch(path.name)
        if match and (path / MODEL_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def keep_last(model_dir: str | os.PathLike, n: int, protect: Iterable[str] = ()) -> list[Path]:
    """Delete ``step_*`` checkpoints older than the newest ``n``, except tags in ``protect`` and the ``latest`` one.

    Returns the deleted directories.
    """
    if n < 0:
        raise ValueError(f"keep_last: n must be >= 0, got {n}")
    protected = set(protect)
    latest = Path(model_dir) / LATEST_FILE
    if latest.is_file():
        protected.add(latest.read_text(encoding="utf-8").strip())
    candidates = step_checkpoints(model_dir)
    candidates = candidates[: max(0, len(candidates) - n)]
    removed = []
    for _, path in candidates:
        if path.name not in protected:
            _remove_dir(path)
            removed.append(path)
    return removed


# -------------------------------------------------------------------------------------------------------- deepspeed
def deepspeed_to_state_dict(ds_ckpt_dir: str | os.PathLike, tag: str | None = None) -> StateDict:
    """Consolidate a DeepSpeed (ZeRO 1/2/3) checkpoint into a flat fp32 state dict of the bare module.

    ``ds_ckpt_dir`` is the ``save_dir`` given to ``engine.save_checkpoint``; ``tag`` defaults to the one named by
    its ``latest`` file. The merge itself is DeepSpeed's ``get_fp32_state_dict_from_zero_checkpoint``.
    """
    ds_dir = Path(ds_ckpt_dir)
    if not ds_dir.is_dir():
        raise FileNotFoundError(f"{ds_dir}: no such DeepSpeed checkpoint directory")
    if tag is None and not (ds_dir / "latest").is_file():
        raise FileNotFoundError(f"{ds_dir}: no 'latest' file, pass the tag explicitly")
    if tag is not None and not (ds_dir / tag).is_dir():
        raise FileNotFoundError(f"{ds_dir / tag}: no such DeepSpeed checkpoint tag")
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(ds_dir), tag=tag)
    return {key: _to_cpu_fp32(value) for key, value in state.items()}
