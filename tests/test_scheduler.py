"""The latency-aware scheduler: the cost model, batch composition and admission control.

The policy is exercised on fakes with a scripted cost curve (seeded into the cost model, so the first
decisions do not depend on this machine's timing) and once on the real tiny engine's warm-up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from batching import BatcherConfig, CostModel, CostSample, Entry, MicroBatcher, QueueFullError, StepBatcher, policy
from batching.base import BatcherBase
from batching.cost import CostCurve
from batching.queue import Ticket
from engine import Engine, Voice
from observability import Metrics
from tests.fakes import CurveModel, FakeItem, RecordingObserver

Curve = Callable[[int, int], float]
SIZES = (1, 2, 3, 4, 6, 8)
LIMITS = policy.Limits(max_size=8, max_frames=100_000, max_padding=0.5)


def samples(curve: Curve, frames: tuple[int, ...] = (100, 200)) -> list[CostSample]:
    return [CostSample(n, f, curve(n, f)) for n in SIZES for f in frames]


def free(n: int, f: int) -> float:  # batching is free (an idle GPU): a batch costs what one item costs
    return 0.04


def per_item(n: int, f: int) -> float:  # cost per item is flat (a compute-bound CPU): nothing to share
    return 0.05 * n * f / 100


def between(n: int, f: int) -> float:  # some overhead to share, some work per item
    return 0.03 + 0.01 * n * f / 100


@pytest.fixture
async def make() -> AsyncIterator:
    created: list[MicroBatcher] = []

    async def factory(curve: Curve, seed: Curve | None = None, **config: object) -> MicroBatcher:
        model = CurveModel(curve=curve)
        batcher = MicroBatcher(model, BatcherConfig(**config), RecordingObserver())  # type: ignore[arg-type]
        batcher.seed_costs(samples(seed or curve, frames=(100,)))  # the length every test item has
        await batcher.start()
        created.append(batcher)
        return batcher

    yield factory
    for batcher in created:
        if batcher.model.gate is not None:
            batcher.model.gate.set()
        await batcher.close(drain=False)


def optimal_total(queued: int, curve: Curve, cap: int) -> float:
    """Brute force over every split of ``queued`` equal items into batches: least summed completion time."""
    @functools.cache
    def best(left: int) -> float:
        if left == 0:
            return 0.0
        return min(left * curve(n, 100) + best(left - n) for n in range(1, min(left, cap) + 1))

    return best(queued)


# -- the cost model ----------------------------------------------------------------------------------

def test_fit_recovers_a_known_curve_from_few_samples() -> None:
    def truth(n: int, f: int) -> float:
        return 0.02 + 2e-6 * n * f + 1e-9 * n * f * f

    curve = CostCurve()
    for sample in samples(truth, frames=(300, 900)):
        curve.observe(sample)
    for n, f in ((1, 500), (5, 700), (8, 1200)):
        assert curve.predict(n, f) == pytest.approx(truth(n, f), rel=0.1)


def test_fit_never_goes_negative_and_few_samples_read_flat() -> None:
    curve = CostCurve()
    curve.observe(CostSample(1, 100, 0.2))
    assert curve.predict(8, 100) == pytest.approx(0.2, rel=0.05)  # one shape: assume batching is free
    for n, seconds in ((1, 0.5), (2, 0.4), (4, 0.3)):  # noise that slopes downwards
        curve.observe(CostSample(n, 100, seconds))
    assert min(curve.coef) >= 0
    assert curve.predict(8, 100) > 0


def test_a_bigger_batch_is_never_priced_under_a_smaller_one() -> None:
    curve = CostCurve()
    for _ in range(3):  # a busy machine while batch 1 was timed: it looks dearer than batch 2
        curve.observe(CostSample(1, 100, 1.5))
        curve.observe(CostSample(2, 100, 1.3))
    assert curve.predict(1, 100) <= curve.predict(2, 100) <= curve.predict(4, 100)


def test_size_buckets_follow_a_curve_that_bends() -> None:
    def knee(n: int, f: int) -> float:  # a GPU: flat up to 4 items, then linear
        return 0.1 * max(1, n / 4)

    curve = CostCurve()
    for _ in range(3):
        for n in (1, 2, 4, 8, 16):
            curve.observe(CostSample(n, 100, knee(n, 100)))
    for n in (1, 4, 16):
        assert curve.predict(n, 100) == pytest.approx(knee(n, 100), rel=0.2)


def test_online_samples_replace_the_seed_where_traffic_goes() -> None:
    model = CostModel()
    model.seed(samples(free, frames=(100,)))
    assert model.predict("k", 8, 100) == pytest.approx(0.04, rel=0.1)
    for _ in range(4):
        for n in SIZES:
            model.observe("k", n, 100, per_item(n, 100))
    assert model.predict("k", 8, 100) == pytest.approx(per_item(8, 100), rel=0.15)
    assert model.predict("other", 8, 100) == pytest.approx(0.04, rel=0.1)  # a new key starts from the seed


def test_a_seed_timed_on_a_busy_machine_follows_the_first_live_batches() -> None:
    """A kept seed timed while other replicas warmed up beside it priced a single 0.6 s chunk at 8.6 s and
    refused every newcomer for the server's lifetime: live traffic visited one shape only, and the other
    seed samples kept the fit ten times too dear. Live batches now set the seed's level, its shape kept."""
    def busy(n: int, f: int) -> float:  # the same curve, timed ten times too slow
        return 10 * between(n, f)

    model = CostModel()
    model.seed(samples(busy, frames=(100, 200)))
    assert model.predict("k", 1, 150) == pytest.approx(busy(1, 150), rel=0.15)
    for _ in range(3):  # traffic of one shape only, at the machine's real speed
        model.observe("k", 1, 150, between(1, 150))
    for n in (1, 4, 8):  # every size follows, batching's gain (the seed's shape) intact
        assert model.predict("k", n, 150) == pytest.approx(between(n, 150), rel=0.15)
    assert model.predict("k", 8, 150) / model.predict("k", 1, 150) == pytest.approx(
        between(8, 150) / between(1, 150), rel=0.15)


