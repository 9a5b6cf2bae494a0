"""Label vocabularies and task names shared by the corpus, the data pipeline, the model and scoring.

Values follow OSUM-EChat's tag sets (lower-case, English), extended with the synthetic sound events of
EChat-mini. ``None`` for a label means *unknown*: it is loss-masked in training, never guessed.
"""

from __future__ import annotations

AGES: tuple[str, ...] = ("child", "adult", "old")
GENDERS: tuple[str, ...] = ("male", "female")
EMOTIONS: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise")
# "none" = no sound event; the rest are OSUM's vocal events plus EChat-mini's environmental sounds.
EVENTS: tuple[str, ...] = (
    "none", "laugh", "cough", "cry", "scream", "sigh", "throat_clearing", "sneeze",
    "rain", "alarm", "siren", "doorbell", "knock", "other",
)
REPLY_EMOTIONS: tuple[str, ...] = (
    "pleasant", "apologetic", "happy", "angry", "surprised", "disgusted", "sad", "afraid", "tearful",
    "comforting", "neutral",
)

LABEL_VOCABS: dict[str, tuple[str, ...]] = {
    "age": AGES,
    "gender": GENDERS,
    "emotion": EMOTIONS,
    "event": EVENTS,
}
# EChat-eval categories: which cue(s) the reply has to address
CATEGORIES: tuple[str, ...] = ("emotion", "age", "gender", "event", "multi", "identity")

# task -> the data.list fields it needs (a tuple inside means "one of these")
TASK_FIELDS: dict[str, tuple[str | tuple[str, ...], ...]] = {
    "asr": ("wav", "text"),
    "tag": ("wav", "labels"),
    "s2t_chat": ("wav", "response"),
    "t2t": ("text", "response"),  # text chat (stage 2 mixes it in to keep the LLM's text ability)
    "tts": ("response", ("response_tokens", "response_wav")),
    "s2s_chat": ("wav", "response", ("response_tokens", "response_wav")),
    "s2s_think": ("wav", "text", "labels", "response", ("response_tokens", "response_wav")),
}
TASKS: tuple[str, ...] = tuple(TASK_FIELDS)


def check_label(name: str, value: object) -> str | None:
    """Return a problem description for one label value, or ``None`` if it is valid (``None`` = unknown)."""
    if name not in LABEL_VOCABS:
        return f"unknown label '{name}' (known: {', '.join(LABEL_VOCABS)})"
    if value is None:
        return None
    if value not in LABEL_VOCABS[name]:
        return f"label {name}={value!r} not in {{{', '.join(LABEL_VOCABS[name])}}}"
    return None
