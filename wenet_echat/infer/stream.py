"""Token-by-token decoding of one conversation over :class:`~wenet_echat.model.EChatModel`'s public parts.

:meth:`EChatModel.generate` decodes a padded batch to the end and returns whole outputs. A live chat needs one
sequence decoded a token at a time, a KV cache that outlives a turn (the conversation so far is the cached prefix
of the next turn) and a way to stop between two tokens. :class:`IncrementalDecoder` keeps that cache and feeds
embeddings (``EChatModel.embed``) through the LLM stack (``wenet_echat.llm.run_decoder``); :func:`decode_steps`
runs the same two phases as ``generate`` (text with the LM head over the text vocabulary until ``<|im_end|>``,
then, when the task speaks, the forced speech BOS and the speech head until the speech EOS) and yields each token
as soon as it is picked. With greedy settings both give the same tokens (the tests check it).

:class:`ContextBuilder` lays out a conversation the way :func:`wenet_echat.text.targets.build_prompt` lays out one
turn (system and user turn in the Qwen chat template, the user's audio as ``[4097] frames [4098]``); later turns
repeat the user/assistant part without the system prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from wenet_echat.llm import backbone, new_decode_cache, run_decoder
from wenet_echat.model import EChatModel, GenerateConf
from wenet_echat.model.echat import SpeechProcessor, block_repeated_ngrams, next_speech_code
from wenet_echat.text.targets import KIND_AUDIO, KIND_SPEECH, KIND_TEXT
from wenet_echat.text.tokenizer import IM_END, IM_START, TextTokenizer


def crop_cache(cache: Any, length: int) -> None:
    """Cut a transformers KV cache back to its first ``length`` positions (a negative ``crop`` argument removes
    that many positions in every transformers version that has ``crop``)."""
    have = int(cache.get_seq_length())
    if length > have:
        raise ValueError(f"cannot crop a cache of {have} positions to {length}")
    if length < have:
        cache.crop(length - have)


class IncrementalDecoder:
    """The KV cache of one sequence and the last hidden state; ``feed`` appends positions, ``crop`` removes them.

    Not thread-safe: one conversation is decoded by one thread at a time (the session serialises its turns).
    """

    def __init__(self, model: EChatModel, kv_cache: str = "static"):
        self.model = model
        self.kv_cache = kv_cache  # GenerateConf.kv_cache: "static" (lean step where supported) or "hf"
        self.stack = backbone(model.llama_model)
        self.lm_head = model.llama_model.get_output_embeddings()
        self.device = next(model.parameters()).device
        self.cache: Any = None
        self.length = 0
        self.hidden: torch.Tensor | None = None  # (1, H) after the last fed position
        self.steps = 0  # forward calls, for throughput figures
        self.fed = 0  # positions fed in total (crops do not subtract)

    @torch.inference_mode()
    def feed(self, emb: torch.Tensor) -> None:
        """Append input embeddings ``(1, T, H)`` (positions ``length .. length+T-1``)."""
        n = emb.size(1)
        if n == 0:
            return
        pos = torch.arange(self.length, self.length + n, device=self.device).unsqueeze(0)
        mask = torch.ones(1, self.length + n, dtype=torch.long, device=self.device)
        if self.cache is None:
            self.cache = new_decode_cache(self.stack, 1, self.kv_cache)
        hidden, self.cache = run_decoder(self.stack, emb, mask, pos, cache=self.cache, use_cache=True)
        self.length += n
        self.fed += n
        self.hidden = hidden[:, -1]
        self.steps += 1

    def feed_ids(self, ids: list[int], kinds: list[int], frames: torch.Tensor | None = None) -> None:
        """Append ids of the given embedding kinds (``frames`` (F, H): the adapter output for ``KIND_AUDIO``)."""
        t_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        t_kinds = torch.tensor([kinds], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            emb = self.model.embed(t_ids, t_kinds, None if frames is None else frames.unsqueeze(0))
        self.feed(emb)

    def crop(self, length: int) -> None:
        """Forget every position from ``length`` on; the hidden state is gone until the next ``feed``."""
        if length == 0:
            self.cache, self.length = None, 0
        elif self.cache is not None:
            crop_cache(self.cache, length)
            self.length = length
        self.hidden = None

    def _last(self) -> torch.Tensor:
        if self.hidden is None:
            raise RuntimeError("nothing fed since the last crop: feed a prompt before decoding")
        return self.hidden

    @torch.inference_mode()
    def text_logits(self) -> torch.Tensor:
        """(1, text vocabulary) float logits of the next text token."""
        return self.lm_head(self._last())[:, : self.model.text_vocab_size].float()

    @torch.inference_mode()
    def speech_logits(self) -> torch.Tensor:
        """(1, codes + 1) float logits of the next speech token (the last class is the speech EOS)."""
        head = self.model.speech_head
        return head(self._last().to(head.weight.dtype)).float()  # the head may stay fp32 under a bf16 LLM


@dataclass
class DecodeState:
    """What :func:`decode_steps` produced; ``finished``: stopped at the EOS of its last phase, not at a limit."""

    text_ids: list[int] = field(default_factory=list)
    speech_ids: list[int] = field(default_factory=list)
    text_eos: bool = False
    finished: bool = False
    cancelled: bool = False


def decode_steps(dec: IncrementalDecoder, speak: bool, conf: GenerateConf, state: DecodeState,
                 cancelled: Callable[[], bool] = lambda: False, gen: torch.Generator | None = None,
                 speech_processors: Sequence[SpeechProcessor] = (), text: bool = True,
                 spoken: Callable[[list[int]], list[int]] | None = None) -> Iterator[tuple[str, int]]:
    """Yield ``("text", id)`` then (``speak``) ``("speech", code)`` pairs as they are picked, from a decoder whose
    last fed position is the end of the prompt. ``state`` collects the ids; ``cancelled()`` is checked before
    every token (a True answer ends the generator with ``state.cancelled``). ``speech_processors`` map
    ``(codes so far, speech logits (codes + 1,))`` to new logits before each speech pick (e.g.
    :class:`~wenet_echat.infer.repetition.SpeechRepetitionBlocker`). ``text=False`` (TTS) skips the text phase:
    the speech BOS follows the prompt directly, as in the TTS training sequences (no text EOS before it).
    ``spoken(text_ids)``: the ids of the text the speech phase says, fed in chunks between its codes when the model
    interleaves them (``model.interleave``; e.g. :func:`wenet_echat.infer.decode.spoken_ids`)."""
    model = dec.model
    eos = model.eos_id
    interleave = model.interleave
    if interleave is not None and speak and spoken is None:
        raise ValueError("this model interleaves the spoken text into its speech phase "
                         "(model.speech_text_interleave): decode_steps needs spoken=")
    while text and len(state.text_ids) < conf.max_text_tokens:
        if cancelled():
            state.cancelled = True
            return
        logits = block_repeated_ngrams(dec.text_logits()[0], state.text_ids, conf.text_no_repeat_ngram)
        tok = int(conf.text.pick(logits[None], gen)[0])
        if tok == eos:
            state.text_eos = True
            break
        state.text_ids.append(tok)
        yield "text", tok
        dec.feed_ids([tok], [KIND_TEXT])
    if not speak:
        state.finished = state.text_eos
        return
    bos = model.speech_bos
    if text:
        dec.feed_ids([eos], [KIND_TEXT])
    dec.feed_ids([bos], [KIND_SPEECH])
    said = spoken(state.text_ids) if interleave is not None and spoken is not None else []
    while len(state.speech_ids) < conf.max_speech_tokens:
        if cancelled():
            state.cancelled = True
            return
        chunk = interleave.chunk_before(said, len(state.speech_ids)) if interleave is not None else []
        if chunk:
            dec.feed_ids(chunk, [KIND_TEXT] * len(chunk))
        tok = next_speech_code(dec.speech_logits()[0], state.speech_ids, conf, model.speech_codes,
                               speech_processors, gen)
        if tok == bos:
            state.finished = True
            return
        state.speech_ids.append(tok)
        yield "speech", tok
        dec.feed_ids([tok], [KIND_SPEECH])


class ContextBuilder:
    """Ids, embedding kinds and adapter frames of a stretch of conversation, fed to a decoder in one call."""

    def __init__(self, tokenizer: TextTokenizer, speech_bos: int):
        self.tok = tokenizer
        self.speech_bos = speech_bos
        self.ids: list[int] = []
        self.kinds: list[int] = []
        self.frames: list[torch.Tensor] = []
        self._n_frames = 0

    def __len__(self) -> int:
        return len(self.ids)

    def text(self, text: str) -> ContextBuilder:
        ids = self.tok.encode(text)
        self.ids += ids
        self.kinds += [KIND_TEXT] * len(ids)
        return self

    def audio(self, frames: torch.Tensor) -> ContextBuilder:
        """``[speech_bos+1]`` + the frames ``(F, H)`` + ``[speech_bos+2]``."""
        n = int(frames.size(0))
        self.ids += [self.speech_bos + 1, *range(self._n_frames, self._n_frames + n), self.speech_bos + 2]
        self.kinds += [KIND_SPEECH, *[KIND_AUDIO] * n, KIND_SPEECH]
        self.frames.append(frames)
        self._n_frames += n
        return self

    def user_turn(self, system: str | None, user_text: str, frames: torch.Tensor | None) -> ContextBuilder:
        """A user turn ending with the assistant header; ``system`` opens the conversation (first turn only).

        The text pieces are encoded exactly as ``build_prompt`` encodes them (head, audio, tail), so a first turn
        is the training prompt of its task token for token."""
        head = (f"{IM_START}system\n{system}{IM_END}\n" if system is not None else "") + f"{IM_START}user\n{user_text}"
        tail = f"{IM_END}\n{IM_START}assistant\n"
        if frames is None:
            return self.text(head + tail)
        return self.text(head).audio(frames).text(tail)

    def assistant_turn(self, reply: str) -> ContextBuilder:
        """The reply text of a finished turn and its end-of-turn marker (the chain of thought is not kept)."""
        return self.text(f"{reply}{IM_END}\n")

    def feed(self, dec: IncrementalDecoder) -> None:
        frames = torch.cat(self.frames, 0) if self.frames else None
        if self.ids:
            dec.feed_ids(self.ids, self.kinds, frames)


__all__ = ["ContextBuilder", "DecodeState", "IncrementalDecoder", "crop_cache", "decode_steps"]
