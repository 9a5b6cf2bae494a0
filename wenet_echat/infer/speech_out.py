"""Speech codes → reply audio while (or after) the LLM speaks: three ways behind one small interface.

* :class:`InlineStream`: :class:`~wenet_echat.token2wav.StreamingSynthesizer` in the decoding thread (a chunk is
  synthesised between two LLM steps);
* :class:`ThreadedStream`: the same synthesizer in its own thread, so LLM decoding and token-to-wave overlap on a
  multi-core CPU or a GPU (chunks come out in order; ``ready()`` never blocks);
* :class:`WholeReply`: one whole-utterance synthesis after the last code (no streaming).

All three give the same samples for the same codes as far as the synthesis is deterministic (streamed vs whole
differ only by what the chunked flow and the cross-fades change).
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import torch

from wenet_echat.token2wav.model import Token2Wav

_END = object()


class InlineStream:
    def __init__(self, model: Token2Wav, vocoder: str):
        self.synth = model.streamer(vocoder)

    def push(self, code: int) -> list[torch.Tensor]:
        return self.synth.push([code])

    def ready(self) -> list[torch.Tensor]:
        return []

    def finish(self) -> list[torch.Tensor]:
        return self.synth.finish()

    def close(self) -> None:
        pass


class ThreadedStream:
    """Codes go into a queue read by a worker thread; its chunks come back through another queue."""

    def __init__(self, model: Token2Wav, vocoder: str):
        self.synth = model.streamer(vocoder)
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.outbox: queue.Queue[Any] = queue.Queue()
        self.error: BaseException | None = None
        self.ended = False
        self.thread = threading.Thread(target=self._work, daemon=True, name="token2wav")
        self.thread.start()

    def _work(self) -> None:
        try:
            while True:
                item = self.inbox.get()
                if item is _END:
                    break
                if item is None:
                    for chunk in self.synth.finish():
                        self.outbox.put(chunk)
                    break
                for chunk in self.synth.push([item]):
                    self.outbox.put(chunk)
        except BaseException as e:  # handed to the decoding thread by finish()
            self.error = e
        finally:
            self.outbox.put(_END)

    def push(self, code: int) -> list[torch.Tensor]:
        self.inbox.put(int(code))
        return self.ready()

    def ready(self) -> list[torch.Tensor]:
        out = []
        while not self.ended:
            try:
                item = self.outbox.get_nowait()
            except queue.Empty:
                break
            if item is _END:
                self.ended = True
            else:
                out.append(item)
        return out

    def finish(self) -> list[torch.Tensor]:
        """Flush and wait for every remaining chunk."""
        self.inbox.put(None)
        out = []
        while not self.ended:
            item = self.outbox.get()
            if item is _END:
                self.ended = True
            else:
                out.append(item)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return out

    def close(self) -> None:
        """Stop the worker without flushing (a cancelled turn)."""
        if self.thread.is_alive():
            self.inbox.put(_END)


class WholeReply:
    def __init__(self, model: Token2Wav, vocoder: str):
        self.model, self.vocoder = model, vocoder
        self.codes: list[int] = []

    def push(self, code: int) -> list[torch.Tensor]:
        self.codes.append(int(code))
        return []

    def ready(self) -> list[torch.Tensor]:
        return []

    def finish(self) -> list[torch.Tensor]:
        return [self.model.synthesize(self.codes, self.vocoder)] if self.codes else []

    def close(self) -> None:
        pass


SpeechOut = InlineStream | ThreadedStream | WholeReply


def speech_out(model: Token2Wav, vocoder: str, stream: bool, thread: bool) -> SpeechOut:
    if not stream:
        return WholeReply(model, vocoder)
    return ThreadedStream(model, vocoder) if thread else InlineStream(model, vocoder)


__all__ = ["InlineStream", "SpeechOut", "ThreadedStream", "WholeReply", "speech_out"]
