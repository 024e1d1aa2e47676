"""The ledger's primitives: system accounts, amounts, journal postings, balance-row updates.

Every writer below runs inside its caller's transaction (``_require_transaction`` says so
where a caller could forget); none opens one of its own. ``_post`` writes a journal and its
postings in one statement; the database checks the zero sum per denomination at commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction

from billing.cache import balance_cache_schedule
from billing.errors import (
    AccountNotFound,
)
from billing.models import (
    Account,
    AccountKind,
    Denomination,
)
from billing.results import Balance
from finn.errors import InvalidRequest
from finn.guard import guard

MAX_AMOUNT = 2**63 - 1


RATE_QUANTUM = Decimal("0.00000001")  # matches BillingEntry.usd_usdc_rate decimal_places


SYSTEM_REVENUE = "system:revenue"


TREASURY_USDC_RECEIVED = "treasury:usdc_received"


SYSTEM_CREDIT_NOTES = "system:credit_notes"


SYSTEM_FX_CLEARING = "system:fx_clearing"


SYSTEM_ACCOUNT_CODES = (SYSTEM_REVENUE, TREASURY_USDC_RECEIVED, SYSTEM_CREDIT_NOTES, SYSTEM_FX_CLEARING)


_system_ids: dict[str, int] = {}


def system_account_id(code: str) -> int:
    """Primary key of a system account, created on first use and cached."""
    cached = _system_ids.get(code)
    if cached is not None:
        return cached
    if code not in SYSTEM_ACCOUNT_CODES:
        raise ValueError(f"unknown system account {code!r}")
    # No Python lock around this: a thread holding one while its INSERT waits
    # for another transaction's uncommitted row deadlocks with that transaction
    # (seen in a test). The unique code makes get_or_create race-safe.
    account, _ = Account.objects.get_or_create(code=code, defaults={"kind": AccountKind.SYSTEM, "name": code})
    # Cache only once the row is committed: if the surrounding transaction
    # rolls back, a cached id would point at a row that never existed and
    # every later posting to it would fail at commit.
    pk = account.pk
    transaction.on_commit(lambda: _system_ids.__setitem__(code, pk))
    return pk


def system_account_cache_clear() -> None:
    """Forget cached system account ids (tests flush tables between cases)."""
    _system_ids.clear()


def _validate_amount(name: str, value: int, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be an integer number of micro-USD")
    low = 0 if allow_zero else 1
    if value < low or value > MAX_AMOUNT:
        raise InvalidRequest(f"{name} must be between {low} and {MAX_AMOUNT}")


def _balance_from_row(account_id: int, row: tuple[Any, ...]) -> Balance:
    extra = {"daily_cap": row[3], "refill_threshold": row[4]} if len(row) > 3 else {}
    return Balance(account_id=account_id, available=int(row[0]), held=int(row[1]), version=int(row[2]), **extra)


def _post(
    *,
    event_type: str,
    correlation_id: str,
    legs: Sequence[tuple[Any, ...]],
    now: datetime,
    billing_entry_id: str | None = None,
    denomination: str = Denomination.MICRO_USD,
    idempotency_key: str | None = None,
    exchange_rate: Decimal | None = None,
    rounding_direction: str = "",
) -> int:
    """Write one journal entry with its non-zero legs; return its id.

    A leg is (account, bucket, delta) in ``denomination``, or (account, bucket,
    delta, denomination) for journals that cross denominations through a
    clearing account. One statement (the journal row and its postings in a
    CTE): this runs on every reserve and commit. The database checks the zero
    sum per denomination at commit (deferred constraint trigger); the
    assertion here only catches a wrong posting rule early, with a clear
    message.
    """
    bad = [
        leg[2]
        for leg in legs
        if isinstance(leg[2], bool) or not isinstance(leg[2], int) or not -MAX_AMOUNT <= leg[2] <= MAX_AMOUNT
    ]
    guard("amount_integer_in_range", not bad, event_type=event_type, deltas=bad)
    full = [(int(leg[0]), str(leg[1]), int(leg[2]), str(leg[3]) if len(leg) > 3 else denomination) for leg in legs]
    full = [leg for leg in full if leg[2] != 0]
    assert full, f"empty posting rule for {event_type}"
    totals: dict[str, int] = {}
    for _, _, delta, denom in full:
        totals[denom] = totals.get(denom, 0) + delta
    assert not any(totals.values()), f"unbalanced posting rule for {event_type}: {full}"
    values = ", ".join(["(%s::bigint, %s::varchar, %s::bigint, %s::varchar)"] * len(full))
    sql = (
        "WITH journal AS ("
        " INSERT INTO billing_journalentry (billing_entry_id, event_type, correlation_id,"
        " exchange_rate, rounding_direction, idempotency_key, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id)"
        " INSERT INTO billing_posting (journal_entry_id, account_id, bucket, delta, denomination)"
        f" SELECT journal.id, leg.account_id, leg.bucket, leg.delta, leg.denomination FROM journal, (VALUES {values})"
        " AS leg (account_id, bucket, delta, denomination)"
        " RETURNING journal_entry_id"
    )
    params: list[Any] = [
        billing_entry_id,
        event_type,
        correlation_id,
        exchange_rate,
        rounding_direction,
        idempotency_key,
        now,
    ]
    for leg in full:
        params.extend(leg)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.fetchone()[0])


def _account_apply(
    *, account_id: int, available_delta: int, held_delta: int, guard_sql: str = "", guard_params: tuple[Any, ...] = ()
) -> Balance | None:
    """Add deltas to an account's balance row if ``guard_sql`` holds; None if not."""
    sql = (
        "UPDATE billing_account SET available = available + %s, held = held + %s, version = version + 1 "
        f"WHERE id = %s AND kind <> 'system'{' AND ' + guard_sql if guard_sql else ''} "
        "RETURNING available, held, version, daily_cap, refill_threshold"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [available_delta, held_delta, account_id, *guard_params])
        row = cursor.fetchone()
    if row is None:
        return None
    balance = _balance_from_row(account_id, row)
    balance_cache_schedule(
        account_id=account_id, available=balance.available, held=balance.held, version=balance.version
    )
    return balance


def _credit_available(*, account_id: int, amount: int) -> Balance:
    """Add a credit to available, refusing a balance past the largest bigint."""
    balance = _account_apply(
        account_id=account_id,
        available_delta=amount,
        held_delta=0,
        guard_sql="available <= %s",
        guard_params=(MAX_AMOUNT - amount,),
    )
    if balance is None:
        if not Account.objects.filter(pk=account_id).exclude(kind=AccountKind.SYSTEM).exists():
            raise AccountNotFound(f"account {account_id} not found")
        raise InvalidRequest("the balance would exceed the largest representable amount", reason="amount_too_large")
    return balance


def _require_transaction(name: str) -> None:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError(f"{name} must run inside the caller's transaction")
