"""Training engines: how a step is taken and how state is saved, behind one small interface.

``torch_ddp``
    Plain PyTorch, wrapped in ``DistributedDataParallel`` when ``WORLD_SIZE > 1`` (``torchrun``; gloo on CPU,
    nccl on GPU). Gradient accumulation skips the all-reduce (``no_sync``) on all but the last micro-batch;
    the norm is clipped; a step whose gradient norm is not finite is skipped (counted), never applied.
    ``dtype: bf16|fp16`` runs the forward under autocast (fp16 with a gradient scaler); ``dtype: auto`` is bf16
    where the device computes it natively (CUDA with bf16; a CPU with AVX512-BF16 or AMX) and fp32 elsewhere:
    on a CPU without them (AVX2 only) bf16 autocast is emulated and many times slower than fp32.
``deepspeed``
    ``deepspeed.initialize`` with a JSON config (``conf/ds_zero{1,2,3}.json``); ZeRO, bf16, clipping and
    accumulation are DeepSpeed's. The JSON's batch/accumulation/clipping fields are overwritten from the
    training config so there is one source of truth. Its optimizer/scheduler state goes to DeepSpeed's own
    checkpoint directory next to ours (``<model_dir>/<tag>/deepspeed``).

Both expose ``module`` (the bare model), ``train_step`` (forward + backward of one micro-batch, and the optimizer
step at an accumulation boundary), ``save``/``load`` of engine-held state, ``lr`` and an ``eval_context``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_CHOICES = ("auto", *AUTOCAST_DTYPES)


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 natively: CUDA with bf16 support, or a CPU with AVX512-BF16 or AMX."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(getattr(torch.cpu, name, lambda: False)()
                   for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return True


def check_dtype(dtype: str, key: str = "train_conf.dtype") -> None:
    """Raise a ValueError naming ``key`` unless ``dtype`` is one of ``DTYPE_CHOICES``."""
    if dtype not in DTYPE_CHOICES:
        raise ValueError(f"{key} must be one of {', '.join(DTYPE_CHOICES)}, got {dtype!r}")


def resolve_dtype(dtype: str, device: torch.device | str, key: str = "train_conf.dtype") -> str:
    """``dtype`` (one of ``DTYPE_CHOICES``) as an ``AUTOCAST_DTYPES`` name for ``device``; ``auto`` -> bf16 where
    :func:`native_bf16`, else fp32. An explicit bf16 without native support is kept, with a warning."""
    check_dtype(dtype, key)
    native = dtype in ("auto", "bf16") and native_bf16(device)
    if dtype == "auto":
        dtype = "bf16" if native else "fp32"
        log.info("%s auto: %s on %s", key, dtype, torch.device(device).type)
    elif dtype == "bf16" and not native:
        log.warning("%s bf16: this %s has no native bf16 (CPU: AVX512-BF16 or AMX), so autocast emulates it and "
                    "runs many times slower than fp32; 'auto' picks fp32 here", key, torch.device(device).type)
    return dtype


def init_distributed(backend: str | None = None) -> tuple[int, int, int]:
    """(rank, local_rank, world_size); starts the process group when launched by torchrun with > 1 process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)
    return rank, local_rank, world


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce(t: torch.Tensor, op: Any = None) -> torch.Tensor:
    if distributed():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


class TorchEngine:
    """``torch_ddp``: see the module docstring."""

    name = "torch_ddp"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, accum_grad: int = 1,
                 grad_clip: float = 5.0, dtype: str = "fp32", device: torch.device | None = None):
        self.device = device or torch.device("cpu")
        dtype = resolve_dtype(dtype, self.device)
        self.module = model.to(self.device)
        self.model: nn.Module = self.module
        if distributed():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.module, device_ids=ids,
                                                             find_unused_parameters=True)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.accum_grad, self.grad_clip = max(1, int(accum_grad)), float(grad_clip)
        self.dtype = dtype  # the resolved AUTOCAST_DTYPES name
        self.autocast = AUTOCAST_DTYPES[dtype]
        self.scaler = torch.amp.GradScaler(self.device.type) if dtype == "fp16" else None
        self.micro = 0
        self.skipped_steps = 0

    def train_step(self, inputs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], bool, float | None]:
        """Forward + backward of one micro-batch; at an accumulation boundary also clip and step.

        Returns (model outputs, whether an optimizer step slot ended, gradient norm or None)."""
        boundary = (self.micro + 1) % self.accum_grad == 0
        sync = contextlib.nullcontext() if boundary or not hasattr(self.model, "no_sync") else self.model.no_sync()
        with sync:
            with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                out = self.model(**inputs)
            scaled = out["loss"] / self.accum_grad
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        self.micro += 1
        if not boundary:
            return out, False, None
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.module.parameters() if p.grad is not None]
        norm = float(nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip > 0 else math.inf))
        if math.isfinite(norm):
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        else:
            self.skipped_steps += 1
            log.warning("non-finite gradient norm (%s): step skipped (%d so far)", norm, self.skipped_steps)
            if self.scaler:
                self.scaler.update()
        self.scheduler.step()  # the schedule follows step slots, applied or skipped, so a resume is exact
        self.optimizer.zero_grad(set_to_none=True)
        return out, True, norm

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def save(self, ckpt_dir: Path, tag: str) -> None:  # optimizer state lives in our train_state.pt
        pass

    def load(self, ckpt_dir: Path, tag: str) -> None:
        pass

    @property
    def optimizer_for_checkpoint(self) -> torch.optim.Optimizer | None:
        return self.optimizer

    @property
    def scheduler_for_checkpoint(self) -> Any:
        return self.scheduler

    def eval_context(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None)


