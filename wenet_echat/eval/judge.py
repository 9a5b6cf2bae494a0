"""A pluggable LLM judge for replies: any OpenAI-compatible chat-completions endpoint (off unless configured).

EChat-eval has GPT-4o score each reply from the query transcript, the query's paralinguistic labels, the reply
text and the emotion of the reply audio; its rubric is not public. This client sends our rubric and prompt
(``egs/echat/conf/judge/``: a YAML config naming a prompt template and a rubric file) to ``{base_url}/chat/
completions`` and reads a score back. Config keys (:class:`JudgeConf`; unknown keys are errors)::

    base_url: http://127.0.0.1:8000/v1      # a vLLM / llama.cpp / OpenAI-compatible server
    model: qwen2.5-7b-instruct
    api_key_env: OPENAI_API_KEY            # the *name* of an environment variable holding the key (optional)
    prompt_file: prompt.txt                # relative to the YAML file
    rubric_file: rubric.txt
    system: You are a strict evaluator of empathetic spoken-dialogue replies.
    score_max: 10                          # the rubric's scale; scores are reported as 0-100
    temperature: 0.0
    max_tokens: 200
    timeout_s: 60
    retries: 3                             # extra attempts after a network error, HTTP 429/5xx or an unreadable score
    backoff_s: 2.0                         # wait before retry k: backoff_s * 2**(k-1)

The prompt template is filled with ``str.format`` fields: ``{rubric} {transcript} {labels} {category}
{reply} {reply_emotion} {gold_reply} {gold_reply_emotion} {score_max}`` (the rubric itself may use
``{score_max}``). :func:`parse_score` reads the judge's
answer: a JSON object with ``score`` (also inside a Markdown code fence), ``Score: 7``, ``7/10``, or as a last
resort the only number in range. The answer's ``reason`` (JSON) is kept when present.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

PROMPT_FIELDS = ("rubric", "transcript", "labels", "category", "reply", "reply_emotion", "gold_reply",
                 "gold_reply_emotion", "score_max")


class JudgeError(RuntimeError):
    """The judge could not produce a score (after retries); the message says why."""


class JudgeParseError(ValueError):
    """The judge's answer holds no readable score."""


@dataclass(frozen=True)
class JudgeConf:
    base_url: str
    model: str
    prompt_file: str
    rubric_file: str
    api_key_env: str | None = None
    system: str = "You are a strict evaluator of empathetic spoken-dialogue replies."
    score_max: float = 10.0
    temperature: float = 0.0
    max_tokens: int = 200
    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"judge base_url must start with http:// or https://, got {self.base_url!r}")
        if self.score_max <= 0 or self.timeout_s <= 0 or self.retries < 0 or self.backoff_s < 0:
            raise ValueError("judge score_max and timeout_s must be > 0, retries and backoff_s >= 0")


