"""Discrete speech tokens of reply audio: the tokenizer interface, k-means units and CosyVoice's S3 tokenizer.

``SPEECH_TOKENIZERS`` names: ``kmeans`` (:class:`KMeansTokenizer`, trained by
``wenet_echat.bin.train_speech_tokenizer``) and ``s3`` (:class:`S3Tokenizer`, needs the optional ``s3tokenizer``
package). ``wenet_echat.bin.extract_speech_tokens`` adds ``response_tokens`` to a data.list with either.
"""

from wenet_echat.speech_token.kmeans import (
    SPEECH_TOKENIZERS,
    FeatureConfig,
    KMeansResult,
    KMeansTokenizer,
    SpeechTokenizer,
    TokenizerFileError,
    build_speech_tokenizer,
    codebook_stats,
    fit_kmeans_tokenizer,
    stacked_features,
    train_kmeans,
)
from wenet_echat.speech_token.s3 import S3FormatError, S3Tokenizer

__all__ = [
    "SPEECH_TOKENIZERS",
    "FeatureConfig",
    "KMeansResult",
    "KMeansTokenizer",
    "S3FormatError",
    "S3Tokenizer",
    "SpeechTokenizer",
    "TokenizerFileError",
    "build_speech_tokenizer",
    "codebook_stats",
    "fit_kmeans_tokenizer",
    "stacked_features",
    "train_kmeans",
]
