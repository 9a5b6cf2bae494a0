"""Inference: load a trained model directory, decode data lists task by task, and chat turn by turn (streaming)."""

from wenet_echat.infer.decode import LoadedModel, decode_batch, load_model_dir, split_output
from wenet_echat.infer.session import ChatConf, ChatEngine, ChatEvent, ChatSession

__all__ = ["ChatConf", "ChatEngine", "ChatEvent", "ChatSession", "LoadedModel", "decode_batch", "load_model_dir",
           "split_output"]