# -- batch composition -------------------------------------------------------------------------------

@pytest.mark.parametrize(("curve", "expected"), [(free, [8, 8, 4]), (per_item, [1] * 20)])
def test_plan_extremes(curve: Curve, expected: list[int]) -> None:
    assert policy.plan(20, 100, curve, LIMITS) == expected


@pytest.mark.parametrize("queued", [2, 3, 5, 8, 13, 20])
@pytest.mark.parametrize("curve", [free, per_item, between])
def test_plan_is_the_optimum(curve: Curve, queued: int) -> None:
    sizes = policy.plan(queued, 100, curve, LIMITS)
    assert sum(sizes) == queued
    left, total = queued, 0.0
    for n in sizes:
        total += left * curve(n, 100)
        left -= n
    assert total == pytest.approx(optimal_total(queued, curve, LIMITS.max_size))


def tickets(costs: list[int], first: list[bool] | None = None, at: float = 0.0,
            deadlines: list[float] | None = None) -> list[Ticket[int]]:
    loop = asyncio.new_event_loop()
    try:
        return [Ticket(item=i, cost=c, key="k", first=bool(first and first[i]), seq=i, enqueued_at=at,
                       deadline=deadlines[i] if deadlines else at + 60, expires=None,
                       future=loop.create_future()) for i, c in enumerate(costs)]
    finally:
        loop.close()


def test_lengths_are_grouped_and_padding_is_capped() -> None:
    queue = tickets([100, 400, 110, 390, 95, 105])
    chosen = policy.compose(queue, 0.0, lambda key: free, LIMITS)
    assert sorted(t.item for t in chosen.tickets) == [0, 2, 4, 5]  # the 400s would make half the frames padding


