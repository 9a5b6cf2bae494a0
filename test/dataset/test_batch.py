import random

import pytest
import torch

from wenet_echat.dataset.batch import collate, dynamic_batch, is_marker, padding, static_batch
from wenet_echat.dataset.processor import SkipStats, sequence_length, shuffle, sort


def samples(lengths, dim=4):
    return [{"key": f"k{i}", "feats": torch.full((n, dim), float(i)), "record": {"key": f"k{i}", "text": "t"},
             "tasks": ["asr"]} for i, n in enumerate(lengths)]


LENGTHS = [random.Random(0).randint(1, 300) for _ in range(97)]


@pytest.mark.parametrize("bs", [1, 5, 16, 200])
def test_static_batch_sizes_and_coverage(bs):
    groups = list(static_batch(samples(LENGTHS), bs))
    assert all(1 <= len(g) <= bs for g in groups)
    assert [len(g) for g in groups[:-1]] == [bs] * (len(groups) - 1)
    assert [s["key"] for g in groups for s in g] == [f"k{i}" for i in range(97)]


@pytest.mark.parametrize("max_frames", [300, 1000, 5000])
def test_dynamic_batch_padded_frames(max_frames):
    data = samples(LENGTHS + [max_frames + 50])  # one sample longer than the limit
    groups = list(dynamic_batch(data, max_frames))
    assert sorted(s["key"] for g in groups for s in g) == sorted(s["key"] for s in data)
    for g in groups:
        padded = max(s["feats"].shape[0] for s in g) * len(g)
        assert padded <= max_frames or len(g) == 1
    over = [g for g in groups if any(s["feats"].shape[0] > max_frames for s in g)]
    assert len(over) == 1 and len(over[0]) == 1


def test_dynamic_batch_exact_grouping():
    groups = list(dynamic_batch(samples([10, 10, 30, 5, 100, 1]), 60))
    # [10,10] -> +30 would be 30*3=90 > 60; [30] -> +5: 30*2=60 ok; +100 -> over; [100] alone; [1]
    assert [[s["feats"].shape[0] for s in g] for g in groups] == [[10, 10], [30, 5], [100], [1]]


def test_dynamic_batch_max_tokens():
    data = samples([5] * 6)
    for s in data:
        s["text_ids"] = [1, 2, 3]
    groups = list(dynamic_batch(data, 10_000, max_tokens_in_batch=7))
    assert [len(g) for g in groups] == [2, 2, 2]
    data[1]["history_tokens"] = 4  # a dialogue's earlier turns count: sample 1 (3 + 4) fills a batch alone
    assert [len(g) for g in dynamic_batch(data, 10_000, max_tokens_in_batch=7)] == [1, 1, 2, 2]


def test_sort_within_buffer():
    data = samples([5, 3, 9, 1, 8, 2, 7])
    out = [s["feats"].shape[0] for s in sort(data, sort_size=3)]
    assert out == [3, 5, 9, 1, 2, 8, 7]


def test_sort_by_sequence_length():
    # long audio with a short reply against short audio with hundreds of speech codes: frames and the LLM
    # sequence (audio positions at 8 frames each + text ids + codes) order them oppositely
    data = samples([800, 80, 400])
    for s, codes in zip(data, (10, 300, 100), strict=True):
        s["record"]["response_tokens"] = list(range(codes))
        s["text_ids"] = [1, 2]
    assert [sequence_length(s) for s in data] == [100 + 12, 10 + 302, 50 + 102]
    assert [s["key"] for s in sort(data, sort_size=3)] == ["k1", "k2", "k0"]
    assert [s["key"] for s in sort(data, sort_size=3, key=sequence_length)] == ["k0", "k2", "k1"]


def test_shuffle_buffer_is_a_seeded_permutation():
    a = [s["key"] for s in shuffle(samples(range(1, 30)), random.Random(1), 8)]
    b = [s["key"] for s in shuffle(samples(range(1, 30)), random.Random(1), 8)]
    assert a == b and sorted(a) == sorted(f"k{i}" for i in range(29)) and a != [f"k{i}" for i in range(29)]
    assert sorted(a[:8]) == sorted(f"k{i}" for i in range(8))  # buffer-local


def test_collate_pads_and_keeps_order():
    data = samples([3, 5])
    data[0]["text_ids"] = [7, 8]
    data[1]["record"]["labels"] = {"age": "adult"}
    b = collate(data)
    assert b["keys"] == ["k0", "k1"]
    assert b["feats"].shape == (2, 5, 4)
    assert b["feats_lengths"].tolist() == [3, 5]
    assert b["feats"][0, 3:].abs().sum() == 0 and b["feats"][1].eq(1).all()
    assert b["text_ids"].tolist() == [[7, 8], [-1, -1]] and b["text_ids_lengths"].tolist() == [2, 0]
    assert b["labels"] == [None, {"age": "adult"}] and b["tasks"] == [["asr"], ["asr"]]


def test_padding_carries_skip_deltas_and_final_marker():
    stats = SkipStats()

    def groups():
        stats.skip("too_long", "x:1")
        yield samples([2])
        stats.skip("bad_record", "x:2")
        stats.skip("bad_record", "x:3")
        stats.note("resampled")

    out = list(padding(groups(), stats))
    assert out[0]["skipped"] == {"too_long": 1} and out[0]["notes"] == {}
    assert is_marker(out[1]) and out[1] == {"keys": [], "skipped": {"bad_record": 2}, "notes": {"resampled": 1}}
    total = SkipStats()
    for b in out:
        total.update_from_batch(b)
    assert total.summary() == "skipped 3 samples (bad_record=2, too_long=1); notes: resampled=1"
