"""Inference: load a trained model directory and decode data lists task by task."""

from wenet_echat.infer.decode import LoadedModel, decode_batch, load_model_dir, split_output

__all__ = ["LoadedModel", "decode_batch", "load_model_dir", "split_output"]
