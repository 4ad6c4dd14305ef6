"""Step-level batching: items join and leave a running batch between Euler steps of the flow.

``engine.sampler.sample`` integrates a whole batch at once, so the batch is fixed for all its steps. Here
every item carries its own ODE state (noisy mel, timestep schedule, step index, conditioning, text
embedding), and one ``step()`` advances every active item by one Euler step in one padded, masked DiT
pass. Items with different ``nfe_steps``, CFG strength or sway share a pass: each row gets its own time,
and only items with CFG get an unconditional row.

An item run through the stepper alone reproduces ``Engine.synthesize([item])``: the same seeded noise,
timesteps, text embedding (computed solo, as a batch of one computes it) and Euler update as torchdiffeq's
fixed-grid ``euler`` (``y1 = y0 + (t1 - t0) * f(t0, y0)``). Batched, padding is masked in attention and
the conv position embedding, so an item's audio does not depend on who shares its steps.

The padded pass inputs (reference mels, text embeddings, masks, the CFG layout) are kept while the same
items step together (in one pass or several: a scheduler may split a step by length), which is most
steps: only the noisy mels (held padded, padding kept at zero) and the per-row times change. Padding them
anew each step cost 1–8 % of a step of 4–8 short mixed-length items on CPU.

Not thread-safe: call every method from one thread (the scheduler's model worker).
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from engine.f5 import get_epss_timesteps, lens_to_mask, list_str_to_idx
from engine.sampler import _noise, total_frames
from engine.synthesis import Engine, SynthesisItem, _tokens
from engine.vocoder import decode_batch

_DIT_PARTS = ("time_embed", "text_embed", "input_embed", "rotary_embed", "transformer_blocks", "norm_out", "proj_out")
_NO_CFG = 1e-5  # below this CFG strength upstream skips the unconditional pass


@dataclass(eq=False)
class _Flow:
    """One item's ODE state. Tensors are (frames, channels) on the model device."""

    item: SynthesisItem
    x: torch.Tensor
    """The noisy mel being integrated."""
    cond: torch.Tensor
    """Reference mel, zero-padded to ``frames``."""
    cond_frames: int
    text_cond: torch.Tensor
    text_uncond: torch.Tensor | None
    """Unconditional (dropped-text) embedding; None when the item runs without CFG."""
    times: list[float]
    """Timestep schedule, ``nfe_steps + 1`` points from 0 to 1 (values of the model dtype)."""
    index: int = 0

    @property
    def frames(self) -> int:
        return int(self.x.shape[0])

    @property
    def done(self) -> bool:
        return self.index >= len(self.times) - 1

    @property
    def rows(self) -> int:
        return 1 if self.text_uncond is None else 2


@dataclass(eq=False)
class _Pass:
    """The padded inputs of a pass over ``flows``, kept while the same items step together. ``x`` holds
    their noisy mels (the flows' own ``x`` is stale until ``StepSampler._sync``)."""

    keys: tuple[Hashable, ...]
    flows: list[_Flow]
    x: torch.Tensor
    """(items, frames, channels); padding is zero."""
    cond: torch.Tensor
    text: torch.Tensor
    mask: torch.Tensor | None
    """Per DiT row; None when every item has the same length."""
    keep: torch.Tensor | None
    """(items, frames, 1): the real frames of each item; None when none is padded."""
    guided: torch.Tensor
    """Indices of the items with CFG; their unconditional rows follow the items' rows in that order."""
    strengths: list[tuple[float, torch.Tensor, torch.Tensor]]
    """(CFG strength, positions among the guided, item indices) for each distinct strength."""


@dataclass(frozen=True)
class StepResult:
    """What ``step_isolating`` did: keys that reached their last step, and keys whose pass raised."""

    finished: list[Hashable]
    failed: dict[Hashable, BaseException]


