"""A fleet as users deploy it: replicas of ``python -m server`` on one voices dir behind HAProxy, run with
deploy/haproxy/haproxy.cfg as shipped (only its addresses set, through its environment variables).

Voices made or deleted anywhere are seen everywhere; a rolling restart under load loses no stream; a
replica killed mid-stream ends its clients' streams with a close they see, and a retry succeeds."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.audio import EN_TRANSCRIPT, encode, english_clip
from tests.conftest import wait_until
from tests.fleet import DRAIN_DELAY_S, Fleet, Heard, haproxy_binary, speak_http, speak_ws

pytestmark = pytest.mark.slow

LONG = ("The first sentence of a stream that plays for a while. A second one follows it, and then a third "
        "sentence comes. The fourth keeps the stream going. And a fifth ends it, some time later.")


@pytest.fixture(scope="module")
def fleet(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Three replicas and HAProxy for the whole module. In file order no test restarts a replica: the rolling
    restart stops replica 1, the replica loss kills replica 2 and replica 3 survives."""
    binary = haproxy_binary()
    if binary is None:
        pytest.skip("haproxy is not installed (make tools installs it)")
    fleet = Fleet(tmp_path_factory.mktemp("fleet"), tiny_cache)
    for index in range(fleet.size):
        fleet.start_replica(index)
    fleet.start_balancer(binary)
    try:
        yield fleet
    finally:
        fleet.stop()
        print(f"fleet figures: {fleet.write_figures()}")


async def upload(session: aiohttp.ClientSession, url: str, voice_id: str) -> int:
    form = aiohttp.FormData()
    form.add_field("audio", encode(*english_clip(1.0)), filename="ref.wav", content_type="audio/wav")
    form.add_field("transcript", EN_TRANSCRIPT)
    form.add_field("id", voice_id)
    async with session.post(f"{url}/v1/voices", data=form) as response:
        await response.read()
        return response.status


async def test_upload_then_speak_through_the_balancer_on_every_replica(fleet: Fleet) -> None:
    await fleet.ensure_up()
    before = [await fleet.outcomes(i) for i in range(fleet.size)]
    async with aiohttp.ClientSession() as session:
        assert await upload(session, fleet.lb_url, "everywhere") == 201
        heard: list[Heard] = []
        for batch in range(5):  # 4 at a time: leastconn spreads them, and both front ends are used
            heard += await asyncio.gather(*(
                (speak_ws if n % 2 else speak_http)(session, fleet.lb_url, "everywhere", f"Request {batch}{n}.")
                for n in range(4)))
    assert [h.failure for h in heard if not h.ok] == []
    served = [(await fleet.outcomes(i))["ok"] - before[i]["ok"] for i in range(fleet.size)]
    assert sum(served) == 20 and min(served) > 0, served  # every replica spoke the voice only one had made
    fleet.figures["upload_then_speak"] = {"requests": len(heard), "failed": 0, "served_by_replica": served}


async def test_a_voice_deleted_through_one_replica_is_refused_by_all_within_two_seconds(fleet: Fleet) -> None:
    await fleet.ensure_up()
    async with aiohttp.ClientSession() as session:
        assert await upload(session, fleet.replica_url(0), "doomed") == 201
        for i in range(fleet.size):  # loaded everywhere (by read-through on the others)
            assert (await speak_http(session, fleet.replica_url(i), "doomed", "Still here.")).ok
        async with session.delete(f"{fleet.replica_url(0)}/v1/voices/doomed") as response:
            assert response.status == 204
        deleted = time.monotonic()
        refused_after = await asyncio.gather(*(fleet.until_refused(session, i, "doomed") for i in range(fleet.size)))
        assert max(at - deleted for at in refused_after) <= 2.0, [at - deleted for at in refused_after]
        fleet.figures["delete"] = {"refused_after_s": [round(at - deleted, 3) for at in refused_after]}
        for i in range(fleet.size):
            heard = await speak_http(session, fleet.replica_url(i), "doomed", "Gone now.")
            assert heard.error == "voice_not_found"  # the OpenAI route's code for unknown_voice


