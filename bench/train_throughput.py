#!/usr/bin/env python3
"""Training throughput of a stage config's model on a synthetic batch: tokens/s, samples/s, ms/step, peak memory, MFU.

Usage:
    .venv/bin/python bench/train_throughput.py                         # mini stage 1 on CPU
    .venv/bin/python bench/train_throughput.py --config egs/echat/conf/paper/train_stage2.yaml --device cuda \\
        --batch_size 8 --audio_seconds 10 --text_tokens 60 --speech_tokens 250 --steps 10
    .venv/bin/python bench/train_throughput.py --cpu_peak            # MFU against an estimated CPU peak

No weights or data are read: the model is built from the config with random weights (``model.init`` is dropped;
an LLM given by ``llm_conf.path`` is built from that directory's ``config.json``, or from the published
Qwen2.5-3B-Instruct shapes when the directory is absent). The config's ``freeze`` list, optimizer
(``wenet_echat.train.optim.build_optimizer``), scheduler and dtype (autocast) are used through the torch engine,
single process, ``accum_grad`` 1: one step = forward + backward + clip + optimizer step. ``--warmup`` steps are
run first and not timed.

Each sample is laid out as the model sees it: ``prompt_tokens`` text ids, the audio (``audio_seconds`` of log-mel
-> adapter frames, wrapped in the two audio markers), ``text_tokens`` target ids and, with ``speech_tokens`` > 0,
a spoken target ``[BOS] codes [EOS]``. All samples have the same length, so there is no padding.

Reported: ``tokens_per_s`` = LLM positions per second (batch x sequence length / step time), ``samples_per_s``,
``ms_per_step``, ``peak_mem_gb`` (CUDA ``max_memory_allocated`` on GPU, the process's peak RSS on CPU) and
``mfu`` = model FLOPs per second / peak FLOPs.

Model FLOPs of one step are counted on one forward pass with hooks (:func:`count_step_flops`):

* every ``nn.Linear`` / ``nn.Conv1d`` call costs ``2·MACs`` forward, ``2·MACs`` more when a gradient flows to its
  input and ``2·MACs`` more when its weight trains (MACs = weight size x output positions). With every weight
  training this is the usual ``6·N·tokens``; a frozen LLM under a trained encoder costs ``4·N·tokens``;
  the LM and speech heads only run on the labelled positions, as in ``EChatModel.forward``;
* self-attention (``QKᵀ`` and ``AV``) costs ``4·B·T²·d`` forward per layer (``d`` = heads x head size, full ``T²``:
  no causal discount) and 3 times that when a gradient flows through it, i.e. the ``12·layers·d·T`` per token of
  the PaLM appendix;
* embeddings, norms, activations, the loss and the optimizer update are not counted; neither is the recomputation
  of gradient checkpointing (model FLOPs, not hardware FLOPs).

Peak FLOPs: ``--peak_tflops``; else on CUDA the dense BF16 tensor peak of the card (:data:`PEAK_TFLOPS`: H100 SXM
and H200 989, H100 NVL 835, H100 PCIe 756, A100 312); else with ``--cpu_peak`` ``threads x GHz x
flops_per_cycle`` (default 32: two 256-bit FP32 FMA units) - a rough estimate, printed as such. Output: a Markdown
table row (``--header`` adds the header) and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wenet_echat.model import build_model, to_device  # noqa: E402
from wenet_echat.text.targets import KIND_AUDIO, KIND_SPEECH, KIND_TEXT, Flat, collate  # noqa: E402
from wenet_echat.text.tokenizer import build_tokenizer  # noqa: E402
from wenet_echat.train.engine import DTYPE_CHOICES, build_engine, resolve_dtype  # noqa: E402
from wenet_echat.train.optim import apply_freeze, build_optimizer  # noqa: E402
from wenet_echat.train.scheduler import build_scheduler  # noqa: E402
from wenet_echat.train.trainer import TrainConf  # noqa: E402
from wenet_echat.utils.config import apply_override, load_config  # noqa: E402

# dense BF16 tensor-core peaks (no sparsity), TFLOP/s; first matching name wins
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200", 989.4), ("H100", 989.4), ("A100", 312.0),
)
# Qwen2.5-3B-Instruct's config.json (the shapes only), used when llm_conf.path does not exist here
QWEN25_3B: dict[str, Any] = {
    "model_type": "qwen2", "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
    "num_attention_heads": 16, "num_key_value_heads": 2, "max_position_embeddings": 32768, "vocab_size": 151936,
    "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True, "hidden_act": "silu",
}
MD_HEADER = ("| config | device | dtype | batch | seq | params (trainable) | ms/step | tokens/s | samples/s | "
             "peak mem GB | TFLOP/step | MFU |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


# ---------------------------------------------------------------------------------------------------- FLOPs
@dataclass
class FlopCount:
    dense: float = 0.0      # linear/conv layers, forward + backward
    attention: float = 0.0  # QKᵀ and AV, forward + backward

    @property
    def total(self) -> float:
        return self.dense + self.attention


def _attention_width(module: nn.Module, hidden: torch.Tensor) -> int:
    """heads x head size of an attention module (ours or a Hugging Face ``*Attention``)."""
    if hasattr(module, "n_head") and hasattr(module, "d_k"):
        return int(module.n_head * module.d_k)
    config = getattr(module, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    head_dim = getattr(module, "head_dim", None)
    return int(heads * head_dim) if heads and head_dim else int(hidden.shape[-1])


def _is_attention(module: nn.Module) -> bool:
    name = type(module).__name__
    return name == "MultiHeadedAttention" or (name.endswith("Attention") and hasattr(module, "head_dim"))


def count_step_flops(model: nn.Module, run_forward) -> FlopCount:
    """Model FLOPs of one training step (forward + backward) of ``run_forward()`` (see the module docstring).

    The forward is run once with hooks, gradients enabled (so ``requires_grad`` shows where the backward goes);
    no backward is run."""
    count = FlopCount()

    def dense_hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
        x = args[0]
        if isinstance(mod, nn.Linear):
            macs = mod.weight.numel() * (out.numel() // out.shape[-1])
        else:  # Conv1d: weight (C_out, C_in/groups, k), output (B, C_out, L)
            macs = mod.weight.numel() * out.shape[0] * out.shape[-1]
        passes = 1 + int(x.requires_grad) + int(mod.weight.requires_grad)
        count.dense += 2.0 * macs * passes

    def attention_hook(mod: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        x = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))
        batch, length = int(x.shape[0]), int(x.shape[1])
        forward = 4.0 * batch * length * length * _attention_width(mod, x)
        count.attention += forward * (3 if x.requires_grad else 1)

    handles = []
    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.Conv1d)):
            handles.append(mod.register_forward_hook(dense_hook))
        elif _is_attention(mod):
            handles.append(mod.register_forward_hook(attention_hook, with_kwargs=True))
    try:
        with torch.enable_grad():
            run_forward()
    finally:
        for h in handles:
            h.remove()
    return count


def mfu(flops_per_step: float, seconds_per_step: float, peak_tflops: float | None) -> float | None:
    """Achieved model FLOP/s over the peak (``None`` without a peak)."""
    if not peak_tflops or seconds_per_step <= 0:
        return None
    return flops_per_step / seconds_per_step / (peak_tflops * 1e12)


def gpu_peak_tflops(name: str) -> float | None:
    for key, tflops in PEAK_TFLOPS:
        if key.lower() in name.lower():
            return tflops
    return None


def cpu_peak_tflops(threads: int, ghz: float | None = None, flops_per_cycle: int = 32) -> float:
    """``threads x GHz x flops_per_cycle`` in TFLOP/s; GHz from /proc/cpuinfo when not given."""
    if ghz is None:
        mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
               if line.startswith("cpu MHz")] if Path("/proc/cpuinfo").exists() else []
        ghz = max(mhz) / 1000 if mhz else 2.5
    return threads * ghz * flops_per_cycle / 1000.0


# ------------------------------------------------------------------------------------------- model and batch
def random_init_model_conf(model_conf: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The model config with every weight source removed: no ``init``, the LLM from a config. Returns the config
    and where the LLM shapes came from."""
    conf = {k: v for k, v in model_conf.items() if k != "init"}
    llm_conf = dict(conf.get("llm_conf") or {})
    source = "config"
    path = llm_conf.pop("path", None)
    if path is not None:
        cfg_file = Path(path) / "config.json"
        if cfg_file.is_file():
            llm_conf["config"], source = json.loads(cfg_file.read_text()), str(cfg_file)
        else:
            llm_conf["config"], source = dict(QWEN25_3B), "Qwen2.5-3B-Instruct shapes (built in)"
        for k in ("architectures", "transformers_version", "torch_dtype", "dtype", "use_cache", "auto_map"):
            llm_conf["config"].pop(k, None)
    conf["llm_conf"] = llm_conf
    return conf, source


