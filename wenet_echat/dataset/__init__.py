"""Data pipeline: data.list / shard / Kaldi-dir readers, processors, batching and validation.

Heavy submodules import lazily; ``from wenet_echat.dataset import EChatDataset`` works as usual.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "EChatDataset": "wenet_echat.dataset.dataset",
    "make_dataloader": "wenet_echat.dataset.dataset",
    "iterate_batches": "wenet_echat.dataset.dataset",
    "SkipStats": "wenet_echat.dataset.processor",
    "DataError": "wenet_echat.dataset.processor",
    "write_kaldi_dir": "wenet_echat.dataset.kaldi",
    "read_kaldi_dir": "wenet_echat.dataset.kaldi",
    "make_shards": "wenet_echat.dataset.shard",
    "validate": "wenet_echat.dataset.validate",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'wenet_echat.dataset' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
