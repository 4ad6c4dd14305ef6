"""The ``tiny`` profile: the real F5-TTS and Vocos classes, small and randomly initialised.

Pretrained weights cannot be downloaded on the machines that build and test this project, so tests and
``make serve`` use a model of the real architecture with seeded random weights. It is written to disk in
the released formats (F5 EMA safetensors + vocab.txt; Vocos config.yaml + pytorch_model.bin) and loaded
through the production loader, so every code path but the numbers is the real one.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import torch
import yaml
from torch import nn

from engine.loader import build_cfm, load_vocab
from engine.models import TINY, model_spec

TINY_SEED = 1234
FORMAT_VERSION = "2"  # bump when the tiny architecture or randomisation changes

VOCOS_TINY_CONFIG = {
    "feature_extractor": {
        "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
        "init_args": {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100, "padding": "center"},
    },
    "backbone": {
        "class_path": "vocos.models.VocosBackbone",
        "init_args": {"input_channels": 100, "dim": 64, "intermediate_dim": 128, "num_layers": 2},
    },
    "head": {
        "class_path": "vocos.heads.ISTFTHead",
        "init_args": {"dim": 64, "n_fft": 1024, "hop_length": 256, "padding": "same"},
    },
}


@dataclass(frozen=True)
class TinyPaths:
    ckpt: Path
    vocab: Path
    vocoder_dir: Path


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "f5tts-server" / "tiny"


def randomize_(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw *every* parameter. A fresh DiT is zero at its output (adaLN-zero): left as is, it would
    produce the same audio for any input and make every parity or invariance test pass vacuously."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            fan_in = param.shape[1] if param.ndim >= 2 else param.shape[0]
            for extra in param.shape[2:]:
                fan_in *= extra
            std = 1.0 / math.sqrt(max(fan_in, 1))
            if param.ndim < 2:
                std = 0.1
            param.copy_(torch.randn(param.shape, generator=generator) * std)
            if name.endswith("gamma"):  # ConvNeXt layer scale: keep residual branches small, as trained
                param.mul_(0.1)


def ensure_tiny_model(cache_dir: Path | None = None) -> TinyPaths:
    """Write the tiny checkpoints once (atomically, so concurrent starts are safe) and return their paths."""
    root = (cache_dir or default_cache_dir()) / f"v{FORMAT_VERSION}"
    paths = TinyPaths(root / "model.safetensors", root / "vocab.txt", root / "vocos")
    if paths.ckpt.is_file() and (paths.vocoder_dir / "pytorch_model.bin").is_file():
        return paths
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=root.parent))
    try:
        _write_tiny(staging)
        try:
            staging.rename(root)
        except OSError:  # another process won the race; its copy is identical
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def _write_tiny(dest: Path) -> None:
    from safetensors.torch import save_file
    from vocos import Vocos

    shutil.copyfile(str(files("f5_tts").joinpath("infer/examples/vocab.txt")), dest / "vocab.txt")
    vocab, vocab_size = load_vocab(str(dest / "vocab.txt"))
    generator = torch.Generator().manual_seed(TINY_SEED)
    model = build_cfm(model_spec(TINY), vocab, vocab_size)
    randomize_(model, generator)
    # Released F5 checkpoints are EMA safetensors: "ema_model."-prefixed keys plus EMA bookkeeping.
    state = {f"ema_model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    state.update({"initted": torch.tensor([True]), "step": torch.tensor([1])})
    save_file(state, str(dest / "model.safetensors"))

    vocos_dir = dest / "vocos"
    vocos_dir.mkdir()
    (vocos_dir / "config.yaml").write_text(yaml.safe_dump(VOCOS_TINY_CONFIG))
    vocoder = Vocos.from_hparams(str(vocos_dir / "config.yaml"))
    randomize_(vocoder, generator)
    with torch.no_grad():  # log-magnitude bias: keep the random spectrum at speech-like loudness
        out = vocoder.head.out
        out.bias[: out.bias.shape[0] // 2] += 2.0
    torch.save(vocoder.state_dict(), vocos_dir / "pytorch_model.bin")
