"""The EChat model (encoder → adapter → LLM + speech embedding/head) and its inputs."""

from wenet_echat.model.echat import EChatModel, GenerateConf, SamplingConf, build_model
from wenet_echat.model.inputs import batch_records, make_inputs, select_examples, to_device

__all__ = ["EChatModel", "GenerateConf", "SamplingConf", "batch_records", "build_model", "make_inputs",
           "select_examples", "to_device"]
