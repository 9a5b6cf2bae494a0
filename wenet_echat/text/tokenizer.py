"""Text tokenizers: a small common interface, a trainable SentencePiece model and a local HF LLM tokenizer.

Both map text to ids of the LLM's *text* vocabulary; speech tokens live in a separate table (DESIGN §1) and
never pass through here. The chat-template markers (``<|im_start|>``, ``<|im_end|>``) must each be one id;
``eos_id`` is ``<|im_end|>``, the end-of-turn token that ends the text phase.

Build by name (YAML ``tokenizer: {type: sentencepiece, model: data/lang/spm.model}``)::

    tok = build_tokenizer({"type": "sentencepiece", "model": "data/lang/spm.model"})
    tok = build_tokenizer({"type": "hf", "path": "exp/qwen2.5-0.5b-instruct"})
"""

from __future__ import annotations

import io
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from wenet_echat.text.labels import LABEL_VOCABS, REPLY_EMOTIONS
from wenet_echat.text.think import MASK_TAG, THINK_BEGIN, THINK_END
from wenet_echat.utils.fileio import atomic_open
from wenet_echat.utils.registry import Registry

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# chat-template and CoT markers, in the order the SentencePiece model assigns them ids (2, 3, ...)
CHAT_MARKERS: tuple[str, ...] = (IM_START, IM_END, THINK_BEGIN, THINK_END, MASK_TAG)


def label_tags() -> list[str]:
    """Every paralinguistic label as a tag (``<adult>``, ``<sad>``, ...), each once, in a fixed order."""
    seen: dict[str, None] = {}
    for vocab in (*LABEL_VOCABS.values(), REPLY_EMOTIONS):
        for value in vocab:
            seen.setdefault(f"<{value}>", None)
    return list(seen)


TOKENIZERS: Registry = Registry("tokenizer")


class TextTokenizer(ABC):
    """What the data pipeline, the target builder and the decoder need from a text tokenizer."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; markers inside the text (``<|im_end|>``...) become their single ids. No BOS/EOS."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, markers included (``decode(encode(s)) == s`` for ordinary text)."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of text ids (the LM head's width must be at least this)."""

    @property
    @abstractmethod
    def special_ids(self) -> dict[str, int]:
        """Marker string -> id, for the markers that are a single id (always ``<|im_start|>``, ``<|im_end|>``)."""

    @property
    def eos_id(self) -> int:
        """End of the assistant's text turn (``<|im_end|>``); generating it switches to the speech phase."""
        return self.special_ids[IM_END]

    @property
    @abstractmethod
    def pad_id(self) -> int:
        """Id used to right-pad batches (never seen by the loss)."""

    def marker_id(self, marker: str) -> int:
        """The single id of ``marker``; ``KeyError`` naming the known markers if it is not one id here."""
        try:
            return self.special_ids[marker]
        except KeyError:
            known = sorted(self.special_ids)
            raise KeyError(f"{marker!r} is not a single token of this tokenizer; known: {known}") from None


# --------------------------------------------------------------------------------------------- sentencepiece
def _sp_symbol(text: str) -> str:
    # SentencePiece escapes spaces to U+2581 before matching user-defined symbols, so "<think end>" must be
    # registered in its escaped form to stay a single piece.
    return text.replace(" ", "\u2581")


