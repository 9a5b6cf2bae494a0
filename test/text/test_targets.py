import random

import pytest
import torch

from wenet_echat.text.labels import TASKS
from wenet_echat.text.prompts import ASSISTANT_NAME, INSTRUCTIONS, SYSTEM_PROMPTS, parse_tag_string, tag_string
from wenet_echat.text.targets import (
    CHAT_TASKS,
    IGNORE_ID,
    KIND_AUDIO,
    KIND_SPEECH,
    KIND_TEXT,
    MissingFieldError,
    build_example,
    collate,
    flatten,
    joint_labels,
    pack,
)
from wenet_echat.text.think import MASK_TAG, THINK_BEGIN, THINK_END, build_tag_think, wrap_think
from wenet_echat.text.tokenizer import IM_END, IM_START, HFTokenizer, SentencePieceTokenizer, train_sentencepiece

TEXT = "I lost my keys again, can you help me?"
REPLY = "Oh no, that is stressful. Let us look together."
CODES = [5, 17, 4095, 0, 99]
LABELS = {"age": "adult", "gender": "female", "emotion": "sad", "event": None}
REC = {"key": "utt1", "wav": "a.wav", "text": TEXT, "labels": LABELS, "response": REPLY,
       "response_emotion": "comforting", "response_tokens": CODES}
THINK = build_tag_think(TEXT, LABELS, "comforting")

EXPECTED_KINDS = {
    "asr": ["text", "audio", "text", "text"],
    "tag": ["text", "audio", "text", "text"],
    "s2t_chat": ["text", "audio", "text", "text"],
    "t2t": ["text", "text"],
    "tts": ["text", "speech"],
    "s2s_chat": ["text", "audio", "text", "text", "speech"],
    "s2s_think": ["text", "audio", "text", "text", "speech"],
}
EXPECTED_TARGET = {
    "asr": TEXT,
    "tag": "<adult> <female> <sad> <&&>",
    "s2t_chat": REPLY,
    "t2t": REPLY,
    "s2s_chat": REPLY,
    "s2s_think": wrap_think(THINK) + REPLY,
}


def _corpus():
    out = []
    for i in range(6):
        out += [TEXT, REPLY, THINK, f"Sentence number {i} about the weather and music."]
    out += list(SYSTEM_PROMPTS.values()) + [p for t in INSTRUCTIONS.values() for p in t]
    return out


