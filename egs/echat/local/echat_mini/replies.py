"""Compose the gold reply for one (sentence, state): event mention + opening + topic core + closing.

The topic core (content.yaml) carries the meaning; the state picks the register and the framing:

- emotion -> opening and reply emotion (happy -> happy, sad -> comforting, angry -> apologetic or comforting,
  neutral -> neutral or pleasant);
- age -> register: children get the simpler ``child`` core and warm, short openings/closings; old speakers get
  respectful, patient openings and closings;
- gender -> an address form ("sir" / "ma'am") where one is natural: always for old speakers, and for the
  ``gender`` category; never for children;
- event -> a first sentence that mentions the sound ("I can hear an alarm going off ...").

Variant choice is a pure function of (sentence id, state), so the same sentence in the same state always gets
the same reply (and the reply audio cache hits), while different states get different replies. The parts
(event mention, opening, core, closing) are returned too: the reply audio is assembled from per-part
renderings, which are shared by many replies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

CONTENT_FILE = Path(__file__).with_name("content.yaml")


@dataclass(frozen=True)
class Sentence:
    sid: str  # stable id, e.g. "exam_03"
    topic: str
    text: str
    child_ok: bool
    emotions: tuple[str, ...]  # user emotions the sentence may be spoken in


@lru_cache(maxsize=1)
def load_content() -> dict:
    with open(CONTENT_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)["topics"]


# sentence prefix in content.yaml -> the user emotions it may be spoken in
VALENCE: dict[str, tuple[str, ...]] = {
    "(-) ": ("neutral", "sad", "angry"),  # a mishap: never happy
    "(+) ": ("neutral", "happy"),  # good news: never sad or angry
    "": ("neutral", "happy", "sad", "angry"),
}


def all_sentences() -> list[Sentence]:
    out = []
    for topic, spec in load_content().items():
        for i, text in enumerate(spec["sentences"]):
            prefix = next(p for p in VALENCE if text.startswith(p))
            out.append(Sentence(f"{topic}_{i:02d}", topic, text[len(prefix):], bool(spec["child"]), VALENCE[prefix]))
    return out


# (text, reply emotion); "{addr}" is replaced by ", sir" / ", ma'am" / "".
OPENINGS: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("happy", "adult"): [("That's wonderful news{addr}!", "happy"), ("How exciting{addr}!", "happy"),
                         ("Oh, I love hearing that{addr}!", "happy")],
    ("happy", "child"): [("Wow, that's so great!", "happy"), ("Yay, good for you!", "happy")],
    ("happy", "old"): [("Oh, how lovely to hear that{addr}.", "pleasant"), ("What a joy that is{addr}!", "happy")],
    ("sad", "adult"): [("I'm really sorry{addr}, that sounds hard.", "comforting"),
                       ("Oh no, I can hear this is weighing on you{addr}.", "comforting")],
    ("sad", "child"): [("Oh, sweetheart, I'm sorry you feel sad.", "comforting"),
                       ("Aw, it's okay to feel sad.", "comforting")],
    ("sad", "old"): [("I'm so sorry{addr}. Please take all the time you need.", "comforting"),
                     ("Oh dear, I'm sorry to hear that{addr}.", "comforting")],
    ("angry", "adult"): [("I'm sorry{addr}, that sounds really frustrating.", "apologetic"),
                         ("I can hear how annoyed you are{addr}, and that's completely understandable.", "comforting")],
    ("angry", "child"): [("Oh no, that sounds really annoying.", "comforting"),
                         ("I can tell you're cross, and that's okay.", "comforting")],
    ("angry", "old"): [("I'm very sorry{addr}, that must be so aggravating.", "apologetic"),
                       ("I do understand your frustration{addr}, and I'm sorry.", "apologetic")],
    ("neutral", "adult"): [("I see{addr}.", "neutral"), ("Thanks for telling me{addr}.", "neutral"),
                           ("Okay{addr}, got it.", "neutral")],
    ("neutral", "child"): [("Thanks for telling me!", "pleasant"), ("Ooh, tell me more!", "pleasant")],
    ("neutral", "old"): [("Thank you for sharing that with me{addr}.", "pleasant"),
                         ("How nice of you to tell me{addr}.", "pleasant")],
}

CLOSINGS: dict[tuple[str, str], list[str]] = {
    ("happy", "adult"): ["", "Enjoy it!"],
    ("happy", "child"): ["I'm so proud of you!", "High five!"],
    ("happy", "old"): ["You deserve every bit of it.", "I'm delighted for you."],
    ("sad", "adult"): ["", "I'm here if you want to talk it through."],
    ("sad", "child"): ["Maybe a grown-up can give you a big hug.", "You're not alone, okay?"],
    ("sad", "old"): ["There's no rush at all; I'm here whenever you'd like to talk.",
                     "Please be gentle with yourself."],
    ("angry", "adult"): ["", "Take a breath; we can figure out the next step together."],
    ("angry", "child"): ["Let's take a big breath together.", "You'll feel better soon."],
    ("angry", "old"): ["Take your time, and we'll sort it out step by step.",
                       "Please don't let it spoil your day."],
    ("neutral", "adult"): ["", "Let me know if I can help."],
    ("neutral", "child"): ["That sounds interesting!", "You're doing great!"],
    ("neutral", "old"): ["Take your time; I'm happy to listen.", "I'm glad you told me."],
}

# event -> register -> mentions; the first sentence of the reply whenever the event is not "none"
EVENT_MENTIONS: dict[str, dict[str, list[str]]] = {
    "alarm": {
        "adult": ["I can hear an alarm going off — you may want to check it first.",
                  "There's an alarm beeping in the background; please check on it before we go on."],
        "child": ["I hear an alarm beeping! Please go and tell a grown-up."],
        "old": ["I can hear an alarm ringing nearby; please check on it first, carefully and without hurrying."],
    },
    "siren": {
        "adult": ["I can hear a siren outside — I hope everyone is safe.",
                  "There's a siren going past; stay clear of the road for a moment."],
        "child": ["I hear a siren! Stay inside with a grown-up, okay?"],
        "old": ["I can hear a siren outside; I hope all is well near you."],
    },
    "doorbell": {
        "adult": ["It sounds like someone is at your door — go ahead and answer it, I'll wait.",
                  "Was that your doorbell? Feel free to get it first."],
        "child": ["Ding-dong, someone's at the door! Ask a grown-up before you open it."],
        "old": ["I think your doorbell just rang; please take your time getting to the door, I'll wait."],
    },
    "knock": {
        "adult": ["I think I heard a knock at the door; you may want to see who it is.",
                  "Someone seems to be knocking; go and check, I'll be right here."],
        "child": ["I heard knocking! Let a grown-up check who it is."],
        "old": ["I believe someone is knocking at your door; there's no rush, I'll wait for you."],
    },
    "cough": {
        "adult": ["That's quite a cough — please take care of yourself and have some water.",
                  "I heard you coughing; I hope you're not coming down with something."],
        "child": ["That was a big cough! Have a drink of water, okay?"],
        "old": ["That cough sounds rough; please rest and have a warm drink."],
    },
    "rain": {
        "adult": ["I can hear the rain pouring down where you are.",
                  "It sounds like it's raining hard there; stay dry."],
        "child": ["I can hear the rain outside! Splish splash!"],
        "old": ["It sounds like it's raining heavily there; do stay warm and dry."],
    },
}
# reply emotion when the user sounds neutral and only the event shapes the reply
EVENT_REPLY_EMOTION = {"alarm": "neutral", "siren": "neutral", "doorbell": "pleasant", "knock": "pleasant",
                       "cough": "comforting", "rain": "pleasant"}
SOUND_EVENTS: tuple[str, ...] = tuple(EVENT_MENTIONS)


def _pick(options: list, *parts: str):
    """Deterministic choice from ``options`` keyed by ``parts`` (stable across runs and Python versions)."""
    digest = hashlib.md5("|".join(parts).encode()).digest()
    return options[int.from_bytes(digest[:4], "little") % len(options)]


def address(age: str, gender: str, category: str) -> str:
    if age == "child":
        return ""
    if age == "old" or category == "gender":
        return ", sir" if gender == "male" else ", ma'am"
    return ""


def compose_reply(sent: Sentence, labels: dict[str, str], category: str) -> tuple[str, str, list[str]]:
    """Return (reply text, reply emotion, the reply's sentences) for ``sent`` spoken in the state ``labels``."""
    age, gender, emotion, event = labels["age"], labels["gender"], labels["emotion"], labels["event"]
    register = age  # child / adult / old
    spec = load_content()[sent.topic]
    core = spec["child" if age == "child" and "child" in spec else "adult"][emotion]
    key = (sent.sid, age, gender, emotion, event, category)
    opening, reply_emotion = _pick(OPENINGS[(emotion, register)], "open", *key)
    opening = opening.replace("{addr}", address(age, gender, category))
    closing = _pick(CLOSINGS[(emotion, register)], "close", *key)
    parts = []
    if event != "none":
        parts.append(_pick(EVENT_MENTIONS[event][register], "event", *key))
        if emotion == "neutral":
            reply_emotion = EVENT_REPLY_EMOTION[event]
            if category == "event":  # the event is the point: a short acknowledgement instead of a full opening
                opening = ""
    parts += [opening, core, closing]
    parts = [p for p in parts if p]
    return " ".join(parts), reply_emotion, parts