class StepSampler:
    """Per-item flow states over one engine; ``step()`` advances them all by one Euler step together."""

    def __init__(self, engine: Engine) -> None:
        dit = engine.cfm.transformer
        missing = [name for name in _DIT_PARTS if not hasattr(dit, name)]
        if missing:
            raise TypeError(f"stepwise sampling needs a DiT backbone; {type(dit).__name__} lacks {missing}")
        self.engine = engine
        self._dit = dit
        self._flows: dict[Hashable, _Flow] = {}
        self._passes: dict[tuple[Hashable, ...], _Pass] = {}
        """Kept passes, by their keys; an item is in one at most (a scheduler may step its items in
        several passes, split by length)."""

    # -- membership -----------------------------------------------------------------------------------

    @torch.inference_mode()
    def add(self, item: SynthesisItem, key: Hashable) -> int:
        """Prepare ``item``'s state under ``key``; it joins at the next step. Raises the engine's typed
        errors for an item it cannot voice. Returns the item's total frames (its cost per row)."""
        if key in self._flows:
            raise ValueError(f"key {key!r} is already active")
        self.engine.validate(item)
        self._flows[key] = self._prepare(item)
        return self._flows[key].frames

    def remove(self, key: Hashable) -> None:
        """Drop ``key`` (cancellation): it takes no further step. Unknown keys are ignored."""
        if key in self._flows:
            self._sync([key])
            del self._flows[key]

    def _prepare(self, item: SynthesisItem) -> _Flow:
        engine, cfm = self.engine, self.engine.cfm
        ref = item.voice.mel.to(engine.dtype)  # type: ignore[union-attr]  # validate() checked it is set
        tokens = list(_tokens(item.voice.ref_text, item.text))
        frames = total_frames(ref.shape[0], len(tokens), engine.duration(item))
        seed = item.seed if item.seed is not None else random.randrange(2**31)
        # The same generator use as sample(), so a solo item starts from the same noise.
        x = _noise([frames], [seed], cfm.num_channels, engine.device, engine.dtype)[0]
        text = list_str_to_idx([tokens], cfm.vocab_char_map).to(engine.device)
        # Embedded solo with an int length, as a batch of one is; the DiT's own cache is per batch.
        text_cond = self._dit.text_embed(text, seq_len=frames, drop_text=False)[0]
        text_uncond = None
        if item.cfg_strength >= _NO_CFG:
            text_uncond = self._dit.text_embed(text, seq_len=frames, drop_text=True)[0]
        times = get_epss_timesteps(item.nfe_steps, device=engine.device, dtype=engine.dtype)
        times = times + item.sway_sampling_coef * (torch.cos(torch.pi / 2 * times) - 1 + times)
        cond = F.pad(ref, (0, 0, 0, frames - ref.shape[0]))
        # As floats: exact (a float32 or half value is a double), and a pass builds its time rows in one call.
        return _Flow(item, x, cond, int(ref.shape[0]), text_cond, text_uncond, times.tolist())

    # -- what a scheduler needs to cost a step ---------------------------------------------------------

    @property
    def active(self) -> int:
        """Items that still have steps to take."""
        return sum(not f.done for f in self._flows.values())

    def keys(self) -> list[Hashable]:
        """Every held key, finished or not, in join order."""
        return list(self._flows)

    def item(self, key: Hashable) -> SynthesisItem:
        """The item held under ``key``."""
        return self._flows[key].item

    def frames(self, key: Hashable) -> int:
        """Total frames (reference + generated) of ``key``: its padded length in a pass."""
        return self._flows[key].frames

    def remaining(self, key: Hashable) -> int:
        """Euler steps ``key`` has left."""
        flow = self._flows[key]
        return len(flow.times) - 1 - flow.index

    def pass_cost(self, keys: Iterable[Hashable] | None = None) -> tuple[int, int]:
        """(DiT rows, padded frames per row) of the next pass over ``keys`` (default: all active)."""
        flows = [flow for _, flow in self._pending(keys)]
        return sum(f.rows for f in flows), max((f.frames for f in flows), default=0)

    # -- stepping -------------------------------------------------------------------------------------

    def step(self, keys: Iterable[Hashable] | None = None) -> list[Hashable]:
        """Advance ``keys`` (default: every active item) by one Euler step in one DiT pass. Returns the
        keys that took their last step. If the pass raises, no item has moved."""
        chosen = self._pending(keys)
        if chosen:
            self._advance(chosen)
        return [key for key, flow in chosen if flow.done]

    def step_isolating(self, keys: Iterable[Hashable] | None = None) -> StepResult:
        """``step()``, but a raising pass is split in halves until the items that raise alone are found.
        Every other item advances exactly once; the failed ones have not moved (remove them)."""
        wanted = [key for key, _ in self._pending(keys)]
        finished: list[Hashable] = []
        failed: dict[Hashable, BaseException] = {}
        groups = [wanted] if wanted else []
        while groups:
            group = groups.pop()
            try:
                finished += self.step(group)
            except Exception as exc:  # any model fault: isolate it, keep the rest going
                if len(group) == 1:
                    failed[group[0]] = exc
                else:
                    half = len(group) // 2
                    groups += [group[half:], group[:half]]
        return StepResult(finished, failed)

    def _pending(self, keys: Iterable[Hashable] | None) -> list[tuple[Hashable, _Flow]]:
        """(key, state) of the held, unfinished ``keys``; unknown (removed) keys are skipped."""
        wanted = list(self._flows) if keys is None else keys
        return [(k, self._flows[k]) for k in wanted if k in self._flows and not self._flows[k].done]

    @torch.inference_mode()
    def _advance(self, chosen: list[tuple[Hashable, _Flow]]) -> None:
        batch = self._pass_for(chosen)
        flows, engine = batch.flows, self.engine
        t0 = torch.tensor([f.times[f.index] for f in flows], dtype=engine.dtype, device=engine.device)
        t1 = torch.tensor([f.times[f.index + 1] for f in flows], dtype=engine.dtype, device=engine.device)
        v = self._velocity(batch, t0)  # computed before any state moves: a raise moves none
        x = batch.x + (t1 - t0)[:, None, None] * v  # torchdiffeq's Euler: y0 + dt * f(t0, y0), per row
        batch.x = x if batch.keep is None else x.masked_fill(~batch.keep, 0.0)
        for flow in flows:
            flow.index += 1

    def _pass_for(self, chosen: list[tuple[Hashable, _Flow]]) -> _Pass:
        """The kept pass when the same items step together again, else a new one (kept passes holding any
        of its items are synced back and dropped first)."""
        keys = tuple(key for key, _ in chosen)
        kept = self._passes.get(keys)
        if kept is None:
            self._sync(keys)
            kept = self._passes[keys] = self._layout(keys, [flow for _, flow in chosen])
        return kept

    def _sync(self, keys: Iterable[Hashable] | None = None) -> None:
        """Write the mels of kept passes holding any of ``keys`` (default: all) back to their flows and
        drop those passes (their membership is about to change)."""
        wanted = None if keys is None else set(keys)
        for held, kept in list(self._passes.items()):
            if wanted is None or not wanted.isdisjoint(held):
                for row, flow in zip(kept.x, kept.flows, strict=True):
                    flow.x = row[: flow.frames]
                del self._passes[held]

    def _layout(self, keys: tuple[Hashable, ...], flows: list[_Flow]) -> _Pass:
        """The DiT rows of a pass: every item's conditional row, then the unconditional rows of the items
        with CFG, whose reference audio is dropped (zeros, as DiT's ``drop_audio_cond`` does)."""
        device = self.engine.device
        guided = [n for n, f in enumerate(flows) if f.text_uncond is not None]
        nulls = [flows[n] for n in guided]
        cond = pad_sequence([f.cond for f in flows] + [torch.zeros_like(f.cond) for f in nulls], batch_first=True)
        uncond = [f.text_uncond for f in nulls if f.text_uncond is not None]  # every one of them: guided
        text = pad_sequence([f.text_cond for f in flows] + uncond, batch_first=True)
        lengths = [f.frames for f in flows]
        mask = keep = None
        # Equal lengths need no mask, which keeps a solo item on exactly the path sample() takes.
        if len(set(lengths)) > 1:
            real = lens_to_mask(torch.tensor(lengths, device=device))
            mask, keep = torch.cat([real, real[guided]]), real[:, :, None]
        strengths = []
        for strength in sorted({flows[n].item.cfg_strength for n in guided}):
            positions = [p for p, n in enumerate(guided) if flows[n].item.cfg_strength == strength]
            strengths.append((strength, torch.tensor(positions, device=device),
                              torch.tensor([guided[p] for p in positions], device=device)))
        x = pad_sequence([f.x for f in flows], batch_first=True)
        return _Pass(keys, flows, x, cond, text, mask, keep, torch.tensor(guided, dtype=torch.long, device=device),
                     strengths)

    def _velocity(self, batch: _Pass, time: torch.Tensor) -> torch.Tensor:
        """Each item's CFG-combined flow (items, frames, channels) from one DiT pass."""
        x, rows = batch.x, time
        if batch.strengths:
            x, rows = torch.cat([x, x[batch.guided]]), torch.cat([time, time[batch.guided]])
        out = self._dit_forward(x, batch.cond, batch.text, rows, batch.mask)
        pred, nulls = out[: len(batch.flows)], out[len(batch.flows):]
        for strength, positions, items in batch.strengths:  # upstream's CFG combination, per strength
            cond = pred[items]
            pred = pred.index_copy(0, items, cond + (cond - nulls[positions]) * strength)
        return pred

    def _dit_forward(self, x: torch.Tensor, cond: torch.Tensor, text: torch.Tensor, time: torch.Tensor,
                     mask: torch.Tensor | None) -> torch.Tensor:
        """``DiT.forward`` with the text embedding given per row (its cache cannot follow a changing
        batch) and the CFG rows already laid out; the same sub-modules in the same order."""
        dit = self._dit
        t = dit.time_embed(time)
        h = dit.input_embed(x, cond, text, drop_audio_cond=False, audio_mask=mask)
        rope = dit.rotary_embed.forward_from_seq_len(x.shape[1])
        residual = h
        for block in dit.transformer_blocks:
            h = block(h, t, mask=mask, rope=rope)
        if getattr(dit, "long_skip_connection", None) is not None:
            h = dit.long_skip_connection(torch.cat((h, residual), dim=-1))
        return dit.proj_out(dit.norm_out(h, t))

    # -- leaving --------------------------------------------------------------------------------------

    @torch.inference_mode()
    def finish(self, keys: Iterable[Hashable]) -> list[np.ndarray]:
        """Vocode finished ``keys`` in one masked vocoder pass and release them. Float32 24 kHz waveforms
        in the order of ``keys``, trimmed of the reference as ``Engine.synthesize`` trims them."""
        keys = list(keys)
        unfinished = [k for k in keys if not self._flows[k].done]
        if unfinished:
            raise ValueError(f"keys {unfinished!r} have steps left")
        self._sync(keys)
        waves = self._decode([self._flows[k] for k in keys]) if keys else []
        for key in keys:
            del self._flows[key]
        return waves

    def _decode(self, flows: list[_Flow]) -> list[np.ndarray]:
        gens = []
        for flow in flows:
            mel = flow.x.clone()
            mel[: flow.cond_frames] = flow.cond[: flow.cond_frames]  # sample() restores the reference
            gens.append(mel[flow.item.voice.ref_frames :].float())
        lengths = torch.tensor([g.shape[0] for g in gens], device=gens[0].device)
        batch = pad_sequence(gens, batch_first=True)
        waves = decode_batch(self.engine.vocoder, batch.transpose(1, 2), lengths)
        return [Engine._restore_loudness(w, f.item.voice) for w, f in zip(waves, flows, strict=True)]