def test_least_slack_anchors_on_a_scripted_clock() -> None:
    """Deadlines, not arrival order: a later chunk whose listener has 3 s of audio waits for newcomers
    (1 s target) until its slack is about to run out; then it goes first."""
    queue = tickets([100] * 3, first=[False, True, True], deadlines=[3.0, 1.0, 1.2])
    assert [t.item for t in policy.compose(queue, 0.0, lambda key: per_item, LIMITS).tickets] == [1]
    # At t=2.8 the later chunk has 0.2 s left minus its 0.05 s cost: a newcomer's 0.05 s batch still fits...
    assert [t.item for t in policy.compose(queue, 2.8, lambda key: per_item, LIMITS).tickets] == [1]
    # ...at t=2.93 it would not (its margin is a quarter of its cost): the later chunk goes first.
    assert [t.item for t in policy.compose(queue, 2.93, lambda key: per_item, LIMITS).tickets] == [0]


def test_late_first_chunks_keep_arrival_order() -> None:
    """A first chunk's deadline is a target: once late, its slack counts as zero, so late newcomers run
    oldest first, whatever their targets."""
    queue = tickets([100] * 3, first=[True] * 3, deadlines=[1.0, 0.5, 0.8])
    assert [t.item for t in policy.compose(queue, 5.0, lambda key: per_item, LIMITS).tickets] == [0]
    assert [t.item for t in policy.compose(queue, 0.0, lambda key: per_item, LIMITS).tickets] == [1]


def test_a_batch_never_grows_past_a_later_chunks_deadline() -> None:
    """Batching pays on this curve, but the later chunk meets its deadline only in a small batch."""
    queue = tickets([100] * 6, first=[False] + [True] * 5, deadlines=[0.075] + [5.0] * 5)
    chosen = policy.compose(queue, 0.0, lambda key: between, LIMITS)
    assert chosen.tickets[0].item == 0
    grown = 1 + policy.STALL_MARGIN  # the margin kept against a prediction off by that much
    assert between(len(chosen.tickets), 100) * grown <= 0.075 < between(len(chosen.tickets) + 1, 100) * grown


def test_later_chunks_due_together_go_before_a_newcomer_they_could_each_wait_for() -> None:
    """Three later chunks due at 0.2 s (0.05 s of work each on a compute-bound curve): each alone could
    wait for a newcomer's 0.05 s batch, all three cannot; the newcomer waits."""
    queue = tickets([100] * 4, first=[True, False, False, False], deadlines=[0.0, 0.2, 0.2, 0.2])
    assert policy.compose(queue, 0.0, lambda key: per_item, LIMITS).tickets[0].item in (1, 2, 3)
    roomy = tickets([100] * 4, first=[True, False, False, False], deadlines=[0.0, 0.3, 0.3, 0.3])
    assert [t.item for t in policy.compose(roomy, 0.0, lambda key: per_item, LIMITS).tickets] == [0]


def test_a_later_chunk_that_can_wait_joins_only_where_it_rides_free() -> None:
    """Two items queued, where a batch of two beats two singles by the summed completion time: a later
    chunk with seconds of audio in hand would still make the newcomer's batch 25 % dearer, and stays
    queued; where an extra row is free it rides along."""
    queue = tickets([100, 100], first=[True, False], deadlines=[0.0, 10.0])
    assert policy.plan(2, 100, between, LIMITS) == [2]
    assert [t.item for t in policy.compose(queue, 0.0, lambda key: between, LIMITS).tickets] == [0]
    assert [t.item for t in policy.compose(queue, 0.0, lambda key: free, LIMITS).tickets] == [0, 1]


