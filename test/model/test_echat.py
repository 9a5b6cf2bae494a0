import random
from collections import Counter

import pytest
import torch

from test.echat_fixtures import SPEECH_CODES, make_corpus, make_tokenizer, tiny_dataset_conf, tiny_model_conf
from wenet_echat.dataset import EChatDataset
from wenet_echat.model import EChatModel, GenerateConf, build_model, make_inputs, to_device
from wenet_echat.text.targets import KIND_AUDIO, TARGET_TASKS


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("echat")
    data_list, recs = make_corpus(root)
    tok = make_tokenizer(root, recs)
    torch.manual_seed(0)
    model = build_model(tiny_model_conf(), tok.vocab_size, tok.eos_id, tok.pad_id)
    batch = next(iter(EChatDataset("raw", data_list, tiny_dataset_conf(4), train=False)))
    return tok, model, batch


def inputs_for(setup, task, **kw):
    tok, model, batch = setup
    return make_inputs(batch, task, tok, model.audio_lengths, model.speech_bos, random.Random(0), **kw)


def test_prefixes_and_sizes(setup):
    tok, model, _ = setup
    tops = {name.split(".")[0] for name, _ in model.named_parameters()}
    assert tops == {"encoder", "adapter", "llama_model", "speech_token_emded", "speech_head"}
    assert model.speech_token_emded.num_embeddings == SPEECH_CODES + 3
    assert model.speech_head.out_features == SPEECH_CODES + 1
    assert model.lm_classes >= tok.vocab_size


@pytest.mark.parametrize("task", TARGET_TASKS)
def test_forward_every_task(setup, task):
    _, model, _ = setup
    inp = inputs_for(setup, task)
    assert inp is not None and len(inp["keys"]) == 4
    out = model(**to_device(inp, "cpu"))
    assert torch.isfinite(out["loss"]) and out["loss"].item() > 0
    speaks = task in ("tts", "s2s_chat", "s2s_think")
    assert (out["n_speech"].item() > 0) == speaks
    assert (out["n_text"].item() > 0) == (task != "tts")
    # audio positions hold exactly the adapter frames of each item
    if task not in ("tts", "t2t"):
        frames = model.audio_lengths(inp["feats_lengths"])
        assert torch.equal((inp["kinds"] == KIND_AUDIO).sum(1), frames)


def test_audio_changes_loss_and_padding_does_not(setup):
    _, model, _ = setup
    model.eval()
    inp = inputs_for(setup, "asr")
    base = model(**to_device(inp, "cpu"))["loss"]
    silent = dict(inp, feats=torch.zeros_like(inp["feats"]))
    assert model(**to_device(silent, "cpu"))["loss"].item() != base.item()
    model.zero_grad()
    base.backward()  # the loss reaches the encoder through the adapter frames
    assert model.encoder.embed.conv[0].weight.grad.abs().sum() > 0
    base = base.detach()
    # extra padding frames after every item never change the loss (masks + causal adapter)
    padded = dict(inp, feats=torch.nn.functional.pad(inp["feats"], (0, 0, 0, 37), value=-1.0))
    assert torch.allclose(model(**to_device(padded, "cpu"))["loss"], base, atol=1e-5)


def test_records_without_a_task_are_dropped(setup):
    tok, model, batch = setup
    b = dict(batch, tasks=[["asr"]] + batch["tasks"][1:], response_tokens=[None] * 4)
    dropped = Counter()
    assert make_inputs(b, "tts", tok, model.audio_lengths, model.speech_bos, dropped=dropped) is None
    assert sum(dropped.values()) == 4 and dropped["tts: task not listed"] == 1
    inp = make_inputs(b, "tag", tok, model.audio_lengths, model.speech_bos, dropped=dropped)
    assert inp["keys"] == batch["keys"][1:]


