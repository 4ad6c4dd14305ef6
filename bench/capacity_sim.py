"""Discrete-event simulation of a fleet of TTS replicas behind a queue-based autoscaler (KEDA/HPA).

Each replica runs whole batches (the `request` scheduler): when idle it takes up to `max_batch` waiting
requests, and a batch of b costs curve(b) seconds, interpolated from measured points. A request's time to
first audio (TTFA) is its wait plus its batch's duration (one chunk per request: the first chunk is what
TTFA measures). Requests are routed at random among ready replicas (kube-proxy picks per connection); a
replica with `max_queue` waiting refuses the rest. Every `poll_s` the autoscaler reads the fleet's
queued + in-flight work as the deployed Prometheus query does (seen `metric_lag_s` late), wants
ceil(work / target) replicas (HPA AverageValue, 10 % tolerance, stabilisation windows, scale-up step
limit); a new replica takes `warmup_s` before it serves; a removed one finishes its queue first.

Rolling restarts and scale-down lose nothing, as the server behaves behind a balancer: a replica told to
stop leaves routing while it still accepts work (`--drain-delay-s` outlasts the balancer's health
checks), then finishes what it holds; so a removed replica here gets no new arrivals and drains its
queue. A replica lost outright (a crash, kill -9) is not modelled: its in-flight streams end with a close
their clients see at once, and their retries through the balancer succeed on the others, so a loss
costs those requests one retry each. docs/scaling.md gives the figures `tests/test_fleet.py` measures.

The loop advances one batch at a time (not one request), so an hour at 1000 req/s takes seconds.

    python -m bench.capacity_sim --rate 20 --duration-s 3600 --min 1 --max 16 --target 12
    python -m bench.capacity_sim --curve curve.json --pattern diurnal --rate 40 --target 4 8 12 16 --json
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

# Seconds per batch by batch size, measured on the development CPU (tiny profile, 32 flow steps).
CURVES: dict[str, dict[int, float]] = {
    # The 5.3 s default voice is compute-bound, 0.48-0.54 s per item whatever the batch size.
    "cpu-default-voice": {1: 0.50, 8: 8 * 0.50, 16: 16 * 0.52},
    # README engine table (1 s reference): per-item cost falls from 0.21 s to 0.11 s at batch 16.
    "cpu-1s-voice": {1: 0.21, 2: 2 * 0.16, 4: 4 * 0.146, 8: 8 * 0.126, 16: 16 * 0.11},
}


@dataclass(frozen=True)
class Fleet:
    curve: dict[int, float]
    max_batch: int = 16
    max_queue: int = 64           # waiting requests per replica before refusals
    min_replicas: int = 1
    max_replicas: int = 8
    target: float = 12.0          # queued + in-flight per replica (KEDA threshold)
    poll_s: float = 15.0          # HPA sync period
    metric_lag_s: float = 15.0    # scrape interval + query: the work the autoscaler sees is this old
    up_window_s: float = 0.0      # scale-up stabilisation window
    down_window_s: float = 600.0  # scale-down stabilisation window
    up_step: int = 4              # most replicas added per poll (HPA policy: max(4 pods, 100 %))
    down_step: int = 1            # most replicas removed per poll
    tolerance: float = 0.1
    warmup_s: float = 120.0       # pod start + model load + warm-up until /readyz
    autoscale: bool = True


@dataclass
class Replica:
    created: float
    ready_at: float
    free_at: float = 0.0
    last_batch: int = 0
    waiting: list[float] = field(default_factory=list)
    removed: float | None = None  # when draining began
    ended: float | None = None


def batch_seconds(curve: dict[int, float], max_batch: int) -> list[float]:
    """Index b -> seconds for a batch of b, linear between measured points, extrapolated per item beyond."""
    sizes = sorted(curve)
    table = [0.0] + [float(np.interp(b, sizes, [curve[s] for s in sizes])) for b in range(1, max_batch + 1)]
    for b in range(sizes[-1] + 1, max_batch + 1):
        table[b] = curve[sizes[-1]] * b / sizes[-1]
    return table


def arrivals(rate: float, duration: float, pattern: str, rng: np.random.Generator, period_s: float) -> np.ndarray:
    """Poisson arrivals; `diurnal` swings the rate between 0.2x and 1x over period_s, `step` jumps from
    0.25x to 1x at the midpoint (thinning a homogeneous process at the peak rate)."""
    times = np.cumsum(rng.exponential(1.0 / rate, int(rate * duration * 1.1) + 100))
    while times[-1] < duration:
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate, len(times) // 10 + 10))])
    times = times[times < duration]
    if pattern == "diurnal":
        keep = 0.6 - 0.4 * np.cos(2 * np.pi * times / period_s)
    elif pattern == "step":
        keep = np.where(times < duration / 2, 0.25, 1.0)
    else:
        return times
    return times[rng.random(len(times)) < keep]


def serve(rep: Replica, new: list[float], until: float, table: list[float], fleet: Fleet,
          ttfa: list[np.ndarray]) -> int:
    """Run `rep` up to `until` with `new` arrivals (sorted); returns refusals. Batches start before `until`."""
    queue, head, i, refused, cap = rep.waiting, 0, 0, 0, fleet.max_queue
    ends: list[float] = []
    counts: list[int] = []
    while True:
        if head < len(queue):
            start = max(rep.free_at, queue[head])
        elif i < len(new):
            start = max(rep.free_at, new[i])
        else:
            break
        if start >= until:
            break
        j = bisect.bisect_right(new, start, i)
        room = min(j - i, cap - (len(queue) - head))  # the queue only grows between batch starts
        queue.extend(new[i:i + room])
        refused, i = refused + (j - i - room), j
        size = min(len(queue) - head, fleet.max_batch)
        rep.free_at, rep.last_batch = start + table[size], size
        ends.append(rep.free_at)
        counts.append(size)
        head += size
    room = min(len(new) - i, cap - (len(queue) - head))
    queue.extend(new[i:i + room])
    refused += len(new) - i - room
    if head:
        ttfa.append(np.repeat(ends, counts) - np.asarray(queue[:head]))
    rep.waiting = queue[head:]
    return refused


def work(rep: Replica, now: float) -> int:
    """tts_queue_depth + tts_inflight_requests of one replica: waiting counts in both, running in one."""
    running = rep.last_batch if rep.free_at > now else 0
    return 2 * len(rep.waiting) + running


def decide(fleet: Fleet, current: int, seen_work: float, history: deque[tuple[float, int]], now: float) -> int:
    """The HPA's replica count: raw recommendation, tolerance, stabilisation windows, step limits."""
    ratio = seen_work / (fleet.target * current)
    raw = current if abs(ratio - 1) <= fleet.tolerance else math.ceil(seen_work / fleet.target)
    history.append((now, min(max(raw, fleet.min_replicas), fleet.max_replicas)))
    while history and history[0][0] < now - max(fleet.up_window_s, fleet.down_window_s):
        history.popleft()
    up = min(r for t, r in history if t >= now - fleet.up_window_s)
    down = max(r for t, r in history if t >= now - fleet.down_window_s)
    desired = up if current < up else down if current > down else current
    return max(min(desired, current + fleet.up_step), current - fleet.down_step)


