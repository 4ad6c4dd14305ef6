"""The scheduler bench: its stall figure (the silence a listener playing each chunk as it arrives would hear),
the emulated curve, and the simulated reference orders."""

from __future__ import annotations

import pytest

from bench import orders
from bench.batchers import SizeLog
from bench.emulated import parse_curve, step_seconds
from bench.scheduler import drawn_work, stall


def test_no_stall_when_each_chunk_is_ready_before_the_previous_ends() -> None:
    assert stall([1.0, 2.0, 1.0], [0.5, 1.2, 3.0]) == 0.0  # plays 0.5–1.5, 1.5–3.5, 3.5–4.5


def test_stall_sums_every_gap_and_playback_resumes_when_the_chunk_arrives() -> None:
    # Chunk 0 plays 0.5–1.0; chunk 1 arrives at 1.3 (0.3 s gap) and plays to 1.5; chunk 2 at 2.0 (0.5 s).
    assert stall([0.5, 0.2, 1.0], [0.5, 1.3, 2.0]) == pytest.approx(0.8)


def test_a_single_chunk_never_stalls() -> None:
    assert stall([0.7], [4.0]) == 0.0


def test_emulated_curve_is_data() -> None:
    curve = parse_curve("launch")
    assert step_seconds(curve, 1) == step_seconds(curve, 8) == 0.010  # flat to 8: launch-bound
    assert step_seconds(curve, 12) == pytest.approx(0.015) and step_seconds(curve, 64) == pytest.approx(0.080)
    assert parse_curve("4=0.2,1=0.1") == [(1, 0.1), (4, 0.2)]
    with pytest.raises(ValueError):
        parse_curve("1=0.1")


def test_fifo_of_singles_runs_whole_requests_in_arrival_order() -> None:
    served = orders.fifo_singles([(0.0, 0), (0.1, 1)], [[1.0, 1.0], [0.5]])
    assert [s.finished for s in served] == [[1.0, 2.0], [2.5]]


def test_first_chunks_first_lets_a_newcomer_ahead_of_a_later_chunk_that_can_wait() -> None:
    # Request 0's second chunk is needed at 1 + 3 = 4 s; the newcomer's 0.5 s and its own 1 s fit before.
    served = orders.first_chunks_first([(0.0, 0), (0.1, 1)], [[1.0, 1.0], [0.5]], [[3.0, 1.0], [1.0]])
    assert [s.finished for s in served] == [[1.0, 2.5], [1.5]]


def test_first_chunks_first_runs_a_later_chunk_first_when_it_cannot_wait() -> None:
    # Now request 0's listener runs out at 1 + 1 = 2 s: its second chunk goes before the newcomer.
    served = orders.first_chunks_first([(0.0, 0), (0.1, 1)], [[1.0, 1.0], [0.5]], [[1.0, 1.0], [1.0]])
    assert [s.finished for s in served] == [[1.0, 2.0], [2.5]]


def test_first_chunks_first_idles_until_the_next_arrival() -> None:
    served = orders.first_chunks_first([(0.0, 0), (5.0, 0)], [[1.0]], [[1.0]])
    assert [s.finished for s in served] == [[1.0], [6.0]]


def test_drawn_work_prices_the_arrivals_at_the_unloaded_times() -> None:
    # Two requests of text 0 (1.0 + 0.5 s) and one of text 1 (2.0 s), the last arriving at 7 s.
    drawn = drawn_work([(1.0, 0), (3.0, 1), (7.0, 0)], [[1.0, 0.5], [2.0]])
    assert drawn == {"work_unloaded_s": 5.0, "drawn_load": round(5.0 / 7.0, 3)}
    assert drawn_work([], [[1.0]]) == {"work_unloaded_s": 0.0, "drawn_load": 0.0}


def test_the_size_log_counts_the_seconds_the_model_was_busy_per_phase() -> None:
    log = SizeLog()
    log.batch_done(2, 0.5, 100, 90)
    log.batch_done(1, 0.25, 50, 50)
    assert log.take() == {"batches": 2, "mean_batch_size": 1.5, "model_busy_s": 0.75}
    assert log.take() == {"batches": 0, "mean_batch_size": None, "model_busy_s": 0.0}
