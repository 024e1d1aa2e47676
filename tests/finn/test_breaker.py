"""The Redis-backed circuit breaker: shared state, sliding window, one probe."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import REGISTRY

from finn.breaker import CircuitBreaker


def make(name: str = "t", cooldown: float = 0.3) -> CircuitBreaker:
    return CircuitBreaker(name=name, failure_threshold=5, window_seconds=60, cooldown_seconds=cooldown)


def test_starts_closed_and_allows() -> None:
    assert make().allow().allowed is True
    assert make().state() == "CLOSED"


def test_four_failures_stay_closed_the_fifth_opens() -> None:
    # given
    breaker = make()
    # when
    states = [breaker.record_failure() for _ in range(5)]
    # then
    assert states == ["CLOSED"] * 4 + ["OPEN"]
    assert breaker.allow().allowed is False
    assert REGISTRY.get_sample_value("circuit_breaker_state", {"breaker": "t"}) == 1


def test_failures_outside_the_window_do_not_count() -> None:
    # given
    breaker = CircuitBreaker(name="w", failure_threshold=3, window_seconds=0.3, cooldown_seconds=30)
    breaker.record_failure()
    breaker.record_failure()
    time.sleep(0.4)
    # when
    state = breaker.record_failure()
    # then
    assert state == "CLOSED"


def test_a_second_breaker_object_sees_the_same_state() -> None:
    # given
    for _ in range(5):
        make("shared").record_failure()
    # then: another process would construct its own object
    assert make("shared").state() == "OPEN"


def test_half_open_admits_exactly_one_probe_across_workers() -> None:
    # given
    breaker = make("probe", cooldown=0.2)
    for _ in range(5):
        breaker.record_failure()
    time.sleep(0.3)
    # when
    with ThreadPoolExecutor(max_workers=16) as pool:
        admissions = list(pool.map(lambda _: make("probe", cooldown=0.2).allow(), range(16)))
    # then
    assert sum(1 for a in admissions if a.allowed) == 1
    assert {a.state for a in admissions} == {"HALF_OPEN"}


def test_probe_success_closes_and_probe_failure_reopens() -> None:
    # given
    breaker = make("p2", cooldown=0.2)
    for _ in range(5):
        breaker.record_failure()
    time.sleep(0.3)
    assert breaker.allow().allowed
    # when
    reopened = breaker.record_failure()
    # then
    assert reopened == "OPEN"
    time.sleep(0.3)
    assert breaker.allow().allowed
    assert breaker.record_success() == "CLOSED"
    assert breaker.allow().allowed


def test_failures_while_open_are_not_counted_and_each_change_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    # given
    breaker = make("log")
    caplog.set_level(logging.WARNING, logger="finn.breaker")
    # when
    for _ in range(8):
        breaker.record_failure()
    # then
    changes = [r for r in caplog.records if r.getMessage() == "circuit breaker state change"]
    assert [(getattr(r, "from"), r.to) for r in changes] == [("CLOSED", "OPEN")]
    assert getattr(changes[0], "failure_count") == 5  # noqa: B009
    assert getattr(changes[0], "timestamp").endswith("Z")  # noqa: B009