def train_sentencepiece(
    texts: Iterable[str],
    model_prefix: str | os.PathLike,
    vocab_size: int = 2000,
    model_type: str = "bpe",
    character_coverage: float = 1.0,
    user_symbols: Sequence[str] | None = None,
    with_label_tags: bool = True,
) -> Path:
    """Train a SentencePiece model on ``texts`` and write ``{model_prefix}.model`` and ``.vocab`` atomically.

    Deterministic: the same texts and options give a byte-identical model (one thread, no sentence sampling,
    nothing path-dependent stored). The chat markers (and, with ``with_label_tags``, every label tag) are
    user-defined symbols, so they are single ids and never split. Normalisation is the identity and whitespace
    is kept as is, with byte fallback for unseen characters, so ``decode(encode(s)) == s`` for any string.
    ``vocab_size`` is an upper bound: a small corpus yields a smaller vocabulary instead of an error.
    Returns the model path.
    """
    import sentencepiece as spm

    if model_type not in ("bpe", "unigram"):
        raise ValueError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}")
    sentences = [t for t in texts if t and t.strip()]
    if not sentences:
        raise ValueError("no text to train the SentencePiece model on")
    symbols = list(CHAT_MARKERS) + (label_tags() if with_label_tags else []) + list(user_symbols or [])
    symbols = list(dict.fromkeys(_sp_symbol(s) for s in symbols))
    min_size = 2 + len(symbols) + 256
    if vocab_size < min_size + 16:
        raise ValueError(f"vocab_size {vocab_size} too small: markers and byte fallback need {min_size} ids plus text")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        user_defined_symbols=symbols,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        split_digits=True,
        hard_vocab_limit=False,
        unk_id=0,
        pad_id=1,
        bos_id=-1,
        eos_id=-1,
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        max_sentence_length=1 << 16,
        minloglevel=2,
    )
    proto = buf.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=proto)
    model_path = Path(f"{model_prefix}.model")
    with atomic_open(model_path, "wb") as f:
        f.write(proto)
    with atomic_open(Path(f"{model_prefix}.vocab")) as f:
        for i in range(sp.get_piece_size()):
            f.write(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n")
    return model_path


@TOKENIZERS.register("sentencepiece")
class SentencePieceTokenizer(TextTokenizer):
    """A SentencePiece model trained by :func:`train_sentencepiece` (the mini recipe's LLM vocabulary)."""

    def __init__(self, model: str | os.PathLike):
        import sentencepiece as spm

        self.model_path = str(model)
        if not os.path.isfile(self.model_path):
            raise FileNotFoundError(f"SentencePiece model '{self.model_path}' not found (train it with "
                                    "python -m wenet_echat.bin.train_tokenizer)")
        self.sp = spm.SentencePieceProcessor(model_file=self.model_path)
        unk = self.sp.unk_id()
        self._special: dict[str, int] = {}
        for marker in (*CHAT_MARKERS, *label_tags()):
            i = self.sp.piece_to_id(_sp_symbol(marker))
            if i != unk:
                self._special[marker] = i
        for need in (IM_START, IM_END):
            if need not in self._special:
                raise ValueError(f"SentencePiece model '{self.model_path}' has no single piece for {need!r}; "
                                 "train it with train_sentencepiece")
        self._pad = self.sp.pad_id() if self.sp.pad_id() >= 0 else self._special[IM_END]

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def special_ids(self) -> dict[str, int]:
        return dict(self._special)

    @property
    def pad_id(self) -> int:
        return self._pad

    def is_byte(self, i: int) -> bool:
        """True for a byte-fallback piece (a character the model did not learn)."""
        return bool(self.sp.is_byte(int(i)))


# ------------------------------------------------------------------------------------------------------ hf
@TOKENIZERS.register("hf")
class HFTokenizer(TextTokenizer):
    """The tokenizer of a local Hugging Face LLM directory (Qwen2-style chat markers), never downloaded."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"HF tokenizer directory '{self.path}' does not exist")
        from transformers import AutoTokenizer

        try:
            self.tok = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        except Exception as e:  # transformers raises many types; re-raise naming the directory
            raise OSError(f"cannot load an HF tokenizer from '{self.path}': {e}") from e
        vocab = self.tok.get_vocab()
        self._special = {m: vocab[m] for m in (*CHAT_MARKERS, *label_tags()) if m in vocab}
        missing = [m for m in (IM_START, IM_END) if m not in self._special]
        if missing:
            raise ValueError(f"HF tokenizer in '{self.path}' lacks the chat marker(s) {missing}; "
                             "a Qwen2-style chat tokenizer is required")
        pad = self.tok.pad_token_id
        if pad is None:
            pad = vocab.get("<|endoftext|>", self._special[IM_END])
        self._pad = int(pad)
        self._size = len(self.tok)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    @property
    def vocab_size(self) -> int:
        return self._size

    @property
    def special_ids(self) -> dict[str, int]:
        return dict(self._special)

    @property
    def pad_id(self) -> int:
        return self._pad


def build_tokenizer(conf: dict[str, Any]) -> TextTokenizer:
    """Build from a config mapping ``{"type": name, **kwargs}`` (see the module docstring)."""
    conf = dict(conf)
    kind = conf.pop("type", None)
    if kind is None:
        raise KeyError(f"tokenizer config needs 'type' (one of {', '.join(TOKENIZERS.names())})")
    return TOKENIZERS.build(kind, conf)


__all__ = [
    "CHAT_MARKERS", "HFTokenizer", "IM_END", "IM_START", "SentencePieceTokenizer", "TOKENIZERS", "TextTokenizer",
    "build_tokenizer", "label_tags", "train_sentencepiece",
]
