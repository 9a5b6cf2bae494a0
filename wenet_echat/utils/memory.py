"""Resident memory of this process, for training logs and benchmarks."""

from __future__ import annotations

import os
import resource
import sys


def rss_mb() -> float:
    """Current resident set size in MiB (Linux: ``/proc/self/statm``; elsewhere the peak, :func:`peak_rss_mb`)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