def test_a_batch_grows_no_longer_than_the_queued_later_chunks_were_promised() -> None:
    """The queued later chunk may wait for the newcomer's batch as its anchor prices it (two items of 100
    frames), not for one padded to a 190-frame newcomer: that newcomer is left for the next batch."""
    pairs = policy.Limits(max_size=2, max_frames=100_000, max_padding=0.5)
    queue = tickets([100, 190, 100], first=[True, True, False], deadlines=[0.0, 0.0, 0.12])
    assert [t.item for t in policy.compose(queue, 0.0, lambda key: between, pairs).tickets] == [0]
    roomy = tickets([100, 190, 100], first=[True, True, False], deadlines=[0.0, 0.0, 0.2])
    assert [t.item for t in policy.compose(roomy, 0.0, lambda key: between, pairs).tickets] == [0, 1]


def test_a_later_chunk_already_late_runs_without_newcomers_that_would_lengthen_its_silence() -> None:
    queue = tickets([100] * 3, first=[False, True, True], deadlines=[0.01, 0.0, 0.0])
    assert [t.item for t in policy.compose(queue, 0.0, lambda key: between, LIMITS).tickets] == [0]
    assert [t.item for t in policy.compose(queue, 0.0, lambda key: free, LIMITS).tickets] == [0, 1, 2]


def test_later_chunks_already_short_of_time_are_not_made_to_wait_longer_for_a_newcomer() -> None:
    """At 0.9 load (tiny, 32 steps) two later chunks due together behind a third could not all make it
    whatever ran; the newcomers that joined their batches on a compute-bound curve only made the
    silences longer (stalls of 0.8-1.3 s). The later chunk that cannot wait runs with the next later
    chunk, not with the newcomer."""
    pairs = policy.Limits(max_size=2, max_frames=100_000, max_padding=0.5)
    queue = tickets([100] * 3, first=[False, True, False], deadlines=[0.07, 0.0, 0.09])
    assert [t.item for t in policy.compose(queue, 0.0, lambda key: between, pairs).tickets] == [0, 2]
    assert [t.item for t in policy.compose(queue, 0.0, lambda key: free, pairs).tickets] == [0, 1]  # rides free


# -- through the batcher -----------------------------------------------------------------------------

async def submit_all(batcher: MicroBatcher, n: int) -> list[Ticket[FakeItem]]:
    """All at once (no await between), so the first decision sees the whole queue."""
    queued = [batcher.submit(FakeItem(i)) for i in range(n)]
    await asyncio.gather(*(t.future for t in queued))
    return queued


async def test_free_batching_fills_batches(make) -> None:
    batcher = await make(free, max_batch_size=8)
    await submit_all(batcher, 8)
    assert batcher.model.calls == [list(range(8))]


async def test_flat_per_item_cost_runs_singles(make) -> None:
    batcher = await make(per_item, max_batch_size=8)
    await submit_all(batcher, 6)
    assert batcher.model.calls == [[i] for i in range(6)]


async def test_in_between_curve_runs_the_predicted_optimum(make) -> None:
    batcher = await make(between, max_batch_size=8)
    await submit_all(batcher, 8)
    assert len(batcher.model.calls[0]) == policy.plan(8, 100, between, LIMITS)[0] == 6


@pytest.mark.slow
async def test_a_wrong_seed_is_corrected_online(make) -> None:
    batcher = await make(per_item, seed=free, max_batch_size=8, max_wait_ms=1)
    await submit_all(batcher, 8)
    assert batcher.model.calls[0] == list(range(8))  # it believed batching was free
    for n in [1, 2, 3, 4] * 4:  # each size bucket it now sees is refreshed with real timings
        await submit_all(batcher, n)
    batcher.model.calls.clear()
    await submit_all(batcher, 4)
    assert max(len(c) for c in batcher.model.calls) < 4


async def test_predictions_are_exported_to_the_gauge() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, process_collectors=False)
    batcher = MicroBatcher(CurveModel(curve=between), BatcherConfig(max_batch_size=8), metrics)
    table = batcher.seed_costs(samples(between))
    assert list(table) == [1, 2, 4, 8]
    value = registry.get_sample_value("tts_scheduler_predicted_batch_seconds", {"size": "8"})
    assert value == pytest.approx(between(8, batcher.costs.typical_frames), rel=0.1)


