"""Metrics, logs, dashboard and alert rules, checked against a live scrape with promtool."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from f5tts_client import TTSClient
from observability import Metrics
from observability.logs import JsonFormatter, TextFormatter
from tests.conftest import LiveServer

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "tts-dashboard.json"
FIXED_NAMES = ["tts_startup_seconds", "tts_ready", "tts_requests_total", "tts_request_latency_seconds",
               "tts_time_to_first_audio_seconds", "tts_queue_wait_seconds", "tts_queue_depth",
               "tts_inflight_requests", "tts_batch_size", "tts_batch_seconds", "tts_rtf", "tts_audio_seconds_total",
               "tts_latency_budget_exceeded_total"]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run `make tools` (make test does)")
    return path


async def scrape(live: LiveServer) -> str:
    async with aiohttp.ClientSession() as session, session.get(live.url("/metrics")) as response:
        assert response.status == 200
        return await response.text()


def sample_names(text: str) -> set[str]:
    """Every series name the scrape can produce, including suffixes of families without samples yet."""
    suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                "info": ["_info"], "summary": ["_sum", "_count"]}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, []))
        names.update(sample.name for sample in family.samples)
    return names


def names_in(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:tts|process)_[a-z0-9_]+)", expr))


def rule_exprs() -> tuple[list[str], set[str]]:
    import yaml

    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    return [r["expr"] for r in rules], {r["record"] for r in rules if "record" in r}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


@pytest.fixture
async def busy(live_en: LiveServer) -> LiveServer:
    async with TTSClient(live_en.ws_url) as client:
        await client.synthesize("Metrics need traffic.", voice="en")
    return live_en


async def test_fixed_metric_names_are_exported(busy: LiveServer) -> None:
    names = sample_names(await scrape(busy))
    for name in FIXED_NAMES:
        assert name in names or name + "_bucket" in names, name


@pytest.mark.slow
async def test_promtool_accepts_the_live_scrape(busy: LiveServer) -> None:
    proc = subprocess.run([promtool(), "check", "metrics"], input=await scrape(busy), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    check = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run([promtool(), "test", "rules", "rules_test.yml"], cwd=RULES.parent,
                          capture_output=True, text=True)
    assert unit.returncode == 0, unit.stdout + unit.stderr


async def test_dashboard_and_rules_only_use_exported_metrics(busy: LiveServer) -> None:
    exported = sample_names(await scrape(busy))
    exprs, recorded = rule_exprs()
    used = set().union(*(names_in(e) for e in exprs + dashboard_exprs()))
    assert used, "no metric names found: the parser is broken"
    assert used - exported == set()
    for expr in dashboard_exprs():  # recording rules the dashboard uses are defined
        for name in re.findall(r"\btts:[a-z0-9_:]+", expr):
            assert name in recorded, name
    assert {"tts_request_latency_seconds_bucket", "tts_queue_depth", "tts_ready", "tts_batch_size_sum"} <= used


def test_dashboard_covers_what_operators_need() -> None:
    titles = " | ".join(p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]).lower()
    for topic in ("latency", "first audio", "real-time factor", "queue depth", "queue wait", "batch size",
                  "startup", "readiness", "outcome"):
        assert topic in titles, topic


def test_budget_counter_and_startup_phases() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, latency_budget_s=3.0, process_collectors=False)
    metrics.request_finished("ws", "ok", latency_s=2.9, ttfa_s=0.3, audio_s=5.8)
    metrics.request_finished("ws", "ok", latency_s=3.1, ttfa_s=0.4, audio_s=6.0)
    metrics.request_finished("ws", "queue_full")
    value = registry.get_sample_value
    assert value("tts_latency_budget_exceeded_total", {"transport": "ws"}) == 1
    assert value("tts_requests_total", {"transport": "ws", "outcome": "ok"}) == 2
    assert value("tts_requests_total", {"transport": "ws", "outcome": "queue_full"}) == 1
    assert value("tts_request_latency_seconds_count", {"transport": "ws"}) == 2  # errors have no latency
    assert value("tts_rtf_sum", {"transport": "ws"}) == pytest.approx(2.9 / 5.8 + 3.1 / 6.0)
    assert value("tts_audio_seconds_total", {"transport": "ws"}) == pytest.approx(11.8)
    metrics.batch_done(4, 0.5, padded_frames=400, real_frames=300)
    assert value("tts_batch_padding_ratio_sum") == pytest.approx(0.25)


async def test_startup_phases_recorded_once(busy: LiveServer) -> None:
    text = await scrape(busy)
    phases = re.findall(r'^tts_startup_seconds\{phase="(\w+)"\} ([0-9.e-]+)$', text, re.M)
    assert sorted(p for p, _ in phases) == ["load", "ready", "setup", "total", "voices"]  # warm-up off here
    values = {p: float(v) for p, v in phases}
    assert 0 < values["load"] <= values["total"]
    assert sum(v for p, v in values.items() if p != "total") == pytest.approx(values["total"], rel=0.05)


def test_json_log_lines_carry_context() -> None:
    record = logging.LogRecord("server.core.stream", logging.INFO, __file__, 1, "stream finished", None, None)
    record.request_id = "r-42"
    record.chunks = 3
    line = orjson.loads(JsonFormatter().format(record))
    assert line["msg"] == "stream finished" and line["request_id"] == "r-42" and line["chunks"] == 3
    assert line["level"] == "info" and line["ts"].endswith("Z")


def test_text_log_lines_escape_every_field() -> None:
    """Whatever a client put in a value (a newline, a carriage return, a terminal escape, a Unicode line
    separator), a record is one line, and a traceback's lines are indented under it."""
    record = logging.LogRecord("server.core.stream", logging.INFO, __file__, 1, "stream %s", ("a\nb",), None)
    record.request_id = "r\n12:00:00 I server: forged"
    record.reason = "x\r\x1b[2J\u2028y"
    line = TextFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert "stream a\\nb" in line and "request_id=r\\n12:00:00" in line and "reason=x\\r\\x1b[2J\\u2028y" in line
    try:
        raise ValueError("bad\n12:00:00 I server: forged")
    except ValueError:
        record.exc_info = sys.exc_info()
    rows = TextFormatter().format(record).splitlines()
    assert rows[0] == line and all(row.startswith("  ") for row in rows[1:])
    assert orjson.loads(JsonFormatter().format(record))["request_id"] == "r\n12:00:00 I server: forged"


