"""Micro-batcher behaviour with a fake model (faults and timing are what these tests control)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator

import pytest

from batching import (
    BatcherClosedError,
    BatcherConfig,
    MicroBatcher,
    QueueFullError,
    QueueTimeoutError,
)
from tests.fakes import FakeItem, FakeModel, PoisonError, RecordingObserver


@pytest.fixture
async def make() -> AsyncIterator:
    created: list[MicroBatcher] = []

    async def factory(model: FakeModel, **config: object) -> MicroBatcher:
        batcher = MicroBatcher(model, BatcherConfig(**config), RecordingObserver())  # type: ignore[arg-type]
        await batcher.start()
        created.append(batcher)
        return batcher

    yield factory
    for batcher in created:
        if batcher.model.gate is not None:
            batcher.model.gate.set()
        await batcher.close(drain=False)


async def test_every_item_resolves_once_with_its_own_result(make) -> None:
    model = FakeModel(per_item_s=0.001)
    batcher = await make(model, max_batch_size=8, max_batch_frames=2000, max_wait_ms=2)
    rng = random.Random(0)
    items = [FakeItem(i, cost=rng.randint(10, 400), key=rng.choice("ab")) for i in range(200)]

    async def one(item: FakeItem) -> tuple[str, int]:
        await asyncio.sleep(rng.random() * 0.05)
        return await batcher.run(item)

    results = await asyncio.gather(*(one(i) for i in items))
    assert results == [("out", i.id) for i in items]
    assert sorted(model.ran()) == list(range(200))  # each item reached the model exactly once
    for call in model.calls:
        costs = [items[i].cost for i in call]
        assert len(call) <= 8
        assert len(call) == 1 or max(costs) * len(call) <= 2000
        assert len({items[i].key for i in call}) == 1
    assert max(len(c) for c in model.calls) > 1  # batching did happen
    assert batcher.queued == 0 and batcher.running == 0


async def test_oldest_item_is_always_in_the_next_batch(make) -> None:
    model = FakeModel(delay_s=0.01)
    # Every newcomer is late at once (a first-audio target of 1 ms): late ones run oldest first.
    batcher = await make(model, max_batch_size=3, max_batch_frames=10_000, max_wait_ms=1, first_audio_s=0.001)
    rng = random.Random(1)
    tickets = []
    for i in range(40):  # mixed keys and lengths: the fill never pushes the oldest out
        tickets.append(batcher.submit(FakeItem(i, cost=rng.randint(10, 3000), key=rng.choice("ab"))))
        await asyncio.sleep(rng.random() * 0.004)
    await asyncio.gather(*(t.future for t in tickets))
    done: set[int] = set()
    for call in model.calls:
        # Everything submitted before this call and not yet run: the oldest of it must be in the call.
        pending = [i for i in range(40) if i not in done and i <= max(call)]
        assert min(pending) in call, (call, pending[:5])
        done.update(call)


async def test_lone_item_on_idle_model_is_not_delayed(make) -> None:
    model = FakeModel()
    batcher = await make(model, max_wait_ms=500)
    started = time.perf_counter()
    await batcher.run(FakeItem(1))
    assert time.perf_counter() - started < 0.25  # far below max_wait: dispatched at once


async def test_partners_wait_at_most_max_wait(make) -> None:
    model = FakeModel()
    batcher = await make(model, max_wait_ms=50, max_batch_size=16)
    started = time.perf_counter()
    results = await asyncio.gather(*(batcher.run(FakeItem(i)) for i in range(3)))
    elapsed = time.perf_counter() - started
    assert len(results) == 3 and model.calls == [[0, 1, 2]]
    assert elapsed < 0.05 + 0.2  # max_wait plus scheduling slack, never more
    assert max(batcher.observer.waits) < 0.05 + 0.08


async def test_no_item_waits_longer_than_max_wait_plus_a_batch(make) -> None:
    model = FakeModel(delay_s=0.05)
    batcher = await make(model, max_wait_ms=20, max_batch_size=4)
    waits = []

    async def one(i: int) -> None:
        await asyncio.sleep(i * 0.013)
        started = time.perf_counter()
        await batcher.run(FakeItem(i))
        waits.append(time.perf_counter() - started)

    await asyncio.gather(*(one(i) for i in range(12)))
    # Arrivals every 13 ms, batches of 50 ms, at most 4 a batch: the model keeps up, so each item waits
    # at most one running batch plus max_wait before its own batch (50 ms) completes.
    assert max(batcher.observer.waits) <= 0.020 + 0.050 + 0.05
    assert max(waits) <= 0.020 + 2 * 0.050 + 0.05


async def test_incompatible_items_never_share_a_batch_and_lone_key_goes_at_once(make) -> None:
    model = FakeModel()
    batcher = await make(model, max_wait_ms=300)
    started = time.perf_counter()
    await asyncio.gather(batcher.run(FakeItem(1, key="a")), batcher.run(FakeItem(2, key="b")))
    assert sorted(model.calls) == [[1], [2]]
    assert time.perf_counter() - started < 0.25


async def test_cancelled_queued_item_never_reaches_the_model(make) -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher = await make(model)
    busy = batcher.submit(FakeItem(0))
    await asyncio.to_thread(model.started.wait, 5)  # the model is now busy with item 0
    queued = [batcher.submit(FakeItem(i)) for i in (1, 2, 3)]
    assert batcher.queued == 3
    queued[1].cancel()
    assert batcher.queued == 2  # removed at once, not at dispatch
    gate.set()
    assert await busy.future == ("out", 0)
    assert await queued[0].future == ("out", 1) and await queued[2].future == ("out", 3)
    assert queued[1].future.cancelled()
    assert 2 not in model.ran()


async def test_cancel_during_running_batch_drops_only_that_result(make) -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher = await make(model, max_wait_ms=50)
    tickets = [batcher.submit(FakeItem(i)) for i in range(3)]
    await asyncio.to_thread(model.started.wait, 5)
    assert batcher.running == 3
    tickets[1].cancel()
    gate.set()
    assert await tickets[0].future == ("out", 0) and await tickets[2].future == ("out", 2)
    assert tickets[1].future.cancelled()
    assert batcher.running == 0 and batcher.queued == 0


async def test_task_cancellation_cancels_the_item(make) -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher = await make(model)
    batcher.submit(FakeItem(0))
    await asyncio.to_thread(model.started.wait, 5)
    waiter = asyncio.create_task(batcher.run(FakeItem(1)))
    await asyncio.sleep(0.01)
    assert batcher.queued == 1
    waiter.cancel()
    await asyncio.sleep(0)
    assert batcher.queued == 0
    gate.set()
    await asyncio.sleep(0.05)
    assert 1 not in model.ran()


async def test_batch_of_only_cancelled_items_is_skipped(make) -> None:
    model = FakeModel()
    batcher = await make(model, max_wait_ms=100)
    tickets = [batcher.submit(FakeItem(i)) for i in range(3)]
    for t in tickets:
        t.cancel()
    await asyncio.sleep(0.2)
    assert model.calls == []
    assert await batcher.run(FakeItem(9)) == ("out", 9)  # and the batcher still works


async def test_poison_item_fails_alone(make) -> None:
    model = FakeModel()
    batcher = await make(model, max_wait_ms=50, max_batch_size=8)
    items = [FakeItem(i, poison=(i == 5)) for i in range(8)]
    results = await asyncio.gather(*(batcher.run(i) for i in items), return_exceptions=True)
    assert isinstance(results[5], PoisonError)
    assert [r for i, r in enumerate(results) if i != 5] == [("out", i) for i in range(8) if i != 5]
    assert len(model.calls) <= 2 * 8 - 1  # halving terminates: no endless split loop
    assert model.calls[0] == list(range(8))


async def test_every_batch_failing_still_settles_everything(make) -> None:
    model = FakeModel()
    batcher = await make(model, max_wait_ms=20)
    results = await asyncio.gather(*(batcher.run(FakeItem(i, poison=True)) for i in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, PoisonError) for r in results)
    assert len(model.calls) <= 2 * 5 - 1
    assert await batcher.run(FakeItem(99)) == ("out", 99)


async def test_wrong_output_count_is_an_error_not_a_misdelivery(make) -> None:
    model = FakeModel(wrong_count=True)
    batcher = await make(model, max_wait_ms=20)
    results = await asyncio.gather(*(batcher.run(FakeItem(i)) for i in range(2)), return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results)


async def test_queue_full_rejects_exactly_at_the_limit(make) -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher = await make(model, max_queue=5)
    running = batcher.submit(FakeItem(0))
    await asyncio.to_thread(model.started.wait, 5)
    queued = [batcher.submit(FakeItem(i)) for i in range(1, 6)]  # exactly max_queue waiting
    with pytest.raises(QueueFullError) as info:
        batcher.submit(FakeItem(6))
    assert info.value.retry_after_ms >= 50 and info.value.code == "queue_full"
    assert batcher.observer.rejections == ["queue_full"]
    queued[0].cancel()
    replacement = batcher.submit(FakeItem(7))  # a freed slot is usable again
    gate.set()
    await asyncio.gather(running.future, replacement.future, *(t.future for t in queued[1:]))


async def test_queue_frame_cap(make) -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher = await make(model, max_queue_frames=1000)
    batcher.submit(FakeItem(0, cost=900))
    await asyncio.to_thread(model.started.wait, 5)
    batcher.submit(FakeItem(1, cost=600))
    batcher.submit(FakeItem(2, cost=400))
    with pytest.raises(QueueFullError, match="frames"):
        batcher.submit(FakeItem(3, cost=1))


async def test_item_past_its_deadline_times_out_and_never_runs(make) -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher = await make(model, queue_timeout_s=0.05)
    first = batcher.submit(FakeItem(0), timeout_s=5)
    await asyncio.to_thread(model.started.wait, 5)
    late = batcher.submit(FakeItem(1))
    with pytest.raises(QueueTimeoutError):
        await late.future
    assert batcher.queued == 0
    gate.set()
    await first.future
    await asyncio.sleep(0.05)
    assert 1 not in model.ran()


async def test_first_chunks_are_preferred_when_filling(make) -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher = await make(model, max_batch_size=3, policy="fill")  # fill: the oldest anchors, first chunks join
    batcher.submit(FakeItem(0))
    await asyncio.to_thread(model.started.wait, 5)
    tickets = [batcher.submit(FakeItem(i), first=(i >= 4)) for i in range(1, 7)]  # 1-3 later, 4-6 first
    gate.set()
    await asyncio.gather(*(t.future for t in tickets))
    assert model.calls[1][0] == 1  # the oldest still anchors the batch
    assert sorted(model.calls[1][1:]) == [4, 5]  # then first chunks, ahead of older later chunks


async def test_deadlines_decide_who_runs_first(make) -> None:
    """Later chunks whose listeners have seconds of audio wait; first chunks (1 s target) go ahead."""
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher = await make(model, max_batch_size=3)
    batcher.submit(FakeItem(0))
    await asyncio.to_thread(model.started.wait, 5)
    now = asyncio.get_running_loop().time()
    tickets = [batcher.submit(FakeItem(i), first=i >= 4, deadline=now + 30 if i < 4 else None)
               for i in range(1, 7)]
    gate.set()
    await asyncio.gather(*(t.future for t in tickets))
    assert model.calls[1:] == [[4, 5, 6], [1, 2, 3]]


async def test_later_chunks_are_never_refused_nor_timed_out(make) -> None:
    """A full queue refuses newcomers only; a later chunk of a playing stream queues past the limit and
    past the queue timeout, and runs."""
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher = await make(model, max_queue=1, queue_timeout_s=0.05)
    batcher.submit(FakeItem(0))
    await asyncio.to_thread(model.started.wait, 5)
    queued = batcher.submit(FakeItem(1))
    with pytest.raises(QueueFullError):
        batcher.submit(FakeItem(2))
    later = batcher.submit(FakeItem(3), first=False)
    await asyncio.sleep(0.2)
    with pytest.raises(QueueTimeoutError):
        await queued.future
    assert not later.future.done()
    gate.set()
    assert await later.future == ("out", 3)


async def test_long_item_among_short_ones_is_served_within_its_ageing_bound(make) -> None:
    """A 30 s item (3000 frames) cannot share a batch with 1 s items under the frame budget; it is
    served once it is the oldest, i.e. after at most ceil(older / batch size) batches."""
    model = FakeModel(delay_s=0.01)
    batcher = await make(model, max_batch_size=4, max_batch_frames=3200, max_wait_ms=1)
    tickets = [batcher.submit(FakeItem(i, cost=100)) for i in range(10)]
    long = batcher.submit(FakeItem(100, cost=3000))

    async def keep_coming() -> None:
        for i in range(10, 60):
            tickets.append(batcher.submit(FakeItem(i, cost=100)))
            await asyncio.sleep(0.003)

    feeder = asyncio.create_task(keep_coming())
    await long.future
    position = next(n for n, call in enumerate(model.calls) if 100 in call)
    assert model.calls[position] == [100]
    assert position <= 10 // 4 + 1  # 10 older items, 4 per batch
    await feeder
    await asyncio.gather(*(t.future for t in tickets))


async def test_loop_error_is_survived(make) -> None:
    model = FakeModel()
    batcher = await make(model)
    original = batcher.planner.select
    calls = {"n": 0}

    def flaky(*args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("selection bug")
        return original(*args)  # type: ignore[arg-type]

    batcher.planner.select = flaky  # type: ignore[method-assign]
    assert await asyncio.wait_for(batcher.run(FakeItem(1)), 2) == ("out", 1)
    assert calls["n"] >= 2  # the bug really happened, and the loop went on


async def test_dead_batching_task_leaves_no_hangs(make) -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher = await make(model)
    running = batcher.submit(FakeItem(0))
    await asyncio.to_thread(model.started.wait, 5)
    queued = batcher.submit(FakeItem(1))
    batcher._task.cancel()  # the loop dies (as if by a bug it could not catch)
    for ticket in (running, queued):
        with pytest.raises(BatcherClosedError):
            await asyncio.wait_for(ticket.future, 2)
    with pytest.raises(BatcherClosedError):
        batcher.submit(FakeItem(2))
    gate.set()


async def test_close_drains_then_refuses(make) -> None:
    model = FakeModel(delay_s=0.02)
    batcher = await make(model, max_batch_size=2)
    tickets = [batcher.submit(FakeItem(i)) for i in range(5)]
    await batcher.close(drain=True, timeout=5)
    assert [t.future.result() for t in tickets] == [("out", i) for i in range(5)]
    with pytest.raises(BatcherClosedError):
        batcher.submit(FakeItem(9))


async def test_observer_sees_depth_waits_and_padding(make) -> None:
    model = FakeModel()
    batcher = await make(model, max_wait_ms=30)
    await asyncio.gather(batcher.run(FakeItem(1, cost=100)), batcher.run(FakeItem(2, cost=300)))
    observer = batcher.observer
    assert observer.batches[0][0] == 2
    assert observer.batches[0][2:] == (600, 400)  # padded = 2 × 300, real = 100 + 300
    assert len(observer.waits) == 2
    assert observer.depths[-1] == (0, 0) and (2, 400) in observer.depths
