"""The corpus plan: which sentence, voice and state every example gets, decided up front from the seed.

Splits: per topic, one sentence goes to test, one to dev and six to train; per (age, gender) group of eight voice
settings, one goes to test, one to dev and six to train. So dev and test each use sentences *and* voice settings
that train never saw (``check_disjoint`` asserts it). A held-out voice is never the last of its engine in its
group: train keeps every (engine, age, gender), otherwise a cue classifier learns the engine instead (with flite's
one female voice held out, every flite voice in train is male and a held-out female flite voice reads as male).

Examples come in groups: a sentence is spoken by 3-5 voices in different states (age, gender, emotion, event),
so the same words appear with different gold replies. The category says which cue the reply must address:
``emotion`` / ``age`` / ``gender`` / ``event`` (one non-default cue; the gender category is an adult, neutral,
event-free example whose reply uses an address form) or ``multi`` (two or three of non-adult age,
non-neutral emotion and an event). The plan is built until the estimated user audio reaches the split's hours.

Identity turns (category ``identity``, :mod:`.identity`: "who are you?" and the like, with held-out phrasings in
dev and test) are appended to each split from their own random stream, :data:`IDENTITY_SHARE` of the split's
other examples (at least :data:`IDENTITY_MIN`); the other examples do not change when they are added.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .events import DURATIONS
from .identity import compose_identity_reply, identity_count, sample_identity_state, split_phrasings
from .replies import SOUND_EVENTS, Sentence, all_sentences, compose_reply
from .voices import EMOTION_STYLES, EMOTIONS_USED, VOICES, Voice

SPLITS: tuple[str, ...] = ("train", "dev", "test")
CATEGORY_WEIGHTS: dict[str, float] = {"emotion": 0.30, "age": 0.17, "gender": 0.10, "event": 0.23, "multi": 0.20}
MULTI_COMBOS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("age", "emotion"), 0.35), (("age", "event"), 0.2), (("emotion", "event"), 0.3),
    (("age", "emotion", "event"), 0.15),
)
WORDS_PER_SECOND = 3.95  # neutral adult voice at rate 1.0 (calibrates the duration estimate)
IDENTITY_SHARE = 0.06  # identity turns per other example of a split
IDENTITY_MIN = 4


@dataclass
class Example:
    key: str
    split: str
    sentence: Sentence
    voice: Voice
    labels: dict[str, str]
    category: str
    response: str
    response_emotion: str
    response_parts: list[str] = field(default_factory=list)
    seed: list[int] = field(default_factory=list)  # per-example RNG seed (SeedSequence entropy)
    est_duration: float = 0.0


def split_assets(seed: int) -> tuple[dict[str, list[Sentence]], dict[str, list[Voice]]]:
    """Held-out sentences and voice settings per split (a seeded permutation inside each topic / voice group)."""
    rng = np.random.default_rng([seed, 1])
    sents: dict[str, list[Sentence]] = {s: [] for s in SPLITS}
    by_topic: dict[str, list[Sentence]] = {}
    for s in all_sentences():
        by_topic.setdefault(s.topic, []).append(s)
    for topic in sorted(by_topic):
        group = [by_topic[topic][i] for i in rng.permutation(len(by_topic[topic]))]
        sents["test"].append(group[0])
        sents["dev"].append(group[1])
        sents["train"] += group[2:]
    voices: dict[str, list[Voice]] = {s: [] for s in SPLITS}
    groups: dict[tuple[str, str], list[Voice]] = {}
    for v in VOICES:
        groups.setdefault((v.age, v.gender), []).append(v)
    for k in sorted(groups):
        group = [groups[k][i] for i in rng.permutation(len(groups[k]))]
        left = Counter(v.engine for v in group)
        for split in ("test", "dev"):
            pick = next(v for v in group if left[v.engine] > 1)
            voices[split].append(pick)
            group.remove(pick)
            left[pick.engine] -= 1
        voices["train"] += group
    return sents, voices


def check_disjoint(examples: dict[str, list[Example]]) -> None:
    """Assert that dev/test sentences and voice settings never occur in train."""
    train_s = {e.sentence.text for e in examples.get("train", [])}
    train_v = {e.voice.vid for e in examples.get("train", [])}
    for split in ("dev", "test"):
        for e in examples.get(split, []):
            assert e.sentence.text not in train_s, f"{split} sentence also in train: {e.sentence.text!r}"
            assert e.voice.vid not in train_v, f"{split} voice setting also in train: {e.voice.vid}"


def _choice(rng: np.random.Generator, items, p=None):
    return items[int(rng.choice(len(items), p=p))]


def sample_state(rng: np.random.Generator, sent: Sentence) -> tuple[dict[str, str], str]:
    """Sample (labels, category) consistent with the category definition."""
    cats = list(CATEGORY_WEIGHTS)
    category = _choice(rng, cats, p=list(CATEGORY_WEIGHTS.values()))
    young_old = ["child", "old"] if sent.child_ok else ["old"]
    emotional = [e for e in EMOTIONS_USED if e != "neutral" and e in sent.emotions]
    labels = {"age": "adult", "gender": _choice(rng, ["male", "female"]), "emotion": "neutral", "event": "none"}
    cues: tuple[str, ...] = ()
    if category in ("emotion", "age", "event"):
        cues = (category,)
    elif category == "multi":
        combos = [c for c, _ in MULTI_COMBOS]
        w = np.array([w for _, w in MULTI_COMBOS])
        cues = _choice(rng, combos, p=w / w.sum())
    if "age" in cues:
        labels["age"] = _choice(rng, young_old)
    if "emotion" in cues:
        labels["emotion"] = _choice(rng, emotional)
    if "event" in cues:
        labels["event"] = _choice(rng, list(SOUND_EVENTS))
    return labels, category


def estimate_duration(sent: Sentence, voice: Voice, labels: dict[str, str]) -> float:
    words = len(sent.text.split())
    dur = words / (WORDS_PER_SECOND * voice.rate * EMOTION_STYLES[labels["emotion"]].rate) + 0.35
    ev = labels["event"]
    if ev == "rain":
        dur += 0.8
    elif ev != "none":
        lo, hi = DURATIONS[ev]
        dur += (2 / 3) * ((lo + hi) / 2 + 0.25)  # before/after placements extend the audio
    return dur


def _state_key(labels: dict[str, str], category: str) -> tuple:
    return (labels["age"], labels["gender"], labels["emotion"], labels["event"], category)


def plan_split(split: str, hours: float, seed: int, sents: list[Sentence], voices: list[Voice]) -> list[Example]:
    """Examples for one split until the estimated user audio reaches ``hours``."""
    sidx = SPLITS.index(split)
    rng = np.random.default_rng([seed, 2, sidx])
    by_group: dict[tuple[str, str], list[Voice]] = {}
    for v in voices:
        by_group.setdefault((v.age, v.gender), []).append(v)
    out: list[Example] = []
    total, target = 0.0, hours * 3600.0
    order: list[Sentence] = []
    while total < target:
        if not order:
            order = [sents[i] for i in rng.permutation(len(sents))]
        sent = order.pop()
        seen: set[tuple] = set()
        for _ in range(int(rng.integers(3, 6))):
            for _attempt in range(10):  # distinct states within a group
                labels, category = sample_state(rng, sent)
                if _state_key(labels, category) not in seen:
                    break
            seen.add(_state_key(labels, category))
            voice = _choice(rng, by_group[(labels["age"], labels["gender"])])
            response, response_emotion, parts = compose_reply(sent, labels, category)
            i = len(out)
            ex = Example(key=f"{voice.vid}-{split}{i:05d}", split=split, sentence=sent, voice=voice,
                         labels=labels, category=category, response=response, response_emotion=response_emotion,
                         response_parts=parts, seed=[seed, 3, sidx, i])
            ex.est_duration = estimate_duration(sent, voice, labels)
            out.append(ex)
            total += ex.est_duration
            if total >= target:
                break
    return out


def plan_identity(split: str, start: int, n: int, seed: int, questions: list[Sentence], voices: list[Voice]
                  ) -> list[Example]:
    """``n`` identity turns for ``split``, keys numbered from ``start`` (after the split's other examples)."""
    sidx = SPLITS.index(split)
    rng = np.random.default_rng([seed, 7, sidx])
    out: list[Example] = []
    for j in range(n):
        sent = questions[j % len(questions)] if j < len(questions) else _choice(rng, questions)
        voice = _choice(rng, voices)
        labels = sample_identity_state(rng, voice)
        response, response_emotion, parts = compose_identity_reply(sent, labels)
        i = start + j
        ex = Example(key=f"{voice.vid}-{split}{i:05d}", split=split, sentence=sent, voice=voice, labels=labels,
                     category="identity", response=response, response_emotion=response_emotion,
                     response_parts=parts, seed=[seed, 3, sidx, i])
        ex.est_duration = estimate_duration(sent, voice, labels)
        out.append(ex)
    return out


def make_plan(seed: int, hours: dict[str, float]) -> dict[str, list[Example]]:
    sents, voices = split_assets(seed)
    questions = split_phrasings(seed)
    plan = {s: plan_split(s, hours[s], seed, sents[s], voices[s]) for s in SPLITS if hours.get(s, 0) > 0}
    for split, examples in plan.items():
        n = identity_count(len(examples), IDENTITY_SHARE, IDENTITY_MIN)
        examples += plan_identity(split, len(examples), n, seed, questions[split], voices[split])
    check_disjoint(plan)
    return plan