def _hf_dir(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<|endoftext|>", IM_START, IM_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token="<|endoftext|>").save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=["sentencepiece", "hf"])
def tok(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    if request.param == "sentencepiece":
        return SentencePieceTokenizer(train_sentencepiece(_corpus(), d / "spm", vocab_size=600))
    return HFTokenizer(_hf_dir(d / "hf"))


@pytest.fixture(scope="module")
def spm(tmp_path_factory):
    d = tmp_path_factory.mktemp("spm_only")
    return SentencePieceTokenizer(train_sentencepiece(_corpus(), d / "spm", vocab_size=600))


def _loss_text(tok, ex):
    """Decode the text ids that carry loss, in order."""
    ids = [i for s in ex.segments if s.kind == "text" for i, m in zip(s.ids, s.loss_flags()) if m]
    return tok.decode(ids)


@pytest.mark.parametrize("task", list(EXPECTED_KINDS))
def test_layout_and_loss_per_task(tok, task):
    ex = build_example(REC, task, tok)
    assert ex.kinds == EXPECTED_KINDS[task]
    assert ex.task == task and ex.key == "utt1"
    prompt = ex.segments[0]
    assert prompt.loss is False and tok.decode(prompt.ids).startswith(f"{IM_START}system\n{SYSTEM_PROMPTS[task]}")
    # the prompt text (all loss-free segments before the target) follows the chat template
    pre = "".join(tok.decode(s.ids) if s.kind == "text" else "[AUDIO]" for s in ex.prompt().segments)
    user = {"asr": INSTRUCTIONS["asr"][0], "tag": INSTRUCTIONS["tag"][0], "tts": REPLY, "t2t": TEXT}.get(task, "")
    audio = "" if task in ("tts", "t2t") else "[AUDIO]"
    assert pre == (f"{IM_START}system\n{SYSTEM_PROMPTS[task]}{IM_END}\n{IM_START}user\n{user}{audio}"
                   f"{IM_END}\n{IM_START}assistant\n")
    assert all(s.loss is False for s in ex.prompt().segments)
    if task == "tts":
        assert _loss_text(tok, ex) == ""
    else:
        target = ex.segments[-2] if task.startswith("s2s") else ex.segments[-1]
        assert target.name == "target" and target.ids[-1] == tok.eos_id and target.loss_flags()[-1]
        want = EXPECTED_TARGET[task]
        assert ex.target_text == want
        assert tok.decode(target.ids) == want + IM_END
        assert _loss_text(tok, ex) == want.replace(MASK_TAG, "") + IM_END
    if task in ("tts", "s2s_chat", "s2s_think"):
        speech = ex.segments[-1]
        assert speech.ids == [4096, *CODES, 4096] and speech.loss is True


HISTORY = [{"text": "I could not sleep last night.", "response": "That is hard; what kept you awake?"},
           {"text": "The neighbours had a party.", "response": "Oh no, that sounds exhausting."}]


@pytest.mark.parametrize("task", list(EXPECTED_KINDS))
def test_history_goes_between_system_and_user_turn_of_chat_tasks(tok, task):
    plain, with_history = build_example(REC, task, tok), build_example(dict(REC, history=HISTORY), task, tok)
    prompt = tok.decode(with_history.segments[0].ids)
    if task not in CHAT_TASKS:  # understanding and TTS prompts ignore the dialogue
        assert [s.ids for s in with_history.segments] == [s.ids for s in plain.segments]
        return
    turns = "".join(f"{IM_START}user\n{h['text']}{IM_END}\n{IM_START}assistant\n{h['response']}{IM_END}\n"
                    for h in HISTORY)
    assert prompt.startswith(f"{IM_START}system\n{SYSTEM_PROMPTS[task]}{IM_END}\n{turns}{IM_START}user\n")
    # the earlier replies carry no loss: the loss-bearing text is exactly the current target
    assert _loss_text(tok, with_history) == _loss_text(tok, plain)
    assert with_history.kinds == plain.kinds


def test_mask_spans_carry_no_loss(tok):
    rec = dict(REC, labels={"age": None, "gender": "male", "emotion": None, "event": "rain"}, response_emotion=None)
    ex = build_example(rec, "s2s_think", tok)
    target = ex.segments[3]
    assert ex.target_text.count(MASK_TAG) == 3  # age, emotion and the reply emotion
    masked = [i for i, m in zip(target.ids, target.loss_flags()) if not m]
    assert tok.decode(masked) == MASK_TAG * 3
    assert _loss_text(tok, ex) == ex.target_text.replace(MASK_TAG, "") + IM_END
    tag = build_example(rec, "tag", tok)
    assert tag.target_text == f"{MASK_TAG} <male> {MASK_TAG} <rain>"
    with pytest.raises(MissingFieldError, match="'labels'"):
        build_example(dict(REC, labels={}), "tag", tok)
    assert _loss_text(tok, tag) == " <male>  <rain>" + IM_END


def test_mask_span_is_one_id_with_sentencepiece(spm):
    ex = build_example(dict(REC, labels=dict.fromkeys(LABELS)), "tag", spm)
    target = ex.segments[-1]
    assert target.ids == [spm.special_ids[MASK_TAG], *spm.encode(" "), spm.special_ids[MASK_TAG], *spm.encode(" "),
                          spm.special_ids[MASK_TAG], *spm.encode(" "), spm.special_ids[MASK_TAG], spm.eos_id]
    assert sum(target.loss_flags()) == 4  # the three spaces and EOS


def test_think_false_drops_cot_and_gold_think_is_used(tok):
    ex = build_example(REC, "s2s_think", tok, think=False)
    assert ex.target_text == REPLY
    assert THINK_BEGIN not in tok.decode(ex.segments[3].ids)
    assert tok.decode(ex.segments[0].ids).startswith(f"{IM_START}system\n{SYSTEM_PROMPTS['s2s_chat']}")
    gold = build_example(dict(REC, think="the user sounds sad"), "s2s_think", tok)
    assert gold.target_text == f"{THINK_BEGIN}the user sounds sad{THINK_END}{REPLY}"
    # no think field and no labels -> error names the field
    rec = {k: v for k, v in REC.items() if k != "labels"}
    with pytest.raises(MissingFieldError, match="'labels'"):
        build_example(rec, "s2s_think", tok)
    assert build_example(rec, "s2s_think", tok, think=False).target_text == REPLY


@pytest.mark.parametrize("task", ["tts", "s2s_chat", "s2s_think"])
def test_speech_task_without_tokens_names_key_and_task(tok, task):
    rec = {k: v for k, v in REC.items() if k != "response_tokens"}
    with pytest.raises(MissingFieldError, match=f"task '{task}' needs field 'response_tokens'") as err:
        build_example(rec, task, tok)
    assert err.value.field == "response_tokens" and err.value.task == task and err.value.key == "utt1"
    assert "utt1" in str(err.value)
    build_example(rec, "s2t_chat", tok)  # the text-only fallback works
    with pytest.raises(ValueError, match="response_tokens must be ints"):
        build_example(dict(REC, response_tokens=[1, 4096]), task, tok)


def test_instruction_sampling_is_seeded(spm):
    eval_ex = build_example(REC, "asr", spm)
    assert spm.decode(eval_ex.segments[0].ids).endswith(INSTRUCTIONS["asr"][0])
    a = [spm.decode(build_example(REC, "tag", spm, rng=random.Random(3)).segments[0].ids) for _ in range(2)]
    assert a[0] == a[1]
    seen = {spm.decode(build_example(REC, "asr", spm, rng=random.Random(s)).segments[0].ids) for s in range(20)}
    assert len(seen) > 1


def test_prompts_name_echat_and_tag_strings():
    assert set(TASKS) <= set(SYSTEM_PROMPTS)
    for text in SYSTEM_PROMPTS.values():
        assert ASSISTANT_NAME in text and "OSUM" not in text
    assert tag_string({"age": "adult", "gender": "female", "emotion": "sad", "event": "none"}) == \
        "<adult> <female> <sad> <none>"
    assert tag_string(None) == " ".join([MASK_TAG] * 4)
    assert parse_tag_string("<female> <old> <bored> <none>") == \
        {"age": "old", "gender": "female", "emotion": None, "event": "none"}


def test_flatten_is_contiguous(tok):
    ex = build_example(REC, "s2s_think", tok)
    flat = flatten(ex, audio_len=7)
    n = len(flat.ids)
    assert len(flat.kinds) == len(flat.loss_mask) == n and flat.positions == list(range(n))
    assert sum(len(s.ids) for s in ex.segments if s.ids is not None) + 7 + 2 == n
    assert flat.ids == [i for s in ex.segments for i in (s.ids if s.ids is not None else [4097, *range(7), 4098])]
    # the audio slot: [4097] frames 0..6 [4098]
    start = len(ex.segments[0].ids)
    assert flat.ids[start:start + 9] == [4097, *range(7), 4098]
    assert flat.kinds[start:start + 9] == [KIND_SPEECH, *[KIND_AUDIO] * 7, KIND_SPEECH]
    assert flat.kinds.count(KIND_AUDIO) == 7
    # speech at the end, wrapped by 4096, with loss
    assert flat.ids[-len(CODES) - 2:] == [4096, *CODES, 4096]
    assert flat.kinds[-len(CODES) - 2:] == [KIND_SPEECH] * (len(CODES) + 2)
    assert all(flat.loss_mask[-len(CODES) - 2:])
    # loss only after the assistant header
    first = flat.loss_mask.index(True)
    assert first == start + 9 + len(ex.segments[2].ids)
    assert all(k == KIND_TEXT for k in flat.kinds[:start])
    with pytest.raises(ValueError, match="1 audio segment"):
        flatten(ex)
    tts = flatten(build_example(REC, "tts", tok))
    assert KIND_AUDIO not in tts.kinds


def test_pack_and_collate(tok):
    exs = [build_example(REC, "asr", tok), build_example(REC, "tts", tok), build_example(REC, "s2s_chat", tok)]
    lens = [3, None, 5]
    flats = [flatten(e, a) for e, a in zip(exs, lens)]
    packed = pack(exs, lens)
    assert packed.seq_lens == [len(f.ids) for f in flats]
    assert packed.ids == sum((f.ids for f in flats), [])
    assert packed.positions == sum((f.positions for f in flats), [])
    batch = collate(flats, pad_id=tok.pad_id)
    longest = max(len(f.ids) for f in flats)
    assert batch["input_ids"].shape == (3, longest)
    for b, f in enumerate(flats):
        n = len(f.ids)
        assert batch["lengths"][b] == n
        assert batch["input_ids"][b, :n].tolist() == f.ids  # nothing inserted in the middle
        assert (batch["input_ids"][b, n:] == tok.pad_id).all()
        assert batch["attention_mask"][b].tolist() == [1] * n + [0] * (longest - n)
        assert batch["position_ids"][b].tolist() == list(range(longest))
        want = [i if m else IGNORE_ID for i, m in zip(f.ids, f.loss_mask)] + [IGNORE_ID] * (longest - n)
        assert batch["labels"][b].tolist() == want
    joint = joint_labels(batch["labels"], batch["kinds"], text_vocab_size=1000)
    speech = (batch["kinds"] == KIND_SPEECH) & (batch["labels"] != IGNORE_ID)
    assert torch.equal(joint[speech], batch["labels"][speech] + 1000)
    assert torch.equal(joint[~speech], batch["labels"][~speech])
    assert joint[2].max().item() == 1000 + 4096
