import numpy as np

from wenet_echat.utils.memory import peak_rss_mb, rss_mb


def test_rss_follows_an_allocation_and_the_peak_keeps_it():
    before = rss_mb()
    block = np.ones(200 * 2**20 // 8)  # 200 MiB, every page written
    during = rss_mb()
    assert during - before > 150
    del block
    assert rss_mb() < during - 150  # a block this large goes back to the OS when freed
    assert peak_rss_mb() >= during - 1
