"""The ``tiny`` profile: the real F5-TTS and Vocos classes, small and randomly initialised.

Pretrained weights cannot be downloaded on the machines that build and test this project, so tests and
``make serve`` use a model of the real architecture with seeded random weights. It is written to disk in
the released formats (F5 EMA safetensors + vocab.txt; Vocos config.yaml + pytorch_model.bin) and loaded
through the production loader, so every code path but the numbers is the real one.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from engine.loader import build_cfm, load_vocab
from engine.models import TINY, model_spec

TINY_SEED = 1234
FORMAT_VERSION = "6"  # bump when the tiny architecture or randomisation changes

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
            if "embed" in name and name.endswith("embed.weight"):  # lookup tables: unit scale, as torch inits
                std = 1.0
            value = torch.randn(param.shape, generator=generator) * std
            if param.ndim == 1 and "norm" in name and name.endswith("weight"):
                value += 1.0  # norm gains around one, or every normalised signal is damped ~10x
            param.copy_(value)
            if name.endswith("gamma"):  # ConvNeXt layer scale: keep residual branches small, as trained
                param.mul_(0.1)


def balance_dit_(cfm: Any) -> None:
    """Make the random DiT listen to all of its inputs. Its input projection sees noise (unit scale),
    the reference log-mel (magnitude ~5) and the text embedding (~0.5) side by side; equal random
    weights would let the reference drown the text, and tests that text changes audio would fail for
    a reason no trained model has. Scale the weight columns so each input group contributes alike, and
    give the predicted flow the several-unit magnitude a trained model's has."""
    transformer = cfm.transformer
    mel_dim = transformer.proj_out.out_features
    with torch.no_grad():
        weight = transformer.input_embed.proj.weight
        weight[:, mel_dim : 2 * mel_dim].mul_(0.25)
        weight[:, 2 * mel_dim :].mul_(4.0)
        transformer.proj_out.weight.mul_(3.0)


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
        with contextlib.suppress(OSError):  # another process won the race; its copy is identical
            staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def _write_tiny(dest: Path) -> None:
    from safetensors.torch import save_file

    from engine.f5 import vocos_class

    shutil.copyfile(str(files("f5_tts").joinpath("infer/examples/vocab.txt")), dest / "vocab.txt")
    vocab, vocab_size = load_vocab(str(dest / "vocab.txt"))
    generator = torch.Generator().manual_seed(TINY_SEED)
    model = build_cfm(model_spec(TINY), vocab, vocab_size)
    randomize_(model, generator)
    balance_dit_(model)
    # Released F5 checkpoints are EMA safetensors: "ema_model."-prefixed keys plus EMA bookkeeping.
    state = {f"ema_model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    state.update({"initted": torch.tensor([True]), "step": torch.tensor([1])})
    save_file(state, str(dest / "model.safetensors"))

    vocos_dir = dest / "vocos"
    vocos_dir.mkdir()
    (vocos_dir / "config.yaml").write_text(yaml.safe_dump(VOCOS_TINY_CONFIG))
    vocoder = vocos_class().from_hparams(str(vocos_dir / "config.yaml"))
    randomize_(vocoder, generator)
    torch.save(vocoder.state_dict(), vocos_dir / "pytorch_model.bin")
