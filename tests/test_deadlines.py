"""Scheduling by the listener's clock: playback deadlines, pauses that never pass a deadline, stalls
counted, and overload refused at the door (never a response cut off after it started)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest

from batching import BatcherConfig, StepBatcher
from batching.cost import CostSample
from batching.pausing import Held, plan_round
from batching.playback import Playback
from batching.queue import Ticket
from server.core.settings import Settings
from server.core.stream import Stream
from tests.conftest import LiveServer, wait_until
from tests.fakes import until_steps

LONG_TEXT = ("The first sentence is here to open the stream. A second one follows it, a little longer than the "
             "first. Then a third sentence makes sure there is more than one chunk. And a fourth one closes it.")


# -- the listener's clock (scripted) ------------------------------------------------------------------

def test_deadlines_follow_the_playback_clock() -> None:
    clock = Playback(first_audio_s=1.0)
    first, due = clock.submit(10.0, 2.0)
    assert due == 11.0  # a first chunk: its submission + the target
    second, due = clock.submit(10.2, 3.0)
    assert due == 13.0  # needed once the first chunk's 2 s have played from its (target) arrival
    clock.ready(first, 10.4)  # its result is in, before its target: the listener will start from here
    assert clock.deadline(second, 10.45) == 12.4
    assert clock.delivered(first, 10.5, 2.0) == 0.0  # first audio at 10.5: the listener runs out at 12.5
    assert clock.deadline(second, 10.5) == 12.5
    assert clock.delivered(second, 12.4, 3.0) == 0.0
    assert clock.stalls == 0 and clock.runs_out == 15.5


def test_a_late_later_chunk_is_a_stall_and_a_resumed_stream_is_not() -> None:
    clock = Playback(first_audio_s=1.0)
    a, _ = clock.submit(0.0, 1.0)
    b, _ = clock.submit(0.1, 1.0)
    clock.delivered(a, 0.5, 1.0)  # plays until 1.5
    assert clock.delivered(b, 2.0, 1.0) == pytest.approx(0.5)  # 0.5 s of silence heard
    assert clock.stalls == 1 and clock.silence_s == pytest.approx(0.5)
    # An incremental stream that waited for text: the listener ran dry before the chunk was even asked for.
    c, due = clock.submit(10.0, 1.0)
    assert due == 11.0
    assert clock.delivered(c, 10.8, 1.0) == 0.0 and clock.stalls == 1


# -- pauses between steps (scripted clock, scripted curve) ----------------------------------------------

def linear(frames: list[int] | tuple[int, ...]) -> float:  # a compute-bound step: pausing pays
    return 0.002 + 1e-5 * sum(frames)


def flat(frames: list[int] | tuple[int, ...]) -> float:  # a launch-bound step: an extra row is free
    return 0.02


def simulate(arrivals: list[tuple[float, int, bool, float]], pausing: bool) -> tuple[set[int], int]:
    """Steps on a scripted clock, planned before every step: (keys of later chunks that finished after
    their deadline, item-steps paused)."""
    now, paused, late = 0.0, 0, set()
    held: dict[int, Held] = {}
    pending = list(enumerate(arrivals))
    while pending or held:
        while pending and pending[0][1][0] <= now:
            key, (at, frames, first, budget) = pending.pop(0)
            held[key] = Held(key, frames, 16, at + budget, first)
        if not held:
            now = pending[0][1][0]
            continue
        plan = plan_round(list(held.values()), now, linear, 0.25)
        stepping = plan.stepping if pausing else list(held)
        paused += len(held) - len(stepping)
        now += linear([held[k].frames for k in stepping])
        for k in stepping:
            item = held[k]
            held[k] = Held(k, item.frames, item.left - 1, item.deadline, item.first)
            if item.left == 1:
                del held[k]
                if not item.first and now > item.deadline:
                    late.add(k)
    return late, paused


@pytest.mark.parametrize("seed", range(6))
def test_no_item_is_paused_past_its_deadline(seed: int) -> None:
    """Newcomers (1 s target) arrive among streams playing 0.5-3 s of audio, on a compute-bound curve.
    Pauses happen, and no later chunk that meets its deadline when nobody is ever paused misses it with
    pauses: a pause never costs a listener audio."""
    rng = random.Random(seed)
    at, arrivals = 0.0, []
    for _ in range(60):
        at += rng.expovariate(8.0)
        first = rng.random() < 0.5
        arrivals.append((at, rng.choice((300, 500, 700)), first, 1.0 if first else rng.uniform(0.5, 3.0)))
    late_paused, paused = simulate(arrivals, pausing=True)
    late_plain, _ = simulate(arrivals, pausing=False)
    assert paused > 0
    assert late_paused <= late_plain, (sorted(late_paused - late_plain), sorted(late_plain))


def test_nobody_pauses_where_an_extra_row_is_free() -> None:
    held = [Held(0, 500, 16, 0.5, True), Held(1, 500, 16, 100.0, False)]
    assert plan_round(held, 0.0, flat, 0.25).paused == []
    assert plan_round(held, 0.0, linear, 0.25).paused == [1]


def test_a_pause_bounds_the_workers_run() -> None:
    held = [Held(0, 500, 32, 0.5, True), Held(1, 500, 4, 1.0, False)]
    plan = plan_round(held, 0.0, linear, 0.25)
    assert plan.paused == [1]
    # It must resume while its own 4 steps (at today's price, with margin) still fit before its deadline.
    assert plan.run_s <= 1.0 - 4 * linear([500, 500]) * 1.25 + 1e-9


# -- preemption through the step batcher (scripted model, real time) -------------------------------------

STEP_S = 0.004
"""Seconds of one step of one item of the scripted model; n items cost n times that (compute-bound)."""


class ScriptedSteps:
    """A ``StepModel`` whose items are (name, steps): each step of n items sleeps n × ``STEP_S``; it
    records the order items finish in."""

    def __init__(self) -> None:
        self.left: dict[object, int] = {}
        self.names: dict[object, str] = {}
        self.finished: list[str] = []

    def cost(self, item: tuple[str, int]) -> int:
        return 500

    def steps(self, item: tuple[str, int]) -> int:
        return item[1]

    def add(self, item: tuple[str, int], key: object) -> int:
        self.left[key], self.names[key] = item[1], item[0]
        return 500

    def remove(self, key: object) -> None:
        self.left.pop(key, None)

    def step_isolating(self, keys: object = None) -> object:
        chosen = [k for k in (self.left if keys is None else keys) if self.left.get(k, 0) > 0]  # type: ignore[attr-defined]
        time.sleep(STEP_S * len(chosen))
        for key in chosen:
            self.left[key] -= 1
        return SimpleNamespace(finished=[k for k in chosen if self.left[k] == 0], failed={})

    def finish(self, keys: object) -> list[str]:
        names = [self.names[k] for k in keys]  # type: ignore[attr-defined]
        self.finished += names
        for key in keys:  # type: ignore[attr-defined]
            self.remove(key)
        return names

    def pass_cost(self, keys: object = None) -> tuple[int, int]:
        return len(self.left if keys is None else list(keys)), 500  # type: ignore[call-overload]

    @property
    def active(self) -> int:
        return sum(1 for left in self.left.values() if left > 0)


async def scripted_batcher() -> tuple[StepBatcher[Any, Any], ScriptedSteps]:
    model = ScriptedSteps()
    batcher: StepBatcher[Any, Any] = StepBatcher(model, BatcherConfig(scheduler="step", queue_timeout_s=20.0))
    batcher.planner.seed_passes([CostSample(n, 500, n * STEP_S) for n in (1, 2, 4, 8)])
    await batcher.start()
    return batcher, model


async def newcomer_while_later_runs(due_in_s: float) -> tuple[StepBatcher[Any, Any], ScriptedSteps, Ticket[Any]]:
    """A later chunk of 200 steps, due ``due_in_s`` after its submission, runs alone; 5 steps in, a newcomer
    as long arrives. Returns once both are done: the closed batcher, the model and the later chunk's ticket."""
    batcher, model = await scripted_batcher()
    later = batcher.submit(("later", 200), first=False, deadline=asyncio.get_running_loop().time() + due_in_s)
    await until_steps(batcher, 5)
    first = batcher.submit(("first", 200), first=True)
    await asyncio.gather(first.future, later.future)
    await batcher.close()
    return batcher, model, later


