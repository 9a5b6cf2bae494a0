import json

import pytest
import torch

from wenet_echat.dataset.batch import is_marker
from wenet_echat.dataset.dataset import EChatDataset, iterate_batches, make_dataloader
from wenet_echat.dataset.processor import DataError, SkipStats
from wenet_echat.dataset.shard import make_shards

from .conftest import record, write_list, write_wav

EVAL = {"shuffle": False, "sort": False, "batch_conf": {"batch_type": "static", "batch_size": 4}}


def collect(ds_or_loader, stats=None):
    return list(iterate_batches(ds_or_loader, stats))


def test_unknown_conf_keys_rejected(tmp_path):
    path = write_list(tmp_path / "d.list", [])
    with pytest.raises(ValueError, match="unknown dataset_conf key 'shufle'"):
        EChatDataset("raw", path, {"shufle": True})
    with pytest.raises(ValueError, match="unknown dataset_conf key 'filter_conf.max_len'"):
        EChatDataset("raw", path, {"filter_conf": {"max_len": 3}})
    with pytest.raises(ValueError, match="batch_type"):
        EChatDataset("raw", path, {"batch_conf": {"batch_type": "bucket"}})
    with pytest.raises(ValueError, match=r"sort_conf.key must be frames\|sequence, got 'tokens'"):
        EChatDataset("raw", path, {"sort_conf": {"key": "tokens"}})


def test_sort_key_sequence_orders_by_the_llm_length(corpus):
    # audio 0.3-0.9 s rising with the index, speech codes falling faster: the sequence key reverses the order
    path, recs = corpus(7, durations=[0.3 + 0.1 * i for i in range(7)])
    lines = [{**r, "task": "tts", "response": "ok", "response_tokens": list(range(400 - 50 * i))}
             for i, r in enumerate(recs)]
    write_list(path, lines)
    conf = {"shuffle": False, "sort": True, "batch_conf": {"batch_type": "static", "batch_size": 7}}

    def keys(key):
        ds = EChatDataset("raw", path, {**conf, "sort_conf": {"sort_size": 7, "key": key}}, train=True)
        return [k for b in collect(ds) for k in b["keys"]]

    assert keys("frames") == [r["key"] for r in recs]
    assert keys("sequence") == [r["key"] for r in reversed(recs)]
    # the encoder cache's single pass sorts by frames whatever the key (the encoder's own padding)
    ds = EChatDataset("raw", path, {**conf, "sort_conf": {"sort_size": 7, "key": "sequence"}}, train=True)
    assert [k for b in collect(ds.single_pass()) for k in b["keys"]] == [r["key"] for r in recs]


def test_raw_batches_cover_every_sample(corpus):
    path, recs = corpus(10)
    batches = collect(EChatDataset("raw", path, EVAL, train=False))
    assert [len(b["keys"]) for b in batches] == [4, 4, 2]
    assert [k for b in batches for k in b["keys"]] == [r["key"] for r in recs]
    b = batches[0]
    assert b["feats"].dtype == torch.float32 and b["feats"].shape[2] == 80
    assert b["feats_lengths"].tolist() == [round(r["duration"] * 100) for r in recs[:4]]
    assert b["feats"].shape[1] == max(b["feats_lengths"].tolist())
    assert b["text"] == [r["text"] for r in recs[:4]] and b["tasks"] == [["asr"]] * 4
    assert b["skipped"] == {} and b["notes"] == {}


def test_dynamic_batches_respect_max_frames(corpus):
    path, recs = corpus(20)
    conf = {**EVAL, "sort": True, "batch_conf": {"batch_type": "dynamic", "max_frames_in_batch": 200}}
    batches = collect(EChatDataset("raw", path, conf, train=False))
    assert sorted(k for b in batches for k in b["keys"]) == sorted(r["key"] for r in recs)
    for b in batches:
        assert b["feats"].shape[0] * b["feats"].shape[1] <= 200 or len(b["keys"]) == 1
        assert b["feats_lengths"].tolist() == sorted(b["feats_lengths"].tolist())


def planted_list(tmp_path):
    """A list with 14 good records and known problems; returns (path, good keys, expected skip counts)."""
    (tmp_path / "w").mkdir()
    lines, good = [], []
    for i in range(14):
        sr = 22050 if i == 3 else 16000
        ch = 2 if i == 5 else 1
        lines.append(record(f"g{i:02d}", write_wav(tmp_path / "w" / f"g{i}.wav", 0.3 + 0.05 * i, sr, ch, seed=i)))
        good.append(f"g{i:02d}")
    lines.insert(2, '{"key": "broken"')
    lines.insert(5, b'{"key": "\xff\xfe"}')
    lines.insert(7, {"key": "nofield", "task": "asr", "wav": "x.wav"})
    lines.insert(9, {"key": "badlabel", "task": "tag", "wav": "x.wav", "labels": {"age": "ancient"}})
    lines.insert(11, record("gone", str(tmp_path / "w" / "missing.wav")))
    lines.append(record("short", write_wav(tmp_path / "w" / "s.wav", 0.05)))
    lines.append(record("long", write_wav(tmp_path / "w" / "l.wav", 2.5)))
    lines.append(record("wordy", lines[0]["wav"], text="x" * 500))
    lines.append("[1, 2]")
    path = write_list(tmp_path / "planted.list", lines)
    expected = {"invalid_json": 2, "not_utf8": 1, "bad_record": 2, "missing": 1, "too_short": 1, "too_long": 1,
                "text_too_long": 1}
    return path, good, expected


