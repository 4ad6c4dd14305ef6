"""bench/capacity_sim.py: queueing theory where it has an answer, the autoscaler's direction where not."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench import capacity_sim as sim

ROOT = Path(__file__).resolve().parent.parent


def poisson(rate: float, duration: float, seed: int = 0) -> np.ndarray:
    return sim.arrivals(rate, duration, "constant", np.random.default_rng(seed), 86_400.0)


@pytest.mark.slow
@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_one_replica_reproduces_md1_mean_wait(rho: float) -> None:
    service = 0.01
    fleet = sim.Fleet(curve={1: service}, max_batch=1, max_queue=10**9, min_replicas=1, max_replicas=1,
                      autoscale=False)
    rate, duration = rho / service, 6000.0
    result = sim.simulate(fleet, poisson(rate, duration), duration)
    pollaczek_khinchine = rho * service / (2 * (1 - rho))  # M/D/1 mean wait in queue
    assert result["refused"] == 0 and result["requests"] - result["served"] <= 5  # a few still queued at the end
    assert abs(result["wait_mean_s"] - pollaczek_khinchine) / pollaczek_khinchine < 0.05, result


def test_queue_cap_refuses_and_batches_follow_the_curve() -> None:
    fleet = sim.Fleet(curve={1: 1.0, 4: 1.0}, max_batch=4, max_queue=4, autoscale=False)
    times = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    result = sim.simulate(fleet, times, 10.0)
    # t=0 runs alone (done at 1.0); 0.1-0.4 wait (cap 4), 0.5-0.9 are refused; the batch of 4 ends at 2.0.
    assert result["refused"] == 5 and result["served"] == 5
    assert result["ttfa_p50_s"] == pytest.approx(1.7)
    assert sim.batch_seconds({1: 0.2, 4: 0.8}, 6)[1:] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.2])


@pytest.mark.slow
def test_autoscaler_adds_replicas_under_load_and_keeps_them_through_the_window() -> None:
    fleet = sim.Fleet(curve=sim.CURVES["cpu-1s-voice"], min_replicas=1, max_replicas=20, target=12,
                      warmup_s=60, down_window_s=600)
    duration = 1800.0
    low, high = (sim.simulate(fleet, poisson(rate, duration), duration) for rate in (5.0, 60.0))
    assert high["replicas_max"] > low["replicas_max"] >= 1
    assert high["gpu_hours"] > low["gpu_hours"]
    # Load stops at 900 s: the last recommendation made under load holds for the 600 s scale-down window.
    timeline = sim.simulate(fleet, poisson(60.0, 900.0), duration)["timeline"]
    last = max((point for point in timeline if point["work_seen"] > 0), key=lambda point: point["t"])
    held = math.ceil(last["work_seen"] / fleet.target)
    assert held > 1
    assert all(point["replicas"] >= held for point in timeline if last["t"] <= point["t"] <= last["t"] + 585)
    assert timeline[-1]["replicas"] == 1


def test_warmup_delays_capacity() -> None:
    slow, fast = (sim.Fleet(curve=sim.CURVES["cpu-1s-voice"], max_replicas=20, warmup_s=w) for w in (600, 30))
    times = sim.arrivals(40.0, 1200.0, "step", np.random.default_rng(3), 86_400.0)
    assert sim.simulate(slow, times, 1200.0)["refused"] > sim.simulate(fast, times, 1200.0)["refused"]


@pytest.mark.slow
def test_1000_requests_per_second_is_fast() -> None:
    """A quarter of the hour the docs quote (about 2 s for the hour on the development machine)."""
    started = time.perf_counter()
    fleet = sim.Fleet(curve=sim.CURVES["cpu-1s-voice"], min_replicas=100, max_replicas=400, warmup_s=60)
    result = sim.simulate(fleet, poisson(1000.0, 900.0), 900.0)
    assert result["requests"] > 850_000 and result["served"] > 0.9 * result["requests"]
    assert time.perf_counter() - started < 15


@pytest.mark.slow
def test_cli_json_has_one_run_per_target(tmp_path: Path) -> None:
    curve = tmp_path / "curve.json"
    curve.write_text(json.dumps({"1": 0.1, "16": 0.8}))
    proc = subprocess.run([sys.executable, "-m", "bench.capacity_sim", "--curve", str(curve),
                           "--rate", "50", "--duration-s", "600", "--target", "8", "16", "--json"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)["runs"]
    assert [run["target"] for run in runs] == [8, 16]
    assert {"ttfa_p95_s", "refused", "gpu_hours", "timeline"} <= set(runs[0])
