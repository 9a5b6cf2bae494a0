from types import SimpleNamespace

import pytest
import torch

from wenet_echat.dataset.source import ListSource, ReaderInfo, dist_info, reader_info, split_indices

from .conftest import write_list


@pytest.mark.parametrize("n", [0, 1, 7, 13])
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [0, 1, 2, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_split_is_exact(n, world, workers, shuffle):
    seen = []
    for rank in range(world):
        for wid in range(max(workers, 1)):
            seen += split_indices(n, ReaderInfo(rank, world, wid, max(workers, 1)), shuffle, seed=5, epoch=2)
    assert sorted(seen) == list(range(n))  # none twice, none lost


def test_split_counts_differ_by_at_most_one():
    sizes = [len(split_indices(13, ReaderInfo(r, 2, w, 3))) for r in range(2) for w in range(3)]
    assert sizes == [3, 2, 2, 2, 2, 2]


def test_shuffle_same_on_all_ranks_and_changes_with_epoch():
    a = split_indices(100, ReaderInfo(0, 1, 0, 1), True, seed=1, epoch=0)
    b = split_indices(100, ReaderInfo(0, 1, 0, 1), True, seed=1, epoch=0)
    c = split_indices(100, ReaderInfo(0, 1, 0, 1), True, seed=1, epoch=1)
    assert a == b and a != c and sorted(c) == list(range(100))
    # rank 1 of 2 reads exactly the odd positions of the same global order
    assert split_indices(100, ReaderInfo(1, 2, 0, 1), True, seed=1, epoch=0) == a[1::2]


def test_dist_info_from_env(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert dist_info() == (2, 3)
    assert dist_info(0, 1) == (0, 1)
    with pytest.raises(ValueError, match="rank=3 world_size=3"):
        dist_info(3, 3)


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [0, 1, 2, 3])
def test_list_source_reads_each_line_once(tmp_path, monkeypatch, world, workers):
    path = write_list(tmp_path / "x.list", [{"key": f"k{i}"} for i in range(11)])
    srcs = []
    for rank in range(world):
        for wid in range(max(workers, 1)):
            info = None if workers == 0 else SimpleNamespace(id=wid, num_workers=workers)
            monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
            assert reader_info(rank, world).worker_id == wid
            src = ListSource(path, "raw", shuffle=True, seed=3, rank=rank, world_size=world)
            src.set_epoch(4)
            srcs += [s["src"] for s in src]
    assert sorted(srcs, key=lambda s: int(s.rsplit(":", 1)[1])) == [f"{path}:{i}" for i in range(1, 12)]


def test_bad_data_type(tmp_path):
    with pytest.raises(ValueError, match="data_type"):
        ListSource(write_list(tmp_path / "x", []), "tar")
