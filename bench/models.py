"""The engines the benchmarks measure: the tiny profile, or a full-size architecture with random weights
(no download; times exactly like the released model), reference voices of a chosen length, a text set."""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from engine import Engine, EngineConfig, Voice
from engine.loader import build_cfm, load_vocab
from engine.models import model_spec
from engine.tiny import VOCOS_TINY_CONFIG, randomize_
from engine.voices import DEFAULT_TRANSCRIPT, default_voice_file

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Streaming speech should start quickly.",
    "Batching many requests together keeps the accelerator busy and the queue short.",
    "Hello there!",
    "Every request has its own seed, voice and text.",
    "Latency budgets are measured at the ninety fifth percentile.",
    "Short.",
    "One more sentence of moderate length for the mix.",
]


def random_weights_checkpoint(model: str, directory: Path) -> Path:
    """An F5 checkpoint of ``model``'s architecture with seeded random weights, in ``directory``."""
    from safetensors.torch import save_file

    vocab, size = load_vocab("")
    cfm = build_cfm(model_spec(model), vocab, size)
    randomize_(cfm, torch.Generator().manual_seed(0))
    path = directory / "random.safetensors"
    save_file({k: v.contiguous() for k, v in cfm.state_dict().items()}, str(path))
    return path


def full_vocos(directory: Path) -> Path:
    """charactr/vocos-mel-24khz's architecture with random weights."""
    import yaml
    from vocos import Vocos

    config = json.loads(json.dumps(VOCOS_TINY_CONFIG))
    config["backbone"]["init_args"].update({"dim": 512, "intermediate_dim": 1536, "num_layers": 8})
    config["head"]["init_args"]["dim"] = 512
    root = directory / "vocos"
    root.mkdir()
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    vocoder = Vocos.from_hparams(str(root / "config.yaml"))
    randomize_(vocoder, torch.Generator().manual_seed(1))
    torch.save(vocoder.state_dict(), root / "pytorch_model.bin")
    return root


def load_engine(args: argparse.Namespace, directory: Path) -> Engine:
    """The engine ``add_engine_args`` describes; random weights are written to ``directory``."""
    ckpt, vocoder = "", getattr(args, "vocoder_path", "")
    if getattr(args, "random_weights", False):
        ckpt = str(random_weights_checkpoint(args.model, directory))
        vocoder = vocoder or str(full_vocos(directory))
    return Engine.load(EngineConfig(model=args.model, device=args.device, dtype=getattr(args, "dtype", "auto"),
                                    ckpt_file=ckpt, vocoder_path=vocoder))


def reference_voice(engine: Engine, seconds: float, transcript: str = DEFAULT_TRANSCRIPT) -> Voice:
    """The default voice's first ``seconds`` as a reference (shorter references make cheaper passes)."""
    import soundfile as sf

    data, rate = sf.read(str(default_voice_file()), dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, data[: int(seconds * rate)], rate, format="WAV")
    return engine.prepare_voice("bench", buf.getvalue(), transcript)


def timed(engine: Engine, fn: Callable[[], Any]) -> float:
    """Wall seconds of ``fn()``, including the accelerator's queued work."""
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started