async def test_the_next_batch_sees_the_deadlines_a_result_moved(make) -> None:
    """A stream moves its queued later chunk's deadline when the chunk before it is ready (a callback of
    that result). The next decision sees the moved deadline: the other stream's later chunk, now the one
    due first, runs first."""
    gate = threading.Event()
    batcher = await make(half_second)
    batcher.model.gate = gate
    now = asyncio.get_running_loop().time()
    running = batcher.submit(FakeItem(0), first=True)
    await asyncio.to_thread(batcher.model.started.wait, 5)
    stale = batcher.submit(FakeItem(1), first=False, deadline=now + 1.0)  # as if item 0 were ready already
    other = batcher.submit(FakeItem(2), first=False, deadline=now + 2.0)
    running.future.add_done_callback(lambda _f: setattr(stale, "deadline", now + 4.0))
    gate.set()
    await asyncio.gather(running.future, stale.future, other.future)
    assert batcher.model.calls == [[0], [2], [1]]


# -- admission control -------------------------------------------------------------------------------

def half_second(n: int, f: int) -> float:
    return 0.5 * n


@pytest.mark.slow
async def test_admission_refuses_first_chunks_that_would_miss_the_budget(make) -> None:
    gate = threading.Event()
    batcher = await make(half_second, admission=True, admission_ttfa_s=1.2)
    batcher.model.gate = gate
    running = batcher.submit(FakeItem(0), first=True)
    await asyncio.to_thread(batcher.model.started.wait, 5)
    ahead = batcher.submit(FakeItem(1), first=True)  # ~0.5 running + 0.5 itself: within budget
    assert batcher.predict_first_audio(FakeItem(2)) == pytest.approx(1.5, abs=0.1)
    with pytest.raises(QueueFullError) as refused:
        batcher.submit(FakeItem(2), first=True)
    assert refused.value.code == "queue_full"
    assert 200 <= refused.value.retry_after_ms <= 400  # when 0.3 s of the backlog has drained
    assert batcher.observer.rejections == ["over_budget"]
    later = batcher.submit(FakeItem(3), first=False)  # a playing stream's next chunk is never refused
    gate.set()
    await asyncio.gather(running.future, ahead.future, later.future)


async def test_admission_counts_only_the_work_that_runs_before_a_newcomer(make) -> None:
    """Later chunks whose listeners have seconds of audio run after a newcomer: admission does not count
    them (the deadline order), so a newcomer behind them is still served."""
    gate = threading.Event()
    batcher = await make(half_second, admission=True, admission_ttfa_s=1.2)
    batcher.model.gate = gate
    running = batcher.submit(FakeItem(0), first=True)
    await asyncio.to_thread(batcher.model.started.wait, 5)
    now = asyncio.get_running_loop().time()
    playing = [batcher.submit(FakeItem(n), first=False, deadline=now + 30) for n in range(1, 4)]
    assert batcher.predict_first_audio(FakeItem(9)) == pytest.approx(1.0, abs=0.1)  # the running batch + itself
    newcomer = batcher.submit(FakeItem(9), first=True)
    gate.set()
    await asyncio.gather(running.future, newcomer.future, *(t.future for t in playing))
    assert batcher.model.calls[1] == [9]


