"""Load F5-TTS checkpoints, vocabularies and Vocos vocoders from local paths or the hub.

Every failure becomes one ``ModelLoadError`` naming what was being loaded and from where, because the
first thing an operator sees of a bad deploy is this message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.errors import ModelLoadError
from engine.models import VOCOS_REPO, ModelSpec

_EMA_PREFIX = "ema_model."
_EMA_BOOKKEEPING = {"initted", "step"}
_STALE_BUFFERS = {"mel_spec.mel_stft.mel_scale.fb", "mel_spec.mel_stft.spectrogram.window"}


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ModelLoadError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {name} requested but CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ModelLoadError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: fp16 on CUDA (what upstream runs and was tuned with), fp32 on CPU."""
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in table:
        raise ModelLoadError(f"unknown dtype {name!r}; use auto, float32, float16 or bfloat16")
    return table[name]


def hub_file(repo_id: str, filename: str) -> Path:
    """Download (or find in the HF cache) one file; offline mode and network errors become clear errors."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as exc:  # hub raises many types: offline, 404, connection, auth
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = " (HF_HUB_OFFLINE is set and the file is not in the cache)" if offline else ""
        raise ModelLoadError(
            f"cannot fetch {filename} from hub repo {repo_id}{hint}: {type(exc).__name__}: {exc}"
        ) from exc


def resolve_checkpoint(spec: ModelSpec, ckpt_file: str) -> Path:
    if ckpt_file.startswith("hf://"):
        repo_owner, repo_name, rest = ckpt_file.removeprefix("hf://").split("/", 2)
        return hub_file(f"{repo_owner}/{repo_name}", rest)
    if ckpt_file:
        return _existing(Path(ckpt_file), "checkpoint")
    if spec.hub_ckpt is None:
        raise ModelLoadError(f"model {spec.name!r} has no released checkpoint; pass --ckpt-file")
    return hub_file(*spec.hub_ckpt)


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ModelLoadError(f"{what} file not found: {path}")
    return path


def load_vocab(vocab_file: str) -> tuple[dict[str, int], int]:
    """The character map (one token per line, space first) and its size."""
    path = Path(vocab_file) if vocab_file else Path(str(files("f5_tts").joinpath("infer/examples/vocab.txt")))
    _existing(path, "vocab")
    with path.open(encoding="utf-8") as f:
        vocab = {line[:-1] if line.endswith("\n") else line: i for i, line in enumerate(f)}
    if vocab.get(" ") != 0:
        raise ModelLoadError(f"vocab {path} must have a space as its first token (index 0 = unknown char)")
    return vocab, len(vocab)


def _placed(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    """On ``device``; floating tensors in ``dtype`` (integer tensors keep theirs, as ``Module.to`` does).

    A CPU tensor still backed by the file's memory map is copied once into memory of its own: mapped
    weights would be paged in from a (network) volume during inference, fault if the file is replaced,
    and safetensors' are not 64-byte aligned, which changes the CPU kernels' rounding."""
    target = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
    placed = tensor.to(device=device, dtype=target)
    if placed.device.type == "cpu" and placed.data_ptr() == tensor.data_ptr():
        placed = placed.clone()
    return placed


def _model_keys(keys: list[str]) -> list[str]:
    """The keys worth reading: the EMA weights when the file has them (released checkpoints hold only
    those plus EMA bookkeeping; training ones may hold the online weights too), else every key."""
    ema = [k for k in keys if k.startswith(_EMA_PREFIX)]
    return ema or [k for k in keys if k not in _EMA_BOOKKEEPING]


def _torch_load(path: Path) -> Any:
    """``torch.load`` memory-mapped where the file allows it: only the tensors we keep are read (by
    ``_placed``, straight into their device and dtype)."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) files cannot be mapped
        return torch.load(str(path), map_location="cpu", weights_only=True)


