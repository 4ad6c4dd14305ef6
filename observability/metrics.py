"""Prometheus metrics: one ``Metrics`` object on an injected registry.

Metric names are a fixed contract (dashboards and alert rules use them); labels and extras are ours.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

# Dense between 0.25 s and 5 s, where the 1-3 s latency budget is decided.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 7.5, 10.0,
                   20.0, 60.0)
# Every seconds histogram reaches 60 s: under overload a p95 must read its true value, not the top bucket.
TTFA_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
BATCH_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
TRANSPORTS = ("ws", "http", "runpod")
RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
FAULTS = ("none", "client", "capacity", "server")
BASE_FAULTS = {"ok": "none", "cancelled": "client"}
"""Outcomes known before the server's error table is registered (``Metrics.set_outcome_faults``)."""


class Metrics:
    """Every metric the server exports. Also the batcher's ``BatchObserver``."""

    def __init__(self, registry: CollectorRegistry | None = None, latency_budget_s: float = 3.0,
                 process_collectors: bool = True, transports: tuple[str, ...] = TRANSPORTS) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.latency_budget_s = latency_budget_s
        r = self.registry
        if process_collectors:
            ProcessCollector(registry=r)
            GCCollector(registry=r)
            PlatformCollector(registry=r)
        self.startup_seconds = Gauge("tts_startup_seconds", "Seconds spent in each startup phase",
                                     ["phase"], registry=r)
        self.ready = Gauge("tts_ready", "1 when the model is warm and requests are accepted", registry=r)
        self.requests = Counter("tts_requests", "Finished requests", ["transport", "outcome"], registry=r)
        # A separate counter, not a label on tts_requests_total, so every query on that one keeps working.
        self.request_faults = Counter("tts_request_faults", "Finished requests by who is at fault: none (ok), client "
                                      "(the request was wrong, or cancelled), capacity (refused for load or "
                                      "shutdown), server", ["transport", "fault"], registry=r)
        self.outcome_faults = dict(BASE_FAULTS)
        self.latency = Histogram("tts_request_latency_seconds", "Request start to last audio sent",
                                 ["transport"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttfa = Histogram("tts_time_to_first_audio_seconds", "Request start to first audio sent",
                              ["transport"], buckets=TTFA_BUCKETS, registry=r)
        self.queue_wait_seconds = Histogram("tts_queue_wait_seconds", "Time a chunk waited for its batch",
                                            buckets=QUEUE_BUCKETS, registry=r)
        self.queue_depth_items = Gauge("tts_queue_depth", "Chunks waiting for a batch", registry=r)
        self.queue_frames = Gauge("tts_queue_frames", "Mel frames waiting for a batch", registry=r)
        self.inflight = Gauge("tts_inflight_requests", "Requests being served", ["transport"], registry=r)
        self.batch_size = Histogram("tts_batch_size", "Items per model batch", buckets=BATCH_SIZE_BUCKETS,
                                    registry=r)
        self.batch_seconds = Histogram("tts_batch_seconds", "Wall time of one model batch",
                                       buckets=BATCH_SECONDS_BUCKETS, registry=r)
        self.padding_ratio = Histogram("tts_batch_padding_ratio", "Share of a batch's frames that are padding",
                                       buckets=RATIO_BUCKETS, registry=r)
        self.rtf = Histogram("tts_rtf", "Real-time factor: request seconds per audio second", ["transport"],
                             buckets=RTF_BUCKETS, registry=r)
        self.audio_seconds = Counter("tts_audio_seconds", "Audio seconds produced", ["transport"], registry=r)
        self.budget_exceeded = Counter("tts_latency_budget_exceeded", "Requests slower than the latency budget",
                                       ["transport"], registry=r)
        self.rejections = Counter("tts_rejected", "Chunks refused before reaching the model", ["reason"],
                                  registry=r)
        self.stalls = Counter("tts_stream_stalls", "Later chunks that reached their listener after the audio "
                              "before them had played out (silence the listener heard)", ["transport"], registry=r)
        self.stall_seconds = Counter("tts_stream_stall_seconds", "Seconds of silence listeners heard inside "
                                     "streams, waiting for a later chunk", ["transport"], registry=r)
        self.long_first_chunks = Counter(
            "tts_long_first_chunks", "Requests whose first chunk was not cut short: the work ahead already made "
            "their first audio later than --first-audio-s, and a short first chunk would cost an extra pass",
            registry=r)
        self.build_info = Info("tts_build", "Model, device, dtype and version", registry=r)
        self.gpu_memory_allocated = Gauge("tts_gpu_memory_allocated_bytes", "torch.cuda.memory_allocated",
                                          registry=r)
        self.gpu_memory_reserved = Gauge("tts_gpu_memory_reserved_bytes", "torch.cuda.memory_reserved",
                                         registry=r)
        self.queue_capacity = Gauge("tts_queue_capacity", "Queued chunks at which requests are refused",
                                    registry=r)
        self.predicted_batch_seconds_gauge = Gauge(
            "tts_scheduler_predicted_batch_seconds", "The scheduler's cost model: predicted seconds of one "
            "batch of this size at the typical length", ["size"], registry=r)
        self.ready.set(0)
        # Create the labelled series up front so dashboards and rate() see zeros rather than nothing.
        for transport in transports:
            for labelled in (self.latency, self.ttfa, self.rtf, self.audio_seconds, self.budget_exceeded,
                             self.inflight, self.stalls, self.stall_seconds):
                labelled.labels(transport)
            self.requests.labels(transport, "ok")
            for fault in FAULTS:
                self.request_faults.labels(transport, fault)
        for reason in ("queue_full", "over_budget", "shutting_down"):
            self.rejections.labels(reason)

    def startup_finished(self, phases: Mapping[str, float]) -> dict[str, float]:
        """Record the startup phases (``observability.startup.Phases``: import, setup, load, voices,
        warmup, seed, ... and ``total``, process start to ready; the others sum to it) and return them."""
        for phase, seconds in phases.items():
            self.startup_seconds.labels(phase).set(seconds)
        return dict(phases)

    def watch_gpu_memory(self, allocated: Callable[[], float], reserved: Callable[[], float]) -> None:
        """Export GPU memory read at scrape time (the caller passes torch.cuda's functions)."""
        self.gpu_memory_allocated.set_function(allocated)
        self.gpu_memory_reserved.set_function(reserved)

    # -- request lifecycle ----------------------------------------------------------------------------

    def set_outcome_faults(self, faults: Mapping[str, str]) -> None:
        """Who is at fault for each outcome (the server's error table), for the ``fault`` label: alerts
        page on server faults only, never on clients' mistakes."""
        self.outcome_faults = {**BASE_FAULTS, **faults}

    def request_finished(self, transport: str, outcome: str, latency_s: float | None = None,
                         ttfa_s: float | None = None, audio_s: float = 0.0) -> None:
        # An outcome missing from the table counts as the server's: better a page than a hidden fault.
        self.requests.labels(transport, outcome).inc()
        self.request_faults.labels(transport, self.outcome_faults.get(outcome, "server")).inc()
        if audio_s > 0:
            self.audio_seconds.labels(transport).inc(audio_s)
        if outcome != "ok" or latency_s is None:
            return
        self.latency.labels(transport).observe(latency_s)
        if ttfa_s is not None:
            self.ttfa.labels(transport).observe(ttfa_s)
        if audio_s > 0:
            self.rtf.labels(transport).observe(latency_s / audio_s)
        if latency_s > self.latency_budget_s:
            self.budget_exceeded.labels(transport).inc()

    def stream_stalled(self, transport: str, silence_s: float) -> None:
        """A later chunk reached its listener ``silence_s`` after the audio before it ran out."""
        self.stalls.labels(transport).inc()
        self.stall_seconds.labels(transport).inc(silence_s)

    def long_first_chunk(self) -> None:
        """A request's first chunk was not cut short (``batching.Entry.on_time`` was false)."""
        self.long_first_chunks.inc()

    # -- BatchObserver --------------------------------------------------------------------------------

    def queue_depth(self, items: int, frames: int) -> None:
        self.queue_depth_items.set(items)
        self.queue_frames.set(frames)

    def queue_wait(self, seconds: float) -> None:
        self.queue_wait_seconds.observe(seconds)

    def batch_done(self, size: int, seconds: float, padded_frames: int, real_frames: int) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        if padded_frames > 0:
            self.padding_ratio.observe(1.0 - real_frames / padded_frames)

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def predicted_batch_seconds(self, by_size: Mapping[int, float]) -> None:
        """CostObserver: the cost model's current curve, one series per batch size."""
        for size, seconds in by_size.items():
            self.predicted_batch_seconds_gauge.labels(str(size)).set(seconds)
