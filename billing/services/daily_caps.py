"""Daily spending caps of agent wallets: holds and spend counted per UTC day.

The counters live in ``billing_dailyspend``; callers hold the account row lock (their
balance UPDATE), which serializes every change of one account's day. The Redis copy is
written on commit (``billing.cache``) and repaired by reconciliation.
"""

import contextlib
import json
import logging
from datetime import UTC, date, datetime
from typing import Any

import redis
from django.db import connection, transaction

from billing.cache import daily_cache_schedule
from billing.errors import (
    DailyCapExceeded,
)
from billing.metrics import (
    low_balance_events_total,
)
from billing.results import Balance
from finn.redis import get_redis

logger = logging.getLogger(__name__)


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def _daily_count(*, account_id: int, day: date, amount: int, cap: int, column: str, what: str) -> None:
    """Add ``amount`` to today's ``held`` or ``spent`` if the cap still allows it, else 402 daily_cap_exceeded.

    One statement (INSERT … ON CONFLICT … WHERE within the cap). Callers hold the account
    row lock (their balance UPDATE), which serializes every change of this account's day.
    """
    if column not in ("held", "spent"):
        raise ValueError(column)
    held, spent = (amount, 0) if column == "held" else (0, amount)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO billing_dailyspend (account_id, day, spent, held) SELECT %s, %s, %s, %s WHERE %s <= %s"
            f" ON CONFLICT (account_id, day) DO UPDATE SET {column} = billing_dailyspend.{column} + EXCLUDED.{column}"
            f" WHERE billing_dailyspend.spent + billing_dailyspend.held + EXCLUDED.{column} <= %s"
            " RETURNING spent, held",
            [account_id, day, spent, held, amount, cap, cap],
        )
        counted = cursor.fetchone()
        if counted is None:
            cursor.execute(
                "SELECT spent, held FROM billing_dailyspend WHERE account_id = %s AND day = %s", [account_id, day]
            )
            spent_today, held_today = cursor.fetchone() or (0, 0)
            raise DailyCapExceeded(
                f"this {what} would exceed the agent's daily spending cap",
                daily_cap=cap,
                spent_today=int(spent_today),
                held_today=int(held_today),
                remaining=max(0, cap - int(spent_today) - int(held_today)),
            )
    daily_cache_schedule(
        account_id=account_id,
        day=day,
        spent_delta=spent,
        held_delta=held,
        spent=int(counted[0]),
        held=int(counted[1]),
    )


def _daily_hold(*, entry_id: str, account_id: int, now: datetime, amount: int, cap: int) -> date:
    """Count a new hold against today's cap (the reserve's account UPDATE serializes it), or refuse it."""
    day = utc_day(now)
    _daily_count(account_id=account_id, day=day, amount=amount, cap=cap, column="held", what="reserve")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_billingentry SET cap_day = %s WHERE id = %s", [day, entry_id])
    return day


def _daily_settle(*, account_id: int, day: date, release_hold: int, spend: int) -> tuple[int, int]:
    """Move a capped hold out of ``held`` (and ``spend`` into ``spent``) for its day."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE billing_dailyspend SET held = held - %s, spent = spent + %s WHERE account_id = %s AND day = %s"
            " RETURNING spent, held",
            [release_hold, spend, account_id, day],
        )
        row = cursor.fetchone()
    if row is None:  # the hold was counted on this day, so the row exists
        raise RuntimeError(f"daily spend row missing for account {account_id} on {day}")
    daily_cache_schedule(
        account_id=account_id, day=day, spent_delta=spend, held_delta=-release_hold, spent=int(row[0]), held=int(row[1])
    )
    return int(row[0]), int(row[1])


def _daily_remaining_for(*, account_id: int, day: date, cap: int, estimate: int) -> int:
    """What this entry may charge in total: its hold plus what is still free today."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT spent, held FROM billing_dailyspend WHERE account_id = %s AND day = %s FOR UPDATE",
            [account_id, day],
        )
        spent, held = cursor.fetchone() or (0, 0)
    return max(estimate, cap - int(spent) - (int(held) - estimate))


def _low_balance_check(*, balance: Balance, day: date, now: datetime) -> None:
    """Emit ``wallet.low_balance`` once per wallet per day when available drops under the threshold."""
    if balance.refill_threshold is None or balance.available >= balance.refill_threshold:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO billing_dailyspend (account_id, day, spent, held, low_balance_notified_at)"
            " VALUES (%s, %s, 0, 0, %s) ON CONFLICT (account_id, day) DO UPDATE"
            " SET low_balance_notified_at = EXCLUDED.low_balance_notified_at"
            " WHERE billing_dailyspend.low_balance_notified_at IS NULL RETURNING account_id",
            [balance.account_id, day, now],
        )
        first_today = cursor.fetchone() is not None
    if first_today:
        event = {
            "event": "wallet.low_balance",
            "account_id": balance.account_id,
            "available": balance.available,
            "refill_threshold": balance.refill_threshold,
            "day": day.isoformat(),
        }
        transaction.on_commit(lambda: _publish_event(event))


def _publish_event(event: dict[str, Any]) -> None:
    low_balance_events_total.inc()
    logger.warning("wallet.low_balance", extra=event)
    # The log line and the metric are the record; the publish is a convenience.
    with contextlib.suppress(redis.RedisError, OSError):
        get_redis().publish("billing:events", json.dumps(event))
