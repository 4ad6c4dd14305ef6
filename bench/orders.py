"""Reference schedules for ``bench.scheduler``: the same arrivals served one chunk at a time in a given
order, at service times measured alone. Simulated, not run: what an order of the same work reaches on a
model that gains nothing from batching, without any scheduler's overheads or mispredictions.

``fifo_singles``: whole requests in arrival order (the reference the issue sets). ``first_chunks_first``:
non-preemptive, the oldest first chunk runs next unless a later chunk would then reach its listener late
(checked as ``batching.policy.due_within`` does, with exact costs and the same margin); what request mode's
deadline order can reach without batching.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from batching.policy import STALL_MARGIN


@dataclass(frozen=True)
class Served:
    arrival: float
    finished: list[float]
    """When each chunk's audio was ready."""


Arrivals = Sequence[tuple[float, int]]
"""(arrival time, text index), in arrival order."""


def fifo_singles(arrivals: Arrivals, chunk_s: Sequence[Sequence[float]]) -> list[Served]:
    """Whole requests one after another in arrival order; ``chunk_s[text]`` is each chunk's seconds."""
    free, served = 0.0, []
    for arrival, text in arrivals:
        done = [max(arrival, free)]
        for seconds in chunk_s[text]:
            done.append(done[-1] + seconds)
        free = done[-1]
        served.append(Served(arrival, done[1:]))
    return served


def first_chunks_first(arrivals: Arrivals, chunk_s: Sequence[Sequence[float]],
                       audio_s: Sequence[Sequence[float]]) -> list[Served]:
    """One chunk at a time: the oldest waiting first chunk, unless some later chunk would then miss its
    deadline (the moment its listener's audio runs out); else the later chunk due first."""
    finished: list[list[float]] = [[] for _ in arrivals]
    plays_until = [0.0] * len(arrivals)
    firsts: deque[int] = deque()
    later: list[tuple[float, int]] = []  # (deadline, request), a heap
    now, nxt = 0.0, 0
    while nxt < len(arrivals) or firsts or later:
        if not firsts and not later:
            now = max(now, arrivals[nxt][0])
        while nxt < len(arrivals) and arrivals[nxt][0] <= now:
            firsts.append(nxt)
            nxt += 1
        request = firsts[0] if firsts else later[0][1]
        if firsts and later and _would_stall(later, now, chunk_s[arrivals[request][1]][0],
                                             lambda r: chunk_s[arrivals[r][1]][len(finished[r])]):
            request = later[0][1]
        if firsts and request == firsts[0]:
            firsts.popleft()
        else:
            heapq.heappop(later)
        text, n = arrivals[request][1], len(finished[request])
        now += chunk_s[text][n]
        finished[request].append(now)
        plays_until[request] = max(now, plays_until[request]) + audio_s[text][n]
        if n + 1 < len(chunk_s[text]):
            heapq.heappush(later, (plays_until[request], request))
    return [Served(arrival, done) for (arrival, _), done in zip(arrivals, finished, strict=True)]


def _would_stall(later: list[tuple[float, int]], now: float, busy: float, cost: Callable[[int], float]) -> bool:
    needed = 0.0
    for deadline, request in sorted(later):
        needed += cost(request)
        if deadline - now - (busy + needed) * (1 + STALL_MARGIN) < 0:
            return True
    return False
