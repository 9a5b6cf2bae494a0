"""The linguistic-paralinguistic dual-thinking chain of thought (English rendering), in OSUM-EChat's two forms.

Tag form (``build_tag_think``): transcript and every cue as a tag, in the fixed OSUM order; unknown labels are
written as :data:`MASK_TAG` and the target builder loss-masks that span. Cue form (``build_cue_think``): the tag
form without the transcript, the paralinguistic half alone. Natural-language form
(``build_natural_think``): a short paragraph saying who speaks, what they said, how they feel, what else is heard
and which reply tone fits. ``parse_tag_think`` / ``parse_natural_think`` / ``parse_think`` read cue values back
from a (possibly generated) CoT so scoring can measure per-cue accuracy.
"""

from __future__ import annotations

import re

from wenet_echat.text.labels import LABEL_VOCABS, REPLY_EMOTIONS

THINK_BEGIN = "<think>"
THINK_END = "<think end>"
MASK_TAG = "<&&>"
CLOSING = "I should combine the meaning and the paralinguistic cues to give a fitting, caring reply."

# (label key, phrase in the CoT) in the fixed OSUM order: transcript, age, gender, emotion, event, reply emotion
_FIELDS: tuple[tuple[str, str], ...] = (
    ("age", "age"),
    ("gender", "gender"),
    ("emotion", "emotion"),
    ("event", "sound event"),
    ("response_emotion", "predicted reply emotion"),
)


def _tag(value: str | None) -> str:
    return MASK_TAG if value is None else f"<{value}>"


def build_tag_think(transcript: str, labels: dict[str, str | None], response_emotion: str | None) -> str:
    """Render the tag-form CoT body (without the ``<think>`` markers)."""
    values = dict(labels, response_emotion=response_emotion)
    cues = ", ".join(f"{phrase}: {_tag(values.get(key))}" for key, phrase in _FIELDS)
    return f"the user said: {transcript.strip()}, {cues}; {CLOSING}"


def build_cue_think(transcript: str, labels: dict[str, str | None], response_emotion: str | None) -> str:
    """The tag form without the transcript: the paralinguistic half of the CoT alone. For models that cannot
    yet transcribe (a from-scratch mini LLM): a wrong transcript early in the CoT derails what follows it."""
    del transcript
    values = dict(labels, response_emotion=response_emotion)
    cues = ", ".join(f"{phrase}: {_tag(values.get(key))}" for key, phrase in _FIELDS)
    return f"{cues}; {CLOSING}"


def wrap_think(body: str) -> str:
    return f"{THINK_BEGIN}{body}{THINK_END}"


_CUE_RE = {key: re.compile(re.escape(phrase) + r":\s*<([^<>]*)>") for key, phrase in _FIELDS}
_SAID_RE = re.compile(r"the user said:\s*(.*?),\s*age:", re.S)


def parse_tag_think(text: str) -> dict[str, str | None]:
    """Extract ``transcript`` and cue values from a tag-form CoT; absent or invalid values become ``None``."""
    out: dict[str, str | None] = {}
    m = _SAID_RE.search(text)
    out["transcript"] = m.group(1).strip() if m else None
    vocabs = dict(LABEL_VOCABS, response_emotion=REPLY_EMOTIONS)
    for key, rx in _CUE_RE.items():
        m = rx.search(text)
        value = m.group(1).strip() if m else None
        out[key] = value if value in vocabs[key] else None
    return out


