"""The EChat model (encoder → adapter → LLM + speech embedding/head), its inputs, and encoder pre-training."""

from wenet_echat.model.echat import EChatModel, GenerateConf, SamplingConf, build_model
from wenet_echat.model.encoder_pretrain import EncoderPretrainModel
from wenet_echat.model.inputs import batch_records, make_inputs, select_examples, to_device

__all__ = ["EChatModel", "EncoderPretrainModel", "GenerateConf", "SamplingConf", "batch_records", "build_model",
           "make_inputs", "select_examples", "to_device"]
