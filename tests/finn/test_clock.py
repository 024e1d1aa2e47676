"""finn's clock is the database's: a host whose wall clock jumps still bills on the right time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from django.db import OperationalError, connection
from django.test import override_settings

from billing.models import BillingEntry
from billing.services import holds_expire
from finn import clock
from tests.conftest import post_json

RESERVE = "/api/v1/billing/entries"
HOUR = 3600.0


@pytest.fixture
def offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The host's wall clock, moved by the seconds written to this file."""
    path = tmp_path / "clock-offset"
    path.write_text("0")
    monkeypatch.setenv("FINN_CLOCK_OFFSET_FILE", str(path))
    clock.reset()
    yield path
    clock.reset()


def _database_now() -> datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def _off(moment: datetime) -> float:
    return abs((moment - _database_now()).total_seconds())


@pytest.mark.django_db
def test_a_wall_clock_an_hour_ahead_does_not_move_finns_now(offset: Path) -> None:
    # given: this host's clock is an hour fast from the start
    offset.write_text(str(HOUR))
    # when
    moment = clock.now()
    # then: finn's now is the database's, the skew is measured
    assert abs(clock.wall() - time.time() - HOUR) < 1
    assert _off(moment) < 0.5
    assert clock.skew() == pytest.approx(HOUR, abs=0.5)


@pytest.mark.django_db
def test_a_jump_after_the_anchor_changes_nothing(offset: Path) -> None:
    # given: anchored with a right clock
    clock.now()
    # when: the wall clock jumps a day back, then a day forward
    offset.write_text(str(-24 * HOUR))
    back = clock.now()
    offset.write_text(str(24 * HOUR))
    forward = clock.time()
    # then
    assert _off(back) < 0.5
    assert abs(forward - _database_now().timestamp()) < 0.5


@pytest.mark.django_db
def test_the_anchor_is_read_again_after_clock_anchor_seconds(offset: Path) -> None:
    # given
    with override_settings(CLOCK_ANCHOR_SECONDS=1):
        clock.now()
        assert clock.skew() == pytest.approx(0, abs=0.5)
        offset.write_text(str(-HOUR))
        # when
        time.sleep(1.1)
        moment = clock.now()
    # then: the skew is re-measured, now is still the database's
    assert clock.skew() == pytest.approx(-HOUR, abs=0.5)
    assert _off(moment) < 0.5


@pytest.mark.django_db
def test_inside_a_failed_transaction_the_old_anchor_is_kept(offset: Path) -> None:
    # given: anchored, then the anchor is due again while the transaction cannot run queries
    clock.now()
    with override_settings(CLOCK_ANCHOR_SECONDS=1):
        time.sleep(1.1)
        connection.needs_rollback = True
        try:
            # when
            moment = clock.now()
        finally:
            connection.needs_rollback = False
    # then: still the database's time, carried by the monotonic clock
    assert _off(moment) < 0.5


def test_without_a_database_reading_finn_has_no_time_to_bill_on(offset: Path) -> None:
    # given: no database access in this test (pytest-django blocks it), and a host a day behind
    offset.write_text(str(-24 * HOUR))
    # when / then: money paths get no time at all (an OperationalError: the API answers 503)
    with pytest.raises(clock.ClockUnavailable):
        clock.now()
    with pytest.raises(OperationalError):
        clock.time()
    # while scheduling and counting may go on on the host's clock
    assert abs(clock.time(allow_wall=True) - time.time() + 24 * HOUR) < 1
    assert clock.skew() is None


@pytest.mark.django_db
@pytest.mark.parametrize("jump", [-24 * HOUR, -HOUR, HOUR, 24 * HOUR])
def test_holds_reserved_and_swept_on_a_jumped_host_keep_their_ttl(make_account, offset: Path, jump: float) -> None:
    # given: anchored, then the host's clock jumps
    funded = make_account(10_000)
    clock.now()
    offset.write_text(str(jump))
    # when: a hold is reserved and the hold-expiry sweep runs on the jumped host
    reserved = post_json(
        funded.client(), RESERVE, {"estimated_cost": 3_000, "correlation_id": "clock", "ttl_seconds": 60}
    )
    released = holds_expire(now=clock.now())
    # then: it expires 60 s after the database's now, and the sweep does not release it early
    entry = BillingEntry.objects.get(pk=reserved.json()["entry"]["id"])
    assert reserved.status_code == 201
    assert _off(entry.created_at) < 1
    assert (entry.expires_at - entry.created_at).total_seconds() == 60
    assert released == 0
    assert entry.state == "RESERVE_HELD"
