"""Readiness from what the batch loops, the start-up and the lag timer report."""

from __future__ import annotations

from stream_app.health import Health


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def started() -> tuple[Health, Clock]:
    clock = Clock()
    h = Health(retry_after_s=30, stall_after_s=120, clock=clock)
    h.started()
    return h, clock


def test_not_ready_while_waiting_at_start():
    h = Health(30, 120)
    assert h.problems() == ["waiting for starting"]
    h.waiting("redis_connection (ConnectionError('refused'))")
    assert "redis_connection" in h.problems()[0]
    h.started()
    assert h.problems() == []


def test_a_batch_retrying_too_long_makes_it_not_ready_until_one_goes_through():
    h, clock = started()
    h.retrying("user-activity", "redis_oom", "OutOfMemoryError()")
    clock.now += 29
    h.retrying("user-activity", "redis_oom", "OutOfMemoryError()")  # keeps the first time
    assert h.problems() == []
    clock.now += 2
    (problem,) = h.problems()
    assert "user-activity" in problem and "31 s" in problem and "redis_oom" in problem
    assert h.retrying_now()["user-activity"]["cause"] == "redis_oom"
    h.progressed("user-activity")
    assert h.problems() == [] and h.retrying_now() == {}


def test_lag_without_progress_is_a_stall_lag_with_progress_is_not():
    h, clock = started()
    h.lag({"user-activity/0": 50, "user-activity/1": 0})
    clock.now += 100
    h.progressed("user-activity")  # batches keep finishing: busy, not stuck
    clock.now += 100
    assert h.problems() == [] and h.lag_total == 50
    clock.now += 30
    (problem,) = h.problems()
    assert "lag 50" in problem
    h.lag({"user-activity/0": 0})
    assert h.problems() == []
