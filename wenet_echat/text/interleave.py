"""Text-guided speech phase: the reply's text ids fed again in chunks between chunks of its speech codes.

With ``model.speech_text_interleave: [N, M]`` the speech phase of every speaking task reads::

    [4096] t_1..t_N  s_1..s_M  t_N+1..t_2N  s_M+1..s_2M  ...  (text used up)  s_..  [4096]

The text chunks are the spoken text (the reply; for TTS the text to say) encoded on its own, fed as ordinary text
embeddings and never predicted (no loss): the model writes its whole text reply first, as in the plain layout, and
re-reads it chunk by chunk while it speaks, so the codes it is about to write always follow a few text tokens they
say. This is the fixed-ratio text/speech interleaving of CosyVoice 2's streaming LM and OSUM-EChat's 6 : 18
streaming mode, applied to a speech phase whose text is already known. Choose ``N / M`` above the corpus's text
ids per speech code (``local/speech_text_ratio.py``), so the text stays ahead of the speech.

One rule places the chunks, in training and decoding alike (:meth:`Interleave.chunk_before`): before speech
position ``c`` (0 = the first code; the closing EOS is position ``len(codes)``), chunk ``c // M`` is fed when ``c``
is a multiple of ``M`` and that chunk exists. Chunks left when the speech ends are not fed.

With ``model.speech_text_end: true`` the spoken text ends with the text EOS id (``end``), so the chunk that uses
the text up says so: without it, a chunk boundary with nothing to feed is the only sign that the speech is
nearing its end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Interleave:
    """``text`` ids per chunk, then ``speech`` codes per chunk; ``end``: an id closing the spoken text (None: none)."""

    text: int
    speech: int
    end: int | None = None

    def __post_init__(self) -> None:
        for name in ("text", "speech"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"speech_text_interleave: {name} chunk must be an int >= 1, got {value!r}")

    @classmethod
    def from_conf(cls, value: Any, key: str = "model.speech_text_interleave", end: int | None = None
                  ) -> Interleave | None:
        """None (off) for ``None`` / ``[]`` / ``false``, else ``[N, M]`` (and ``end``, see the class)."""
        if value in (None, False, []):
            return None
        if not isinstance(value, list) or len(value) != 2:
            raise ValueError(f"{key}: expected [text_ids_per_chunk, speech_codes_per_chunk] or null, got {value!r}")
        try:
            return cls(*value, end=end)
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None

    def chunk_before(self, text_ids: Sequence[int], position: int) -> list[int]:
        """The text ids to feed before speech position ``position`` (codes already written), or ``[]``."""
        if position % self.speech:
            return []
        spoken = [*text_ids, self.end] if self.end is not None else text_ids
        start = position // self.speech * self.text
        return list(spoken[start : start + self.text])

    def layout(self, text_ids: Sequence[int], codes: Sequence[int], eos: int) -> list[tuple[str, list[int]]]:
        """The speech phase after its opening BOS as ``(kind, ids)`` runs: ``"text"`` (a fed chunk) or
        ``"speech"`` (codes; the last run ends with ``eos``, which is speech position ``len(codes)``)."""
        positions = [*codes, eos]
        runs: list[tuple[str, list[int]]] = []
        for c in range(0, len(positions), self.speech):
            chunk = self.chunk_before(text_ids, c)
            if chunk:
                runs.append(("text", chunk))
            runs.append(("speech", positions[c : c + self.speech]))
        return runs


__all__ = ["Interleave"]