class DeepSpeedEngine:
    """``deepspeed``: see the module docstring."""

    name = "deepspeed"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, ds_config: str | dict,
                 accum_grad: int = 1, grad_clip: float = 5.0, dtype: str | None = None):
        import deepspeed

        conf = ds_config
        if isinstance(ds_config, str | Path):
            path = Path(ds_config)
            if not path.is_file():
                raise FileNotFoundError(f"DeepSpeed config '{path}' not found (train_conf.deepspeed_config)")
            try:
                conf = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: invalid JSON: {e}") from None
        conf = dict(conf)  # type: ignore[arg-type]
        conf.update({"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": max(1, int(accum_grad)),
                     "gradient_clipping": float(grad_clip)})
        conf.pop("train_batch_size", None)
        if dtype is not None:
            conf["bf16"] = {"enabled": dtype == "bf16"}
            conf["fp16"] = {**conf.get("fp16", {}), "enabled": dtype == "fp16"}
        self.conf = conf
        # DeepSpeed casts the weights to bf16/fp16 but not the inputs (fp32 log-mel): run forward under autocast
        self.autocast = (torch.bfloat16 if conf.get("bf16", {}).get("enabled") else
                         torch.float16 if conf.get("fp16", {}).get("enabled") else None)
        self.dtype = next(name for name, t in AUTOCAST_DTYPES.items() if t is self.autocast)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=conf,
            model_parameters=[p for p in model.parameters() if p.requires_grad])
        self.module = self.engine.module
        self.device = self.engine.device
        self.skipped_steps = 0

    @property
    def zero_stage(self) -> int:
        return int(self.conf.get("zero_optimization", {}).get("stage", 0))

    def train_step(self, inputs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], bool, float | None]:
        boundary = self.engine.is_gradient_accumulation_boundary()
        with self._autocast():
            out = self.engine(**inputs)
        self.engine.backward(out["loss"])
        self.engine.step()
        if not boundary:
            return out, False, None
        norm = self.engine.get_global_grad_norm()
        return out, True, (float(norm) if norm is not None else None)

    @property
    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def save(self, ckpt_dir: Path, tag: str) -> None:
        self.engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={})

    def load(self, ckpt_dir: Path, tag: str) -> None:
        path, _ = self.engine.load_checkpoint(str(ckpt_dir), tag=tag)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint '{tag}' under {ckpt_dir}")

    @property
    def optimizer_for_checkpoint(self) -> None:
        return None  # DeepSpeed keeps (partitioned) optimizer state in its own checkpoint

    @property
    def scheduler_for_checkpoint(self) -> None:
        return None

    def _autocast(self) -> Any:
        return torch.autocast(torch.device(self.device).type, dtype=self.autocast or torch.bfloat16,
                              enabled=self.autocast is not None)

    def eval_context(self) -> Any:
        """Autocast to the engine's half dtype, as around the training forward."""
        return self._autocast()


def build_engine(name: str, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 conf: dict[str, Any], device: torch.device) -> TorchEngine | DeepSpeedEngine:
    if name == "torch_ddp":
        return TorchEngine(model, optimizer, scheduler, conf.get("accum_grad", 1), conf.get("grad_clip", 5.0),
                           conf.get("dtype", "fp32"), device)
    if name == "deepspeed":
        if not conf.get("deepspeed_config"):
            raise ValueError("train_engine deepspeed needs train_conf.deepspeed_config (e.g. conf/ds_zero2.json)")
        dtype = conf.get("dtype")
        return DeepSpeedEngine(model, optimizer, scheduler, conf["deepspeed_config"], conf.get("accum_grad", 1),
                               conf.get("grad_clip", 5.0), None if dtype is None else resolve_dtype(dtype, device))
    raise ValueError(f"train_conf.train_engine must be torch_ddp or deepspeed, got {name!r}")


__all__ = ["AUTOCAST_DTYPES", "DTYPE_CHOICES", "DeepSpeedEngine", "TorchEngine", "all_reduce", "build_engine",
           "check_dtype", "distributed", "init_distributed", "native_bf16", "resolve_dtype"]