def load_judge_conf(path: str | Path) -> tuple[JudgeConf, str, str]:
    """(config, prompt template, rubric) from a judge YAML; file paths in it are relative to the YAML."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of judge settings")
    known = {f.name for f in fields(JudgeConf)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown judge key(s) {unknown}; known: {', '.join(sorted(known))}")
    try:
        conf = JudgeConf(**data)
    except TypeError as e:
        raise ValueError(f"{path}: {e}") from None
    texts = []
    for name in ("prompt_file", "rubric_file"):
        file = path.parent / getattr(conf, name)
        if not file.is_file():
            raise FileNotFoundError(f"{path}: {name} {file} does not exist")
        texts.append(file.read_text(encoding="utf-8"))
    check_template(texts[0], str(path.parent / conf.prompt_file))
    return conf, texts[0], texts[1]


def check_template(template: str, where: str = "prompt") -> None:
    """Every ``{field}`` of the template must be one of :data:`PROMPT_FIELDS`."""
    names = {m.group(1) for m in re.finditer(r"(?<!\{)\{([^{}]*)\}(?!\})", template)}
    bad = sorted(n for n in names if n not in PROMPT_FIELDS)
    if bad:
        raise ValueError(f"{where}: unknown template field(s) {bad}; allowed: {', '.join(PROMPT_FIELDS)}")


_JSON_RE = re.compile(r"\{[^{}]*\}", re.S)
_LABELLED_RE = re.compile(r"score\W{0,5}?\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)", re.I)
_FRACTION_RE = re.compile(r"(-?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)")
_NUMBER_RE = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")


def parse_score(text: str, score_max: float) -> tuple[float, str | None]:
    """(score in [0, score_max], reason or None) from a judge answer; :class:`JudgeParseError` otherwise."""
    def in_range(value: float) -> bool:
        return 0 <= value <= score_max

    for block in _JSON_RE.findall(text):
        try:
            obj = json.loads(block)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("score"), int | float | str):
            try:
                value = float(obj["score"])
            except ValueError:
                continue
            if in_range(value):
                reason = obj.get("reason")
                return value, str(reason) if reason is not None else None
    for rx in (_LABELLED_RE, _FRACTION_RE):
        for m in rx.finditer(text):
            value = float(m.group(1))
            if rx is _FRACTION_RE and float(m.group(2)) != score_max:
                continue
            if in_range(value):
                return value, None
    numbers = [float(x) for x in _NUMBER_RE.findall(text) if in_range(float(x))]
    if len(set(numbers)) == 1:
        return numbers[0], None
    raise JudgeParseError(f"no score in [0, {score_max:g}] found in the judge answer: {text[:200]!r}")


def judge_item(ref: Mapping[str, Any], hyp: Mapping[str, Any], rubric: str, score_max: float) -> dict[str, str]:
    """The prompt fields for one reference record and its hypothesis row."""
    labels = ref.get("labels") or {}
    return {
        "rubric": rubric.strip().replace("{score_max}", f"{score_max:g}"), "transcript": str(ref.get("text") or ""),
        "labels": ", ".join(f"{k}: {v}" for k, v in labels.items() if v is not None) or "unknown",
        "category": str(ref.get("category") or "unknown"), "reply": str(hyp.get("reply") or ""),
        "reply_emotion": str(hyp.get("reply_emotion") or "unknown"),
        "gold_reply": str(ref.get("response") or ""),
        "gold_reply_emotion": str(ref.get("response_emotion") or "unknown"), "score_max": f"{score_max:g}",
    }


def _retryable(e: Exception) -> bool:
    if isinstance(e, urllib.error.HTTPError):
        return e.code == 429 or e.code >= 500
    return isinstance(e, urllib.error.URLError | TimeoutError | ConnectionError | JudgeParseError)


class JudgeClient:
    """Scores replies with an OpenAI-compatible chat-completions endpoint (see the module docstring)."""

    def __init__(self, conf: JudgeConf, template: str, rubric: str, sleep: Callable[[float], None] = time.sleep):
        check_template(template)
        self.conf, self.template, self.rubric = conf, template, rubric
        self.sleep = sleep
        self.url = conf.base_url.rstrip("/") + "/chat/completions"
        self.calls = 0

    @classmethod
    def from_file(cls, path: str | Path) -> JudgeClient:
        return cls(*load_judge_conf(path))

    def prompt(self, ref: Mapping[str, Any], hyp: Mapping[str, Any]) -> str:
        return self.template.format(**judge_item(ref, hyp, self.rubric, self.conf.score_max))

    def _post(self, prompt: str) -> str:
        body = {"model": self.conf.model, "temperature": self.conf.temperature, "max_tokens": self.conf.max_tokens,
                "messages": [{"role": "system", "content": self.conf.system}, {"role": "user", "content": prompt}]}
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.conf.api_key_env) if self.conf.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        self.calls += 1
        with urllib.request.urlopen(req, timeout=self.conf.timeout_s) as resp:
            data = json.loads(resp.read().decode("utf-8"))
        try:
            return str(data["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise JudgeParseError(f"unexpected chat-completions answer: {str(data)[:200]}") from None

    def score(self, ref: Mapping[str, Any], hyp: Mapping[str, Any]) -> dict[str, Any]:
        """``judge_score`` (0-100), ``judge_raw`` (the answer), ``judge_reason``; :class:`JudgeError` after the
        last retry."""
        prompt = self.prompt(ref, hyp)
        last: Exception | None = None
        for attempt in range(self.conf.retries + 1):
            if attempt:
                self.sleep(self.conf.backoff_s * 2 ** (attempt - 1))
            try:
                answer = self._post(prompt)
                value, reason = parse_score(answer, self.conf.score_max)
                return {"judge_score": 100.0 * value / self.conf.score_max, "judge_raw": answer,
                        "judge_reason": reason}
            except Exception as e:
                if not _retryable(e):
                    raise JudgeError(f"judge at {self.url}: {type(e).__name__}: {e}") from e
                last = e
        raise JudgeError(f"judge at {self.url}: no score after {self.conf.retries + 1} attempt(s); last error: "
                         f"{type(last).__name__}: {last}")


def judge_rows(client: JudgeClient, pairs: list[tuple[Mapping[str, Any], Mapping[str, Any]]],
               max_items: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """Copies of the rows of ``pairs`` (reference, row) with the judge's fields added, for the first ``max_items``
    pairs; an item the judge fails on after its retries gets ``judge_error`` instead. Returns (rows, failures)."""
    rows, failures = [], 0
    for i, (ref, row) in enumerate(pairs):
        new = dict(row)
        if max_items is None or i < max_items:
            try:
                new.update(client.score(ref, row))
            except JudgeError as e:
                new["judge_error"] = str(e)
                failures += 1
        rows.append(new)
    return rows, failures


__all__ = ["JudgeClient", "JudgeConf", "JudgeError", "JudgeParseError", "PROMPT_FIELDS", "check_template",
           "judge_item", "judge_rows", "load_judge_conf", "parse_score"]