async def test_refuse_early_prices_the_work_ahead_without_the_newcomer(make) -> None:
    """Front ends ask before they prepare a request's text: refused only when the backlog alone is over."""
    gate = threading.Event()
    batcher = await make(half_second, admission=True, admission_ttfa_s=1.2)
    batcher.model.gate = gate
    batcher.refuse_early()  # idle
    running = batcher.submit(FakeItem(0), first=True)
    await asyncio.to_thread(batcher.model.started.wait, 5)
    queued = [batcher.submit(FakeItem(1), first=True)]
    assert batcher.backlog_seconds() == pytest.approx(1.0, abs=0.1)  # the running batch's rest + one queued
    batcher.refuse_early()  # 1.0 s ahead: a newcomer may still make it
    now = asyncio.get_running_loop().time()
    queued += [batcher.submit(FakeItem(n), first=False, deadline=now + 30) for n in (2, 3)]
    batcher.refuse_early()  # later chunks with audio in hand run after a newcomer: not counted
    batcher.config = dataclasses.replace(batcher.config, admission=False)
    queued.append(batcher.submit(FakeItem(4), first=True))
    batcher.config = dataclasses.replace(batcher.config, admission=True)
    assert batcher.backlog_seconds() == pytest.approx(1.5, abs=0.1)
    with pytest.raises(QueueFullError) as refused:
        batcher.refuse_early()
    assert refused.value.code == "queue_full" and 200 <= refused.value.retry_after_ms <= 400
    assert batcher.observer.rejections == ["over_budget"]
    gate.set()
    await asyncio.gather(running.future, *(t.future for t in queued))


@pytest.mark.parametrize("scheduler", ["request", "step"])
async def test_refuse_early_counts_the_newcomers_let_in_before_their_text_is_ready(make, scheduler) -> None:
    """A burst's requests are all checked before the first of them is queued (each still prepares its
    text): the ones let in count as work ahead, so the early check refuses the rest of the burst instead of
    letting all of them prepare their text only to refuse them at the queue."""
    batcher: BatcherBase[Any, Any]
    if scheduler == "request":
        batcher = await make(half_second, admission=True, admission_ttfa_s=1.2)
    else:  # no step runs here: the planner alone prices the newcomers
        batcher = StepBatcher(CurveModel(curve=half_second), BatcherConfig(  # type: ignore[arg-type]
            scheduler="step", admission=True, admission_ttfa_s=1.2), RecordingObserver())
        batcher.seed_costs(samples(half_second, frames=(100,)))
    entries: list[Entry] = []
    with pytest.raises(QueueFullError) as refused:
        for _ in range(50):
            entries.append(batcher.refuse_early())
    assert 1 <= len(entries) < 50 and batcher.incoming == len(entries)
    assert refused.value.retry_after_ms > 0 and batcher.observer.rejections == ["over_budget"]
    # Each says the work that was ahead of it; past the first-audio deadline, no short first chunk.
    ahead = [entry.ahead_s for entry in entries]
    assert ahead[0] == 0.0 and ahead == sorted(ahead) and ahead[-1] >= batcher.config.first_audio_s, ahead
    assert [entry.on_time for entry in entries] == [a < batcher.config.first_audio_s for a in ahead]
    entries[0].close()
    entries[0].close()  # idempotent
    assert batcher.incoming == len(entries) - 1
    entries.pop(0)
    entries.append(batcher.refuse_early())  # a place freed: the next one is let in again
    del entries[:]  # an entry dropped unclosed stops counting
    assert batcher.incoming == 0
    batcher.refuse_early()


def test_promises_keep_a_refused_newcomers_place_until_it_comes_back() -> None:
    promises = policy.Promises()
    promises.refused(10.0, retry_after_s=0.5, seconds=0.8)   # told to come back at 10.5
    assert promises.ahead(10.2, 3.0) == pytest.approx(0.8)   # a newcomer meanwhile waits behind it
    promises.refused(10.2, retry_after_s=1.0, seconds=0.4)   # ...and is told to come back after it
    assert promises.ahead(10.6, 3.0, take=False) == 0.0     # one is due: this arrival is taken for it
    assert promises.ahead(10.6, 3.0) == 0.0 and len(promises) == 1  # ...and uses it up
    assert promises.ahead(10.7, 3.0) == pytest.approx(0.4)  # the next one pays for the other again
    assert promises.ahead(11.2 + policy.PROMISE_GRACE_S + 0.01, 3.0) == 0.0 and len(promises) == 0  # lapsed