def _read_raw(path: Path, device: torch.device, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        # One tensor at a time, straight onto the device: never the whole file, never a CPU copy.
        index = torch.cuda.current_device() if device.type == "cuda" and device.index is None else device.index
        name = device.type if index is None else f"{device.type}:{index}"  # safetensors wants "cuda:N"
        with safe_open(str(path), framework="pt", device=name) as f:
            return {k: _placed(f.get_tensor(k), device, dtype) for k in _model_keys(list(f.keys()))}
    raw = _torch_load(path)
    for key in ("ema_model_state_dict", "model_state_dict"):
        if isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    return {k: _placed(raw[k], device, dtype) for k in _model_keys(list(raw)) if isinstance(raw[k], torch.Tensor)}


def read_state_dict(path: Path, device: torch.device | None = None,
                    dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Model weights from ``.safetensors`` or ``.pt``, EMA or plain, with upstream's key conventions,
    read onto ``device`` (default CPU) in ``dtype`` (default: as stored)."""
    try:
        raw = _read_raw(path, device or torch.device("cpu"), dtype)
    except Exception as exc:
        raise ModelLoadError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    state = {k.removeprefix(_EMA_PREFIX): v for k, v in raw.items()}
    return {k: v for k, v in state.items() if k not in _STALE_BUFFERS}


@contextmanager
def uninitialised_parameters() -> Iterator[None]:
    """Build modules without initialising their parameters: the checkpoint overwrites them anyway, and
    random initialisation of the full-size DiT takes 8.9 s on one CPU core. Parameters are allocated but
    never written (untouched pages cost no memory) until ``load_weights`` swaps in the checkpoint's.
    This is transformers' ``no_init_weights``: ``torch.nn.init``'s in-place initialisers do nothing while
    active (process-wide, so build one model at a time in it; loading is single-threaded). Meta-device
    parameters (accelerate's ``init_empty_weights``) would avoid even the allocation, but initialising
    meta tensors runs torch's Python decompositions, which import torch._dynamo: +1.7 s."""
    saved = {name: fn for name, fn in vars(nn.init).items() if name.endswith("_") and not name.startswith("_")
             and callable(fn)}

    def leave(tensor: torch.Tensor, *_args: Any, **_kwargs: Any) -> torch.Tensor:
        return tensor

    for name in saved:
        setattr(nn.init, name, leave)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], source: Path, what: str) -> None:
    """Strict load; a mismatch is summarised in one line instead of torch's page of keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)}, "
                         f"model {tuple(own[k].shape)})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise ModelLoadError(f"{what} {source} does not fit the architecture: {'; '.join(parts)}")
    # assign: the checkpoint's tensors (already on the device, in the dtype) become the parameters, with no
    # copy into freshly allocated ones; it is also what fills parameters built by ``uninitialised_parameters``.
    module.load_state_dict(state, strict=True, assign=True)


def build_cfm(spec: ModelSpec, vocab: dict[str, int], vocab_size: int) -> Any:
    """The upstream CFM around a DiT/UNetT of ``spec``'s shape, with fresh (untrained) weights."""
    from engine.f5 import CFM, DiT, UNetT

    backbones: dict[str, type[nn.Module]] = {"DiT": DiT, "UNetT": UNetT}
    if spec.backbone not in backbones:
        raise ModelLoadError(f"model {spec.name!r} has unsupported backbone {spec.backbone!r}")
    mel = spec.mel
    transformer = backbones[spec.backbone](
        **spec.arch, text_num_embeds=vocab_size, mel_dim=mel.n_mel_channels
    )
    return CFM(
        transformer=transformer,
        mel_spec_kwargs={
            "n_fft": mel.n_fft, "hop_length": mel.hop_length, "win_length": mel.win_length,
            "n_mel_channels": mel.n_mel_channels, "target_sample_rate": mel.target_sample_rate,
            "mel_spec_type": mel.mel_spec_type,
        },
        odeint_kwargs={"method": "euler"},
        vocab_char_map=vocab,
    )


def load_f5(spec: ModelSpec, ckpt: Path, vocab_file: str, device: torch.device,
            dtype: torch.dtype) -> Any:
    vocab, vocab_size = load_vocab(vocab_file)
    with uninitialised_parameters():
        model = build_cfm(spec, vocab, vocab_size)
    load_weights(model, read_state_dict(ckpt, device, dtype), ckpt, "checkpoint")
    return model.to(device=device, dtype=dtype).eval()  # the buffers no checkpoint holds


def load_vocos(vocoder_path: str, device: torch.device) -> Any:
    """Vocos from a local dir (``config.yaml`` + ``pytorch_model.bin``) or the hub; kept in fp32."""
    from engine.f5 import vocos_class

    Vocos = vocos_class()
    if vocoder_path:
        root = Path(vocoder_path)
        config, weights = _existing(root / "config.yaml", "vocoder config"), _existing(
            root / "pytorch_model.bin", "vocoder weights")
    else:
        config, weights = hub_file(VOCOS_REPO, "config.yaml"), hub_file(VOCOS_REPO, "pytorch_model.bin")
    try:
        with uninitialised_parameters():
            vocoder = Vocos.from_hparams(str(config))
        state = {k: _placed(v, device, torch.float32) for k, v in _torch_load(weights).items()}
    except Exception as exc:
        raise ModelLoadError(f"cannot load vocoder from {config.parent}: {type(exc).__name__}: {exc}") from exc
    load_weights(vocoder, state, weights, "vocoder weights")
    return vocoder.to(device).eval()