async def test_a_newcomer_preempts_a_later_chunk_with_audio_to_spare() -> None:
    """A later chunk whose listener has seconds of audio ahead is running alone when a newcomer as long
    arrives (sharing steps would not pay): the newcomer steps alone at once (the later chunk pauses, state
    kept) instead of waiting for the later chunk's 200 steps; the later chunk still meets its deadline."""
    batcher, model, later = await newcomer_while_later_runs(10.0)
    assert model.finished == ["first", "later"]
    assert batcher.paused_steps > 0
    assert asyncio.get_running_loop().time() < later.deadline


async def test_a_later_chunk_without_slack_is_not_preempted() -> None:
    """The same, but the later chunk's listener runs out of audio about when its own steps end: it is
    never paused, and the newcomer waits for it."""
    batcher, model, _ = await newcomer_while_later_runs(200 * STEP_S * 1.3)
    assert model.finished == ["later", "first"]
    assert batcher.paused_steps == 0


async def test_a_later_chunk_due_soon_goes_before_a_late_newcomer() -> None:
    """Queued behind a running first chunk: a newcomer already past its target (least slack by the order
    of first chunks) and a later chunk that meets its deadline only if it goes next. A first chunk is never
    paused once it holds the model, so the later chunk takes the model first."""
    batcher, model = await scripted_batcher()
    loop = asyncio.get_running_loop()
    running = batcher.submit(("running", 50), first=True)
    await until_steps(batcher, 5)
    now = loop.time()
    late = batcher.submit(("late newcomer", 100), first=True, deadline=now - 1.0)
    due = batcher.submit(("later", 40), first=False, deadline=now + (45 + 40 * 1.3) * STEP_S + 0.05)
    await asyncio.gather(running.future, late.future, due.future)
    await batcher.close()
    assert model.finished == ["running", "later", "late newcomer"]


