"""Speech tokens -> waveform: conditional flow matching to a log-mel, then a neural vocoder or Griffin-Lim.

``TOKEN2WAV`` names: ``flow_vocoder`` (= ``flow_hifigan``, :class:`Token2Wav`); ``VOCODER_NETS`` (the
``vocoder_type`` key): ``hifigan`` (:class:`HiFiGANGenerator`) and ``istft`` (:class:`ISTFTVocoder`, frame-rate
ConvNeXt + inverse STFT). Build from a config with :func:`build_token2wav`,
train with ``wenet_echat.bin.train_token2wav``, synthesise with ``wenet_echat.bin.synthesize`` and load a trained
model directory with :func:`load_token2wav`. :class:`StreamingSynthesizer` turns tokens into audio chunks as they
arrive; :mod:`wenet_echat.token2wav.cosyvoice` maps CosyVoice-300M checkpoints where the modules correspond.
"""

from wenet_echat.token2wav.cosyvoice import (
    CosyVoiceMappingError,
    MappingReport,
    inspect_cosyvoice_checkpoint,
    load_cosyvoice,
)
from wenet_echat.token2wav.flow import FlowMatching, build_flow, mel_frames
from wenet_echat.token2wav.griffinlim import GriffinLimVocoder, griffin_lim, mel_to_linear, spectral_convergence
from wenet_echat.token2wav.istft_vocoder import ISTFTVocoder
from wenet_echat.token2wav.model import (
    TOKEN2WAV,
    VOCODER_NETS,
    Token2Wav,
    Token2WavFileError,
    build_token2wav,
    load_token2wav,
    save_part,
    save_token2wav,
)
from wenet_echat.token2wav.streaming import StreamConfig, StreamingSynthesizer
from wenet_echat.token2wav.vocoder import HiFiGANGenerator, MelConfig, VocoderDiscriminator, log_mel

__all__ = [
    "TOKEN2WAV",
    "VOCODER_NETS",
    "CosyVoiceMappingError",
    "FlowMatching",
    "GriffinLimVocoder",
    "HiFiGANGenerator",
    "ISTFTVocoder",
    "MappingReport",
    "MelConfig",
    "StreamConfig",
    "StreamingSynthesizer",
    "Token2Wav",
    "Token2WavFileError",
    "VocoderDiscriminator",
    "build_flow",
    "build_token2wav",
    "griffin_lim",
    "inspect_cosyvoice_checkpoint",
    "load_cosyvoice",
    "load_token2wav",
    "log_mel",
    "mel_frames",
    "mel_to_linear",
    "save_part",
    "save_token2wav",
    "spectral_convergence",
]
