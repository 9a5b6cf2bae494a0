"""Audio I/O, resampling, features (Whisper log-mel, Kaldi fbank), SpecAugment and prosody measures."""