def resize(fleet: Fleet, live: list[Replica], desired: int, now: float) -> None:
    """Add warming replicas or drain the least-loaded ones (not-ready ones go first, as a ReplicaSet does)."""
    for _ in range(desired - len(live)):
        live.append(Replica(created=now, ready_at=now + fleet.warmup_s, free_at=now + fleet.warmup_s))
    for _ in range(len(live) - desired):
        victim = min(live, key=lambda r: (r.ready_at <= now, len(r.waiting), r.free_at))
        live.remove(victim)
        victim.removed = now


def simulate(fleet: Fleet, times: np.ndarray, duration: float, seed: int = 0) -> dict[str, object]:
    rng = np.random.default_rng(seed + 1)
    table = batch_seconds(fleet.curve, fleet.max_batch)
    live = [Replica(created=0.0, ready_at=0.0) for _ in range(fleet.min_replicas)]
    every: list[Replica] = list(live)
    draining: list[Replica] = []
    ttfa: list[np.ndarray] = []
    history: deque[tuple[float, int]] = deque()
    seen: deque[float] = deque([0.0] * (round(fleet.metric_lag_s / fleet.poll_s) + 1))
    timeline: list[tuple[float, int, int, float]] = []
    refused, now, k, next_poll = 0, 0.0, 0, fleet.poll_s
    while now < duration:
        # Segments end at the next poll or when a replica turns ready: the routing set is fixed within one.
        end = min([next_poll, duration, *[r.ready_at for r in live if r.ready_at > now]])
        k2 = int(np.searchsorted(times, end))
        ready = [r for r in live if r.ready_at <= now]
        refused += route(ready, times[k:k2], end, table, fleet, ttfa, rng)
        for rep in list(draining):
            refused += serve(rep, [], end, table, fleet, ttfa)
            if not rep.waiting and rep.free_at <= end:
                rep.ended = max(rep.free_at, rep.removed or 0.0)
                draining.remove(rep)
        now, k = end, k2
        if now == next_poll:
            next_poll += fleet.poll_s
            if not fleet.autoscale:
                continue
            seen.append(float(sum(work(r, now) for r in live if r.ready_at <= now)))
            desired = decide(fleet, len(live), seen.popleft(), history, now)
            before = list(live)
            resize(fleet, live, desired, now)
            every += [r for r in live if r not in before]
            draining += [r for r in before if r not in live]
            timeline.append((now, len(live), sum(r.ready_at <= now for r in live), seen[-1]))
    return report(fleet, times, duration, ttfa, refused, every, timeline)


