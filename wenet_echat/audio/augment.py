"""SpecAugment on (frames, bins) features."""

from __future__ import annotations

import random

import torch


def spec_augment(feats: torch.Tensor, num_freq_masks: int = 2, max_freq_width: int = 10, num_time_masks: int = 2,
                 max_time_width: int = 50, rng: random.Random | None = None) -> torch.Tensor:
    """Zero ``num_freq_masks`` bands of up to ``max_freq_width`` bins and ``num_time_masks`` spans of up to
    ``max_time_width`` frames; returns a new tensor (the input is not modified)."""
    rng = rng or random.Random()
    out = feats.clone()
    frames, bins = out.shape
    for _ in range(num_freq_masks):
        width = rng.randint(0, min(max_freq_width, bins))
        start = rng.randint(0, bins - width)
        out[:, start:start + width] = 0
    for _ in range(num_time_masks):
        width = rng.randint(0, min(max_time_width, frames))
        start = rng.randint(0, frames - width)
        out[start:start + width, :] = 0
    return out
