"""The token2wav tests use tiny models: one intra-op thread avoids oversubscription on shared CPUs."""

import torch

torch.set_num_threads(1)