def test_a_promise_is_used_up_when_its_client_is_refused_again() -> None:
    """A client that came back and was refused again got a new promise; its old one, still due for the
    grace second, let every newcomer in that second be taken for it and overtake (8 closed-loop clients:
    the same three clients refused together over and over)."""
    promises = policy.Promises()
    promises.refused(0.0, retry_after_s=0.5, seconds=0.8)
    assert promises.ahead(0.6, 3.0) == 0.0                 # it came back...
    promises.refused(0.6, retry_after_s=0.5, seconds=0.8)  # ...and was refused again
    assert promises.ahead(0.7, 3.0) == pytest.approx(0.8)  # a newcomer now waits behind it


def test_promises_beyond_the_budget_do_not_hold_newcomers_back() -> None:
    """A burst refused with long hints may never come back: only promises due within the budget count."""
    promises = policy.Promises()
    for n in range(100):
        promises.refused(0.0, retry_after_s=0.5 * (n + 1), seconds=0.5)
    assert promises.ahead(0.1, 3.0) == pytest.approx(0.5 * 6)  # due at 0.5 ... 3.0


async def test_a_refused_newcomer_is_not_overtaken_while_it_waits_for_its_hint(make) -> None:
    """A closed loop of clients against admission (bench.upstream, 8 clients): a client refused with a
    retry hint came back to find its place taken by clients that had just been served and asked again,
    and was refused again and again (latency p95 1.4-1.7x upstream's at p50 0.4x). Its place is kept."""
    gate = threading.Event()
    batcher = await make(lambda n, f: 0.005 * n * f, admission=True, admission_ttfa_s=1.3)
    batcher.seed_costs(samples(lambda n, f: 0.005 * n * f, frames=(100, 200)))  # 0.5 s per 100 frames
    batcher.model.gate = gate
    running = batcher.submit(FakeItem(0, cost=100), first=True)
    await asyncio.to_thread(batcher.model.started.wait, 5)
    with pytest.raises(QueueFullError) as long_one:  # 0.5 running + 1.0 itself: 1.5 s
        batcher.submit(FakeItem(1, cost=200), first=True)
    assert 150 <= long_one.value.retry_after_ms <= 350  # 1.5 - 1.3 s, and the running batch's start
    with pytest.raises(QueueFullError) as short_one:  # 0.5 + 0.5 would fit, but the long one is owed 1.0 s
        batcher.submit(FakeItem(2, cost=100), first=True)
    assert short_one.value.retry_after_ms > long_one.value.retry_after_ms
    await asyncio.sleep(long_one.value.retry_after_ms / 1000 + 0.05)
    back = batcher.submit(FakeItem(1, cost=200), first=True)  # its place was kept
    assert len(batcher.promises) == 1  # the short one's, still to fall due
    gate.set()
    await asyncio.gather(running.future, back.future)


@pytest.mark.slow
async def test_admission_off_keeps_the_bounded_queue(make) -> None:
    gate = threading.Event()
    batcher = await make(half_second, admission_ttfa_s=1.2)
    batcher.model.gate = gate
    batcher.submit(FakeItem(0), first=True)
    await asyncio.to_thread(batcher.model.started.wait, 5)
    queued = [batcher.submit(FakeItem(i), first=True) for i in range(1, 4)]  # all over the budget, all taken
    assert batcher.observer.rejections == []
    with pytest.raises(QueueFullError):  # a front end can still ask, e.g. before it sends response headers
        batcher.admit(FakeItem(9))
    gate.set()
    await asyncio.gather(*(t.future for t in queued))


async def test_an_idle_model_admits_even_an_item_slower_than_the_budget(make) -> None:
    batcher = await make(lambda n, f: 0.01, admission=True, admission_ttfa_s=0.001)
    assert await batcher.run(FakeItem(1, cost=100), first=True) == ("out", 1)


