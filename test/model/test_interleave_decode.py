"""The text-guided speech phase (model.speech_text_interleave) decodes in exactly the layout it is trained on."""

import pytest
import torch

from test.echat_fixtures import make_corpus, make_tokenizer, tiny_dataset_conf, tiny_model_conf
from wenet_echat.dataset import EChatDataset
from wenet_echat.infer.decode import spoken_ids
from wenet_echat.infer.stream import ContextBuilder, DecodeState, IncrementalDecoder, decode_steps
from wenet_echat.llm import backbone, run_decoder
from wenet_echat.model import GenerateConf, build_model, to_device
from wenet_echat.text.interleave import Interleave
from wenet_echat.text.prompts import system_prompt
from wenet_echat.text.targets import IGNORE_ID, KIND_SPEECH, KIND_TEXT

PROMPT_KEYS = ("input_ids", "kinds", "attention_mask", "position_ids", "feats", "feats_lengths")


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "text_end"])
def trained(tmp_path_factory, request):
    """A tiny interleaving model trained on tts and s2s_chat until it nearly memorises them; ``text_end``: with
    model.speech_text_end (the re-read text closed by the text EOS)."""
    root = tmp_path_factory.mktemp("interleave")
    data_list, recs = make_corpus(root)
    tok = make_tokenizer(root, recs)
    torch.manual_seed(5)
    model = build_model({**tiny_model_conf(), "speech_text_interleave": [2, 3], "speech_text_end": request.param},
                        tok.vocab_size, tok.eos_id, tok.pad_id)
    assert model.interleave == Interleave(2, 3, end=tok.eos_id if request.param else None)
    batch = next(iter(EChatDataset("raw", data_list, tiny_dataset_conf(4), train=False)))
    inputs = {t: to_device(model.make_inputs(batch, t, tok), "cpu") for t in ("tts", "s2s_chat")}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(240):
        loss = model(**inputs[("tts", "s2s_chat")[step % 2]])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tok, model.eval(), batch


def generate(model, tok, batch, task, conf):
    prompts = model.make_inputs(batch, task, tok, prompt_only=True)
    recs = prompts["records"]
    out = model.generate(**{k: prompts[k] for k in PROMPT_KEYS if k in prompts}, speak=prompts["speak"],
                         speech_only=prompts["speech_only"], conf=conf,
                         spoken=lambda b, ids: spoken_ids(tok, ids, recs[b]["response"] if task == "tts" else None))
    return prompts, out


@torch.no_grad()
@pytest.mark.parametrize("task", ["tts", "s2s_chat"])
def test_generate_feeds_the_training_layout(trained, task):
    """Teacher-forcing the decoded output through the training layout predicts, at every speech label, exactly the
    code generate picked: the chunks went in at the same places as in training."""
    tok, model, batch = trained
    prompts, out = generate(model, tok, batch, task, GenerateConf(max_text_tokens=30, max_speech_tokens=40))
    recs = prompts["records"]
    said = [tok.decode(r["text_ids"]) if task != "tts" else rec["response"] for r, rec in zip(out, recs)]
    full = model.make_inputs(dict(batch, response=said, response_tokens=[r["speech_ids"] for r in out]), task, tok)
    assert full["keys"] == prompts["keys"]
    frames = None
    if "feats" in full:
        audio, lens = model.encode_audio(full["feats"], full["feats_lengths"])
        frames = model.row_frames(audio, lens, None, len(out))
    hidden, _ = run_decoder(backbone(model.llama_model), model.embed(full["input_ids"], full["kinds"], frames),
                            full["attention_mask"], full["position_ids"])
    n_gold = 0
    for b, (row, rec) in enumerate(zip(out, recs)):
        assert row["speech_ids"], row
        n_gold += row["speech_ids"] == rec["response_tokens"]
        labels, kinds, ids = full["labels"][b, 1:], full["kinds"][b, 1:], full["input_ids"][b]
        at = ((labels != IGNORE_ID) & (kinds == KIND_SPEECH)).nonzero().squeeze(-1)
        pred = model.speech_head(hidden[b, at]).argmax(-1).tolist()
        want = [*row["speech_ids"], model.speech_bos] if row["finished"] else row["speech_ids"]
        assert pred[1:1 + len(want)] == want  # pred[0]: the speech BOS, forced at decoding time
        bos = int(((full["kinds"][b] == KIND_SPEECH) & (ids == model.speech_bos)).nonzero()[0])
        fed = int((full["kinds"][b, bos:] == KIND_TEXT).sum() - (full["attention_mask"][b] == 0).sum())
        runs = model.interleave.layout(spoken_ids(tok, row["text_ids"], said[b] if task == "tts" else None),
                                       row["speech_ids"], model.speech_bos)
        assert fed == sum(len(r) for k, r in runs if k == "text") > 0
    assert n_gold >= 2  # the memorised codes come back: the model learnt from the chunks it now reads


@torch.no_grad()
def test_streamed_decoding_equals_generate_and_needs_the_text(trained):
    tok, model, batch = trained
    conf = GenerateConf(max_text_tokens=30, max_speech_tokens=40)
    prompts, out = generate(model, tok, batch, "tts", conf)
    rec = prompts["records"][0]
    dec = IncrementalDecoder(model)
    ContextBuilder(tok, model.speech_bos).user_turn(system_prompt("tts"), rec["response"], None).feed(dec)
    state = DecodeState()
    steps = list(decode_steps(dec, True, conf, state, text=False, spoken=lambda ids: tok.encode(rec["response"])))
    assert state.speech_ids == out[0]["speech_ids"] and state.finished == out[0]["finished"]
    assert [t for p, t in steps if p == "speech"] == state.speech_ids
    with pytest.raises(ValueError, match="spoken="):
        list(decode_steps(IncrementalDecoder(model), True, conf, DecodeState(), text=False))
    with pytest.raises(ValueError, match="spoken="):
        model.generate(**{k: prompts[k] for k in PROMPT_KEYS if k in prompts}, speak=prompts["speak"],
                       speech_only=prompts["speech_only"], conf=conf)