async def test_first_chunks_wait_for_a_later_chunk_that_would_stall() -> None:
    """A first chunk holds the model for 300 steps when a later chunk arrives whose listener runs out of
    audio in 75 steps' time: waiting for the first chunk, or sharing its steps (twice the cost on this
    compute-bound curve), it would stall. The first chunk pauses (state kept) while the later chunk steps
    alone, and the later chunk is delivered before its deadline."""
    batcher, model = await scripted_batcher()
    loop = asyncio.get_running_loop()
    running = batcher.submit(("running", 300), first=True)
    await until_steps(batcher, 5)
    later = batcher.submit(("later", 50), first=False, deadline=loop.time() + 75 * STEP_S)
    delivered = {}
    later.future.add_done_callback(lambda _f: delivered.setdefault("at", loop.time()))
    await asyncio.gather(running.future, later.future)
    await batcher.close()
    assert model.finished == ["later", "running"]
    assert batcher.paused_steps > 0
    assert delivered["at"] <= later.deadline


def test_a_first_chunk_is_held_back_only_where_that_makes_the_step_cheaper() -> None:
    held = [Held(0, 500, 32, 0.5, True), Held(1, 500, 16, 16 * linear([500]) * 1.3, False)]
    assert plan_round(held, 0.0, linear, 0.25).paused == [0]  # stepping together it would stall
    assert plan_round(held, 0.0, flat, 0.25).paused == []  # an extra row is free: nobody waits
    roomy = [held[0], Held(1, 500, 16, 10.0, False)]
    assert plan_round(roomy, 0.0, linear, 0.25).stepping == [0]  # it has audio to spare: it is the one paused


# -- through the server -------------------------------------------------------------------------------

async def ws_stream(session: aiohttp.ClientSession, url: str, text: str, n: int) -> tuple[str, float, int]:
    """(how it ended: ok / the error code / truncated, seconds to that end, audio frames received)."""
    started, frames = time.perf_counter(), 0
    async with session.ws_connect(url) as ws:
        await ws.send_str(orjson.dumps({"type": "synthesize", "id": f"s{n}", "text": text}).decode())
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                frames += 1
                continue
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            event = orjson.loads(message.data)
            if event["type"] == "audio_end":
                return "ok", time.perf_counter() - started, frames
            if event["type"] == "error":
                code = "truncated" if frames else event["code"]
                return code, time.perf_counter() - started, frames
    return "truncated", time.perf_counter() - started, frames


async def http_speech(session: aiohttp.ClientSession, url: str, text: str) -> tuple[str, float, bool]:
    """(ok / the refusal's status / truncated, seconds to the status line, a retry hint on a refusal)."""
    started = time.perf_counter()
    body = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm"}
    async with session.post(url, json=body) as response:
        status_s = time.perf_counter() - started
        if response.status != 200:
            await response.read()
            return str(response.status), status_s, "Retry-After" in response.headers
        try:
            await response.read()
        except aiohttp.ClientPayloadError:
            return "truncated", status_s, False
    return "ok", status_s, False