def test_misses_give_a_margin_once_there_are_enough() -> None:
    misses = policy.Misses(window=64, quantile=0.9, min_samples=8)
    for late in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        misses.observe(1.0, 1.0 + late)
    assert misses.margin() == 0.0  # seven samples: too few to trust
    misses.observe(1.0, 1.8)
    assert misses.margin() == pytest.approx(0.8)  # the 90th percentile of eight
    early = policy.Misses(min_samples=1)
    early.observe(2.0, 1.5)
    assert early.margin() == 0.0  # predictions that were early never lower the bar


def test_the_margin_refuses_what_the_bare_prediction_would_admit() -> None:
    observer = RecordingObserver()
    assert policy.within_budget(0.5, 1.0, 1.2, observer) == 1.0
    with pytest.raises(QueueFullError) as refused:
        policy.within_budget(0.5, 1.0, 1.2, observer, margin=0.3)
    assert 50 <= refused.value.retry_after_ms <= 100  # 0.1 s over
    assert observer.rejections == ["over_budget"]
    # an idle model still serves an item slower than the budget, margin or not
    assert policy.within_budget(0.0, 2.0, 1.2, observer, margin=0.3) == 2.0


@pytest.mark.slow
async def test_admitted_first_chunks_teach_the_margin(make) -> None:
    batcher = await make(half_second, seed=lambda n, f: 0.25 * n, admission=True, admission_ttfa_s=5.0)
    tickets = [batcher.submit(FakeItem(i), first=True) for i in range(3)]
    later = batcher.submit(FakeItem(9), first=False)
    assert [t.predicted is not None for t in tickets] == [True] * 3 and later.predicted is None
    await asyncio.gather(*(t.future for t in [*tickets, later]))
    misses = list(batcher.planner.misses._misses)
    assert len(misses) == 3  # first chunks only
    assert max(misses) > 0.2  # the seed priced a batch at half what it costs: the last one was late


def test_config_refuses_unknown_policies() -> None:
    with pytest.raises(ValueError, match="policy"):
        BatcherConfig(policy="fastest")


# -- the real engine's warm-up seeds the model -------------------------------------------------------

@pytest.mark.slow
async def test_engine_warmup_timings_seed_a_sensible_curve(engine: Engine, voice_en: Voice) -> None:
    timings = engine.warmup([1, 2], nfe_steps=2, voice=voice_en, target_steps=8)
    assert [(n, f > 0, s > 0) for n, f, s in timings] == [(1, True, True), (2, True, True)] * 2
    assert timings[2][1] > timings[0][1]  # the sentence is longer than the short text
    batcher = MicroBatcher(engine, BatcherConfig(max_batch_size=2))
    table = batcher.seed_costs(timings)
    assert 0 < table[1] <= table[2]


def test_sustained_arrivals_tip_the_plan_toward_batches() -> None:
    """Measured on this CPU with the default voice: T(n) ≈ 0.315 + 0.305 n s. For the 8 items queued now,
    singles and one batch of 8 tie on summed completion time; with work arriving at the rate it is served
    (closed-loop clients), the items that will join while the queue drains make batching the better plan."""
    def intercept(n: int, frames: int) -> float:
        return 0.315 + 0.305 * n
    limits = policy.Limits(max_size=16, max_frames=10**9, max_padding=0.5)
    alone = policy.plan(8, 700, intercept, limits)[0]
    planned = policy.expected_queue(8, 700, intercept, limits, arrival_rate=2.0)
    assert planned > 8
    assert policy.plan(planned, 700, intercept, limits)[0] > alone
    assert policy.expected_queue(8, 700, intercept, limits, arrival_rate=0.0) == 8  # a one-off burst
    flat_cost = policy.plan(policy.expected_queue(8, 700, lambda n, f: 0.6 * n, limits, 2.0), 700,
                            lambda n, f: 0.6 * n, limits)
    assert flat_cost[0] == 1  # where batching gains nothing, arrivals change nothing
