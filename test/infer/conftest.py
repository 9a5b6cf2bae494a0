"""Shared tiny chat models (built once per test session); one intra-op thread for the tiny models."""

from __future__ import annotations

import pytest
import torch

from test.infer.chat_fixtures import memorised_model, random_model, write_model_dir, write_token2wav_dir

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def memorised(tmp_path_factory):
    """(LoadedModel, [record], corpus root) of the model that reproduces the record u000."""
    root = tmp_path_factory.mktemp("chat_memorised")
    loaded, recs = memorised_model(root)
    return loaded, recs, root


@pytest.fixture(scope="session")
def random_loaded(tmp_path_factory):
    return random_model(tmp_path_factory.mktemp("chat_random"))


@pytest.fixture(scope="session")
def chat_dirs(memorised, tmp_path_factory):
    """(model_dir, token2wav_dir, record) on disk, as the training CLIs write them."""
    loaded, recs, root = memorised
    out = tmp_path_factory.mktemp("chat_dirs")
    return write_model_dir(loaded.model, root, out / "exp"), write_token2wav_dir(out / "token2wav"), recs[0]
