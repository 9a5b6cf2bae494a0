"""Repetition blocking for speech codes: keep the speech phase from looping on one code (OSUM-EChat's
``SpeechOnlyNGramBlockingLogitsProcessor``, made configurable).

A code ``c`` is blocked for the next step (its logit set to ``-inf``) when

* the last ``max_run`` codes are all ``c`` (a run may not grow past ``max_run``), or
* ``c`` occurs ``max_in_window`` times among the last ``window - 1`` codes (so no ``window`` consecutive codes
  hold ``c`` more than ``max_in_window`` times).

OSUM-EChat uses ``max_run 5, window 8, max_in_window 5`` for every code and ``10 / 13 / 10`` for code 1446, the
S3 code of silence (pauses are legitimately long). :class:`SpeechRepetitionBlocker` takes a default rule and
per-code overrides. The speech EOS (the last class of the speech head) is never blocked, so a blocked model can
always stop.

The blocker is a *logits processor*: ``blocker(history, logits) -> logits`` for one row, where ``history`` is the
codes generated so far for that row (without the speech BOS) and ``logits`` the speech-head logits ``(codes + 1,)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RepetitionRule:
    """Limits for one code; a value of 0 switches that part of the rule off."""

    max_run: int = 5
    window: int = 8
    max_in_window: int = 5

    def __post_init__(self) -> None:
        if self.max_run < 0 or self.window < 0 or self.max_in_window < 0:
            raise ValueError(f"repetition rule values must be >= 0, got {self}")
        if self.window and not 0 < self.max_in_window < self.window:
            raise ValueError(f"repetition rule: max_in_window must be in [1, window - 1], got {self}")

    @classmethod
    def parse(cls, spec: str) -> tuple[int, RepetitionRule]:
        """``CODE:MAX_RUN:WINDOW:MAX_IN_WINDOW`` (a command-line override) -> (code, rule)."""
        parts = spec.split(":")
        try:
            code, run, window, most = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"repetition override {spec!r}: expected CODE:MAX_RUN:WINDOW:MAX_IN_WINDOW "
                             "(four integers, e.g. 1446:10:13:10)") from None
        if code < 0:
            raise ValueError(f"repetition override {spec!r}: the code must be >= 0")
        return code, cls(run, window, most)


OSUM_SILENCE_CODE = 1446
OSUM_OVERRIDES: dict[int, RepetitionRule] = {OSUM_SILENCE_CODE: RepetitionRule(10, 13, 10)}


class SpeechRepetitionBlocker:
    """Logits processor blocking over-repeated speech codes (see the module docstring)."""

    def __init__(self, rule: RepetitionRule | None = None, overrides: Mapping[int, RepetitionRule] | None = None):
        self.rule = rule or RepetitionRule()
        self.overrides = dict(overrides or {})

    def rule_for(self, code: int) -> RepetitionRule:
        return self.overrides.get(code, self.rule)

    def blocked(self, history: Sequence[int]) -> list[int]:
        """Codes that may not come next after ``history`` (sorted)."""
        if not history:
            return []
        out: set[int] = set()
        last = history[-1]
        run = 1
        while run < len(history) and history[-1 - run] == last:
            run += 1
        rule = self.rule_for(last)
        if rule.max_run and run >= rule.max_run:
            out.add(last)
        # only codes of the recent past can break a window rule; check each once
        longest = max([self.rule.window, *(r.window for r in self.overrides.values())])
        recent = list(history[-(longest - 1):]) if longest > 1 else []
        for code in set(recent):
            r = self.rule_for(code)
            if r.window and history[-(r.window - 1):].count(code) >= r.max_in_window:
                out.add(code)
        return sorted(out)

    def __call__(self, history: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        codes = [c for c in self.blocked(history) if 0 <= c < logits.size(-1) - 1]  # never the speech EOS
        if not codes:
            return logits
        logits = logits.clone()
        logits[..., codes] = float("-inf")
        return logits

    def describe(self) -> dict:
        """Settings for logs and decode summaries."""
        return {"rule": vars(self.rule), "overrides": {str(c): vars(r) for c, r in sorted(self.overrides.items())}}


def find_violations(codes: Sequence[int], blocker: SpeechRepetitionBlocker) -> list[int]:
    """Positions ``i`` where ``codes[i]`` would have been blocked after ``codes[:i]`` (empty = the sequence obeys
    the rules); used to check decoded outputs and in tests."""
    return [i for i in range(1, len(codes)) if codes[i] in blocker.blocked(codes[:i])]


__all__ = ["OSUM_OVERRIDES", "OSUM_SILENCE_CODE", "RepetitionRule", "SpeechRepetitionBlocker", "find_violations"]