async def test_rolling_restart_under_load_loses_no_stream(fleet: Fleet) -> None:
    await fleet.ensure_up()
    async with aiohttp.ClientSession() as session:
        assert await upload(session, fleet.lb_url, "rolling") in (201, 409)
        playing = [asyncio.Event() for _ in range(4)]
        streams = [asyncio.create_task(speak_ws(session, fleet.lb_url, "rolling", LONG, p)) for p in playing]
        await fleet.until_busy(0)  # the replica about to restart has a stream in flight
        fleet.procs[0].send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        stopped = time.monotonic()
        down = asyncio.create_task(fleet.until_down(0))
        assert await fleet.readiness(0) == 503  # at once
        # it still serves what a balancer sends before it notices...
        late = asyncio.create_task(speak_ws(session, fleet.replica_url(0), "rolling", "Late but served."))
        # ...four more through the balancer: two while it may still send there, two after the delay
        for at in (0.1, 0.5, DRAIN_DELAY_S + 0.5, DRAIN_DELAY_S + 1.0):
            await asyncio.sleep(max(0.0, stopped + at - time.monotonic()))
            streams.append(asyncio.create_task(speak_ws(session, fleet.lb_url, "rolling", LONG)))
            if at > DRAIN_DELAY_S:
                assert (await fleet.balancer_states())["replica1"].startswith("DOWN")
        refused = await speak_ws(session, fleet.replica_url(0), "rolling", "Too late.")  # after the delay
        heard = await asyncio.wait_for(asyncio.gather(*streams), 60)
        assert (await late).ok
        # After the delay it is refused: `shutting_down` while in-flight streams finish, or, once they have
        # and the process is exiting, a closed socket; never served.
        assert refused.error == "shutting_down" or (refused.closed and refused.samples == 0), refused
    assert [h.failure for h in heard if not h.ok] == []
    assert await asyncio.to_thread(fleet.procs[0].wait, 30) == 0  # type: ignore[union-attr]
    fleet.figures["rolling_restart"] = {
        "streams": len(heard), "failed": 0, "balancer_out_after_s": round(await down - stopped, 3),
        "drain_delay_s": DRAIN_DELAY_S, "exited_within_s": round(time.monotonic() - stopped, 3)}


async def test_replica_loss_ends_its_streams_cleanly_and_a_retry_succeeds(fleet: Fleet) -> None:
    await fleet.ensure_up(1, 2)
    async with aiohttp.ClientSession() as session:
        assert await upload(session, fleet.lb_url, "lossy") in (201, 409)
        survivors = [i for i in fleet.running() if i != 1]
        survivors_before = [await fleet.outcomes(i) for i in survivors]
        playing = [asyncio.Event() for _ in range(4)]
        streams = [asyncio.create_task(speak_ws(session, fleet.lb_url, "lossy", LONG, p)) for p in playing]
        await wait_until(lambda: any(p.is_set() for p in playing), timeout=30)
        await fleet.until_busy(1)  # mid-stream: audio is flowing and the victim has a stream in flight
        fleet.procs[1].kill()  # type: ignore[union-attr]
        killed = time.monotonic()
        down = asyncio.create_task(fleet.until_down(1))
        heard = await asyncio.wait_for(asyncio.gather(*streams), 60)  # none hangs
        lost = [h for h in heard if not h.ok]
        assert lost and all(h.closed for h in lost), [h.failure for h in lost]
        assert max(h.ended - killed for h in lost) < 5.0  # seen at once, not after a heartbeat or timeout
        retried = await asyncio.gather(*(speak_ws(session, fleet.lb_url, "lossy", LONG) for _ in lost))
        assert [h.failure for h in retried if not h.ok] == []
        served: Counter[str] = Counter()
        for index, before in zip(survivors, survivors_before, strict=True):
            assert await fleet.inflight(index) == 0
            served += await fleet.outcomes(index) - before
        fleet.figures["replica_loss"] = {
            "streams": len(heard), "lost": len(lost), "close_seen_after_s": [round(h.ended - killed, 3) for h in lost],
            "retries": len(retried), "retries_failed": 0, "balancer_out_after_s": round(await down - killed, 3)}
    assert served == Counter({"ok": len(heard) - len(lost) + len(retried)}), served
