"""The engine: load and warm a model, prepare voices, and synthesise batches of text chunks."""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine import loader
from engine.attention import enable_padding_mask
from engine.errors import InvalidParameterError, InvalidTextError
from engine.f5 import convert_char_to_pinyin
from engine.models import TINY, ModelSpec, model_spec
from engine.params import SynthesisParams
from engine.sampler import SampleRequest, SampleSettings, sample, total_frames
from engine.tiny import ensure_tiny_model
from engine.vocoder import decode_batch
from engine.voices import SAMPLE_RATE, TARGET_RMS, Voice, default_voice, prepare_voice
from text import chunking

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    model: str = "F5TTS_v1_Base"
    ckpt_file: str = ""
    """Local .safetensors/.pt, ``hf://owner/repo/path``, or empty for the model's released checkpoint."""
    vocab_file: str = ""
    vocoder_path: str = ""
    """Local Vocos dir (config.yaml + pytorch_model.bin), or empty for the hub."""
    device: str = "auto"
    dtype: str = "auto"
    attention_mask: bool = True
    """Mask padding in attention. Off only to demonstrate why it is on (batch invariance)."""
    tiny_cache_dir: Path | None = None


@dataclass(frozen=True)
class SynthesisItem:
    """One text chunk to voice. Items with equal ``batch_key`` can share a model pass."""

    text: str
    voice: Voice
    speed: float = SynthesisParams.speed
    nfe_steps: int = SynthesisParams.nfe_steps
    cfg_strength: float = SynthesisParams.cfg_strength
    sway_sampling_coef: float = SynthesisParams.sway_sampling_coef
    seed: int | None = None

    @classmethod
    def of(cls, text: str, voice: Voice, params: SynthesisParams) -> SynthesisItem:
        return cls(text, voice, params.speed, params.nfe_steps, params.cfg_strength, params.sway_sampling_coef,
                   params.seed)

    @property
    def batch_key(self) -> tuple[int, float, float]:
        return (self.nfe_steps, self.cfg_strength, self.sway_sampling_coef)


@lru_cache(maxsize=4096)
def _tokens(ref_text: str, gen_text: str) -> tuple[str, ...]:
    return tuple(convert_char_to_pinyin([ref_text + gen_text])[0])


@lru_cache(maxsize=4096)
def _gen_tokens(gen_text: str) -> tuple[str, ...]:
    # Cached: a front end validates a chunk on the event loop, the worker thread validates it again.
    return tuple(convert_char_to_pinyin([gen_text])[0])