@pytest.mark.slow
async def test_an_overload_burst_truncates_nothing(start_server, test_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    """A burst far over capacity, with a small queue and a queue timeout shorter than a stream: every
    stream either completes or is refused before its first byte, with a retry hint; none is cut off
    mid-body. (Later chunks used to time out in the queue like newcomers and abort the stream.)"""
    live: LiveServer = await start_server(test_settings.replace(max_queue=6, queue_timeout_s=0.5, admission=True,
                                                                admission_ttfa_s=1.0))
    async with aiohttp.ClientSession() as session:
        ws = [ws_stream(session, live.ws_url, LONG_TEXT, n) for n in range(16)]
        http = [http_speech(session, live.url("/v1/audio/speech"), LONG_TEXT) for _ in range(16)]
        results = await asyncio.gather(*ws, *http)
    ends = [r[0] for r in results]
    assert "truncated" not in ends, ends
    assert ends.count("ok") >= 2, ends
    assert any(e != "ok" for e in ends), "nothing refused: the burst did not overload the server"
    refusals = [r for r in results[16:] if r[0] != "ok"]
    assert all(r[0] in ("429", "503") and r[2] for r in refusals), refusals  # each with Retry-After
    assert live.metric("tts_stream_stalls_total", transport="ws") >= 0


async def test_a_burst_is_refused_before_its_text_is_prepared(start_server, test_settings: Settings,  # type: ignore[no-untyped-def]
                                                              monkeypatch) -> None:
    """All of a burst's requests reach the early check before the first of them is queued: the ones let
    in count as work ahead, so most of the burst is refused before its text is prepared; every entry is
    closed once its stream's first chunk is queued, its stream fails, or its request is refused later."""
    live: LiveServer = await start_server(test_settings.replace(admission=True, admission_ttfa_s=1.0))
    service, batcher = live.state.service, live.state.runtime.batcher  # type: ignore[union-attr]
    batcher.seed_costs([(n, frames, 0.4 * n) for n in (1, 2, 4) for frames in (300, 600, 1200)])  # no batching gain
    prepared = 0
    feed = service._feed

    def counted(*args):  # type: ignore[no-untyped-def]
        nonlocal prepared
        prepared += 1
        return feed(*args)

    monkeypatch.setattr(service, "_feed", counted)
    async with aiohttp.ClientSession() as session:
        bad = await session.post(live.url("/v1/audio/speech"), json={"input": "...", "voice": "alloy"})
        assert bad.status == 400 and batcher.incoming == 0  # refused after the early check: entry closed
        results = await asyncio.gather(*(http_speech(session, live.url("/v1/audio/speech"), LONG_TEXT)
                                         for _ in range(24)))
    ends = [r[0] for r in results]
    assert "ok" in ends and "429" in ends, ends
    assert prepared - 1 <= 8, f"{prepared - 1} of 24 requests prepared their text"
    assert batcher.incoming == 0


@pytest.mark.slow
async def test_a_forced_stall_is_counted(start_server, test_settings: Settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Once the first chunk is out (about 4 s of audio), vocoding anything takes 6 s more: the next chunk
    reaches the listener late, and the server counts the stall and the silence."""
    live: LiveServer = await start_server(test_settings.replace(scheduler="step"))
    model = live.state.runtime.batcher.model  # type: ignore[union-attr]
    finish = model.finish
    slow = asyncio.Event()

    def slowed(keys):  # type: ignore[no-untyped-def]
        if slow.is_set():
            time.sleep(6.0)
        return finish(keys)

    monkeypatch.setattr(model, "finish", slowed)
    async with aiohttp.ClientSession() as session, session.ws_connect(live.ws_url) as ws:
        await ws.send_str(orjson.dumps({"type": "synthesize", "id": "s", "text": LONG_TEXT}).decode())
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                slow.set()
            elif message.type != aiohttp.WSMsgType.TEXT or orjson.loads(message.data)["type"] in ("audio_end", "error"):
                break
    assert live.metric("tts_stream_stalls_total", transport="ws") >= 1
    assert live.metric("tts_stream_stall_seconds_total", transport="ws") > 1.0


async def test_a_ready_chunk_moves_the_next_ones_deadline_before_the_next_decision(
        start_server, test_settings: Settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The second chunk is queued while the first runs; the first is ready well before its 1 s target,
    and the socket is slow to take its audio. The scheduler's next decision already sees the second
    chunk's deadline counted from when the first was ready, not from the first chunk's target."""
    live: LiveServer = await start_server(test_settings.replace(first_audio_s=5.0))
    batcher = live.state.runtime.batcher
    engine = live.state.runtime.engine
    synthesize, select = batcher.model.synthesize, batcher.planner.select  # type: ignore[union-attr]
    ready: list[tuple[float, float]] = []  # (loop time the result came in, its audio seconds)
    decided: dict[int, tuple[float, float]] = {}  # later chunk -> (its deadline, the decision's time)

    def timed(items):  # type: ignore[no-untyped-def]
        out = synthesize(items)
        ready.append((time.monotonic(), engine.audio_seconds(items[0])))
        return out

    def recording_select(queue, now):  # type: ignore[no-untyped-def]
        decided.update((t.seq, (t.deadline, now)) for t in queue if not t.first and t.seq not in decided)
        return select(queue, now)

    stream_send = Stream._emit

    async def slow_socket(self, event):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.3)
        await stream_send(self, event)

    monkeypatch.setattr(batcher.model, "synthesize", timed)
    monkeypatch.setattr(batcher.planner, "select", recording_select)
    monkeypatch.setattr(Stream, "_emit", slow_socket)
    async with aiohttp.ClientSession() as session, session.ws_connect(live.ws_url) as ws:
        await ws.send_str(orjson.dumps({"type": "synthesize", "id": "s", "text": LONG_TEXT}).decode())
        async for message in ws:
            if message.type != aiohttp.WSMsgType.BINARY and (
                    message.type != aiohttp.WSMsgType.TEXT
                    or orjson.loads(message.data)["type"] in ("audio_end", "error")):
                break
    deadline, _ = decided[min(decided)]
    at, seconds = ready[0]
    assert at + seconds <= deadline <= at + seconds + 0.05, (ready, decided)


TWO_SENTENCES = "I found three flights that match. The earliest leaves at seven fifteen and arrives at ten."


async def ws_chunks(session: aiohttp.ClientSession, url: str, text: str) -> int:
    """Synthesise ``text`` on its own socket; the chunks its ``audio_end`` reports."""
    async with session.ws_connect(url) as ws:
        await ws.send_str(orjson.dumps({"type": "synthesize", "id": "c", "text": text}).decode())
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                event = orjson.loads(message.data)
                if event["type"] == "audio_end":
                    return int(event["chunks"])
                assert event["type"] != "error", event
    raise AssertionError("the stream ended without audio_end")


async def test_a_newcomer_whose_first_audio_is_late_anyway_gets_no_short_first_chunk(  # type: ignore[no-untyped-def]
        start_server, test_settings: Settings) -> None:
    """Two sentences are two chunks on an idle server (a short first chunk: first audio sooner). With more
    work ahead than the first-audio deadline, the first audio is late whatever the first chunk is, and a
    short one would only cost the model an extra pass: the same text is one chunk, and it is counted."""
    live: LiveServer = await start_server(test_settings.replace(first_audio_s=1.0))
    batcher = live.state.runtime.batcher
    gate = threading.Event()
    async with aiohttp.ClientSession() as session:
        assert await ws_chunks(session, live.ws_url, TWO_SENTENCES) == 2
        assert live.metric("tts_long_first_chunks_total") == 0
        # Priced at 5 s a chunk until a batch says otherwise (the next one ends only after the second request)
        batcher.seed_costs([(n, frames, 5.0 * n) for n in (1, 2, 4) for frames in (300, 600, 1200)])
        blocker = asyncio.ensure_future(batcher.call_in_worker(gate.wait))  # the model thread is held
        ahead = asyncio.ensure_future(ws_chunks(session, live.ws_url, "Hello there."))
        try:
            await wait_until(lambda: batcher.backlog_seconds() > 4.0)  # its chunk started (5 s), behind the gate
            late = asyncio.ensure_future(ws_chunks(session, live.ws_url, TWO_SENTENCES))
            await wait_until(lambda: live.metric("tts_long_first_chunks_total") > 0)
        finally:
            gate.set()
        assert await late == 1 and await ahead == 1
        await blocker
        assert live.metric("tts_long_first_chunks_total") == 1
        assert await ws_chunks(session, live.ws_url, TWO_SENTENCES) == 2  # idle again: short first chunk
