"""``EChatDataset``: the processor chain over a raw or shard list, as a torch ``IterableDataset``.

Chain (each a generator from :mod:`~wenet_echat.dataset.processor` / :mod:`~wenet_echat.dataset.batch`)::

    source -> parse -> validate -> load_audio -> filter -> compute_feats -> [spec_augment] -> [tokenize]
           -> [shuffle] -> [sort] -> static|dynamic batch -> padding

It yields batch dicts (``batch_size=None`` in the DataLoader). Randomness (list shuffle, shuffle buffer,
SpecAugment) derives from ``(seed, epoch)`` and the reader slot, so the same seed, epoch and worker count give
the same batches.
"""

from __future__ import annotations

import copy
import math
import multiprocessing as mp
import random
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, IterableDataset

from wenet_echat.audio.features import FEATURES
from wenet_echat.dataset import batch as B
from wenet_echat.dataset import processor as P
from wenet_echat.dataset.source import ListSource, reader_info

DEFAULT_CONF: dict[str, Any] = {
    "resample_rate": 16000,
    "filter_conf": {},
    "feats_type": "whisper_log_mel",
    "feats_conf": {},
    "spec_aug": False,
    "spec_aug_conf": {},
    "shuffle": True,
    "shuffle_conf": {"shuffle_size": 1000},
    "sort": True,
    "sort_conf": {"sort_size": 500, "key": "frames"},
    "batch_conf": {"batch_type": "static", "batch_size": 16},
    "strict": False,
    "seed": 0,
    "keep_wav": False,
    "list_shuffle": None,  # None = follow "shuffle"
}
KNOWN_SUBKEYS: dict[str, tuple[str, ...]] = {
    "filter_conf": ("min_duration", "max_duration", "max_text_len", "max_response_tokens"),
    "shuffle_conf": ("shuffle_size",),
    "sort_conf": ("sort_size", "key"),
    "batch_conf": ("batch_type", "batch_size", "max_frames_in_batch", "max_tokens_in_batch"),
    "spec_aug_conf": ("num_freq_masks", "max_freq_width", "num_time_masks", "max_time_width"),
}


