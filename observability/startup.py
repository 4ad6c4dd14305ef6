"""Startup phases measured from the process's own start, not from when our code first runs.

Before any line of ours runs, the interpreter starts and imports torch, f5-tts and the server (seconds on a
cold machine). A clock started in our code misses that; an orchestrator waiting for readiness does not.
The kernel records when each process started (``/proc/self/stat`` field 22, in clock ticks since boot),
so the age of the process is ``CLOCK_BOOTTIME now - starttime``: exact to one tick (10 ms), no dependency,
and unaffected by wall-clock changes (``/proc/stat``'s ``btime`` is whole seconds, too coarse here).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


def process_age() -> float | None:
    """Seconds since this process started, or None where /proc is unavailable (not Linux)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            stat = f.read()
        # The command name (field 2) may contain spaces and parentheses: count fields after the last ')'.
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


@dataclass
class StartupClock:
    """Where the process started and where our code took over, on the ``time.perf_counter`` scale.

    Only an entry point (``python -m server``, the RunPod worker) owns its process and calls
    ``entered()``; a server started inside another program (tests) has no import phase, and its startup
    is timed from ``begin()``.
    """

    origin: float | None = None
    entry: float | None = None

    def entered(self) -> None:
        """Call first thing in ``main()``: the import phase ends here."""
        now = time.perf_counter()
        age = process_age()
        self.entry = now
        self.origin = now - age if age is not None else None

    def begin(self) -> float:
        """The instant totals count from: the process start if known, else now."""
        return self.origin if self.origin is not None else time.perf_counter()

    def import_seconds(self) -> float | None:
        if self.origin is None or self.entry is None:
            return None
        return self.entry - self.origin


CLOCK = StartupClock()
"""The process-wide clock: ``main()`` calls ``CLOCK.entered()``; startup code reads it."""


class Phases:
    """Startup split into contiguous phases: each ``mark`` ends the phase running since the previous
    mark, so the phases sum to the total by construction (any second not in a named phase would show up
    in the next one). With an entry point, ``import`` (process start to ``main()``) comes first."""

    def __init__(self, clock: StartupClock = CLOCK) -> None:
        self.started = clock.begin()
        self.seconds: dict[str, float] = {}
        self._last = self.started
        imported = clock.import_seconds()
        if imported is not None and clock.entry is not None:
            self.seconds["import"] = imported
            self._last = clock.entry

    def mark(self, phase: str) -> float:
        """End ``phase`` now (repeated phases add up); returns its seconds so far."""
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = now
        return self.seconds[phase]

    def finished(self) -> dict[str, float]:
        """Every phase and ``total``: from the start to the last mark."""
        return {**self.seconds, "total": self._last - self.started}