PLANTED_CONF = {**EVAL, "filter_conf": {"min_duration": 0.1, "max_duration": 2.0, "max_text_len": 100}}


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_counts_exact_with_workers(tmp_path, workers):
    path, good, expected = planted_list(tmp_path)
    ds = EChatDataset("raw", path, PLANTED_CONF, train=False)
    stats = SkipStats()
    batches = collect(make_dataloader(ds, num_workers=workers), stats)
    assert sorted(k for b in batches for k in b["keys"]) == good
    assert dict(stats.skipped) == expected
    assert dict(stats.notes) == {"resampled": 1, "downmixed": 1}
    assert stats.total == 9


def test_marker_batches_are_flagged(tmp_path):
    path = write_list(tmp_path / "d.list", ["{bad", "{bad"])
    items = list(EChatDataset("raw", path, EVAL, train=False))
    assert len(items) == 1 and is_marker(items[0]) and items[0]["skipped"] == {"invalid_json": 2}


def test_strict_raises_with_location(tmp_path):
    path, _, _ = planted_list(tmp_path)
    ds = EChatDataset("raw", path, {**PLANTED_CONF, "strict": True}, train=False)
    with pytest.raises(DataError, match=r"planted.list:3: invalid_json"):
        collect(ds)


def test_strict_names_key(tmp_path):
    wav = write_wav(tmp_path / "a.wav", 0.3)
    path = write_list(tmp_path / "d.list", [record("ok", wav), record("tiny", write_wav(tmp_path / "b.wav", 0.02))])
    ds = EChatDataset("raw", path, {**EVAL, "strict": True, "filter_conf": {"min_duration": 0.1}}, train=False)
    with pytest.raises(DataError, match=r"d.list:2: tiny: too_short"):
        collect(ds)


TRAIN = {"shuffle": True, "shuffle_conf": {"shuffle_size": 8}, "sort": True, "sort_conf": {"sort_size": 4},
         "spec_aug": True, "spec_aug_conf": {"max_time_width": 5}, "seed": 7,
         "batch_conf": {"batch_type": "static", "batch_size": 3}}


def test_same_seed_same_batches(corpus):
    path, _ = corpus(16)

    def run(epoch, seed=7):
        ds = EChatDataset("raw", path, {**TRAIN, "seed": seed}, train=True)
        ds.set_epoch(epoch)
        return collect(ds)

    a, b, c = run(0), run(0), run(1)
    assert [x["keys"] for x in a] == [x["keys"] for x in b]
    assert all(torch.equal(x["feats"], y["feats"]) for x, y in zip(a, b, strict=True))
    assert [x["keys"] for x in a] != [x["keys"] for x in c]
    assert sorted(k for x in c for k in x["keys"]) == sorted(k for x in a for k in x["keys"])


def test_set_epoch_reaches_persistent_workers(corpus):
    path, _ = corpus(12)
    ds = EChatDataset("raw", path, TRAIN, train=True)
    loader = make_dataloader(ds, num_workers=2)
    e0 = [b["keys"] for b in collect(loader)]
    ds.set_epoch(1)
    e1 = [b["keys"] for b in collect(loader)]
    ref = EChatDataset("raw", path, TRAIN, train=True)
    ref.set_epoch(1)
    assert e1 == [b["keys"] for b in collect(make_dataloader(ref, num_workers=2))]
    assert e0 != e1


def test_eval_mode_no_augment(corpus):
    path, _ = corpus(4)
    a = collect(EChatDataset("raw", path, TRAIN, train=False))
    b = collect(EChatDataset("raw", path, {**TRAIN, "spec_aug": False, "shuffle": False}, train=False))
    assert all(torch.equal(x["feats"], y["feats"]) for x, y in zip(a, b, strict=True))


def test_shards_give_same_samples_as_raw(tmp_path, corpus):
    path, recs = corpus(9)
    resp = write_wav(tmp_path / "resp.wav", 0.4, 22050)
    recs[2] = {**recs[2], "response": "ok", "response_wav": resp, "task": ["asr", "s2s_chat"]}
    path = write_list(tmp_path / "data.list", recs)
    tars = make_shards(path, tmp_path / "shards", num_utts_per_shard=4, nj=2)
    assert len(tars) == 3
    shard_list = write_list(tmp_path / "shards.list", tars)
    raw = collect(EChatDataset("raw", path, EVAL, train=False))
    sh = collect(EChatDataset("shard", shard_list, EVAL, train=False))
    assert [b["keys"] for b in sh] == [b["keys"] for b in raw]
    for x, y in zip(raw, sh, strict=True):
        assert torch.equal(x["feats"], y["feats"]) and torch.equal(x["feats_lengths"], y["feats_lengths"])
        assert x["text"] == y["text"] and x["tasks"] == y["tasks"]
    assert json.loads(json.dumps(sh[0]["duration"])) == raw[0]["duration"]


def test_corrupt_shard_is_counted(tmp_path, corpus):
    path, _ = corpus(3)
    tars = make_shards(path, tmp_path / "shards", num_utts_per_shard=3)
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"garbage" * 100)
    shard_list = write_list(tmp_path / "shards.list", [*tars, str(bad)])
    stats = SkipStats()
    batches = collect(EChatDataset("shard", shard_list, EVAL, train=False), stats)
    assert sum(len(b["keys"]) for b in batches) == 3 and dict(stats.skipped) == {"bad_shard": 1}
