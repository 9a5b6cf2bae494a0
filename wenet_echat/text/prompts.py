"""Task prompts: one fixed system prompt per task (it selects the task) and user instructions for the
understanding tasks, plus the tag-string target of the ``tag`` task.

As in OSUM-EChat, only understanding tasks (``asr``, ``tag``) carry a user instruction, drawn from a table of
paraphrases; chat, S2S and TTS turns hold only the user's audio (or, for TTS and T2T, the text). With
``rng=None`` (evaluation) the first paraphrase is used, so decoding is deterministic.
"""

from __future__ import annotations

import random
import re

from wenet_echat.text.labels import LABEL_VOCABS
from wenet_echat.text.think import MASK_TAG

ASSISTANT_NAME = "EChat"
_WHO = f"You are {ASSISTANT_NAME}, the spoken-dialogue assistant of the wenet-echat toolkit."

SYSTEM_PROMPTS: dict[str, str] = {
    "asr": f"{_WHO} You are an audio understanding assistant: listen to the user's speech and answer the "
           "instruction about it precisely.",
    "tag": f"{_WHO} You are an audio understanding assistant: listen to the user's voice and identify the "
           "speaker's age, gender and emotion and any sound event, answering with tags only.",
    "s2t_chat": f"{_WHO} Listen to the user's speech and reply in text with a helpful, caring answer that fits "
                "both what the user said and how they said it.",
    "t2t": f"{_WHO} Answer the user's message in text with a helpful, caring reply.",
    "tts": f"{_WHO} Read the user's text aloud: produce speech tokens for it in your own voice.",
    "s2s_chat": f"{_WHO} Listen to the user's speech and respond with a fitting text reply, then speak that "
                "reply as speech tokens with a matching emotional tone.",
    "s2s_think": f"{_WHO} Listen to the user's speech. First think inside <think> ... <think end>: write what "
                 "the user said and their age, gender, emotion, any sound event and the reply emotion to use. "
                 "Then give a fitting, empathetic text reply and speak it as speech tokens with that emotion.",
}

INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "asr": (
        "Transcribe the speech into text.",
        "Please write down exactly what the speaker says.",
        "Convert this audio into a written transcript.",
        "What are the words spoken in this recording?",
        "Listen carefully and transcribe the utterance word for word.",
        "Give the verbatim transcription of this speech.",
    ),
    "tag": (
        "Identify the speaker's age, gender and emotion, and any sound event.",
        "Listen and tag the speaker's age group, gender, emotion and the background sound event.",
        "Which age, gender and emotion does this voice have, and is there a sound event?",
        "Classify this audio: speaker age, speaker gender, emotion, sound event.",
        "Tell me the age, gender and emotional state of the speaker, plus any sound event you hear.",
        "Give the paralinguistic tags of this speech: age, gender, emotion and sound event.",
    ),
}

# label order of the tag target (same as the CoT order)
TAG_ORDER: tuple[str, ...] = ("age", "gender", "emotion", "event")


def system_prompt(task: str) -> str:
    """The fixed system prompt of ``task``; ``KeyError`` naming the known tasks otherwise."""
    try:
        return SYSTEM_PROMPTS[task]
    except KeyError:
        raise KeyError(f"no system prompt for task {task!r}; known: {', '.join(SYSTEM_PROMPTS)}") from None


def user_instruction(task: str, rng: random.Random | None = None) -> str:
    """An instruction paraphrase for an understanding task (first one when ``rng`` is None); ``""`` otherwise."""
    table = INSTRUCTIONS.get(task)
    if not table:
        return ""
    return table[0] if rng is None else rng.choice(table)


def tag_string(labels: dict[str, str | None] | None) -> str:
    """The ``tag`` target, e.g. ``<adult> <female> <sad> <none>``; an unknown label becomes :data:`MASK_TAG`."""
    labels = labels or {}
    return " ".join(MASK_TAG if labels.get(k) is None else f"<{labels[k]}>" for k in TAG_ORDER)


_TAG_RE = re.compile(r"<([^<>]*)>")


def parse_tag_string(text: str) -> dict[str, str | None]:
    """Read labels back from a (generated) tag string: each tag goes to the label whose vocabulary holds it.

    Order-tolerant; values outside every vocabulary and labels without a tag are ``None``.
    """
    out: dict[str, str | None] = dict.fromkeys(TAG_ORDER)
    for value in _TAG_RE.findall(text):
        for key in TAG_ORDER:
            if out[key] is None and value in LABEL_VOCABS[key]:
                out[key] = value
                break
    return out


__all__ = [
    "ASSISTANT_NAME", "INSTRUCTIONS", "SYSTEM_PROMPTS", "TAG_ORDER", "parse_tag_string", "system_prompt",
    "tag_string", "user_instruction",
]
