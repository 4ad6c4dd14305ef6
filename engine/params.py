"""Synthesis parameters: one definition of their types, defaults and ranges for the engine and every front
end (server.core.request builds the front ends' parsers from these fields)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

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


def _param(default: float, bounds: tuple[float, float], doc: str) -> Any:
    return field(default=default, metadata={"bounds": bounds, "doc": doc})


@dataclass(frozen=True)
class SynthesisParams:
    """How to voice a text, independent of the text and the voice. Each field's metadata holds its range
    (``bounds``) and what it does (``doc``); a new parameter is one field here."""

    speed: float = _param(1.0, SPEED_RANGE, "speaking-rate multiplier")
    nfe_steps: int = _param(DEFAULT_NFE_STEPS, NFE_RANGE, "flow-matching (Euler) steps: quality against time; "
                            "absent from a request: the server's --default-nfe-steps")
    cfg_strength: float = _param(2.0, CFG_RANGE, "classifier-free guidance strength")
    sway_sampling_coef: float = _param(-1.0, SWAY_RANGE, "sway sampling of the timesteps (upstream's default)")
    seed: int = _param(0, SEED_RANGE, "seed of the first chunk's noise; chunk k of a stream uses seed + k; "
                       "absent from a request: random (reported back)")

    @classmethod
    def build(cls, given: Mapping[str, float | int], default_nfe_steps: int = DEFAULT_NFE_STEPS) -> SynthesisParams:
        """The parameters a request gave (by field name), the rest filled in (steps: the server's default;
        seed: a random one), validated."""
        values: dict[str, Any] = {"nfe_steps": default_nfe_steps, "seed": random.randrange(2**31), **given}
        converted: dict[str, Any] = {f.name: float(values[f.name]) if isinstance(f.default, float) else values[f.name]
                                     for f in fields(cls) if f.name in values}
        params = cls(**converted)
        params.check()
        return params

    def check(self) -> None:
        """Raise ``ParameterRangeError`` naming the first parameter out of range (NaN included)."""
        for f in fields(self):
            value, bounds = getattr(self, f.name), f.metadata["bounds"]
            if not (math.isfinite(value) and bounds[0] <= value <= bounds[1]):
                raise ParameterRangeError(f.name, bounds, value)

    def for_chunk(self, index: int) -> SynthesisParams:
        return replace(self, seed=(self.seed + index) % 2**31)
