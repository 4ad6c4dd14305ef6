"""The load test against the tiny server: its report agrees with the server's own metrics."""

from __future__ import annotations

import json

import pytest

from bench import loadtest
from tests.conftest import upload_voice

pytestmark = pytest.mark.slow  # every test here runs the model for seconds


async def test_report_matches_server_metrics(start_server, test_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A queue of one chunk under 4 concurrent clients: some requests get queue_full, as under real overload.
    live = await start_server(test_settings.replace(max_queue=1))
    assert (await upload_voice(live)).status == 201
    out = tmp_path / "lt"
    code = await loadtest.amain(["--url", live.ws_url, "--concurrency", "4", "--duration", "4", "--max-requests",
                                 "24", "--voice", "en", "--nfe-steps", "4", "--budget-p95", "60",
                                 "--max-error-rate", "1.0", "--out", str(out)])
    report = json.loads(out.with_suffix(".json").read_text())
    assert code == 0 and report["passed"]
    assert out.with_suffix(".png").stat().st_size > 0
    assert report["requests"] > 0 and report["unfinished"] == 0
    assert live.metric("tts_requests_total", transport="ws", outcome="ok") == report["ok"]
    for error_code, count in report["errors"].items():
        assert live.metric("tts_requests_total", transport="ws", outcome=error_code) == count
    server_total = sum(s.value for f in live.registry.collect() if f.name == "tts_requests"
                       for s in f.samples if s.name == "tts_requests_total")
    assert server_total == report["requests"]
    assert report["errors"].get("queue_full", 0) > 0  # the overload was seen by both sides
    assert report["latency_s"]["p50"] <= report["latency_s"]["p95"] <= report["latency_s"]["p99"]


async def test_broken_budget_exits_nonzero(live_en, tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = await loadtest.amain(["--url", live_en.ws_url, "--rate", "5", "--duration", "1", "--max-requests", "3",
                                 "--voice", "en", "--nfe-steps", "2", "--budget-p95", "0.0001",
                                 "--out", str(tmp_path / "lt")])
    report = json.loads((tmp_path / "lt.json").read_text())
    assert code == 1 and not report["checks"]["latency_p95"]["passed"] and report["requests"] == 3
