"""The frozen-encoder output cache: per-utterance entries equal the encoder run alone, lookups, errors, and the
model taking its encoder output from it."""

import pytest
import torch

from test.echat_fixtures import make_corpus, make_tokenizer, tiny_dataset_conf, tiny_model_conf
from wenet_echat.dataset import EChatDataset
from wenet_echat.model import build_model
from wenet_echat.model.encoder_cache import EncoderCache, EncoderCacheError


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc_cache")
    data_list, recs = make_corpus(root, n=8)
    tok = make_tokenizer(root, recs)
    torch.manual_seed(0)
    conf = tiny_model_conf()
    conf["encoder_conf"]["dropout"] = 0.3  # fill must run the encoder in eval mode
    model = build_model(conf, tok.vocab_size, tok.eos_id, tok.pad_id)
    batches = list(EChatDataset("raw", data_list, tiny_dataset_conf(4), train=False))
    return model, batches


def test_fill_stores_each_utterance_as_the_encoder_computes_it_alone(setup):
    model, batches = setup
    cache = EncoderCache()
    model.encoder.train()
    stats = cache.fill(model.encoder, batches)
    assert model.encoder.training  # mode restored
    assert stats["utterances"] == len(cache) == 8 and stats["megabytes"] > 0
    assert cache.fill(model.encoder, batches)["utterances"] == 0  # already there
    model.encoder.eval()
    batch = batches[0]
    lengths = batch["feats_lengths"]
    assert len(set(lengths.tolist())) > 1  # padding is exercised
    with torch.no_grad():
        for i, key in enumerate(batch["keys"]):
            alone, n = model.encoder(batch["feats"][i : i + 1, : int(lengths[i])], lengths[i : i + 1])
            out, out_lens = cache.lookup([key], lengths[i : i + 1])
            assert int(out_lens[0]) == int(n[0]) == out.size(1)
            torch.testing.assert_close(out, alone, atol=1e-5, rtol=1e-5)


def test_lookup_pads_misses_and_rejects_other_audio(setup):
    model, batches = setup
    cache = EncoderCache()
    cache.fill(model.encoder, batches[:1])
    b0, b1 = batches[0], batches[1]
    out, lens = cache.lookup(b0["keys"], b0["feats_lengths"])
    assert out.shape[:2] == (len(b0["keys"]), int(lens.max())) and cache.hits == 1
    for i, n in enumerate(lens.tolist()):
        assert torch.count_nonzero(out[i, n:]) == 0
    assert cache.lookup([b0["keys"][0], b1["keys"][0]], b1["feats_lengths"][:2]) is None and cache.misses == 1
    with pytest.raises(EncoderCacheError, match=b0["keys"][0]):
        cache.lookup(b0["keys"][:1], b0["feats_lengths"][:1] + 3)


def test_model_reads_the_cache_and_stores_misses(setup):
    model, batches = setup
    model.eval()
    batch = batches[0]
    feats, lens, keys = batch["feats"], batch["feats_lengths"], list(batch["keys"])
    with torch.no_grad():
        plain, plain_lens = model.encode_audio(feats, lens)
        model.encoder_cache = cache = EncoderCache()
        try:
            first, _ = model.encode_audio(feats, lens, keys)  # a miss: runs the encoder, stores the result
            assert len(cache) == len(keys) and cache.misses == 1
            second, second_lens = model.encode_audio(feats, lens, keys)
            assert cache.hits == 1
            torch.testing.assert_close(first, plain)
            torch.testing.assert_close(second, plain, atol=1e-5, rtol=1e-5)
            assert torch.equal(second_lens, plain_lens)
            cache._out[keys[0]] += 1.0  # the output really comes from the cache
            assert not torch.allclose(model.encode_audio(feats, lens, keys)[0], plain, atol=1e-3)
        finally:
            model.encoder_cache = None


def test_cache_dropout_applies_in_training_only(setup):
    model, batches = setup
    batch = batches[0]
    feats, lens, keys = batch["feats"], batch["feats_lengths"], list(batch["keys"])
    model.encoder_cache = EncoderCache()
    model.encoder_cache.fill(model.encoder, batches[:1])
    try:
        model.eval()
        with torch.no_grad():
            clean = model.encode_audio(feats, lens, keys)[0]
            model.encoder_cache_dropout = 0.5
            torch.testing.assert_close(model.encode_audio(feats, lens, keys)[0], clean)  # eval: no noise
            model.adapter.train()  # training step: dropout on the cached output (the adapter's own dropout is 0)
            model.training = True
            noisy = model.encode_audio(feats, lens, keys)[0]
            assert not torch.allclose(noisy, clean, atol=1e-3)
    finally:
        model.encoder_cache, model.encoder_cache_dropout = None, 0.0
        model.eval()