def resolve_conf(dataset_conf: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults merged with ``dataset_conf``; raises ``ValueError`` naming any unknown key."""
    conf = copy.deepcopy(DEFAULT_CONF)
    for key, value in (dataset_conf or {}).items():
        if key not in DEFAULT_CONF:
            raise ValueError(f"unknown dataset_conf key '{key}' (known: {', '.join(DEFAULT_CONF)})")
        if key in KNOWN_SUBKEYS:
            if not isinstance(value, dict):
                raise ValueError(f"dataset_conf.{key} must be a mapping, got {type(value).__name__}")
            for sub in value:
                if sub not in KNOWN_SUBKEYS[key]:
                    raise ValueError(f"unknown dataset_conf key '{key}.{sub}' (known: {', '.join(KNOWN_SUBKEYS[key])})")
            if key in ("shuffle_conf", "sort_conf", "batch_conf"):
                value = {**conf[key], **value}
        conf[key] = value
    sort_key = conf["sort_conf"]["key"]
    if sort_key not in P.SORT_KEYS:
        raise ValueError(f"dataset_conf.sort_conf.key must be {'|'.join(P.SORT_KEYS)}, got {sort_key!r}")
    btype = conf["batch_conf"].get("batch_type", "static")
    if btype not in ("static", "dynamic"):
        raise ValueError(f"dataset_conf.batch_conf.batch_type must be static|dynamic, got {btype!r}")
    if conf["feats_type"] not in FEATURES:
        raise ValueError(f"dataset_conf.feats_type must be one of {'|'.join(FEATURES.names())}, "
                         f"got {conf['feats_type']!r}")
    return conf


class EChatDataset(IterableDataset):
    """Batches of EChat samples from a ``raw`` data.list or a ``shard`` list.

    Args:
        data_type: ``"raw"`` or ``"shard"``.
        data_list: path of the data.list / shard list.
        dataset_conf: see :data:`DEFAULT_CONF`; unknown keys raise ``ValueError``.
        train: False (cv/test) disables SpecAugment and every shuffle.
        tokenizer: optional object with ``encode(str) -> list[int]``.
        rank, world_size: override the torch.distributed / RANK+WORLD_SIZE values.
    """

    def __init__(self, data_type: str, data_list: str, dataset_conf: dict[str, Any] | None = None,
                 train: bool = True, tokenizer: Any = None, rank: int | None = None, world_size: int | None = None):
        super().__init__()
        self.conf = resolve_conf(dataset_conf)
        self.train = train
        self.tokenizer = tokenizer
        # shared with (persistent) DataLoader workers, so set_epoch in the main process reaches them
        self._epoch = mp.RawValue("q", 0)
        list_shuffle = self.conf["list_shuffle"]
        if list_shuffle is None:
            list_shuffle = self.conf["shuffle"]
        self.source = ListSource(data_list, data_type, shuffle=train and bool(list_shuffle),
                                 seed=int(self.conf["seed"]), rank=rank, world_size=world_size)

    def single_pass(self) -> EChatDataset:
        """The same list read once in full by one reader: no shuffling or augmentation, length-sorted (little
        padding), whatever this dataset's rank; e.g. to precompute per-utterance outputs."""
        conf = {**self.conf, "shuffle": False, "spec_aug": False, "sort": True,
                "sort_conf": {"sort_size": max(int(self.conf["sort_conf"]["sort_size"]), 2000), "key": "frames"}}
        return EChatDataset(self.source.data_type, self.source.list_path, conf, train=False, rank=0, world_size=1)

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = int(epoch)

    def _rng(self, stage: int) -> random.Random:
        info = reader_info(self.source.rank, self.source.world_size)
        return random.Random(f"{self.conf['seed']}/{self.epoch}/{info.rank}/{info.worker_id}/{stage}")

    def samples(self, stats: P.SkipStats) -> Iterator[P.Sample]:
        """The per-sample part of the chain (before batching)."""
        c = self.conf
        data: Iterator[P.Sample] = iter(self.source)
        data = P.parse(data, stats)
        data = P.validate(data, stats)
        data = P.load_audio(data, stats, resample_rate=int(c["resample_rate"]))
        fc = c["filter_conf"]
        data = P.filter_samples(data, stats, min_duration=float(fc.get("min_duration", 0.0)),
                                max_duration=float(fc.get("max_duration", math.inf)),
                                max_text_len=fc.get("max_text_len"), max_response_tokens=fc.get("max_response_tokens"))
        data = P.compute_feats(data, stats, c["feats_type"], c["feats_conf"], keep_wav=bool(c["keep_wav"]))
        if self.train and c["spec_aug"]:
            data = P.spec_augment(data, self._rng(1), **c["spec_aug_conf"])
        if self.tokenizer is not None:
            data = P.tokenize(data, self.tokenizer)
        if self.train and c["shuffle"]:
            data = P.shuffle(data, self._rng(2), int(c["shuffle_conf"]["shuffle_size"]))
        if c["sort"]:
            data = P.sort(data, int(c["sort_conf"]["sort_size"]), P.SORT_KEYS[c["sort_conf"]["key"]])
        return data

    def __iter__(self) -> Iterator[dict[str, Any]]:
        stats = P.SkipStats(strict=bool(self.conf["strict"]))
        self.source.set_epoch(self.epoch)
        data = self.samples(stats)
        bc = self.conf["batch_conf"]
        if bc.get("batch_type", "static") == "static":
            groups = B.static_batch(data, int(bc.get("batch_size", 16)))
        else:
            groups = B.dynamic_batch(data, int(bc.get("max_frames_in_batch", 12000)), bc.get("max_tokens_in_batch"))
        return B.padding(groups, stats)


def make_dataloader(dataset: EChatDataset, num_workers: int = 0, prefetch_factor: int | None = 2,
                    pin_memory: bool = False, generator: Any = None) -> DataLoader:
    """A DataLoader over ready batches (``batch_size=None``); persistent workers when ``num_workers > 0``.

    ``generator`` (a ``torch.Generator``) seeds the workers instead of the global RNG, so creating a loader does
    not change the training RNG stream (needed for an exact resume)."""
    kwargs: dict[str, Any] = {"generator": generator}
    if num_workers > 0:
        kwargs["persistent_workers"] = True
        kwargs["prefetch_factor"] = prefetch_factor
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, **kwargs)


def iterate_batches(loader: Any, stats: P.SkipStats | None = None) -> Iterator[dict[str, Any]]:
    """Yield real batches from a loader/dataset, folding every item's counts into ``stats`` and dropping markers."""
    for batch in loader:
        if stats is not None:
            stats.update_from_batch(batch)
        if not B.is_marker(batch):
            yield batch


__all__ = ["DEFAULT_CONF", "EChatDataset", "iterate_batches", "make_dataloader", "resolve_conf"]
