"""Daily spending caps of agent wallets: holds and spend counted per UTC day.

The counters live in ``billing_dailyspend``; callers hold the account row lock (their
balance UPDATE), which serializes every change of one account's day. The Redis copy is
written on commit (``billing.cache``) and repaired by reconciliation.
"""

from __future__ import annotations

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
from billing.models import Account
from billing.results import Balance
from billing.services.outbound import OutboundEvent, outbound_event_after_commit
from finn import clock
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
        raise daily_cap_refusal(account_id=account_id, day=day, what=what, cap=cap)
    daily_cache_schedule(
        account_id=account_id,
        day=day,
        spent_delta=spent,
        held_delta=held,
        spent=int(counted[0]),
        held=int(counted[1]),
    )


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


def daily_cap_refusal(*, account_id: int, day: date, what: str, cap: int | None = None) -> DailyCapExceeded:
    """402 ``daily_cap_exceeded`` with the day's figures (cold path: after the refusal)."""
    if cap is None:
        cap = int(Account.objects.filter(pk=account_id).values_list("daily_cap", flat=True).first() or 0)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT spent, held FROM billing_dailyspend WHERE account_id = %s AND day = %s", [account_id, day]
        )
        spent_today, held_today = cursor.fetchone() or (0, 0)
    return DailyCapExceeded(
        f"this {what} would exceed the agent's daily spending cap",
        daily_cap=cap,
        spent_today=int(spent_today),
        held_today=int(held_today),
        remaining=max(0, cap - int(spent_today) - int(held_today)),
    )


def low_balance_publish(*, balance: Balance, day: date) -> None:
    """``wallet.low_balance`` once the operation that took the wallet under its threshold commits.

    The database decides "first time today" (``billing_dailyspend.low_balance_notified_at``,
    set by the commit function), so the event is emitted once per wallet per day.
    """
    event = {
        "event": "wallet.low_balance",
        "account_id": balance.account_id,
        "available": balance.available,
        "refill_threshold": balance.refill_threshold,
        "day": day.isoformat(),
    }
    transaction.on_commit(lambda: _publish_event(event))
    low = {"available": balance.available, "refill_threshold": balance.refill_threshold, "day": day.isoformat()}
    outbound_event_after_commit(OutboundEvent(balance.account_id, "balance.low", low), now=clock.now())


def _publish_event(event: dict[str, Any]) -> None:
    low_balance_events_total.inc()
    logger.warning("wallet.low_balance", extra=event)
    # The log line and the metric are the record; the publish is a convenience.
    with contextlib.suppress(redis.RedisError, OSError):
        get_redis().publish("billing:events", json.dumps(event))