# ------------------------------------------------------------------------------------------- natural language
# OSUM-EChat's second CoT form is a free paragraph (written offline by an LLM for EChat-200K). EChat-mini renders
# one from the labels with fixed phrases, so a generated paragraph can be read back cue by cue for scoring.
_WHO: dict[tuple[str | None, str | None], str] = {
    ("child", "male"): "a young boy", ("child", "female"): "a young girl", ("child", None): "a child",
    ("adult", "male"): "a man", ("adult", "female"): "a woman", ("adult", None): "an adult",
    ("old", "male"): "an elderly man", ("old", "female"): "an elderly woman", ("old", None): "an elderly person",
    (None, "male"): "a male speaker", (None, "female"): "a female speaker", (None, None): "someone",
}
_FEELS: dict[str, str] = {
    "neutral": "calm and matter-of-fact", "happy": "happy and excited", "sad": "sad and low",
    "angry": "angry and frustrated", "fear": "scared and worried", "disgust": "disgusted",
    "surprise": "surprised",
}
_HEARS: dict[str, str] = {
    "none": "there are no other sounds", "laugh": "I can hear laughter", "cough": "I can hear coughing",
    "cry": "I can hear crying", "scream": "I can hear screaming", "sigh": "I can hear a sigh",
    "throat_clearing": "I can hear throat clearing", "sneeze": "I can hear a sneeze",
    "rain": "I can hear rain in the background", "alarm": "I can hear an alarm ringing",
    "siren": "I can hear a siren", "doorbell": "I can hear a doorbell", "knock": "I can hear knocking",
    "other": "I can hear some other sound",
}
_TONE: dict[str, str] = {
    "pleasant": "a pleasant", "apologetic": "an apologetic", "happy": "a happy", "angry": "a firm",
    "surprised": "a surprised", "disgusted": "a disapproving", "sad": "a sad", "afraid": "a worried",
    "tearful": "a tearful", "comforting": "a comforting", "neutral": "a neutral",
}
_PRONOUN = {"male": "he", "female": "she"}


def build_natural_think(transcript: str, labels: dict[str, str | None], response_emotion: str | None) -> str:
    """A natural-language CoT body: who speaks, what they said, how they feel, what else is heard, the reply tone.

    Unknown labels are left out (nothing to loss-mask). :func:`parse_natural_think` reads every cue back.
    """
    age, gender = labels.get("age"), labels.get("gender")
    who = _WHO.get((age, gender), "someone")
    they = _PRONOUN.get(gender or "", "they")
    parts = [f"This sounds like {who}, who says: \"{transcript.strip()}\"."]
    emotion = labels.get("emotion")
    if emotion in _FEELS:
        parts.append(f"{they.capitalize()} {'sounds' if they != 'they' else 'sound'} {_FEELS[emotion]}.")
    event = labels.get("event")
    if event in _HEARS:
        parts.append(f"Besides the voice, {_HEARS[event]}.")
    if response_emotion in _TONE:
        parts.append(f"I should reply in {_TONE[response_emotion]} tone that fits what {they} said and how "
                     f"{they} feel{'s' if they != 'they' else ''}.")
    return " ".join(parts)


def parse_natural_think(text: str) -> dict[str, str | None]:
    """Cue values of a natural-language CoT written by :func:`build_natural_think` (None where absent)."""
    out: dict[str, str | None] = dict.fromkeys(("transcript", "age", "gender", "emotion", "event",
                                                "response_emotion"))
    m = re.search(r'who says: "(.*?)"\.', text, re.S)
    out["transcript"] = m.group(1).strip() if m else None
    m = re.search(r"This sounds like (.+?), who says", text)
    if m:
        for (age, gender), phrase in _WHO.items():
            if phrase == m.group(1):
                out["age"], out["gender"] = age, gender
                break
    for key, table, pattern in (("emotion", _FEELS, r"\b(?:sounds|sound) ([a-z -]+?)\."),
                                ("event", _HEARS, r"Besides the voice, (.+?)\."),
                                ("response_emotion", _TONE, r"I should reply in (.+?) tone")):
        m = re.search(pattern, text)
        if m:
            out[key] = next((k for k, phrase in table.items() if phrase == m.group(1)), None)
    return out


def parse_think(text: str) -> dict[str, str | None]:
    """Cue values of either CoT form (tag form first; the natural form when no tag-form cue is found)."""
    tag = parse_tag_think(text)
    if any(tag[k] is not None for k in ("age", "gender", "emotion", "event", "response_emotion")):
        return tag
    return parse_natural_think(text)


THINK_STYLES = ("auto", "tag", "natural", "cues")


def build_think(transcript: str, labels: dict[str, str | None], response_emotion: str | None,
                style: str = "tag") -> str:
    """The CoT body in ``style`` ``tag``, ``natural`` or ``cues`` (the tag form without the transcript)."""
    builders = {"tag": build_tag_think, "natural": build_natural_think, "cues": build_cue_think}
    if style not in builders:
        raise ValueError(f"think style must be one of {', '.join(builders)}, got {style!r}")
    return builders[style](transcript, labels, response_emotion)
