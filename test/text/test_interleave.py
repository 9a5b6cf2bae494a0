import pytest

from test.echat_fixtures import make_corpus, make_tokenizer, tiny_model_conf
from wenet_echat.model import build_model
from wenet_echat.text.interleave import Interleave
from wenet_echat.text.targets import KIND_SPEECH, KIND_TEXT, build_example, flatten

BOS = 16


def test_from_conf_and_errors():
    for off in (None, False, []):
        assert Interleave.from_conf(off) is None
    assert Interleave.from_conf([4, 20]) == Interleave(4, 20)
    for bad in ([4], [4, 0], ["4", 20], [True, 3], 5, "4:20", {"text": 2, "speech": 6}, (4, 20)):
        with pytest.raises(ValueError, match="model.speech_text_interleave"):
            Interleave.from_conf(bad)


def test_layout_places_every_chunk_before_its_codes():
    il = Interleave(4, 10)
    text, codes = list(range(100, 110)), list(range(25))
    runs = il.layout(text, codes, BOS)
    assert runs == [("text", [100, 101, 102, 103]), ("speech", list(range(10))),
                    ("text", [104, 105, 106, 107]), ("speech", list(range(10, 20))),
                    ("text", [108, 109]), ("speech", [*range(20, 25), BOS])]
    assert il.chunk_before(text, 0) == text[:4] and il.chunk_before(text, 5) == []
    assert il.chunk_before(text, 30) == []  # text used up


def test_layout_when_speech_ends_first_or_on_a_chunk_boundary():
    il = Interleave(2, 3)
    # 5 codes + EOS = 6 speech positions: chunks before positions 0 and 3; the rest of the text is not fed
    assert il.layout(list(range(100, 110)), [0, 1, 2, 3, 4], BOS) == [
        ("text", [100, 101]), ("speech", [0, 1, 2]), ("text", [102, 103]), ("speech", [3, 4, BOS])]
    # 3 codes: the EOS is position 3, so the second chunk comes right before it
    assert il.layout([7, 8, 9], [0, 1, 2], BOS) == [
        ("text", [7, 8]), ("speech", [0, 1, 2]), ("text", [9]), ("speech", [BOS])]
    assert il.layout([], [0, 1], BOS) == [("speech", [0, 1, BOS])]


def test_text_end_closes_the_spoken_text():
    il = Interleave(4, 10, end=BOS + 1)
    # 10 text ids + the end id: the third chunk carries the last two and the end
    assert il.layout(list(range(100, 110)), list(range(25)), BOS)[4] == ("text", [108, 109, BOS + 1])
    # 8 ids fill two chunks: the end comes alone, before position 20, then nothing more is fed
    text = list(range(100, 108))
    assert il.chunk_before(text, 20) == [BOS + 1] and il.chunk_before(text, 30) == []
    assert Interleave.from_conf([4, 10], end=7) == Interleave(4, 10, end=7)


def test_text_end_config_errors(tok):
    tok, _ = tok
    conf = tiny_model_conf()
    with pytest.raises(ValueError, match=r"speech_text_end: true needs model.speech_text_interleave"):
        build_model({**conf, "speech_text_end": True}, tok.vocab_size, tok.eos_id, tok.pad_id)
    with pytest.raises(ValueError, match="model.speech_text_end must be true or false, got 'yes'"):
        build_model({**conf, "speech_text_interleave": [2, 3], "speech_text_end": "yes"}, tok.vocab_size,
                    tok.eos_id, tok.pad_id)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("il")
    _, recs = make_corpus(root, n=3)
    return make_tokenizer(root, recs), recs


@pytest.mark.parametrize("task", ["tts", "s2s_chat", "s2s_think"])
def test_example_carries_the_reply_chunks_without_loss(tok, task):
    tok, recs = tok
    rec = dict(recs[0], response_tokens=list(range(11)))
    plain = build_example(rec, task, tok, None, True, BOS)
    ex = build_example(rec, task, tok, None, True, BOS, interleave=Interleave(3, 4))
    audio = 5 if task != "tts" else None
    fp, fi = flatten(plain, audio), flatten(ex, audio)
    reply = tok.encode(rec["response"])
    start = fi.ids.index(BOS, len(flatten(ex.prompt(), audio).ids))  # the speech BOS after the text target
    phase = list(zip(fi.ids[start:], fi.kinds[start:], fi.loss_mask[start:]))
    fed = [i for i, k, _ in phase if k == KIND_TEXT]
    assert fed == reply[: 3 * 3]  # 11 codes + EOS = 12 positions: chunks before 0, 4 and 8
    assert all(not loss for _, k, loss in phase if k == KIND_TEXT)
    speech = [(i, loss) for i, k, loss in phase if k == KIND_SPEECH]
    assert [i for i, _ in speech] == [BOS, *range(11), BOS] and all(loss for _, loss in speech)
    # the same labelled tokens as the plain layout, and the same prompt
    labelled = [i for i, m in zip(fp.ids, fp.loss_mask) if m]
    assert [i for i, m in zip(fi.ids, fi.loss_mask) if m] == labelled
    assert flatten(ex.prompt(), audio) == flatten(plain.prompt(), audio)
    assert len(fi.ids) == len(fp.ids) + len(fed)