def text_vocab(conf: dict[str, Any], llm_config: dict[str, Any], fallback: int) -> tuple[int, int, int, str]:
    """(vocab size, eos, pad, source): the config's tokenizer when it loads, else the LLM's vocabulary size."""
    try:
        tok = build_tokenizer(conf["tokenizer"])
        return tok.vocab_size, tok.eos_id, tok.pad_id, "tokenizer"
    except Exception:  # no tokenizer files here: only the sizes matter for a training step
        size = int(llm_config.get("vocab_size") or fallback)
        return size, size - 1, size - 1, "llm config" if llm_config.get("vocab_size") else "--vocab_size"


def synthetic_batch(model: nn.Module, batch: int, audio_seconds: float, prompt_tokens: int, text_tokens: int,
                    speech_tokens: int, vocab: int, n_mels: int, pad_id: int, seed: int = 0) -> dict[str, Any]:
    """Model inputs of ``batch`` equal-length samples (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    frames = int(round(audio_seconds * 100))
    feats_lengths = torch.full((batch,), frames, dtype=torch.long)
    n_audio = int(model.audio_lengths(feats_lengths[:1])[0])
    bos = model.speech_bos
    flats = []
    for _ in range(batch):
        ids = torch.randint(0, vocab, (prompt_tokens,), generator=g).tolist()
        kinds, loss = [KIND_TEXT] * prompt_tokens, [False] * prompt_tokens
        ids += [bos + 1, *range(n_audio), bos + 2]
        kinds += [KIND_SPEECH, *[KIND_AUDIO] * n_audio, KIND_SPEECH]
        loss += [False] * (n_audio + 2)
        ids += torch.randint(0, vocab, (text_tokens,), generator=g).tolist()
        kinds += [KIND_TEXT] * text_tokens
        loss += [True] * text_tokens
        if speech_tokens > 0:
            ids += [bos, *torch.randint(0, model.speech_codes, (speech_tokens,), generator=g).tolist(), bos]
            kinds += [KIND_SPEECH] * (speech_tokens + 2)
            loss += [False] + [True] * (speech_tokens + 1)
        flats.append(Flat(ids, kinds, loss, list(range(len(ids)))))
    inputs = collate(flats, pad_id)
    inputs["feats"] = torch.randn(batch, frames, n_mels, generator=g)
    inputs["feats_lengths"] = feats_lengths
    return inputs


# ------------------------------------------------------------------------------------------------------ main
def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", default="egs/echat/conf/mini/train_stage1.yaml")
    p.add_argument("--override", nargs="*", action="extend", default=[],
                   help="config overrides, e.g. train_conf.dtype=fp32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=list(DTYPE_CHOICES), help="default: train_conf.dtype")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--audio_seconds", type=float, default=7.5)
    p.add_argument("--prompt_tokens", type=int, default=30, help="system prompt + chat template + instruction")
    p.add_argument("--text_tokens", type=int, default=20, help="text target (transcript, tags, CoT + reply)")
    p.add_argument("--speech_tokens", type=int, default=0, help="spoken target codes (25 Hz: 250 = 10 s)")
    p.add_argument("--vocab_size", type=int, default=1000, help="text vocabulary when neither tokenizer nor LLM "
                                                                 "config gives one")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads on CPU")
    p.add_argument("--peak_tflops", type=float, default=None, help="peak FLOP/s of the device, in TFLOP/s")
    p.add_argument("--cpu_peak", action="store_true", help="estimate the CPU peak (threads x GHz x FLOPs/cycle)")
    p.add_argument("--cpu_ghz", type=float, default=None)
    p.add_argument("--cpu_flops_per_cycle", type=int, default=32)
    p.add_argument("--header", action="store_true", help="print the Markdown table header first")
    p.add_argument("--seed", type=int, default=777)
    return p.parse_args(argv)


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    conf = load_config(args.config)
    for ov in args.override:
        conf = apply_override(conf, ov, source=args.config)
    tconf = TrainConf.from_dict(conf["train_conf"])
    dtype = resolve_dtype(args.dtype or tconf.dtype, device)
    model_conf, llm_source = random_init_model_conf(conf["model"])
    vocab, eos, pad, vocab_source = text_vocab(conf, model_conf["llm_conf"].get("config") or {}, args.vocab_size)
    torch.manual_seed(args.seed)
    model = build_model(model_conf, vocab, eos, pad)
    if tconf.freeze:
        apply_freeze(model, tconf.freeze)
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = build_optimizer(model, tconf.optim, tconf.optim_conf, tconf.lr_groups)
    sched = build_scheduler(opt, tconf.scheduler, tconf.scheduler_conf)
    engine_conf = {**conf["train_conf"], "accum_grad": 1, "dtype": dtype}
    engine = build_engine("torch_ddp", model, opt, sched, engine_conf, device)
    n_mels = int((model_conf.get("encoder_conf") or {}).get("n_mels", 80))
    batch = synthetic_batch(model, args.batch_size, args.audio_seconds, args.prompt_tokens, args.text_tokens,
                            args.speech_tokens, vocab, n_mels, pad, args.seed)
    inputs = to_device(batch, device)
    seq = int(batch["input_ids"].shape[1])

    def forward() -> None:
        with torch.autocast(device.type, dtype=engine.autocast, enabled=engine.autocast is not None):
            model(**inputs)

    flops = count_step_flops(model, forward)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    model.train()
    for _ in range(args.warmup):
        engine.train_step(inputs)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    losses = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        out, _, _ = engine.train_step(inputs)
        sync()
        times.append(time.perf_counter() - t0)
        losses.append(float(out["loss"].detach()))
    step_s = sorted(times)[len(times) // 2]  # median
    if args.peak_tflops:
        peak, peak_source = args.peak_tflops, "--peak_tflops"
    elif device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak, peak_source = gpu_peak_tflops(name), f"{name} bf16 table"
    elif args.cpu_peak:
        threads = torch.get_num_threads()
        peak = cpu_peak_tflops(threads, args.cpu_ghz, args.cpu_flops_per_cycle)
        peak_source = f"CPU estimate: {threads} threads x {args.cpu_flops_per_cycle} FLOP/cycle"
    else:
        peak, peak_source = None, "none (give --peak_tflops or --cpu_peak)"
    util = mfu(flops.total, step_s, peak)
    row = {
        "config": args.config, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
        f"cpu x{torch.get_num_threads()}", "dtype": dtype, "batch": args.batch_size, "seq": seq,
        "audio_seconds": args.audio_seconds, "speech_tokens": args.speech_tokens, "params": n_params,
        "trainable": n_train, "ms_per_step": round(step_s * 1000, 2),
        "tokens_per_s": round(args.batch_size * seq / step_s, 1), "samples_per_s": round(args.batch_size / step_s, 3),
        "peak_mem_gb": round(peak_memory_gb(device), 3), "tflop_per_step": round(flops.total / 1e12, 4),
        "attention_share": round(flops.attention / flops.total, 4) if flops.total else 0.0,
        "peak_tflops": peak, "peak_source": peak_source, "mfu": None if util is None else round(util, 5),
        "steps": args.steps, "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4),
        "llm_shapes": llm_source, "vocab_source": vocab_source, "flops": asdict(flops),
    }
    if not all(math.isfinite(x) for x in losses):
        print(f"warning: non-finite loss {losses}", file=sys.stderr)
    if args.header:
        print(MD_HEADER)
    mfu_cell = "n/a" if util is None else f"{100 * util:.2f} %"
    print(f"| {Path(args.config).name} | {row['device']} | {dtype} | {args.batch_size} | {seq} | "
          f"{n_params / 1e6:.1f} M ({n_train / 1e6:.1f} M) | {row['ms_per_step']:.0f} | {row['tokens_per_s']:.0f} | "
          f"{row['samples_per_s']:.2f} | {row['peak_mem_gb']:.2f} | {row['tflop_per_step']:.3f} | {mfu_cell} |")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