class Engine:
    """F5-TTS + Vocos on one device. ``synthesize`` is blocking and not re-entrant: call it from one
    thread at a time (the batcher's worker)."""

    def __init__(self, cfm: Any, vocoder: Any, spec: ModelSpec, *, load_seconds: float = 0.0) -> None:
        self.cfm = cfm
        self.vocoder = vocoder
        self.spec = spec
        self.device: torch.device = next(cfm.parameters()).device
        self.dtype: torch.dtype = next(cfm.parameters()).dtype
        self.vocab: dict[str, int] = cfm.vocab_char_map
        self.sample_rate = SAMPLE_RATE
        self.load_seconds = load_seconds
        self.warmup_seconds = 0.0

    @classmethod
    def load(cls, config: EngineConfig) -> Engine:
        started = time.perf_counter()
        spec = model_spec(config.model)
        device = loader.resolve_device(config.device)
        dtype = loader.resolve_dtype(config.dtype, device)
        ckpt_file, vocab_file, vocoder_path = config.ckpt_file, config.vocab_file, config.vocoder_path
        if spec.name == TINY:
            tiny = ensure_tiny_model(config.tiny_cache_dir)
            ckpt_file = ckpt_file or str(tiny.ckpt)
            vocab_file = vocab_file or str(tiny.vocab)
            vocoder_path = vocoder_path or str(tiny.vocoder_dir)
        cfm = loader.load_f5(spec, loader.resolve_checkpoint(spec, ckpt_file), vocab_file, device, dtype)
        if config.attention_mask:
            enable_padding_mask(cfm.transformer)
        vocoder = loader.load_vocos(vocoder_path, device)
        return cls(cfm, vocoder, spec, load_seconds=time.perf_counter() - started)

    # -- voices ---------------------------------------------------------------------------------------

    def prepare_voice(self, voice_id: str, audio: bytes, transcript: str) -> Voice:
        """Decode and normalise a reference and cache its conditioning mel on the model device."""
        return self.attach(prepare_voice(voice_id, audio, transcript))

    def default_voice(self) -> Voice:
        return self.attach(default_voice())

    @torch.inference_mode()
    def attach(self, voice: Voice) -> Voice:
        mel = self.cfm.mel_spec(voice.audio.to(self.device))  # (1, n_mels, frames), fp32
        return dataclasses.replace(voice, mel=mel[0].transpose(0, 1).contiguous())

    # -- planning -------------------------------------------------------------------------------------

    def validate(self, item: SynthesisItem) -> None:
        """Raise a typed error for an item the model cannot voice."""
        if not item.text.strip():
            raise InvalidTextError("text is empty")
        if not any(ch.isalnum() for tok in _gen_tokens(item.text) if tok in self.vocab for ch in tok):
            raise InvalidTextError("text has no character this model can speak")
        SynthesisParams(item.speed, item.nfe_steps, item.cfg_strength, item.sway_sampling_coef).check()
        if item.voice.mel is None:
            raise InvalidParameterError(f"voice {item.voice.id!r} was not prepared by this engine")

    def duration(self, item: SynthesisItem) -> int:
        """Total frames (reference + generated) as upstream estimates them, incl. its short-text rule."""
        voice = item.voice
        ref_frames = voice.ref_frames
        gen_bytes = chunking.nbytes(item.text)
        speed = 0.3 if gen_bytes < chunking.SHORT_TEXT_BYTES else item.speed  # upstream: short texts go slowly
        estimate = ref_frames + int(ref_frames / chunking.nbytes(voice.ref_text) * gen_bytes / speed)
        cond_frames = voice.mel.shape[0] if voice.mel is not None else ref_frames + 1
        return total_frames(cond_frames, len(_tokens(voice.ref_text, item.text)), estimate)

    def batch_key(self, item: SynthesisItem) -> tuple[int, float, float]:
        return item.batch_key

    def cost(self, item: SynthesisItem) -> int:
        """Padded cost of an item for the batcher: its total frame count."""
        return self.duration(item)

    def audio_seconds(self, item: SynthesisItem) -> float:
        """Seconds of audio the item will produce (known before it runs: the output is sized from the text)."""
        return max(0, self.duration(item) - item.voice.ref_frames) * self.spec.mel.hop_length / self.sample_rate

    def chunk_limit(self, voice: Voice, speed: float = 1.0) -> int:
        """Longest chunk (UTF-8 bytes) for this voice: reference plus chunk stay within the model's context."""
        return chunking.max_chunk_bytes(voice.ref_text, voice.seconds, speed)

    # -- synthesis ------------------------------------------------------------------------------------

    def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        """Float32 waveforms (24 kHz mono), one per item in order. Items with different ``batch_key``
        run as separate passes; items that share one run as one padded model pass and one vocoder pass."""
        outputs: list[np.ndarray | None] = [None] * len(items)
        groups: dict[tuple[int, float, float], list[int]] = {}
        for index, item in enumerate(items):
            self.validate(item)
            groups.setdefault(item.batch_key, []).append(index)
        for indices in groups.values():
            for index, wave in zip(indices, self._run([items[i] for i in indices]), strict=True):
                outputs[index] = wave
        return [w for w in outputs if w is not None]

    @torch.inference_mode()
    def _run(self, items: list[SynthesisItem]) -> list[np.ndarray]:
        first = items[0]
        settings = SampleSettings(first.nfe_steps, first.cfg_strength, first.sway_sampling_coef)
        requests = [
            SampleRequest(
                cond=item.voice.mel,  # type: ignore[arg-type]  # validate() checked it is set
                tokens=list(_tokens(item.voice.ref_text, item.text)),
                duration=self.duration(item),
                seed=item.seed if item.seed is not None else random.randrange(2**31),
            )
            for item in items
        ]
        mel, durations = sample(self.cfm, requests, settings)
        starts = [item.voice.ref_frames for item in items]
        lengths = [d - s for d, s in zip(durations, starts, strict=True)]
        gen = torch.zeros(len(items), max(lengths), mel.shape[-1], device=mel.device, dtype=torch.float32)
        for i, (start, length) in enumerate(zip(starts, lengths, strict=True)):
            gen[i, :length] = mel[i, start : start + length].float()
        waves = decode_batch(self.vocoder, gen.transpose(1, 2), torch.tensor(lengths, device=mel.device))
        return [self._restore_loudness(w, item.voice) for w, item in zip(waves, items, strict=True)]

    @staticmethod
    def _restore_loudness(wave: torch.Tensor, voice: Voice) -> np.ndarray:
        if voice.rms < TARGET_RMS:  # quiet references were boosted to TARGET_RMS; undo it on the output
            wave = wave * voice.rms / TARGET_RMS
        return wave.float().cpu().numpy().astype(np.float32, copy=False)

    # -- warm-up --------------------------------------------------------------------------------------

    def warmup(self, batch_sizes: Sequence[int], nfe_steps: int = 2, voice: Voice | None = None,
               target_steps: int = 32) -> list[tuple[int, int, float]]:
        """Run real inference at every batch size so kernels, allocator pools, handles and tokenizers are
        hot before the first request, and time it to seed the batcher's cost model. Few flow steps exercise
        every kernel a 32-step run does (the step count only repeats them) at a fraction of the cost; one
        extra pass at 4x the steps measures how time grows with steps, and every timing is scaled to
        ``target_steps`` by that line. ``voice``: a prepared voice to warm with (default: the default voice).
        Returns (batch size, frames per item, seconds at ``target_steps``) per timed pass; the seconds
        spent are in ``warmup_seconds``."""
        started = time.perf_counter()
        voice = voice or self.default_voice()
        short, sentence = "Warming up the model.", "The quick brown fox jumps over the lazy dog near the river."
        self._timed_pass(voice, short, 1, nfe_steps)  # the very first pass pays one-off costs: not a sample
        passes = [self._timed_pass(voice, short, size, nfe_steps) for size in batch_sizes]
        passes += [self._timed_pass(voice, sentence, size, nfe_steps)
                   for size in sorted({batch_sizes[0], batch_sizes[len(batch_sizes) // 2]})]
        more_steps = 4 * nfe_steps
        _, _, slow = self._timed_pass(voice, sentence, batch_sizes[0], more_steps)
        fast = passes[len(batch_sizes)][2]
        per_step = max(0.0, (slow - fast) / (more_steps - nfe_steps))
        fixed = min(1.0, max(0.0, fast - nfe_steps * per_step) / fast) if fast > 0 else 1.0
        scale = fixed + (1.0 - fixed) * target_steps / nfe_steps  # t(steps) = fixed + per-step · steps
        self.warmup_seconds = time.perf_counter() - started
        return [(size, frames, seconds * scale) for size, frames, seconds in passes]

    def _timed_pass(self, voice: Voice, text: str, size: int, nfe_steps: int) -> tuple[int, int, float]:
        items = [SynthesisItem(text=text, voice=voice, nfe_steps=nfe_steps, seed=i) for i in range(size)]
        started = time.perf_counter()
        self.synthesize(items)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return size, self.cost(items[0]), time.perf_counter() - started


def warmup_batch_sizes(max_batch_size: int) -> list[int]:
    """Powers of two up to the largest batch, and the largest batch itself."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch_size]