async def test_request_id_reaches_the_batch_log_line(live_en: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="batching")  # batching.batcher or batching.step_batcher
    async with TTSClient(live_en.ws_url) as client:
        await client.synthesize("Trace this request.", id="trace-me", voice="en")
    batches = [r for r in caplog.records if r.getMessage() == "batch"]
    assert any("trace-me" in r.request_ids for r in batches)  # type: ignore[attr-defined]


def test_faults_are_classed_and_histograms_reach_a_minute() -> None:
    from server.core.errors import OUTCOME_FAULT

    registry = CollectorRegistry()
    metrics = Metrics(registry, process_collectors=False)
    metrics.set_outcome_faults(OUTCOME_FAULT)
    for outcome in ("ok", "unknown_voice", "bad_request", "cancelled", "queue_full", "internal", "timeout", "new"):
        metrics.request_finished("http", outcome)

    def fault(name: str) -> float | None:
        return registry.get_sample_value("tts_request_faults_total", {"transport": "http", "fault": name})

    assert (fault("none"), fault("client"), fault("capacity"), fault("server")) == (1, 3, 1, 3)  # "new": server
    for histogram in ("tts_request_latency_seconds", "tts_time_to_first_audio_seconds", "tts_queue_wait_seconds",
                      "tts_batch_seconds"):
        bounds = [float(s.labels["le"]) for m in registry.collect() if m.name == histogram for s in m.samples
                  if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"]
        assert bounds and max(bounds) >= 60, histogram


async def test_every_refusal_is_one_log_line(live: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with aiohttp.ClientSession() as session:
        for path, body in (("/v1/audio/speech", b"{nope"), ("/v1/audio/speech", b'{"model": "x", "input": "Hi"}'),
                           ("/v1/nowhere", b"")):
            async with session.post(live.url(path), data=body):
                pass
    refused = [r for r in caplog.records if r.getMessage() == "request refused"]
    assert [(r.route, r.code) for r in refused] == [  # type: ignore[attr-defined]
        ("/v1/audio/speech", "bad_request"), ("/v1/audio/speech", "bad_request"), ("/v1/nowhere", "not_found")]
    assert all(r.request_id for r in refused[:2])  # type: ignore[attr-defined]
    assert live.metric("tts_request_faults_total", transport="http", fault="client") == 2
