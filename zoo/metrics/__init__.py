"""Reconstruction metrics per modality (functions on tensors, one value per item).

See each module's docstring for the exact conventions. Metrics that need a package or weights file that is
not present raise :class:`MetricUnavailable` naming exactly what they need.
"""

from .asr import asr_wer, character_error_rate, normalize_text, transcribe, whisper_model_dir, word_error_rate
from .audio import align, estimate_delay, estoi, mel_distance, multi_resolution_stft_distance, pesq, si_sdr, stoi
from .base import MetricUnavailable, package_version
from .fid import FrechetResult, feature_statistics, frechet_distance, frechet_distance_features, inception_features, rfid
from .image import lpips, lpips_backbone_path, ms_ssim, psnr, ssim
from .series import (BANDS, PROBE_SPLIT_RULE, balanced_accuracy, band_power_error, band_powers, channel_correlation,
                     cohen_kappa, linear_probe, linear_probe_cv, linear_probe_predict, probe_folds,
                     spectrogram_distance, token_histograms)
from .speech import dnsmos, speaker_embedding, speaker_similarity
from .utmos import utmos
from .video import fvd, i3d_features
from .wavlm_ecapa import speaker_similarity_wavlm, wavlm_ecapa_embedding

__all__ = [
    "BANDS", "FrechetResult", "MetricUnavailable", "align", "balanced_accuracy", "band_power_error", "band_powers",
    "channel_correlation", "cohen_kappa", "estimate_delay", "estoi", "linear_probe", "lpips", "lpips_backbone_path", "mel_distance", "ms_ssim",
    "multi_resolution_stft_distance", "package_version", "pesq", "psnr", "si_sdr", "spectrogram_distance", "ssim",
    "stoi", "token_histograms", "PROBE_SPLIT_RULE", "linear_probe_cv", "linear_probe_predict", "probe_folds",
    "dnsmos", "feature_statistics", "frechet_distance", "frechet_distance_features", "fvd", "i3d_features",
    "inception_features", "rfid", "speaker_embedding", "speaker_similarity", "utmos",
    "asr_wer", "character_error_rate", "normalize_text", "transcribe", "whisper_model_dir", "word_error_rate",
    "speaker_similarity_wavlm", "wavlm_ecapa_embedding",
]
