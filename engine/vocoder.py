"""Batched Vocos decoding in which padding cannot reach any item's samples.

Vocos is convolutional (kernel-7 ConvNeXt blocks) and ends in an overlap-add ISTFT, so a right-padded
item in a batch would hear the padding: its last ~30 frames would differ from a solo decode. We run the
backbone with the padding zeroed before every convolution (exactly what a solo decode's zero padding
sees), silence padded frames in the spectrum, and normalise the overlap-add by each item's own window
envelope. With no padding every operation is Vocos's own, so batch size 1 equals ``vocos.decode``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def _frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]  # (B, T)


def _backbone(backbone: Any, mel: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """VocosBackbone.forward with the padding re-zeroed ahead of each convolution."""
    x = backbone.embed(mel * keep)
    x = backbone.norm(x.transpose(1, 2)).transpose(1, 2)
    for block in backbone.convnext:
        x = block(x * keep)
    return backbone.final_layer_norm(x.transpose(1, 2))  # (B, T, C)


def _istft_same(istft: Any, spec: torch.Tensor, frame_keep: torch.Tensor) -> torch.Tensor:
    """vocos.spectral_ops.ISTFT (padding="same") with a per-item window envelope."""
    hop, win = istft.hop_length, istft.win_length
    pad = (win - hop) // 2
    _batch, _, frames = spec.shape
    spec = spec * frame_keep[:, None, :]
    frames_time = torch.fft.irfft(spec, istft.n_fft, dim=1, norm="backward") * istft.window[None, :, None]
    size = (frames - 1) * hop + win
    y = F.fold(frames_time, output_size=(1, size), kernel_size=(1, win), stride=(1, hop))[:, 0, 0, pad:-pad]
    window_sq = istft.window.square()[None, :, None] * frame_keep[:, None, :].to(istft.window.dtype)
    envelope = F.fold(window_sq, output_size=(1, size), kernel_size=(1, win), stride=(1, hop))[:, 0, 0, pad:-pad]
    safe = envelope > 1e-11
    return torch.where(safe, y / torch.where(safe, envelope, torch.ones_like(envelope)), torch.zeros_like(y))


@torch.inference_mode()
def decode_batch(vocoder: Any, mel: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    """Decode ``mel`` (B, n_mels, T) whose item i is valid for ``lengths[i]`` frames.

    Returns one 1-D waveform per item, ``lengths[i] * hop`` samples long, each equal to decoding that
    item alone.
    """
    head = vocoder.head
    istft = head.istft
    if getattr(istft, "padding", "same") != "same":
        raise ValueError("batched decode supports Vocos heads with padding='same' only")
    keep = _frame_mask(lengths, mel.shape[-1])
    x = _backbone(vocoder.backbone, mel, keep[:, None, :].to(mel.dtype))
    x = head.out(x).transpose(1, 2)
    mag, phase = x.chunk(2, dim=1)
    spec = torch.clip(torch.exp(mag), max=1e2) * (torch.cos(phase) + 1j * torch.sin(phase))
    audio = _istft_same(istft, spec, keep)
    return [audio[i, : int(n) * istft.hop_length] for i, n in enumerate(lengths.tolist())]
