"""TaDiCodec's Vocos vocoder, built from the shared pieces in :mod:`audio.vocos`.

Normalised mel ``[B, 128, T]`` -> ConvNeXt backbone (``backbone.*``) -> ISTFT head with "same" padding
(``head.*``; exp-magnitude clipped at 100) -> waveform ``[B, T * hop]`` at 24 kHz. The state-dict names are the
release's (``vocoder/model.safetensors``), so its tensors load one to one.
"""

from __future__ import annotations

import torch
from torch import nn

from audio.vocos import ISTFTHead, VocosBackbone

from .config import VocosConfig

__all__ = ["TaDiCodecVocoder"]


class TaDiCodecVocoder(nn.Module):
    def __init__(self, config: VocosConfig):
        super().__init__()
        self.config = config
        self.backbone = VocosBackbone(config.input_channels, config.dim, config.intermediate_dim, config.num_layers)
        self.head = ISTFTHead(config.dim, config.n_fft, config.hop_size, padding=config.padding)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``mel [B, input_channels, T]`` (the model's normalised mel) -> ``[B, T * hop_size]``."""
        return self.head(self.backbone(mel))

    def save_pretrained(self, save_directory) -> None:
        """Write ``vocoder/config.json`` (the release's ``{"model": {"vocos": {...}}}``) and
        ``vocoder/model.safetensors`` (the release's key names) under ``save_directory``: the folder can replace a
        release's ``vocoder/`` and loads with :meth:`TaDiCodec.load_vocoder`. Written to a temporary folder, then
        moved into place."""
        import json
        import os
        import shutil
        import tempfile
        from pathlib import Path

        from safetensors.torch import save_file

        root = Path(save_directory)
        if root.exists() and not root.is_dir():
            raise ValueError(f"save_pretrained: {root} exists and is not a directory")
        dest = root / "vocoder"
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tokenzoo-save-", dir=dest))
        try:
            c = self.config
            vocos = {"input_channels": c.input_channels, "dim": c.dim, "intermediate_dim": c.intermediate_dim,
                     "num_layers": c.num_layers, "n_fft": c.n_fft, "hop_size": c.hop_size, "padding": c.padding}
            (tmp / "config.json").write_text(json.dumps({"model": {"vocos": vocos}}, indent=2) + "\n")
            save_file({k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()},
                      str(tmp / "model.safetensors"), metadata={"format": "pt"})
            for name in ("model.safetensors", "config.json"):
                os.replace(tmp / name, dest / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