def route(ready: list[Replica], batch: np.ndarray, end: float, table: list[float], fleet: Fleet,
          ttfa: list[np.ndarray], rng: np.random.Generator) -> int:
    """Spread one segment's arrivals at random over the ready replicas and serve them; returns refusals."""
    if not ready:
        return len(batch)  # nothing can answer: a load balancer has no endpoint
    pick = rng.integers(len(ready), size=len(batch))
    order = np.argsort(pick, kind="stable")  # stable: each replica's arrivals stay in time order
    bounds = np.searchsorted(pick[order], np.arange(len(ready) + 1))
    ordered = batch[order]
    return sum(serve(rep, ordered[bounds[n]:bounds[n + 1]].tolist(), end, table, fleet, ttfa)
               for n, rep in enumerate(ready))


def report(fleet: Fleet, times: np.ndarray, duration: float, ttfa: list[np.ndarray], refused: int,
           replicas: list[Replica], timeline: list[tuple[float, int, int, float]]) -> dict[str, object]:
    served = np.concatenate(ttfa) if ttfa else np.zeros(0)
    single = batch_seconds(fleet.curve, 1)[1]
    gpu_s = sum(min(r.ended or duration, duration) - r.created for r in replicas)
    counts = [n for _, n, _, _ in timeline] or [fleet.min_replicas]
    pct = (lambda q: round(float(np.percentile(served, q)), 3)) if len(served) else (lambda q: None)
    return {"requests": len(times), "served": len(served), "refused": refused,
            "refused_fraction": round(refused / max(len(times), 1), 5),
            "ttfa_p50_s": pct(50), "ttfa_p95_s": pct(95), "ttfa_p99_s": pct(99),
            "wait_mean_s": round(float(served.mean()) - single, 5) if fleet.max_batch == 1 and len(served) else None,
            "ttfa_mean_s": round(float(served.mean()), 4) if len(served) else None,
            "gpu_hours": round(gpu_s / 3600, 2), "replicas_max": max(counts), "replicas_min": min(counts),
            "replicas_mean": round(gpu_s / duration, 2),
            "timeline": [{"t": t, "replicas": n, "ready": r, "work_seen": w} for t, n, r, w in timeline]}


def load_curve(spec: str) -> dict[int, float]:
    if spec in CURVES:
        return CURVES[spec]
    data = json.loads(Path(spec).read_text())  # {"1": 0.2, "16": 1.8}: batch size -> seconds per batch
    return {int(size): float(seconds) for size, seconds in data.items()}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--curve", default="cpu-default-voice", help=f"{', '.join(CURVES)} or a JSON file")
    p.add_argument("--rate", type=float, required=True, help="peak arrival rate, requests/s")
    p.add_argument("--pattern", choices=["constant", "diurnal", "step"], default="constant")
    p.add_argument("--period-s", type=float, default=86_400.0, help="diurnal period")
    p.add_argument("--duration-s", type=float, default=3600.0)
    p.add_argument("--min", type=int, default=1, dest="min_replicas")
    p.add_argument("--max", type=int, default=8, dest="max_replicas")
    p.add_argument("--target", type=float, nargs="+", default=[12.0], help="one run per value")
    p.add_argument("--no-autoscale", action="store_true", help="min replicas, fixed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON (with the replica timeline)")
    for name in ("max_batch", "max_queue", "up_step", "down_step"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(Fleet, name))
    for name in ("poll_s", "metric_lag_s", "up_window_s", "down_window_s", "warmup_s", "tolerance"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(Fleet, name))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    settings = {k: v for k, v in vars(args).items() if k in Fleet.__dataclass_fields__ and k not in ("target", "curve")}
    fleet = Fleet(**settings, curve=load_curve(args.curve), target=args.target[0], autoscale=not args.no_autoscale)
    times = arrivals(args.rate, args.duration_s, args.pattern, np.random.default_rng(args.seed), args.period_s)
    results = []
    for target in args.target:
        run = replace(fleet, target=target)
        result = simulate(run, times, args.duration_s, args.seed)
        results.append({"target": target, **result})
        if not args.json:
            summary = {k: v for k, v in result.items() if k != "timeline" and v is not None}
            print(f"target {target:g}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    if args.json:
        json.dump({"fleet": {**asdict(fleet), "target": args.target}, "runs": results}, sys.stdout)
        print()


if __name__ == "__main__":
    main()
