"""The Redis balance cache: derived, written after commit, never trusted for money.

Key ``billing:balance:{account_id}`` is a hash with ``available``, ``held``
(µUSD decimal strings) and ``version`` (the account row's version). A write
only lands if its version is newer than the cached one, so on_commit
callbacks that run out of order cannot leave an old balance behind. Decisions
about money always read PostgreSQL; this cache serves dashboards and quick
reads, and the reconciliation job (billing/reconciliation.py) compares it with the ledger.
"""

from __future__ import annotations

import logging
import os
import threading
import time as time_module
from datetime import UTC, date, datetime, time, timedelta

import redis
from django.conf import settings
from django.db import transaction

from billing.metrics import balance_cache_write_failures_total
from finn.degradation import redis_guard
from finn.redis import SCRIPTS, get_redis, register_script, run_script

logger = logging.getLogger(__name__)

BALANCE_CACHE_TTL_SECONDS = 7 * 24 * 3600
COALESCE_SECONDS = 0.05


def balance_cache_key(account_id: int) -> str:
    return f"billing:balance:{account_id}"


def balance_cache_write(*, account_id: int, available: int, held: int, version: int) -> bool:
    """Write one account's balances to Redis; False (and a log line) if Redis fails."""
    try:
        run_script(
            "balance_cache_set",
            keys=[balance_cache_key(account_id)],
            args=[version, available, held, BALANCE_CACHE_TTL_SECONDS],
        )
    except (redis.RedisError, OSError) as exc:
        balance_cache_write_failures_total.inc()
        logger.warning("balance cache write failed", extra={"account_id": account_id, "error": type(exc).__name__})
        return False
    return True


def balance_cache_read(account_id: int) -> dict[str, int] | None:
    raw: dict[str, str] = get_redis().hgetall(balance_cache_key(account_id))  # type: ignore[assignment]
    if not raw:
        return None
    return {name: int(value) for name, value in raw.items()}


class _BalanceWriter:
    """Writes balance-cache updates from a background thread, off the response path.

    Per account only the newest version waits (older ones are superseded, and the Lua
    script refuses a version older than the cached one anyway); a batch is one pipelined
    round trip. The thread starts on first use in each process (and again after a fork).
    A write lost with the process is repaired by reconciliation: the cache is derived.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[int, int, int, int]] = {}
        self._wake = threading.Event()
        self._pid = 0

    def submit(self, account_id: int, available: int, held: int, version: int) -> None:
        with self._lock:
            waiting = self._pending.get(account_id)
            if waiting is None or waiting[3] < version:
                self._pending[account_id] = (account_id, available, held, version)
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="balance-cache-writer", daemon=True).start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time_module.sleep(COALESCE_SECONDS)  # let a burst of commits share one pipeline
            self._wake.clear()
            with self._lock:
                batch, self._pending = list(self._pending.values()), {}
            if batch:
                try:
                    balance_cache_write_many(batch)  # Redis errors are logged and counted inside
                except Exception:  # anything else: log it and keep the thread alive
                    logger.exception("balance cache writer failed", extra={"accounts": len(batch)})

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)


balance_writer = _BalanceWriter()


def balance_cache_schedule(*, account_id: int, available: int, held: int, version: int) -> None:
    """Refresh the cache once the current transaction commits (in the background unless BALANCE_CACHE_ASYNC=false)."""
    if settings.BALANCE_CACHE_ASYNC:
        transaction.on_commit(lambda: balance_writer.submit(account_id, available, held, version))
        return
    transaction.on_commit(
        lambda: balance_cache_write(account_id=account_id, available=available, held=held, version=version)
    )


def balance_cache_write_many(balances: list[tuple[int, int, int, int]]) -> bool:
    """Write (account_id, available, held, version) tuples in one pipeline."""
    if not balances:
        return True
    try:
        client = get_redis()
        script = client.register_script(SCRIPTS["balance_cache_set"])
        pipe = client.pipeline(transaction=False)
        for account_id, available, held, version in balances:
            script(
                keys=[balance_cache_key(account_id)],
                args=[version, available, held, BALANCE_CACHE_TTL_SECONDS],
                client=pipe,
            )
        pipe.execute()
    except (redis.RedisError, OSError) as exc:
        balance_cache_write_failures_total.inc()
        logger.warning("balance cache batch write failed", extra={"error": type(exc).__name__})
        return False
    return True


# --- agent daily spend ----------------------------------------------------------

DAILY_CACHE_ADD = register_script(
    "daily_cache_add",
    """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'spent', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'held', ARGV[2])
else
  redis.call('HSET', KEYS[1], 'spent', ARGV[3], 'held', ARGV[4])
end
redis.call('EXPIREAT', KEYS[1], ARGV[5])
return 1
""",
)


def daily_cache_key(account_id: int, day: date) -> str:
    return f"billing:agent:daily:{account_id}:{day.isoformat()}"


def _next_utc_midnight(day: date) -> int:
    return int(datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC).timestamp())


def daily_cache_schedule(
    *, account_id: int, day: date, spent_delta: int, held_delta: int, spent: int, held: int
) -> None:
    """After commit: INCRBY the day's cached spend (or seed it if missing), expiring at next UTC midnight.

    Derived state: a write lost while Redis is down, or two callbacks racing
    on a missing key, leave it off until reconciliation repairs it; money
    decisions never read it.
    """

    def write() -> None:
        redis_guard(
            "agent_daily_cache",
            lambda: run_script(
                DAILY_CACHE_ADD,
                [daily_cache_key(account_id, day)],
                [spent_delta, held_delta, spent, held, _next_utc_midnight(day)],
            ),
            fallback=lambda: None,
        )

    transaction.on_commit(write)


def daily_cache_read(account_id: int, day: date) -> dict[str, int] | None:
    def read() -> dict[str, int] | None:
        raw: dict[str, str] = get_redis().hgetall(daily_cache_key(account_id, day))  # type: ignore[assignment]
        if not raw or "spent" not in raw or "held" not in raw:
            return None
        return {"spent": int(raw["spent"]), "held": int(raw["held"])}

    return redis_guard("agent_daily_cache", read, fallback=lambda: None)


def daily_cache_set(*, account_id: int, day: date, spent: int, held: int) -> None:
    client = get_redis()
    key = daily_cache_key(account_id, day)
    pipe = client.pipeline(transaction=True)
    pipe.delete(key)
    pipe.hset(key, mapping={"spent": spent, "held": held})
    pipe.expireat(key, _next_utc_midnight(day))
    pipe.execute()
