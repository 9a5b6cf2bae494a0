"""Speech encoders (Whisper-compatible) and their checkpoint loaders; built by name through ``ENCODERS``."""

from wenet_echat.encoder.loaders import (
    HF_KEYMAP,
    OPENAI_KEYMAP,
    KeyMap,
    WhisperCheckpointError,
    export_state_dict,
    load_encoder_state,
    load_hf_whisper_encoder,
    load_openai_whisper_encoder,
)
from wenet_echat.encoder.whisper import (
    ENCODERS,
    WhisperConvStem,
    WhisperEncoder,
    WhisperEncoderConfig,
    build_whisper_encoder,
    conv_stem_lengths,
)

__all__ = [
    "ENCODERS",
    "HF_KEYMAP",
    "OPENAI_KEYMAP",
    "KeyMap",
    "WhisperCheckpointError",
    "WhisperConvStem",
    "WhisperEncoder",
    "WhisperEncoderConfig",
    "build_whisper_encoder",
    "conv_stem_lengths",
    "export_state_dict",
    "load_encoder_state",
    "load_hf_whisper_encoder",
    "load_openai_whisper_encoder",
]
