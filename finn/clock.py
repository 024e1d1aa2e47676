"""finn's clock: the database's time, carried forward by this process's monotonic clock.

Every "now" finn acts on (hold expiry, daily-cap days, finalize schedules, rate-limit windows,
breaker cooldowns, signature tolerances) comes from here, never from the host's wall clock.
A node whose wall clock jumps (a VM resumed, an NTP step, a wrong manual date) or drifts would
otherwise write holds that expire an hour early or late, charge a daily cap on tomorrow's row,
or expire another node's holds: with several nodes only one clock can be right, and the
database's is the one every node already shares (leases and the audit log's ``inserted_at``
use it too).

How: at first use, and again every ``CLOCK_ANCHOR_SECONDS``, one ``SELECT clock_timestamp()``
anchors the process (the reading is taken at the midpoint of the round trip); between anchors
``now()`` is the anchor plus ``time.monotonic()``'s progress, which no wall-clock jump moves.
The skew between the host's wall clock and the database is exported as a gauge and logged
when it passes a second. Before the first anchor succeeds (the database unreachable) ``now()``
raises ``ClockUnavailable`` (an OperationalError: an API request answers 503, a task fails and
runs again): a wall-clock reading taken while the database restarts would otherwise be written
by the operation once the database is back — the chaos harness found exactly that, an entry
stamped a day off after a PostgreSQL restart on a host whose clock had jumped. Callers that only
schedule or count (Celery's own clock, rate-limit windows, breaker cooldowns) pass
``allow_wall=True`` and get the wall clock instead.

``wall()`` is the host's clock. Tests move it with ``FINN_CLOCK_OFFSET_FILE`` (a file holding
seconds to add, read at each wall-clock reading); since finn does not act on the wall clock,
moving it is harmless, which is what the chaos harness's clock jumps show.
"""

from __future__ import annotations

import logging
import os
import threading
import time as _time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import OperationalError
from prometheus_client import Gauge

logger = logging.getLogger(__name__)

clock_skew_seconds = Gauge(
    "finn_clock_skew_seconds", "This host's wall clock minus the database's clock, at the last anchor"
)

RETRY_SECONDS = 5.0  # after a failed re-anchor, how long to keep the old anchor before asking again
FIRST_RETRY_SECONDS = 0.5  # with no anchor yet, at most this often (each money call needs one)


class ClockUnavailable(OperationalError):
    """No database reading of the time yet, and the database does not answer."""


SKEW_WARNING_SECONDS = 1.0


@dataclass(frozen=True)
class _Anchor:
    database: float  # the database's clock, epoch seconds
    monotonic: float  # this process's monotonic clock at that moment
    skew: float  # wall clock minus the database's clock


_anchor: _Anchor | None = None
_retry_at = 0.0
_lock = threading.Lock()


def wall() -> float:
    """The host's wall clock, epoch seconds (moved in tests by ``FINN_CLOCK_OFFSET_FILE``)."""
    path = os.environ.get("FINN_CLOCK_OFFSET_FILE")
    if not path:
        return _time.time()
    try:
        with open(path, encoding="ascii") as handle:
            offset = float(handle.read().strip() or 0)
    except (OSError, ValueError):
        offset = 0.0
    return _time.time() + offset


def _read_database() -> _Anchor:
    from django.db import connection, transaction

    opened = connection.connection is None
    try:
        with transaction.atomic(), connection.cursor() as cursor:  # a savepoint inside a transaction
            before_mono, before_wall = _time.monotonic(), wall()
            cursor.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
            row = cursor.fetchone()
            after_mono, after_wall = _time.monotonic(), wall()
    finally:
        # A connection opened only for this reading (a background thread's, say) is not kept.
        if opened and not connection.in_atomic_block:
            connection.close()
    database = float(row[0])
    return _Anchor(
        database=database,
        monotonic=(before_mono + after_mono) / 2,
        skew=(before_wall + after_wall) / 2 - database,
    )


def _anchored(mono: float) -> _Anchor | None:
    global _anchor, _retry_at
    current = _anchor
    try:
        every = settings.CLOCK_ANCHOR_SECONDS
    except Exception:  # settings not configured yet (a process starting up)
        return current
    if current is not None and mono - current.monotonic < every:
        return current
    if mono < _retry_at:
        return current
    with _lock:
        if _anchor is not current:  # another thread anchored meanwhile
            return _anchor
        try:
            fresh = _read_database()
        except Exception as exc:  # database unreachable (or not allowed here): keep the old anchor
            _retry_at = mono + (RETRY_SECONDS if current is not None else FIRST_RETRY_SECONDS)
            logger.debug("clock anchor failed", extra={"error": type(exc).__name__})
            return current
        clock_skew_seconds.set(fresh.skew)
        if abs(fresh.skew) > SKEW_WARNING_SECONDS:
            logger.warning("wall clock differs from the database's", extra={"skew_seconds": round(fresh.skew, 3)})
        _anchor = fresh
        return fresh


def time(*, allow_wall: bool = False) -> float:
    """Now, epoch seconds, on the database's clock (``ClockUnavailable`` before the first reading,
    or the wall clock with ``allow_wall``)."""
    mono = _time.monotonic()
    anchor = _anchored(mono)
    if anchor is None:
        if allow_wall:
            return wall()
        raise ClockUnavailable("the database's clock has not been read yet and the database does not answer")
    return anchor.database + (mono - anchor.monotonic)


def now(*, allow_wall: bool = False) -> datetime:
    """Now, an aware UTC datetime, on the database's clock (see ``time``)."""
    return datetime.fromtimestamp(time(allow_wall=allow_wall), UTC)


def skew() -> float | None:
    """The wall clock minus the database's at the last anchor (None before the first)."""
    return None if _anchor is None else _anchor.skew


def reset() -> None:
    """Forget the anchor (tests; the next reading asks the database again)."""
    global _anchor, _retry_at
    with _lock:
        _anchor, _retry_at = None, 0.0
