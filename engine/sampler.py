"""One padded flow-matching pass over a batch of requests with per-item lengths and seeds.

This is ``f5_tts.model.CFM.sample`` (same ODE, timesteps, CFG and sway sampling) with two changes that
batching needs: every item's initial noise comes from its own seeded generator (upstream re-seeds the
global RNG identically for all items), and a batch of one reproduces upstream bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from torchdiffeq import odeint

from engine.f5 import get_epss_timesteps, lens_to_mask, list_str_to_idx
from engine.params import SynthesisParams

MAX_FRAMES = 65536  # upstream's cap on total (reference + generated) frames


@dataclass(frozen=True)
class SampleRequest:
    """One item of a sampling batch."""

    cond: torch.Tensor
    """Reference mel, (frames, n_mels), on the model device."""
    tokens: list[str]
    """Reference + target text as model tokens (characters / pinyin syllables)."""
    duration: int
    """Requested total frames (reference + generated); raised to fit the text as upstream does."""
    seed: int


@dataclass(frozen=True)
class SampleSettings:
    steps: int = SynthesisParams.nfe_steps
    cfg_strength: float = SynthesisParams.cfg_strength
    sway_sampling_coef: float | None = SynthesisParams.sway_sampling_coef


def total_frames(cond_frames: int, n_tokens: int, duration: int) -> int:
    """The frame count CFM.sample settles on: at least the text and the reference, plus one."""
    return min(max(max(n_tokens, cond_frames) + 1, duration), MAX_FRAMES)


def _noise(durations: list[int], seeds: list[int], channels: int, device: torch.device,
           dtype: torch.dtype) -> torch.Tensor:
    noise = []
    for frames, seed in zip(durations, seeds, strict=True):
        gen = torch.Generator(device=device).manual_seed(seed)
        noise.append(torch.randn(frames, channels, generator=gen, device=device, dtype=dtype))
    return pad_sequence(noise, padding_value=0, batch_first=True)


@torch.inference_mode()
def sample(cfm: Any, requests: list[SampleRequest], settings: SampleSettings) -> tuple[torch.Tensor, list[int]]:
    """Returns the sampled mel (B, T, n_mels) with the reference frames restored, and each item's length."""
    param = next(cfm.parameters())
    device, dtype = param.device, param.dtype
    lens = torch.tensor([r.cond.shape[0] for r in requests], device=device)
    text = list_str_to_idx([r.tokens for r in requests], cfm.vocab_char_map).to(device)
    durations = [total_frames(r.cond.shape[0], len(r.tokens), r.duration) for r in requests]
    longest = max(durations)

    cond = pad_sequence([r.cond.to(dtype) for r in requests], batch_first=True)
    cond = F.pad(cond, (0, 0, 0, longest - cond.shape[1]), value=0.0)
    cond_mask = lens_to_mask(lens, length=longest).unsqueeze(-1)
    step_cond = torch.where(cond_mask, cond, torch.zeros_like(cond))
    # Batch of one: no padding, no mask (as upstream). Otherwise the mask keeps padding out of the
    # conv position embedding and text embedding, and out of attention when the processors honour it.
    mask = lens_to_mask(torch.tensor(durations, device=device)) if len(requests) > 1 else None

    def flow(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if settings.cfg_strength < 1e-5:
            return cfm.transformer(x=x, cond=step_cond, text=text, time=t, mask=mask,
                                   drop_audio_cond=False, drop_text=False, cache=True)
        both = cfm.transformer(x=x, cond=step_cond, text=text, time=t, mask=mask, cfg_infer=True, cache=True)
        pred, null_pred = torch.chunk(both, 2, dim=0)
        return pred + (pred - null_pred) * settings.cfg_strength

    y0 = _noise(durations, [r.seed for r in requests], cfm.num_channels, device, step_cond.dtype)
    t = get_epss_timesteps(settings.steps, device=device, dtype=step_cond.dtype)
    if settings.sway_sampling_coef is not None:
        t = t + settings.sway_sampling_coef * (torch.cos(torch.pi / 2 * t) - 1 + t)
    try:
        trajectory = odeint(flow, y0, t, **cfm.odeint_kwargs)
    finally:
        cfm.transformer.clear_cache()
    return torch.where(cond_mask, cond, trajectory[-1]), durations