def test_training_lowers_loss(setup):
    tok, _, batch = setup
    torch.manual_seed(1)
    model = build_model(tiny_model_conf(), tok.vocab_size, tok.eos_id, tok.pad_id)
    inp = to_device(make_inputs(batch, "s2s_think", tok, model.audio_lengths, model.speech_bos), "cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = model(**inp)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def _greedy_reference(model, prompts, b, text_ids, speech_ids):
    """Per-step argmax of an uncached full forward over row b's prompt + the generated continuation."""
    from wenet_echat.llm import backbone, run_decoder
    from wenet_echat.text.targets import KIND_SPEECH, KIND_TEXT

    keep = prompts["attention_mask"][b].bool()
    ids = prompts["input_ids"][b][keep].tolist()
    kinds = prompts["kinds"][b][keep].tolist()
    n_prompt = len(ids)
    cont = [*text_ids, model.eos_id]
    ids += cont + [model.speech_bos, *speech_ids]
    kinds += [KIND_TEXT] * len(cont) + [KIND_SPEECH] * (1 + len(speech_ids))
    ids_t, kinds_t = torch.tensor([ids]), torch.tensor([kinds])
    audio, lens = model.encode_audio(prompts["feats"][b:b + 1], prompts["feats_lengths"][b:b + 1])
    hidden = run_decoder(backbone(model.llama_model), model.embed(ids_t, kinds_t, audio))[0][0]
    text_pred = model.llama_model.get_output_embeddings()(hidden)[:, : model.text_vocab_size].argmax(-1)
    speech_pred = model.speech_head(hidden).argmax(-1)
    want_text = text_pred[n_prompt - 1: n_prompt - 1 + len(cont)].tolist()
    first_speech = n_prompt + len(cont)  # the BOS position predicts the first code
    want_speech = speech_pred[first_speech: first_speech + len(speech_ids) + 1].tolist()
    return want_text, want_speech


def memorised_model(tok, batch, task: str, seed: int, steps: int = 150):
    """A tiny model trained on ``batch`` for ``task`` until it nearly memorises it (eval mode)."""
    torch.manual_seed(seed)
    model = build_model(tiny_model_conf(), tok.vocab_size, tok.eos_id, tok.pad_id)
    with torch.enable_grad():
        inp = to_device(make_inputs(batch, task, tok, model.audio_lengths, model.speech_bos), "cpu")
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(steps):
            loss = model(**inp)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
@pytest.mark.parametrize("kv_cache", ["static", "hf"])
def test_generate_equals_uncached_greedy_and_respects_phases(setup, kv_cache):
    tok, _, batch = setup
    model = memorised_model(tok, batch, "s2s_chat", seed=2)  # the decode runs through both phases
    prompts = make_inputs(batch, "s2s_chat", tok, model.audio_lengths, model.speech_bos, prompt_only=True)
    assert prompts["lengths"].unique().numel() == 1 or (prompts["attention_mask"][:, 0] == 0).any()
    out = model.generate(**{k: prompts[k] for k in ("input_ids", "kinds", "attention_mask", "position_ids",
                                                     "feats", "feats_lengths")},
                         speak=prompts["speak"], conf=GenerateConf(max_text_tokens=40, max_speech_tokens=20,
                                                                 kv_cache=kv_cache))
    n_finished = 0
    for b, (row, rec) in enumerate(zip(out, prompts["records"])):
        assert tok.decode(row["text_ids"]) == rec["response"]  # the text phase is memorised exactly
        want_text, want_speech = _greedy_reference(model, prompts, b, row["text_ids"], row["speech_ids"])
        assert want_text == [*row["text_ids"], model.eos_id]
        end = [model.speech_bos] if row["finished"] else []
        assert want_speech[: len(row["speech_ids"]) + len(end)] == [*row["speech_ids"], *end]
        assert all(0 <= c < model.speech_codes for c in row["speech_ids"])
        assert row["first_text_s"] <= row["first_speech_s"] <= row["total_s"]
        n_finished += row["finished"]
    assert n_finished >= 2


def test_block_repeated_ngrams():
    from wenet_echat.model.echat import block_repeated_ngrams

    logits = torch.zeros(10)
    ids = [1, 2, 3, 1, 2]
    out = block_repeated_ngrams(logits, ids, 3)  # "1 2" was followed by 3: 3 is blocked
    assert torch.isinf(out[3]) and torch.isfinite(out[[0, 1, 2, 4, 5]]).all()
    assert torch.isfinite(logits).all()  # the input is not changed
    assert torch.isinf(block_repeated_ngrams(logits, [4, 1, 4], 2)[1])  # "4" was followed by 1
    assert block_repeated_ngrams(logits, ids, 0) is logits and block_repeated_ngrams(logits, [1, 2], 3) is logits
    assert torch.isinf(block_repeated_ngrams(logits, [7, 8], 1)[[7, 8]]).all()
    with pytest.raises(ValueError, match="text_no_repeat_ngram"):
        GenerateConf(text_no_repeat_ngram=-1)


def test_sampling_is_seeded_and_greedy_is_argmax():
    from wenet_echat.model.echat import SamplingConf

    logits = torch.randn(3, 50)
    assert torch.equal(SamplingConf().pick(logits), logits.argmax(-1))
    s = SamplingConf(temperature=1.0, top_k=5, top_p=0.9)
    a = s.pick(logits, torch.Generator().manual_seed(3))
    b = s.pick(logits, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    top5 = logits.topk(5, -1).indices
    assert all(int(a[i]) in top5[i].tolist() for i in range(3))


def test_build_model_errors(setup):
    tok, _, _ = setup
    conf = tiny_model_conf(vocab=10)
    with pytest.raises(Exception, match="smaller than the tokenizer"):
        build_model(conf, tok.vocab_size, tok.eos_id, tok.pad_id)
    conf = tiny_model_conf()
    del conf["speech_codes"]
    with pytest.raises(KeyError, match="speech_codes"):
        build_model(conf, tok.vocab_size, tok.eos_id, tok.pad_id)
    assert isinstance(build_model(tiny_model_conf(), tok.vocab_size, tok.eos_id, tok.pad_id), EChatModel)


@torch.no_grad()
def test_loss_counts_exactly_the_labelled_target_tokens(setup):
    """The loss is the mean CE over target positions only (prompt, audio, <&&> spans and padding excluded)."""
    from wenet_echat.llm import backbone, run_decoder
    from wenet_echat.text.targets import IGNORE_ID, build_example, joint_labels

    tok, model, batch = setup
    model.eval()
    b = dict(batch, labels=[{**lab, "event": None} for lab in batch["labels"]])  # a missing label -> <&&> span
    raw = make_inputs(b, "s2s_think", tok, model.audio_lengths, model.speech_bos)
    inp = to_device(raw, "cpu")
    out = model(**inp)
    audio, lens = model.encode_audio(inp["feats"], inp["feats_lengths"])
    hidden = run_decoder(backbone(model.llama_model), model.embed(inp["input_ids"], inp["kinds"], audio),
                         inp["attention_mask"], inp["position_ids"])[0]
    logits = model.joint_logits(hidden)[:, :-1].float()
    target = joint_labels(inp["labels"], inp["kinds"], model.lm_classes)[:, 1:]
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_ID, reduction="sum")
    n = int((target != IGNORE_ID).sum())
    assert out["n_tokens"].item() == n
    assert torch.allclose(out["loss"], ce / n, atol=1e-5)
    # exactly: every target token of every row (reply text + EOS + speech), minus the <&&> span tokens
    mask_id = tok.encode("<&&>")
    expected = 0
    for rec in raw["records"]:
        ex = build_example(rec, "s2s_think", tok)
        expected += sum(sum(s.loss_flags()) for s in ex.segments if s.kind != "audio")
    assert n == expected
    text_targets = inp["input_ids"][(inp["labels"] != IGNORE_ID) & (inp["kinds"] == 0)]
    assert mask_id and all((text_targets != m).all() for m in mask_id)
    assert any((inp["input_ids"] == m).any() for m in mask_id)  # the span is in the input, without loss


def test_auxiliary_ctc_only_on_asr_batches(setup):
    tok, _, batch = setup
    torch.manual_seed(3)
    conf = {**tiny_model_conf(), "ctc_weight": 0.5}
    model = build_model(conf, tok.vocab_size, tok.eos_id, tok.pad_id)
    short = dict(batch, text=["My exam."] * 4)  # the fixture's audio is short: CTC needs frames >= tokens
    asr = to_device(make_inputs(short, "asr", tok, model.audio_lengths, model.speech_bos), "cpu")
    out = model(**asr)
    assert out["ctc"].item() > 0
    base = model(**{k: v for k, v in asr.items() if not k.startswith("ctc")})
    assert torch.allclose(out["loss"], base["loss"] + 0.5 * out["ctc"], atol=1e-5)
    tag = to_device(make_inputs(batch, "tag", tok, model.audio_lengths, model.speech_bos), "cpu")
    assert "ctc" not in model(**tag)
    with pytest.raises(KeyError, match="unknown model config"):
        build_model({**tiny_model_conf(), "ctc_wieght": 1.0}, tok.vocab_size, tok.eos_id, tok.pad_id)


def test_generate_tts_starts_at_speech_bos(setup):
    """TTS has no text target: decoding goes straight from the prompt to speech (as trained) and reproduces
    memorised gold codes; the processors hook sees each row's codes so far."""
    tok, _, batch = setup
    model = memorised_model(tok, batch, "tts", seed=3)
    prompts = make_inputs(batch, "tts", tok, model.audio_lengths, model.speech_bos, prompt_only=True)
    assert prompts["speech_only"] == [True] * len(prompts["keys"])
    seen = []

    def spy(codes, logits):
        seen.append(list(codes))
        return logits

    out = model.generate(**{k: prompts[k] for k in ("input_ids", "kinds", "attention_mask", "position_ids")},
                         speak=prompts["speak"], speech_only=prompts["speech_only"],
                         conf=GenerateConf(max_text_tokens=40, max_speech_tokens=40, speech_processors=[spy]))
    for row, rec in zip(out, prompts["records"]):
        assert row["text_ids"] == [] and row["first_text_s"] is None
        assert row["speech_ids"] == rec["response_tokens"] and row["finished"]
        assert len(row["speech_times"]) == len(row["speech_ids"])
    assert seen[0] == [] and any(len(c) > 0 for c in seen)
