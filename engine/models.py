"""Which F5-TTS architectures the server knows, and where their weights live on the hub."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from engine.errors import ModelLoadError

TINY = "tiny"

# Small enough to run 16-item batches on two CPU cores in well under a second, big enough that every code
# path of the real architecture (text ConvNeXt, conv position embedding, several DiT blocks) is exercised.
TINY_ARCH: dict[str, Any] = {
    "dim": 64,
    "depth": 2,
    "heads": 2,
    "dim_head": 32,
    "ff_mult": 2,
    "text_dim": 32,
    "text_mask_padding": True,
    "qk_norm": None,
    "conv_layers": 1,
    "pe_attn_head": None,
    "attn_backend": "torch",
}

# Hub checkpoints for the released models, as f5_tts.api names them.
_HUB_CKPTS = {
    "F5TTS_v1_Base": ("SWivid/F5-TTS", "F5TTS_v1_Base/model_1250000.safetensors"),
    "F5TTS_Base": ("SWivid/F5-TTS", "F5TTS_Base/model_1200000.safetensors"),
    "E2TTS_Base": ("SWivid/E2-TTS", "E2TTS_Base/model_1200000.safetensors"),
}
VOCOS_REPO = "charactr/vocos-mel-24khz"


@dataclass(frozen=True)
class MelConfig:
    target_sample_rate: int = 24_000
    n_mel_channels: int = 100
    hop_length: int = 256
    win_length: int = 1024
    n_fft: int = 1024
    mel_spec_type: str = "vocos"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    backbone: str
    arch: dict[str, Any] = field(default_factory=dict)
    mel: MelConfig = MelConfig()
    hub_ckpt: tuple[str, str] | None = None


def available_models() -> list[str]:
    configs = files("f5_tts").joinpath("configs")
    names = sorted(p.name.removesuffix(".yaml") for p in configs.iterdir() if p.name.endswith(".yaml"))
    return [*names, TINY]


def model_spec(name: str) -> ModelSpec:
    """The architecture for ``name``: the f5-tts config of that name, or the tiny test profile."""
    if name == TINY:
        return ModelSpec(name=TINY, backbone="DiT", arch=dict(TINY_ARCH))
    path = files("f5_tts").joinpath(f"configs/{name}.yaml")
    if not path.is_file():
        raise ModelLoadError(f"unknown model {name!r}; known models: {', '.join(available_models())}")
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(str(path)).model
    arch = OmegaConf.to_container(cfg.arch, resolve=True)
    assert isinstance(arch, dict)
    # Training-only switches: activation checkpointing costs time at inference, and the mask flag is
    # replaced by the engine's own broadcast-mask attention (engine.attention).
    arch.pop("checkpoint_activations", None)
    arch.pop("attn_mask_enabled", None)
    mel = MelConfig(**OmegaConf.to_container(cfg.mel_spec, resolve=True))  # type: ignore[arg-type]
    if mel.mel_spec_type != "vocos":
        raise ModelLoadError(f"model {name!r} uses the {mel.mel_spec_type} vocoder; only vocos is supported")
    return ModelSpec(
        name=name, backbone=str(cfg.backbone), arch={str(k): v for k, v in arch.items()},
        mel=mel, hub_ckpt=_HUB_CKPTS.get(name),
    )
