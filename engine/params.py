"""Synthesis parameters: one definition of their defaults and ranges for every front end and the engine."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from engine.errors import InvalidParameterError

SPEED_RANGE = (0.25, 4.0)
NFE_RANGE = (1, 128)
CFG_RANGE = (0.0, 10.0)
SWAY_RANGE = (-2.0, 2.0)
SEED_RANGE = (0, 2**31 - 1)
DEFAULT_NFE_STEPS = 32


class ParameterRangeError(InvalidParameterError):
    """A parameter outside its range; ``param`` names it."""

    def __init__(self, param: str, bounds: tuple[float, float], value: object) -> None:
        super().__init__(f"{param} must be between {bounds[0]} and {bounds[1]}, got {value}")
        self.param = param


@dataclass(frozen=True)
class SynthesisParams:
    """How to voice a text, independent of the text and the voice."""

    speed: float = 1.0
    """Speaking-rate multiplier."""
    nfe_steps: int = DEFAULT_NFE_STEPS
    """Flow-matching (Euler) steps: quality against time."""
    cfg_strength: float = 2.0
    """Classifier-free guidance strength."""
    sway_sampling_coef: float = -1.0
    """Sway sampling of the timesteps (upstream's default)."""
    seed: int = 0
    """Seed of the first chunk's noise; chunk k of a stream uses ``seed + k``."""

    @classmethod
    def build(cls, *, speed: float = 1.0, nfe_steps: int | None = None, cfg_strength: float = 2.0,
              sway_sampling_coef: float = -1.0, seed: int | None = None,
              default_nfe_steps: int = DEFAULT_NFE_STEPS) -> SynthesisParams:
        """Fill defaults (absent steps: the server's default; absent seed: a random one) and validate."""
        params = cls(speed=float(speed), nfe_steps=default_nfe_steps if nfe_steps is None else nfe_steps,
                     cfg_strength=float(cfg_strength), sway_sampling_coef=float(sway_sampling_coef),
                     seed=random.randrange(2**31) if seed is None else seed)
        params.check()
        return params

    def check(self) -> None:
        """Raise ``InvalidParameterError`` naming the first parameter out of range."""
        check_parameters(self.speed, self.nfe_steps, self.cfg_strength, self.sway_sampling_coef)
        if not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise ParameterRangeError("seed", SEED_RANGE, self.seed)

    def for_chunk(self, index: int) -> SynthesisParams:
        return replace(self, seed=(self.seed + index) % 2**31)


def check_parameters(speed: float, nfe_steps: int, cfg_strength: float, sway_sampling_coef: float) -> None:
    """Raise ``InvalidParameterError`` naming the first synthesis parameter out of range (NaN included)."""
    for name, value, bounds in (("speed", speed, SPEED_RANGE), ("nfe_steps", nfe_steps, NFE_RANGE),
                                ("cfg_strength", cfg_strength, CFG_RANGE),
                                ("sway_sampling_coef", sway_sampling_coef, SWAY_RANGE)):
        if not (math.isfinite(value) and bounds[0] <= value <= bounds[1]):
            raise ParameterRangeError(name, bounds, value)
