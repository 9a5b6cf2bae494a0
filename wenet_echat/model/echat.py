"""``EChatModel``: Whisper-style encoder → adapter → decoder-only LLM with a separate speech embedding and head.

Parameter prefixes (the official OSUM-EChat checkpoint stores the adapter's three parts at the top level; see
:mod:`wenet_echat.model.convert` for the mapping)::

    encoder.*               Whisper-style speech encoder (50 Hz)
    adapter.down_sample_2.* adapter.speech_transformer.*  adapter.speech_llama_proj.*   (12.5 Hz, LLM width)
    llama_model.*           the HF ``*ForCausalLM`` (its text embedding and LM head)
    speech_token_emded.*    speech embedding: ``codes + 3`` rows (codes, speech BOS/EOS, audio BOS, audio EOS)
    speech_head.*           speech head: ``codes + 1`` outputs (codes, speech EOS)

Inputs come from :mod:`wenet_echat.text.targets`: every position has an id and an *embedding kind* (text id,
speech id or adapter frame), so one sequence can mix the prompt text, the user's audio and the reply's speech
tokens with no padding in between. The loss is one cross-entropy over the joined ``[text logits ; speech logits]``
classes, computed only at positions that carry a label (an LM head over 150 k classes is never applied to
prompt or audio positions).

:meth:`EChatModel.generate` decodes with the LLM's KV cache: a *text phase* (LM head, restricted to the text
vocabulary) until ``<|im_end|>``, then, for tasks that speak, a *speech phase* (speech BOS forced, speech head)
until the speech EOS. With ``speech_text_interleave`` the speech phase re-reads the spoken text in chunks
between chunks of codes (:mod:`wenet_echat.text.interleave`); ``generate`` feeds those chunks itself.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wenet_echat.adapter import ADAPTERS, causal_conv_lengths
from wenet_echat.encoder import (
    ENCODERS,
    conv_stem_lengths,
    load_hf_whisper_encoder,
    load_openai_whisper_encoder,
)
from wenet_echat.llm import LLMS, backbone, hidden_size, new_decode_cache, run_decoder
from wenet_echat.model.encoder_cache import EncoderCache
from wenet_echat.model.encoder_pretrain import ECHAT_KEYS, EncoderPretrainModel, build_encoder_pretrain
from wenet_echat.model.inputs import make_inputs
from wenet_echat.text.interleave import Interleave
from wenet_echat.text.targets import IGNORE_ID, KIND_AUDIO, KIND_SPEECH, KIND_TEXT, joint_labels
from wenet_echat.text.tokenizer import TextTokenizer

# speech-phase logits processor: (codes so far, one row's logits (codes + 1,)) -> logits
SpeechProcessor = Callable[[list[int], torch.Tensor], torch.Tensor]


@dataclass
class SamplingConf:
    """How one phase picks tokens: greedy when ``temperature == 0`` or ``top_k == 1``."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def pick(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.temperature <= 0 or self.top_k == 1:
            return logits.argmax(-1)
        logits = logits.float() / self.temperature
        if self.top_k > 0:
            kth = logits.topk(min(self.top_k, logits.size(-1)), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            sorted_logits, order = logits.sort(-1, descending=True)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum - sorted_logits.softmax(-1) > self.top_p  # keep the smallest prefix reaching top_p
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
        return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@dataclass
class GenerateConf:
    """Decoding limits and per-phase sampling (think/reply text and speech are set separately)."""

    max_text_tokens: int = 256
    max_speech_tokens: int = 1000
    min_speech_tokens: int = 0
    text: SamplingConf = field(default_factory=SamplingConf)
    speech: SamplingConf = field(default_factory=SamplingConf)
    seed: int | None = None
    # "static": a preallocated KV cache and the lean decoding step for Qwen2/Llama stacks
    # (wenet_echat.llm.kv_cache; other models fall back); "hf": transformers' forward and DynamicCache
    kv_cache: str = "static"
    # speech-phase logits processors: (codes so far, logits (codes + 1,)) -> logits, applied in order
    speech_processors: list[SpeechProcessor] = field(default_factory=list)
    # text phase: no n-gram of this length occurs twice in the generated think + reply text (0: off)
    text_no_repeat_ngram: int = 0

    def __post_init__(self) -> None:
        if self.text_no_repeat_ngram < 0:
            raise ValueError(f"text_no_repeat_ngram must be >= 0, got {self.text_no_repeat_ngram}")

    @classmethod
    def from_dict(cls, conf: dict[str, Any] | None) -> GenerateConf:
        conf = dict(conf or {})
        text = SamplingConf(**conf.pop("text", {}) or {})
        speech = SamplingConf(**conf.pop("speech", {}) or {})
        return cls(text=text, speech=speech, **conf)


def block_repeated_ngrams(logits: torch.Tensor, ids: Sequence[int], n: int) -> torch.Tensor:
    """The logits ``(vocab,)`` with ``-inf`` for every token that would complete an ``n``-gram already in ``ids``
    (no-repeat-n-gram blocking; ``n <= 0`` or nothing to block: ``logits`` itself, else a copy). Shared by
    :meth:`EChatModel.generate` and the streaming decoder."""
    if n <= 0 or len(ids) < n:
        return logits
    prefix = list(ids[len(ids) - n + 1 :]) if n > 1 else []
    banned = {ids[i + n - 1] for i in range(len(ids) - n + 1) if list(ids[i : i + n - 1]) == prefix}
    if not banned:
        return logits
    logits = logits.clone()
    logits[sorted(banned)] = float("-inf")
    return logits


def next_speech_code(logits: torch.Tensor, codes: list[int], conf: GenerateConf, speech_codes: int,
                     processors: Sequence[SpeechProcessor] = (), gen: torch.Generator | None = None) -> int:
    """One row's next speech id from its speech logits ``(codes + 1,)`` (the last class is the speech EOS): the
    ``processors`` map ``(codes so far, logits)`` to new logits, ``conf.speech`` picks, and an EOS before
    ``conf.min_speech_tokens`` codes becomes the best code. Shared by :meth:`EChatModel.generate` and the
    streaming decoder (``wenet_echat.infer.stream``) so both pick alike."""
    if processors:
        logits = logits.clone()
        for proc in processors:
            logits = proc(codes, logits)
    tok = int(conf.speech.pick(logits.unsqueeze(0), gen)[0])
    if tok == speech_codes and len(codes) < conf.min_speech_tokens:
        tok = int(logits[:speech_codes].argmax())
    return tok


class EChatModel(nn.Module):
    """See the module docstring. ``text_vocab_size`` is the tokenizer's size (the LM head may be wider)."""

    def __init__(self, encoder: nn.Module, adapter: nn.Module, llm: nn.Module, speech_codes: int,
                 text_vocab_size: int, eos_id: int, pad_id: int, ctc_weight: float = 0.0,
                 interleave: Interleave | None = None):
        super().__init__()
        self.encoder = encoder
        self.adapter = adapter
        self.llama_model = llm
        width = hidden_size(llm)
        self.speech_codes = int(speech_codes)
        self.speech_bos = self.speech_codes  # speech BOS/EOS; audio wrappers are +1 / +2
        self.speech_token_emded = nn.Embedding(self.speech_codes + 3, width)
        self.speech_head = nn.Linear(width, self.speech_codes + 1)
        self.text_vocab_size = int(text_vocab_size)
        self.eos_id, self.pad_id = int(eos_id), int(pad_id)
        self.interleave = interleave  # the speech phase's text chunks (model.speech_text_interleave), None: off
        self.lm_classes = int(llm.get_output_embeddings().weight.shape[0])
        # optional auxiliary CTC on the adapter output (ASR batches only): lets a randomly initialised encoder
        # align quickly in the mini recipe; OSUM-EChat itself has none (its encoder is pretrained), weight 0 there
        self.ctc_weight = float(ctc_weight)
        self.ctc_head = nn.Linear(width, self.text_vocab_size + 1) if self.ctc_weight > 0 else None
        if self.lm_classes < self.text_vocab_size:
            raise ValueError(f"the LM head has {self.lm_classes} classes, fewer than the {self.text_vocab_size} "
                             "text ids of the tokenizer")
        # outputs of the frozen encoder per utterance key (train_conf.encoder_cache; a plain attribute, not state)
        self.encoder_cache: EncoderCache | None = None
        self.encoder_cache_dropout = 0.0  # dropout on the cached output while training (train_conf key of that name)

    def make_inputs(self, batch: dict[str, Any], task: str, tokenizer: TextTokenizer,
                    rng: random.Random | None = None, think: bool = True, dropped: Counter[str] | None = None,
                    think_style: str = "auto", prompt_only: bool = False) -> dict[str, Any] | None:
        """:func:`~wenet_echat.model.inputs.make_inputs` with this model's frame counts and speech BOS."""
        return make_inputs(batch, task, tokenizer, self.audio_lengths, self.speech_bos, rng, think, prompt_only,
                           dropped, think_style, self.interleave)

    # ------------------------------------------------------------------------------------------- audio
    def audio_lengths(self, feats_lengths: torch.Tensor) -> torch.Tensor:
        """Adapter frames per item for log-mel lengths (100 Hz → 50 Hz stem → 12.5 Hz adapter)."""
        return causal_conv_lengths(conv_stem_lengths(feats_lengths))

    def encode_audio(self, feats: torch.Tensor, feats_lengths: torch.Tensor,
                     keys: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T, n_mels) log-mel → adapter output (N, T', H) in the LLM's dtype, lengths (N,). With an
        :attr:`encoder_cache` and the items' utterance ``keys``, the encoder output comes from the cache when every
        item is there; otherwise the encoder runs and its output is stored."""
        cache = self.encoder_cache if keys is not None else None
        cached = cache.lookup(keys, feats_lengths) if cache is not None else None
        if cached is not None:
            h, lens = (t.to(feats.device) for t in cached)
        else:
            h, lens = self.encoder(feats, feats_lengths)
            if cache is not None:
                cache.add(keys, feats_lengths.cpu(), h.detach().cpu(), lens.cpu())
        if cache is not None and self.training and self.encoder_cache_dropout > 0:
            h = F.dropout(h, self.encoder_cache_dropout)
        out, out_lens = self.adapter(h, lens)
        return out.to(self._llm_dtype()), out_lens

    def _llm_dtype(self) -> torch.dtype:
        return self.llama_model.get_input_embeddings().weight.dtype

    @staticmethod
    def row_frames(audio: torch.Tensor, audio_lengths: torch.Tensor,
                   audio_rows: list[list[int]] | None, batch: int) -> torch.Tensor:
        """Per sequence row, the valid frames of its audio items in order, concatenated: (B, F, H)."""
        if audio_rows is None:
            if audio.size(0) != batch:
                raise ValueError(f"{audio.size(0)} audio items for {batch} rows; pass audio_rows")
            return audio
        pieces = [torch.cat([audio[i, : int(audio_lengths[i])] for i in items], 0) if items
                  else audio.new_zeros(0, audio.size(-1)) for items in audio_rows]
        longest = max(1, max(p.size(0) for p in pieces))
        out = audio.new_zeros(batch, longest, audio.size(-1))
        for b, p in enumerate(pieces):
            out[b, : p.size(0)] = p
        return out

    # ------------------------------------------------------------------------------------------- embed
    def embed(self, input_ids: torch.Tensor, kinds: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings (B, T, H): text ids, speech ids, or adapter ``frames`` (B, F, H) by index."""
        text = self.llama_model.get_input_embeddings()(torch.where(kinds == KIND_TEXT, input_ids, 0))
        speech_ids = torch.where(kinds == KIND_SPEECH, input_ids, 0)
        speech = self.speech_token_emded(speech_ids).to(text.dtype)
        out = torch.where((kinds == KIND_SPEECH).unsqueeze(-1), speech, text)
        is_audio = kinds == KIND_AUDIO
        if bool(is_audio.any()):
            if frames is None:
                raise ValueError("the inputs have audio positions but no audio was given")
            idx = torch.where(is_audio, input_ids, 0).clamp(max=frames.size(1) - 1)
            audio = frames.gather(1, idx.unsqueeze(-1).expand(-1, -1, frames.size(-1))).to(text.dtype)
            out = torch.where(is_audio.unsqueeze(-1), audio, out)
        return out

    def joint_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[text logits ; speech logits]`` over the last dim."""
        text = self.llama_model.get_output_embeddings()(hidden)
        return torch.cat([text, self.speech_head(hidden.to(self.speech_head.weight.dtype)).to(text.dtype)], -1)

    # ----------------------------------------------------------------------------------------- forward
    def forward(self, input_ids: torch.Tensor, kinds: torch.Tensor, labels: torch.Tensor,
                attention_mask: torch.Tensor, position_ids: torch.Tensor, feats: torch.Tensor | None = None,
                feats_lengths: torch.Tensor | None = None, audio_rows: list[list[int]] | None = None,
                ctc_ids: torch.Tensor | None = None, ctc_lengths: torch.Tensor | None = None,
                audio_keys: list[str] | None = None, **_: Any) -> dict[str, torch.Tensor]:
        """Teacher-forced loss. Returns ``loss`` (mean CE over labelled tokens, plus ``ctc_weight`` x the CTC loss
        when ``ctc_ids`` are given), ``acc``, ``acc_text``, ``acc_speech``, the token counts
        ``n_tokens``/``n_text``/``n_speech`` and, with CTC, ``ctc``. ``audio_keys`` (one per audio item) let the
        encoder cache serve the encoder output."""
        frames = None
        ctc = None
        if feats is not None:
            if feats_lengths is None:
                raise ValueError("feats given without feats_lengths")
            audio, lens = self.encode_audio(feats, feats_lengths, audio_keys)
            frames = self.row_frames(audio, lens, audio_rows, input_ids.size(0))
            if self.ctc_head is not None and ctc_ids is not None and ctc_lengths is not None:
                ctc = self.ctc_loss(audio, lens, ctc_ids, ctc_lengths)
        emb = self.embed(input_ids, kinds, frames)
        hidden, _ = run_decoder(backbone(self.llama_model), emb, attention_mask, position_ids)
        target = joint_labels(labels, kinds, self.lm_classes)[:, 1:]
        sel = target != IGNORE_ID
        y = target[sel]
        if y.numel() == 0:
            raise ValueError("the batch has no labelled token")
        logits = self.joint_logits(hidden[:, :-1][sel]).float()
        loss = F.cross_entropy(logits, y)
        with torch.no_grad():
            hit = logits.argmax(-1) == y
            is_speech = y >= self.lm_classes
            n_speech = int(is_speech.sum())
            n_text = int(y.numel()) - n_speech
            out = {
                "acc": hit.float().mean(),
                "acc_text": hit[~is_speech].float().mean() if n_text else torch.tensor(float("nan")),
                "acc_speech": hit[is_speech].float().mean() if n_speech else torch.tensor(float("nan")),
                "n_tokens": torch.tensor(int(y.numel())),
                "n_text": torch.tensor(n_text),
                "n_speech": torch.tensor(n_speech),
            }
        if ctc is not None:
            out["ctc"] = ctc.detach()
            loss = loss + self.ctc_weight * ctc
        out["loss"] = loss
        return out

    def ctc_loss(self, audio: torch.Tensor, lens: torch.Tensor, ids: torch.Tensor,
                 id_lengths: torch.Tensor) -> torch.Tensor:
        """CTC of the transcript ids on the adapter frames (blank = the last class), mean per target token."""
        assert self.ctc_head is not None
        logp = self.ctc_head(audio).float().log_softmax(-1).transpose(0, 1)
        return F.ctc_loss(logp, ids.clamp(min=0), lens, id_lengths, blank=self.text_vocab_size,
                          reduction="mean", zero_infinity=True)

    # ---------------------------------------------------------------------------------------- generate
    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, kinds: torch.Tensor, attention_mask: torch.Tensor,
                 position_ids: torch.Tensor, speak: list[bool], feats: torch.Tensor | None = None,
                 feats_lengths: torch.Tensor | None = None, audio_rows: list[list[int]] | None = None,
                 conf: GenerateConf | None = None, speech_only: list[bool] | None = None,
                 spoken: Callable[[int, list[int]], list[int]] | None = None) -> list[dict[str, Any]]:
        """Batched decoding of left-padded prompts (see :func:`wenet_echat.text.targets.collate`).

        ``speak[b]``: row ``b`` goes on to the speech phase after its text EOS; ``speech_only[b]``: row ``b`` has no
        text phase (TTS: the speech BOS follows the prompt, as in training). ``spoken(b, text_ids)`` gives the ids
        of the text row ``b`` says (needed when the model interleaves them into its speech phase; e.g.
        :func:`wenet_echat.infer.decode.spoken_ids`). Returns per row ``text_ids``
        (without EOS), ``speech_ids`` (codes, without BOS/EOS), ``finished`` and the step/time of the first text
        and first speech token (seconds from the call).
        """
        conf = conf or GenerateConf()
        t0 = time.perf_counter()
        gen = None
        if conf.seed is not None:
            gen = torch.Generator(device=input_ids.device).manual_seed(int(conf.seed))
        batch = input_ids.size(0)
        if len(speak) != batch:
            raise ValueError(f"speak has {len(speak)} entries for {batch} rows")
        if self.interleave is not None and spoken is None and any(speak):
            raise ValueError("this model interleaves the spoken text into its speech phase "
                             "(model.speech_text_interleave): generate needs spoken=")
        frames = None
        if feats is not None:
            audio, lens = self.encode_audio(feats, feats_lengths)
            frames = self.row_frames(audio, lens, audio_rows, batch)
        stack = backbone(self.llama_model)
        emb = self.embed(input_ids, kinds, frames)
        mask = attention_mask.clone()
        past = new_decode_cache(stack, batch, conf.kv_cache)
        hidden, past = run_decoder(stack, emb, mask, position_ids, cache=past, use_cache=True)
        hidden = hidden[:, -1]
        next_pos = position_ids[:, -1] + 1
        # phase per row: 0 text, 1 speech BOS to force, 2 speech, 3 done
        if speech_only is not None and len(speech_only) != batch:
            raise ValueError(f"speech_only has {len(speech_only)} entries for {batch} rows")
        phase = [1 if speech_only and speech_only[b] and speak[b] else 0 for b in range(batch)]
        res: list[dict[str, Any]] = [{"text_ids": [], "speech_ids": [], "speech_times": [], "finished": False,
                                      "first_text_s": None, "first_speech_s": None} for _ in range(batch)]
        spoken_ids: list[list[int]] = [[] for _ in range(batch)]  # per row: the text its speech phase re-reads
        feed: list[list[int]] = [[] for _ in range(batch)]  # per row: text ids still to feed before the next code
        lm_head = self.llama_model.get_output_embeddings()
        limit = conf.max_text_tokens + (conf.max_speech_tokens + 2 if any(speak) else 0)
        if self.interleave is not None:  # and the text chunks fed before max_speech_tokens codes at most
            limit += (conf.max_speech_tokens // self.interleave.speech + 1) * self.interleave.text
        for _ in range(limit):
            # each head only while some row is in its phase
            text_tok = None
            if 0 in phase:
                text_logits = lm_head(hidden)[:, : self.text_vocab_size].float()
                if conf.text_no_repeat_ngram:
                    for b in (b for b in range(batch) if phase[b] == 0):
                        text_logits[b] = block_repeated_ngrams(text_logits[b], res[b]["text_ids"],
                                                               conf.text_no_repeat_ngram)
                text_tok = conf.text.pick(text_logits, gen)
            speech_logits = (self.speech_head(hidden.to(self.speech_head.weight.dtype)).float()
                             if any(p == 2 and not f for p, f in zip(phase, feed)) else None)
            ids = torch.full((batch,), self.pad_id, dtype=torch.long, device=input_ids.device)
            step_kinds = torch.full_like(ids, KIND_TEXT)
            now = time.perf_counter() - t0
            for b in range(batch):
                r = res[b]
                if phase[b] == 0:
                    assert text_tok is not None
                    tok = int(text_tok[b])
                    if tok == self.eos_id or len(r["text_ids"]) >= conf.max_text_tokens:
                        phase[b] = 1 if speak[b] else 3
                        r["finished"] = tok == self.eos_id and not speak[b]
                        ids[b] = self.eos_id
                        continue
                    r["text_ids"].append(tok)
                    r["first_text_s"] = r["first_text_s"] if r["first_text_s"] is not None else now
                    ids[b] = tok
                elif phase[b] == 1:
                    phase[b] = 2
                    ids[b], step_kinds[b] = self.speech_bos, KIND_SPEECH
                    if self.interleave is not None:
                        assert spoken is not None
                        spoken_ids[b] = list(spoken(b, r["text_ids"]))
                        feed[b] = self.interleave.chunk_before(spoken_ids[b], 0)
                elif phase[b] == 2 and feed[b]:
                    ids[b] = feed[b].pop(0)  # a text chunk of the interleaved speech phase: fed, not picked
                elif phase[b] == 2:
                    assert speech_logits is not None
                    tok = next_speech_code(speech_logits[b], r["speech_ids"], conf, self.speech_codes,
                                           conf.speech_processors, gen)
                    if tok == self.speech_bos or len(r["speech_ids"]) >= conf.max_speech_tokens:
                        phase[b] = 3
                        r["finished"] = tok == self.speech_bos
                        continue
                    r["speech_ids"].append(tok)
                    r["speech_times"].append(now)
                    r["first_speech_s"] = r["first_speech_s"] if r["first_speech_s"] is not None else now
                    ids[b], step_kinds[b] = tok, KIND_SPEECH
                    if self.interleave is not None:
                        feed[b] = self.interleave.chunk_before(spoken_ids[b], len(r["speech_ids"]))
            if all(p == 3 for p in phase):
                break
            mask = torch.cat([mask, mask.new_ones(batch, 1)], 1)
            hidden, past = run_decoder(stack, self.embed(ids[:, None], step_kinds[:, None]), mask, next_pos[:, None],
                                       cache=past, use_cache=True)
            hidden = hidden[:, -1]
            next_pos = next_pos + 1
        total = time.perf_counter() - t0
        for r in res:
            r["total_s"] = total
        return res


_TRAINING_FIELDS = ("dropout", "attention_dropout", "gradient_checkpointing")


def _init_encoder(name: str, enc_conf: dict[str, Any], init: dict[str, Any] | None) -> nn.Module:
    """The encoder from the registry, or (``init.encoder: {format: openai|hf, path}``) from a Whisper checkpoint
    whose dimensions must agree with ``encoder_conf``."""
    if not init:
        return ENCODERS.build(name, enc_conf)
    fmt, path = init.get("format"), init.get("path")
    loaders = {"openai": load_openai_whisper_encoder, "hf": load_hf_whisper_encoder}
    if fmt not in loaders or not path:
        raise ValueError(f"model.init.encoder needs format (openai|hf) and path, got {init}")
    encoder, loaded = loaders[fmt](path, **{k: enc_conf[k] for k in _TRAINING_FIELDS if k in enc_conf})
    differ = {k: (v, getattr(loaded, k)) for k, v in enc_conf.items()
              if k not in _TRAINING_FIELDS and hasattr(loaded, k) and getattr(loaded, k) != v}
    if differ:
        raise ValueError(f"{path}: encoder_conf disagrees with the checkpoint (conf, checkpoint): {differ}")
    return encoder


def build_llm(conf: dict[str, Any], text_vocab_size: int) -> nn.Module:
    """The LLM of a ``model:`` mapping (``llm`` registry name + ``llm_conf``), its vocabulary covering the text
    tokenizer's ids; :func:`build_model` and the LLM text pre-training build it the same way."""
    return LLMS.build(conf["llm"], {"vocab_size": text_vocab_size, **(conf.get("llm_conf") or {})})


def build_model(conf: dict[str, Any], text_vocab_size: int, eos_id: int,
                pad_id: int) -> EChatModel | EncoderPretrainModel:
    """Build from the ``model:`` mapping of a config (encoder/adapter/llm by registry name). ``arch`` picks the
    model: ``echat`` (default) or ``encoder_pretrain`` (:mod:`wenet_echat.model.encoder_pretrain`)."""
    conf = dict(conf)
    arch = conf.pop("arch", "echat")
    if arch == "encoder_pretrain":
        return build_encoder_pretrain(conf, text_vocab_size)
    if arch != "echat":
        raise ValueError(f"model.arch must be 'echat' or 'encoder_pretrain', got {arch!r}")
    for key in ("encoder", "adapter", "llm", "speech_codes"):
        if key not in conf:
            raise KeyError(f"model config needs '{key}'")
    unknown = sorted(set(conf) - ECHAT_KEYS)
    if unknown:
        raise KeyError(f"unknown model config key(s) {unknown}; known: arch, {', '.join(sorted(ECHAT_KEYS))}")
    enc_conf = dict(conf.get("encoder_conf") or {})
    encoder = _init_encoder(conf["encoder"], enc_conf, (conf.get("init") or {}).get("encoder"))
    llm = build_llm(conf, text_vocab_size)
    ad_conf = {"encoder_dim": int(encoder.config.d_model),
               "llm_dim": hidden_size(llm), **(conf.get("adapter_conf") or {})}
    adapter = ADAPTERS.build(conf["adapter"], ad_conf)
    text_end = conf.get("speech_text_end", False)
    if not isinstance(text_end, bool):
        raise ValueError(f"model.speech_text_end must be true or false, got {text_end!r}")
    interleave = Interleave.from_conf(conf.get("speech_text_interleave"), end=eos_id if text_end else None)
    if text_end and interleave is None:
        raise ValueError("model.speech_text_end: true needs model.speech_text_interleave [N, M] (it closes the "
                         "text the speech phase re-reads)")
    return EChatModel(encoder, adapter, llm, int(conf["speech_codes"]), text_vocab_size, eos_id, pad_id,
                      ctc_weight=float(conf.get("ctc_weight", 0.0)), interleave=interleave)


__all__ = ["EChatModel", "GenerateConf", "SamplingConf", "SpeechProcessor", "build_model", "next_speech_code"]
