import json
import os

import pytest

from wenet_echat.bin import train_tokenizer
from wenet_echat.text.think import MASK_TAG, THINK_BEGIN, THINK_END, build_tag_think
from wenet_echat.text.tokenizer import (
    CHAT_MARKERS,
    IM_END,
    IM_START,
    TOKENIZERS,
    HFTokenizer,
    SentencePieceTokenizer,
    build_tokenizer,
    label_tags,
    train_sentencepiece,
)

SENTENCES = [
    "I lost my keys again, can you help me find them?",
    "What a lovely sunny day it is today!",
    "My grandmother is coming to visit us next week.",
    "I failed the exam and I feel terrible about it.",
    "Could you tell me a funny story before bed?",
    "The train was late for the third time this week.",
    "We won the match, I am so happy right now!",
    "There is a strange noise coming from the kitchen.",
]
LABELS = {"age": "adult", "gender": "female", "emotion": "sad", "event": None}


def corpus():
    out = []
    for i, s in enumerate(SENTENCES * 4):
        out.append(s)
        out.append(build_tag_think(s, LABELS, "comforting" if i % 2 else None))
        out.append(f"Oh no, I am sorry to hear that. Number {i}.")
    return out


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("spm") / "spm"
    return train_sentencepiece(corpus(), prefix, vocab_size=500)


def test_markers_are_single_ids_and_round_trip(spm_model):
    tok = SentencePieceTokenizer(spm_model)
    assert tok.special_ids[IM_END] == tok.eos_id
    for marker in (*CHAT_MARKERS, *label_tags()):
        ids = tok.encode(marker)
        assert ids == [tok.special_ids[marker]], marker
        assert tok.decode(ids) == marker
    # never split inside running text either, and <think end> wins over <think>
    text = f"{IM_START}user\nhi{IM_END}\n{THINK_BEGIN}age: <adult>, gender: {MASK_TAG}{THINK_END}ok"
    ids = tok.encode(text)
    for marker in (IM_START, IM_END, THINK_BEGIN, THINK_END, MASK_TAG, "<adult>"):
        assert tok.special_ids[marker] in ids
    assert tok.decode(ids) == text
    assert len(set(tok.special_ids.values())) == len(tok.special_ids)
    assert tok.marker_id(THINK_END) == tok.special_ids[THINK_END]
    with pytest.raises(KeyError, match="not a single token"):
        tok.marker_id("<nope>")
    assert 0 <= tok.pad_id < tok.vocab_size and tok.pad_id not in tok.special_ids.values()


def test_sentencepiece_round_trip(spm_model):
    tok = SentencePieceTokenizer(spm_model)
    for s in [*corpus()[:12], "  leading and  double spaces ", "unseen: é, 😀, Ωmega\tTab", "line\nbreak 2024"]:
        assert tok.decode(tok.encode(s)) == s
    # learned pieces are shorter than characters on corpus text
    assert len(tok.encode(SENTENCES[0])) < len(SENTENCES[0]) / 1.5


def test_training_is_deterministic_and_atomic(tmp_path):
    a = train_sentencepiece(corpus(), tmp_path / "a", vocab_size=400)
    b = train_sentencepiece(corpus(), tmp_path / "b", vocab_size=400)
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a.vocab").read_text() == (tmp_path / "b.vocab").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.model", "a.vocab", "b.model", "b.vocab"]
    with pytest.raises(ValueError, match="too small"):
        train_sentencepiece(corpus(), tmp_path / "c", vocab_size=100)
    assert not (tmp_path / "c.model").exists()


def test_registry_and_missing_model(spm_model, tmp_path):
    assert {"sentencepiece", "hf"} <= set(TOKENIZERS.names())
    tok = build_tokenizer({"type": "sentencepiece", "model": str(spm_model)})
    assert isinstance(tok, SentencePieceTokenizer)
    with pytest.raises(FileNotFoundError, match="nope.model"):
        SentencePieceTokenizer(tmp_path / "nope.model")


def write_tiny_hf_tokenizer(path, extra_specials=()):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *extra_specials]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.save_pretrained(str(path))
    return path


def test_hf_tokenizer_from_local_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = write_tiny_hf_tokenizer(tmp_path / "qwen_tiny")
    tok = build_tokenizer({"type": "hf", "path": str(d)})
    assert isinstance(tok, HFTokenizer)
    vocab = tok.tok.get_vocab()
    assert tok.eos_id == vocab[IM_END] == tok.special_ids[IM_END]
    assert tok.special_ids[IM_START] == vocab[IM_START]
    assert tok.pad_id == vocab["<|endoftext|>"]
    assert THINK_END not in tok.special_ids  # ordinary text in a Qwen vocabulary
    s = f"{IM_START}system\nYou are EChat.{IM_END}\n{THINK_BEGIN}age: {MASK_TAG}{THINK_END} é 😀"
    ids = tok.encode(s)
    assert ids.count(tok.eos_id) == 1 and tok.decode(ids) == s
    assert tok.vocab_size >= max(ids) + 1


def test_hf_tokenizer_errors_name_the_dir(tmp_path):
    missing = tmp_path / "no_such_llm"
    with pytest.raises(FileNotFoundError, match="no_such_llm"):
        HFTokenizer(missing)
    empty = tmp_path / "empty_llm"
    empty.mkdir()
    with pytest.raises(OSError, match="empty_llm"):
        HFTokenizer(empty)


def test_train_tokenizer_cli(tmp_path, capsys):
    data = tmp_path / "data.list"
    rows = [{"key": f"u{i}", "text": s, "labels": LABELS, "response": "I am here for you.", "response_emotion": "sad"}
            for i, s in enumerate(SENTENCES)]
    rows.append({"key": "g", "text": "hi", "think": "a gold chain of thought"})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prefix = tmp_path / "lang" / "spm"
    argv = ["--data_list", str(data), "--model_prefix", str(prefix), "--vocab_size", "450"]
    assert train_tokenizer.main(argv) == 0
    out = capsys.readouterr().out
    assert "vocab size" in out and "coverage" in out
    tok = SentencePieceTokenizer(f"{prefix}.model")
    assert tok.decode(tok.encode("a gold chain of thought")) == "a gold chain of thought"
    mtime = os.path.getmtime(f"{prefix}.model")
    assert train_tokenizer.main(argv) == 0
    assert "up to date" in capsys.readouterr().out
    assert os.path.getmtime(f"{prefix}.model") == mtime
    # newer input -> retrain
    os.utime(data, (mtime + 10, mtime + 10))
    assert train_tokenizer.main(argv) == 0
    assert "up to date" not in capsys.readouterr().out
