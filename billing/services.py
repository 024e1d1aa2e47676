"""All writes to the billing ledger.

Each public service is one durable transaction that writes the state change,
its journal postings and its audit row together; Redis is touched only after
commit. Hot paths (reserve, commit) use compare-and-set UPDATEs with
RETURNING so they take few round trips and lock only the caller's account
row and entry row: no shared row is updated per request (system accounts get
append-only postings, never a balance UPDATE).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from ulid import ULID

from billing.cache import balance_cache_schedule, balance_cache_write_many, daily_cache_schedule
from billing.errors import (
    AccountFrozen,
    AccountNotFound,
    AlreadyPurchased,
    DailyCapExceeded,
    EntryNotFound,
    ExceedsHold,
    FenceStale,
    FinalizeBacklog,
    HoldExpired,
    IdempotencyKeyReused,
    InsufficientFunds,
    InvalidTransition,
    PurchaseInProgress,
)
from billing.metrics import (
    counted,
    daily_cap_applied_total,
    fencing_stale_total,
    hold_expiry_released_total,
    low_balance_events_total,
)
from billing.models import (
    Account,
    AccountKind,
    BadgePurchase,
    BillingEntry,
    BoostPurchase,
    Bucket,
    Denomination,
    JournalEntry,
    Posting,
    RoundingDirection,
)
from billing.results import Balance, EntryResult, MintResult, PurchaseResult
from billing.selectors import account_balance
from billing.states import EntryState, ReleaseReason, sources_of
from finn.audit import AuditRecord, audit_append, audit_append_many
from finn.db import violates
from finn.degradation import redis_guard
from finn.errors import InvalidRequest
from finn.guard import guard
from finn.locks import lock_acquire, lock_release, xact_lock
from finn.redis import get_redis

logger = logging.getLogger(__name__)

MAX_AMOUNT = 2**63 - 1
RATE_QUANTUM = Decimal("0.00000001")  # matches BillingEntry.usd_usdc_rate decimal_places

SYSTEM_REVENUE = "system:revenue"
TREASURY_USDC_RECEIVED = "treasury:usdc_received"
SYSTEM_CREDIT_NOTES = "system:credit_notes"
SYSTEM_FX_CLEARING = "system:fx_clearing"
SYSTEM_ACCOUNT_CODES = (SYSTEM_REVENUE, TREASURY_USDC_RECEIVED, SYSTEM_CREDIT_NOTES, SYSTEM_FX_CLEARING)


# --- system accounts ----------------------------------------------------------

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


# --- helpers (no transaction of their own) -----------------------------------

_ENTRY_COLUMNS = [field.column for field in BillingEntry._meta.concrete_fields]
_ENTRY_ATTNAMES = [field.attname for field in BillingEntry._meta.concrete_fields]
_RETURNING_ENTRY = ", ".join(_ENTRY_COLUMNS)


def _entry_from_row(row: tuple[Any, ...]) -> BillingEntry:
    return BillingEntry.from_db(None, _ENTRY_ATTNAMES, list(row))


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


def _explain_cas_miss(
    *,
    entry_id: str,
    account_id: int | None,
    target: EntryState,
    now: datetime,
    check_expiry: bool = False,
    sources: frozenset[EntryState] | None = None,
    fence_token: int | None = None,
) -> Exception:
    """Why a compare-and-set on an entry changed nothing (cold path)."""
    row = BillingEntry.objects.filter(pk=entry_id).values("state", "account_id", "expires_at", "fence_token").first()
    if row is None or (account_id is not None and row["account_id"] != account_id):
        return EntryNotFound(f"billing entry {entry_id} not found")
    allowed = sources if sources is not None else sources_of(target)
    if row["state"] in allowed and fence_token is not None and row["fence_token"] >= fence_token:
        fencing_stale_total.inc()
        logger.warning(
            "stale fencing token refused",
            extra={"billing_entry_id": entry_id, "token": fence_token, "stored": row["fence_token"]},
        )
        return FenceStale(
            f"fencing token {fence_token} is not newer than {row['fence_token']}",
            token=fence_token,
            stored=row["fence_token"],
        )
    if row["state"] in allowed and check_expiry and row["expires_at"] <= now:
        return HoldExpired(
            f"the hold on billing entry {entry_id} expired at {row['expires_at'].isoformat()}",
            expires_at=row["expires_at"].isoformat(),
        )
    return InvalidTransition(row["state"], target.value)


def _entry_cas(
    *,
    entry_id: str,
    account_id: int | None,
    target: EntryState,
    now: datetime,
    set_sql: str = "",
    set_params: tuple[Any, ...] = (),
    sources: frozenset[EntryState] | None = None,
    require_unexpired: bool = False,
    fence_token: int | None = None,
) -> BillingEntry:
    """Compare-and-set the state of one entry; raise a typed error on a miss.

    Of two racing callers only one UPDATE matches ``state IN sources``; the
    other sees zero rows and changes nothing. With ``fence_token`` (a locked
    writer) the row must also have seen only smaller tokens: a holder whose
    Redis lock expired and was taken over cannot write any more.
    """
    allowed = sorted(s.value for s in (sources if sources is not None else sources_of(target)))
    where = ["id = %s", "state = ANY(%s)"]
    if fence_token is not None:
        set_sql = f"{set_sql + ', ' if set_sql else ''}fence_token = %s"
        set_params = (*set_params, fence_token)
        where.append("fence_token < %s")
    params: list[Any] = [target.value, now, *set_params, entry_id, allowed]
    if fence_token is not None:
        params.append(fence_token)
    if account_id is not None:
        where.append("account_id = %s")
        params.append(account_id)
    if require_unexpired:
        where.append("expires_at > %s")
        params.append(now)
    sql = (
        f"UPDATE billing_billingentry SET state = %s, updated_at = %s{', ' + set_sql if set_sql else ''} "
        f"WHERE {' AND '.join(where)} RETURNING {_RETURNING_ENTRY}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        raise _explain_cas_miss(
            entry_id=entry_id,
            account_id=account_id,
            target=target,
            now=now,
            check_expiry=require_unexpired,
            sources=sources,
            fence_token=fence_token,
        )
    return _entry_from_row(row)


def _entry_locked_state(entry_id: str) -> str:
    """Lock an entry row and read its state, for transitions with several sources.

    Cold paths only (void, finalize): the audit row must name the state the
    entry really left, and under the row lock it cannot change underneath.
    """
    state = BillingEntry.objects.select_for_update().filter(pk=entry_id).values_list("state", flat=True).first()
    return state or ""


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


def _money(value: int | None) -> str | None:
    return None if value is None else str(value)


def _audit_transition(
    *,
    event_type: str,
    entry: BillingEntry,
    from_state: str,
    now: datetime,
    actor: str = "",
    reason: str = "",
    extra: dict[str, Any] | None = None,
) -> None:
    payload: dict[str, Any] = {
        "account_id": str(entry.account_id),
        "from_state": from_state,
        "to_state": entry.state,
        "estimated_cost": _money(entry.estimated_cost),
        "actual_cost": _money(entry.actual_cost),
    }
    if extra:
        payload.update(extra)
    audit_append(
        event_type=event_type,
        payload=payload,
        correlation_id=entry.correlation_id,
        now=now,
        billing_entry_id=entry.id,
        account_id=entry.account_id,
        actor=actor,
        reason=reason,
    )


# --- finalize exposure (capped risk) --------------------------------------------

_EXPOSURE_SQL = (
    "SELECT COALESCE(SUM(actual_cost), 0) FROM billing_billingentry"
    " WHERE account_id = %s AND state IN ('FINALIZE_PENDING', 'FINALIZE_FAILED')"
)


def _finalize_exposure_limit() -> int:
    """FINALIZE_MAX_EXPOSURE_CU in µUSD (exact: CU * 1e6 / CU-per-USD, rounded down)."""
    return settings.FINALIZE_MAX_EXPOSURE_CU * 1_000_000 // settings.CREDIT_UNITS_PER_USD


def _finalize_exposure(account_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(_EXPOSURE_SQL, [account_id])
        return int(cursor.fetchone()[0])


# --- daily caps (agent wallets) ---------------------------------------------------


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


# --- accounts -----------------------------------------------------------------


def account_create(
    *,
    kind: str = AccountKind.USER,
    owner: User | None = None,
    name: str = "",
    credit_limit: int = 0,
    allow_overcapture: bool = False,
    daily_cap: int | None = None,
    refill_threshold: int | None = None,
) -> Account:
    if kind not in (AccountKind.USER, AccountKind.AGENT):
        raise InvalidRequest("kind must be 'user' or 'agent'", reason="invalid_kind")
    _validate_amount("credit_limit", credit_limit, allow_zero=True)
    for name_, value in (("daily_cap", daily_cap), ("refill_threshold", refill_threshold)):
        if value is not None:
            _validate_amount(name_, value, allow_zero=True)
    return Account.objects.create(
        kind=kind,
        owner=owner,
        name=name,
        credit_limit=credit_limit,
        allow_overcapture=allow_overcapture,
        daily_cap=daily_cap,
        refill_threshold=refill_threshold,
    )


def _account_credit_mint_body(
    *, account_id: int, amount: int, idempotency_key: str, correlation_id: str, actor: str, reason: str, now: datetime
) -> MintResult:
    treasury = system_account_id(TREASURY_USDC_RECEIVED)
    journal_id = _post(
        event_type="credit_mint",
        correlation_id=correlation_id,
        legs=[(treasury, Bucket.AVAILABLE, -amount), (account_id, Bucket.AVAILABLE, amount)],
        idempotency_key=idempotency_key,
        now=now,
    )
    balance = _credit_available(account_id=account_id, amount=amount)
    audit_append(
        event_type="credit_mint",
        payload={"account_id": str(account_id), "amount": str(amount), "journal_entry_id": str(journal_id)},
        correlation_id=correlation_id,
        now=now,
        account_id=account_id,
        actor=actor,
        reason=reason,
    )
    return MintResult(journal_entry_id=journal_id, balance=balance)


_account_credit_mint_txn = transaction.atomic(durable=True)(_account_credit_mint_body)


@counted("credit_mint")
def account_credit_mint(
    *,
    account_id: int,
    amount: int,
    idempotency_key: str,
    correlation_id: str,
    now: datetime,
    actor: str = "",
    reason: str = "",
) -> MintResult:
    """Credit ``amount`` µUSD to an account from the treasury, once per key.

    A second call with the same idempotency key credits nothing and returns
    the first journal entry with the current balance.
    """
    _validate_amount("amount", amount)
    try:
        return _account_credit_mint_txn(
            account_id=account_id,
            amount=amount,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            actor=actor,
            reason=reason,
            now=now,
        )
    except IntegrityError as exc:
        if not violates(exc, "billing_journalentry_idempotency_key_uniq"):
            raise
    first = JournalEntry.objects.get(idempotency_key=idempotency_key)
    credited = Posting.objects.filter(journal_entry=first, bucket=Bucket.AVAILABLE, delta__gt=0).first()
    if credited is None or credited.account_id != account_id or credited.delta != amount:
        raise IdempotencyKeyReused(
            "this idempotency key was used for a different credit", idempotency_key=idempotency_key
        )
    return MintResult(journal_entry_id=first.pk, balance=account_balance(account_id=account_id), replayed=True)


# --- billing entries ----------------------------------------------------------


@transaction.atomic(durable=True)
def _entry_reserve_txn(
    *,
    account_id: int,
    estimated_cost: int,
    correlation_id: str,
    ttl_seconds: int,
    idempotency_key: str | None,
    now: datetime,
) -> EntryResult:
    # Insert the entry first: a concurrent request with the same idempotency
    # key then waits on the unique index and fails before touching the
    # account row, instead of debiting and rolling back.
    entry = BillingEntry.objects.create(
        id=str(ULID()),
        account_id=account_id,
        correlation_id=correlation_id,
        state=EntryState.RESERVE_HELD,
        estimated_cost=estimated_cost,
        credit_units_per_usd=settings.CREDIT_UNITS_PER_USD,
        usd_usdc_rate=settings.USD_USDC_RATE.quantize(RATE_QUANTUM),
        rate_frozen_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
        idempotency_key=idempotency_key,
        created_at=now,
        updated_at=now,
    )
    # The conditional UPDATE is the funds check: it holds the row lock until
    # commit, so concurrent reserves on one account serialize here and none
    # can take the balance below -credit_limit.
    exposure_limit = _finalize_exposure_limit()
    balance = _account_apply(
        account_id=account_id,
        available_delta=-estimated_cost,
        held_delta=estimated_cost,
        guard_sql=f"NOT reserves_frozen AND available + credit_limit >= %s AND ({_EXPOSURE_SQL}) <= %s",
        guard_params=(estimated_cost, account_id, exposure_limit),
    )
    if balance is None:
        current = account_balance(account_id=account_id)  # raises AccountNotFound
        if Account.objects.filter(pk=account_id, reserves_frozen=True).exists():
            raise AccountFrozen("new reserves on this account are frozen; contact support")
        exposure = _finalize_exposure(account_id)
        if exposure > exposure_limit:
            raise FinalizeBacklog(
                "too much spend is still waiting to be finalized upstream; retry when it drains",
                exposure=exposure,
                limit=exposure_limit,
            )
        raise InsufficientFunds(
            "insufficient funds for this reserve",
            available=current.available,
            held=current.held,
            required=estimated_cost,
        )
    guard("reserve_within_allocation", balance.held >= estimated_cost, held=balance.held, estimate=estimated_cost)
    if balance.daily_cap is not None:
        entry.cap_day = _daily_hold(
            entry_id=entry.id, account_id=account_id, now=now, amount=estimated_cost, cap=balance.daily_cap
        )
    _post(
        event_type="billing_reserve",
        billing_entry_id=entry.id,
        correlation_id=correlation_id,
        legs=[(account_id, Bucket.AVAILABLE, -estimated_cost), (account_id, Bucket.HELD, estimated_cost)],
        now=now,
    )
    _audit_transition(
        event_type="billing_reserve",
        entry=entry,
        from_state=EntryState.IDLE,
        now=now,
        extra={
            "exchange_rate_snapshot": {
                "credit_units_per_usd": str(entry.credit_units_per_usd),
                "usd_usdc_rate": str(entry.usd_usdc_rate),
                "frozen_at": now.isoformat(),
            },
            "expires_at": entry.expires_at.isoformat(),
        },
    )
    return EntryResult(entry=entry, balance=balance)


@counted("reserve")
def entry_reserve(
    *,
    account_id: int,
    estimated_cost: int,
    correlation_id: str,
    now: datetime,
    ttl_seconds: int | None = None,
    idempotency_key: str | None = None,
) -> EntryResult:
    """Hold ``estimated_cost`` µUSD of the account's credit for one request.

    With an idempotency key, a retry returns the first entry (``replayed``)
    instead of holding twice; a retry with a different estimate is refused.
    """
    _validate_amount("estimated_cost", estimated_cost)
    ttl = settings.BILLING_RESERVE_TTL_SECONDS if ttl_seconds is None else ttl_seconds
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= settings.BILLING_RESERVE_TTL_MAX_SECONDS:
        raise InvalidRequest(
            f"ttl_seconds must be an integer between 1 and {settings.BILLING_RESERVE_TTL_MAX_SECONDS}",
            reason="invalid_ttl",
        )
    try:
        return _entry_reserve_txn(
            account_id=account_id,
            estimated_cost=estimated_cost,
            correlation_id=correlation_id,
            ttl_seconds=ttl,
            idempotency_key=idempotency_key,
            now=now,
        )
    except IntegrityError as exc:
        if idempotency_key is None or not violates(exc, "billing_billingentry_account_idempotency_key_uniq"):
            raise
    first = BillingEntry.objects.get(account_id=account_id, idempotency_key=idempotency_key)
    if first.estimated_cost != estimated_cost:
        raise IdempotencyKeyReused(
            "this idempotency key was used for a reserve of a different amount", idempotency_key=idempotency_key
        )
    return EntryResult(entry=first, balance=account_balance(account_id=account_id), replayed=True)


class _CapOvershoot(Exception):
    """The requested actual cost exceeds what the daily cap allows: retry capped."""

    def __init__(self, allowed: int) -> None:
        super().__init__(allowed)
        self.allowed = allowed


@counted("commit")
def entry_commit(*, entry_id: str, actual_cost: int, now: datetime, account_id: int | None = None) -> EntryResult:
    """Charge the actual cost of a held entry; the rest of the hold goes back.

    ``account_id`` scopes the call to one account (API callers); None is for
    staff and internal callers. Actual above the estimate is refused
    (``exceeds_hold``) unless the account allows overcapture, in which case
    the extra is debited from available under the same credit-limit check.
    For an agent wallet with a daily cap, an overcapture beyond what the cap
    still allows is charged only up to the cap, and the capping is audited
    (``billing_daily_cap_applied``) and counted. When an upstream finalize
    target is configured, the entry continues to FINALIZE_PENDING in the same
    transaction.
    """
    _validate_amount("actual_cost", actual_cost, allow_zero=True)
    try:
        return _entry_commit_txn(entry_id=entry_id, actual_cost=actual_cost, now=now, account_id=account_id)
    except _CapOvershoot as overshoot:
        result = _entry_commit_txn(
            entry_id=entry_id,
            actual_cost=overshoot.allowed,
            now=now,
            account_id=account_id,
            requested_actual=actual_cost,
        )
        daily_cap_applied_total.inc()
        return result


@transaction.atomic(durable=True)
def _entry_commit_txn(
    *, entry_id: str, actual_cost: int, now: datetime, account_id: int | None, requested_actual: int | None = None
) -> EntryResult:
    entry = _entry_cas(
        entry_id=entry_id,
        account_id=account_id,
        target=EntryState.COMMITTED,
        now=now,
        set_sql="actual_cost = %s",
        set_params=(actual_cost,),
        require_unexpired=True,
    )
    estimate = entry.estimated_cost
    guard("cost_non_negative", actual_cost >= 0, actual_cost=actual_cost)
    refund = estimate - actual_cost  # negative when overcapturing
    balance = _account_apply(
        account_id=entry.account_id,
        available_delta=refund,
        held_delta=-estimate,
        guard_sql="(%s >= 0 OR (allow_overcapture AND available + credit_limit + %s >= 0))",
        guard_params=(refund, refund),
    )
    if balance is None:
        allows = Account.objects.filter(pk=entry.account_id).values_list("allow_overcapture", flat=True).first()
        if not allows:
            raise ExceedsHold(
                f"actual cost {actual_cost} exceeds the hold of {estimate}",
                estimated_cost=estimate,
                actual_cost=actual_cost,
            )
        raise InsufficientFunds("insufficient funds for the cost above the hold", required=actual_cost - estimate)
    if entry.cap_day is not None and balance.daily_cap is not None:
        if actual_cost > estimate:
            allowed = _daily_remaining_for(
                account_id=entry.account_id, day=entry.cap_day, cap=balance.daily_cap, estimate=estimate
            )
            if actual_cost > allowed:
                raise _CapOvershoot(allowed)  # rolls this transaction back; the caller retries capped
        spent, _ = _daily_settle(
            account_id=entry.account_id, day=entry.cap_day, release_hold=estimate, spend=actual_cost
        )
        guard("budget_conservation", spent <= balance.daily_cap, spent=spent, cap=balance.daily_cap)
    guard("reserve_within_allocation", balance.held >= 0, held=balance.held, estimate=estimate)
    _post(
        event_type="billing_commit",
        billing_entry_id=entry.id,
        correlation_id=entry.correlation_id,
        legs=[
            (entry.account_id, Bucket.HELD, -estimate),
            (system_account_id(SYSTEM_REVENUE), Bucket.AVAILABLE, actual_cost),
            (entry.account_id, Bucket.AVAILABLE, refund),
        ],
        now=now,
    )
    _audit_transition(event_type="billing_commit", entry=entry, from_state=EntryState.RESERVE_HELD, now=now)
    if requested_actual is not None:
        _audit_transition(
            event_type="billing_daily_cap_applied",
            entry=entry,
            from_state=EntryState.RESERVE_HELD,
            now=now,
            reason="actual cost capped to the agent's daily cap",
            extra={"requested_actual_cost": str(requested_actual), "charged_actual_cost": str(actual_cost)},
        )
    if balance.daily_cap is not None or balance.refill_threshold is not None:
        _low_balance_check(balance=balance, day=utc_day(now), now=now)
    if settings.FINALIZE_URL:
        entry = _entry_mark_finalize_pending(entry_id=entry.id, now=now)
    return EntryResult(entry=entry, balance=balance)


def _entry_mark_finalize_pending(*, entry_id: str, now: datetime) -> BillingEntry:
    """COMMITTED -> FINALIZE_PENDING, due now; the first attempt is enqueued on commit.

    The row is the queue: if the broker loses the message, the finalize
    sweeper finds the entry by ``next_attempt_at``.
    """
    entry = _entry_cas(
        entry_id=entry_id,
        account_id=None,
        target=EntryState.FINALIZE_PENDING,
        now=now,
        set_sql="next_attempt_at = %s",
        set_params=(now,),
    )
    _audit_transition(event_type="billing_finalize_pending", entry=entry, from_state=EntryState.COMMITTED, now=now)
    _finalize_enqueue_on_commit(entry.id, countdown=0)
    return entry


def _finalize_enqueue_on_commit(entry_id: str, *, countdown: float) -> None:
    def enqueue() -> None:
        from billing.tasks import finalize_enqueue  # tasks import services: import late

        finalize_enqueue(entry_id, countdown=countdown)

    transaction.on_commit(enqueue)


@counted("finalize_request")
@transaction.atomic(durable=True)
def entry_finalize_request(*, entry_id: str, now: datetime) -> EntryResult:
    """Queue a COMMITTED entry for finalization upstream (COMMITTED -> FINALIZE_PENDING).

    Commit does this itself when an upstream is configured; this service is
    for entries committed while none was.
    """
    entry = _entry_mark_finalize_pending(entry_id=entry_id, now=now)
    return EntryResult(entry=entry, balance=account_balance(account_id=entry.account_id))


@counted("release")
@transaction.atomic(durable=True)
def entry_release(*, entry_id: str, reason: str, now: datetime, account_id: int | None = None) -> EntryResult:
    """Return the whole hold of a reserved entry to available."""
    if reason not in ReleaseReason.values:
        raise InvalidRequest(f"reason must be one of: {', '.join(ReleaseReason.values)}", reason="invalid_reason")
    entry = _entry_cas(
        entry_id=entry_id,
        account_id=account_id,
        target=EntryState.RELEASED,
        now=now,
        set_sql="release_reason = %s",
        set_params=(reason,),
    )
    estimate = entry.estimated_cost
    balance = _account_apply(account_id=entry.account_id, available_delta=estimate, held_delta=-estimate)
    assert balance is not None  # no guard: the row exists (FK) and is not a system account
    if entry.cap_day is not None:
        _daily_settle(account_id=entry.account_id, day=entry.cap_day, release_hold=estimate, spend=0)
    _post(
        event_type="billing_release",
        billing_entry_id=entry.id,
        correlation_id=entry.correlation_id,
        legs=[(entry.account_id, Bucket.HELD, -estimate), (entry.account_id, Bucket.AVAILABLE, estimate)],
        now=now,
    )
    _audit_transition(
        event_type="billing_release",
        entry=entry,
        from_state=EntryState.RESERVE_HELD,
        now=now,
        reason=reason,
        extra={"reason": reason},
    )
    return EntryResult(entry=entry, balance=balance)


@counted("void")
@transaction.atomic(durable=True)
def entry_void(*, entry_id: str, reason: str, actor: str, now: datetime, account_id: int | None = None) -> EntryResult:
    """Refund a charged entry (finance staff): revenue -actual, available +actual."""
    reason = reason.strip()
    if not reason:
        raise InvalidRequest("a void needs a reason", reason="reason_required")
    if not actor:
        raise InvalidRequest("a void needs an actor", reason="actor_required")
    before = _entry_locked_state(entry_id)
    entry = _entry_cas(
        entry_id=entry_id,
        account_id=account_id,
        target=EntryState.VOIDED,
        now=now,
        set_sql="void_reason = %s, voided_by = %s",
        set_params=(reason, actor),
    )
    actual = entry.actual_cost or 0
    balance = _account_apply(account_id=entry.account_id, available_delta=actual, held_delta=0)
    assert balance is not None
    if entry.cap_day is not None and actual:
        _daily_settle(account_id=entry.account_id, day=entry.cap_day, release_hold=0, spend=-actual)
    if actual:
        _post(
            event_type="billing_void",
            billing_entry_id=entry.id,
            correlation_id=entry.correlation_id,
            legs=[
                (system_account_id(SYSTEM_REVENUE), Bucket.AVAILABLE, -actual),
                (entry.account_id, Bucket.AVAILABLE, actual),
            ],
            now=now,
        )
    _audit_transition(
        event_type="billing_void",
        entry=entry,
        from_state=before,
        now=now,
        actor=actor,
        reason=reason,
        extra={"reason": reason, "admin_id": actor},
    )
    return EntryResult(entry=entry, balance=balance)


@counted("finalize_ack")
@transaction.atomic(durable=True)
def entry_finalize_ack(
    *,
    entry_id: str,
    response_status: int,
    now: datetime,
    actor: str = "",
    reason: str = "",
    fence_token: int | None = None,
    manual: bool = False,
) -> EntryResult:
    """The upstream ledger acknowledged a charged entry, or staff finalized it by hand.

    ``manual`` (staff) accepts only FINALIZE_FAILED entries and needs an actor
    and a reason; the pipeline passes its fencing token.
    """
    if manual and not (actor and reason.strip()):
        raise InvalidRequest("a manual finalize needs an actor and a reason", reason="reason_required")
    before = _entry_locked_state(entry_id)
    entry = _entry_cas(
        entry_id=entry_id,
        account_id=None,
        target=EntryState.FINALIZE_ACKED,
        now=now,
        set_sql="next_attempt_at = NULL",
        sources=frozenset({EntryState.FINALIZE_FAILED}) if manual else None,
        fence_token=fence_token,
    )
    _audit_transition(
        event_type="billing_finalize_ack",
        entry=entry,
        from_state=before,
        now=now,
        actor=actor,
        reason=reason.strip(),
        extra={"upstream_response_status": response_status, "manual": manual},
    )
    return EntryResult(entry=entry, balance=account_balance(account_id=entry.account_id))


@counted("finalize_fail")
@transaction.atomic(durable=True)
def entry_finalize_fail(
    *, entry_id: str, attempt: int, reason: str, now: datetime, fence_token: int | None = None
) -> EntryResult:
    """Give up finalizing an entry after ``attempt`` tries: it becomes poison."""
    entry = _entry_cas(
        entry_id=entry_id,
        account_id=None,
        target=EntryState.FINALIZE_FAILED,
        now=now,
        set_sql="finalize_attempts = %s, finalize_last_error = %s, next_attempt_at = NULL",
        set_params=(attempt, reason[:1000]),
        fence_token=fence_token,
    )
    _audit_transition(
        event_type="billing_finalize_fail",
        entry=entry,
        from_state=EntryState.FINALIZE_PENDING,
        now=now,
        reason=reason,
        extra={"attempt": attempt, "reason": reason[:1000]},
    )
    return EntryResult(entry=entry, balance=account_balance(account_id=entry.account_id))


@counted("finalize_reschedule")
@transaction.atomic(durable=True)
def entry_finalize_reschedule(
    *,
    entry_id: str,
    next_attempt_at: datetime,
    now: datetime,
    attempts: int | None = None,
    error: str = "",
    fence_token: int | None = None,
    enqueue: bool = True,
) -> BillingEntry:
    """Move a pending entry's next attempt (after a failure, or deferred by the breaker).

    Not a state change, so no audit row; ``attempts`` is set only when an
    attempt really failed (a deferral does not count).
    """
    set_sql = "next_attempt_at = %s, finalize_last_error = %s"
    set_params: tuple[Any, ...] = (next_attempt_at, error[:1000])
    if attempts is not None:
        set_sql += ", finalize_attempts = %s"
        set_params = (*set_params, attempts)
    entry = _entry_cas(
        entry_id=entry_id,
        account_id=None,
        target=EntryState.FINALIZE_PENDING,
        sources=frozenset({EntryState.FINALIZE_PENDING}),
        now=now,
        set_sql=set_sql,
        set_params=set_params,
        fence_token=fence_token,
    )
    if enqueue:
        _finalize_enqueue_on_commit(entry.id, countdown=max(0.0, (next_attempt_at - now).total_seconds()))
    return entry


@transaction.atomic(durable=True)
def entry_finalize_escalate(*, entry_id: str, now: datetime) -> bool:
    """Mark poison as escalated, once per entry (True if this call did it)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE billing_billingentry SET escalated_at = %s WHERE id = %s AND state = 'FINALIZE_FAILED'"
            " AND escalated_at IS NULL RETURNING id",
            [now, entry_id],
        )
        return cursor.fetchone() is not None


# --- hold expiry ----------------------------------------------------------------


@transaction.atomic(durable=True)
def holds_expire_batch(*, now: datetime, batch_size: int) -> int:
    """Release up to ``batch_size`` expired holds, oldest expiry first, in one transaction.

    Set-based so that 10,000 holds expiring in one second are released within
    seconds: one UPDATE of the entries (SKIP LOCKED, so a commit racing on
    one entry simply wins it), one UPDATE of the affected accounts (in id
    order), one statement for the journals and postings, one for the audit
    rows (``billing_reserve_expired``).
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE billing_billingentry e SET state = 'RELEASED', release_reason = 'reserve_expired',"
            " updated_at = %s FROM (SELECT id FROM billing_billingentry WHERE state = 'RESERVE_HELD'"
            " AND expires_at <= %s ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED) x"
            " WHERE e.id = x.id RETURNING e.id, e.account_id, e.estimated_cost, e.correlation_id, e.expires_at,"
            " e.cap_day",
            [now, now, batch_size],
        )
        fetched = cursor.fetchall()
        if not fetched:
            return 0
        capped: dict[tuple[int, date], int] = {}
        for _, account_id, amount, _, _, cap_day in fetched:
            if cap_day is not None:
                capped[(account_id, cap_day)] = capped.get((account_id, cap_day), 0) + amount
        if capped:
            keys = sorted(capped)
            cursor.execute(
                "UPDATE billing_dailyspend d SET held = d.held - v.amount"
                " FROM unnest(%s::bigint[], %s::date[], %s::bigint[]) AS v(account_id, day, amount)"
                " WHERE d.account_id = v.account_id AND d.day = v.day RETURNING d.account_id, d.day, d.spent, d.held",
                [[k[0] for k in keys], [k[1] for k in keys], [capped[k] for k in keys]],
            )
            for account_id, day, spent, held in cursor.fetchall():
                daily_cache_schedule(
                    account_id=account_id,
                    day=day,
                    spent_delta=0,
                    held_delta=-capped[(account_id, day)],
                    spent=int(spent),
                    held=int(held),
                )
        rows = [row[:5] for row in fetched]
        totals: dict[int, int] = {}
        for _, account_id, amount, _, _ in rows:
            totals[account_id] = totals.get(account_id, 0) + amount
        account_ids = sorted(totals)
        cursor.execute("SELECT id FROM billing_account WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [account_ids])
        cursor.execute(
            "UPDATE billing_account a SET available = a.available + t.total, held = a.held - t.total,"
            " version = a.version + 1 FROM unnest(%s::bigint[], %s::bigint[]) AS t(id, total)"
            " WHERE a.id = t.id RETURNING a.id, a.available, a.held, a.version",
            [account_ids, [totals[a] for a in account_ids]],
        )
        balances = [(int(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in cursor.fetchall()]
        cursor.execute(
            "WITH v AS (SELECT * FROM unnest(%s::varchar[], %s::bigint[], %s::bigint[], %s::varchar[])"
            " AS v(entry_id, account_id, amount, correlation_id)),"
            " j AS (INSERT INTO billing_journalentry (billing_entry_id, event_type, correlation_id,"
            " rounding_direction, created_at) SELECT entry_id, 'billing_reserve_expired', correlation_id, '', %s"
            " FROM v RETURNING id, billing_entry_id)"
            " INSERT INTO billing_posting (journal_entry_id, account_id, bucket, delta, denomination)"
            " SELECT j.id, v.account_id, b.bucket, b.sign * v.amount, 'micro_usd'"
            " FROM j JOIN v ON v.entry_id = j.billing_entry_id"
            " CROSS JOIN (VALUES ('held', -1), ('available', 1)) AS b(bucket, sign)",
            [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], now],
        )
    audit_append_many(
        [
            AuditRecord(
                event_type="billing_reserve_expired",
                payload={
                    "account_id": str(account_id),
                    "from_state": EntryState.RESERVE_HELD.value,
                    "to_state": EntryState.RELEASED.value,
                    "estimated_cost": str(amount),
                    "actual_cost": None,
                    "reason": ReleaseReason.RESERVE_EXPIRED.value,
                    "expires_at": expires_at.isoformat(),
                },
                correlation_id=correlation_id,
                billing_entry_id=entry_id,
                account_id=account_id,
                reason=ReleaseReason.RESERVE_EXPIRED.value,
            )
            for entry_id, account_id, amount, correlation_id, expires_at in rows
        ],
        now=now,
    )
    transaction.on_commit(lambda: balance_cache_write_many(balances))
    return len(rows)


def holds_expire(*, now: datetime, batch_size: int | None = None, max_batches: int = 100) -> int:
    """Release every expired hold (bounded per run), one advisory-locked sweeper at a time."""
    from finn.locks import AdvisoryLock, drain_batches

    size = batch_size or settings.HOLD_EXPIRY_BATCH_SIZE
    released = drain_batches(
        AdvisoryLock.HOLD_EXPIRY_SWEEP,
        lambda: holds_expire_batch(now=now, batch_size=size),
        batch_size=size,
        max_batches=max_batches,
    )
    hold_expiry_released_total.inc(released or 0)
    return released or 0


# --- minting from received USDC ------------------------------------------------------


def credit_mint_from_usdc(
    *,
    account_id: int,
    amount_micro_usdc: int,
    usd_per_usdc: Decimal,
    idempotency_key: str,
    correlation_id: str,
    now: datetime,
    actor: str = "",
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> MintResult:
    """Credit an account for USDC received; the caller holds the (durable) transaction.

    The journal never mixes denominations: treasury -µUSDC / FX clearing
    +µUSDC, FX clearing -µUSD / account +µUSD, so each denomination sums to
    zero. µUSD is rounded down (never credit more than was paid).
    """
    _require_transaction("credit_mint_from_usdc")
    _validate_amount("amount_micro_usdc", amount_micro_usdc)
    credited = int((Decimal(amount_micro_usdc) * usd_per_usdc).to_integral_value(rounding=ROUND_FLOOR))
    _validate_amount("credited", credited)
    clearing = system_account_id(SYSTEM_FX_CLEARING)
    journal_id = _post(
        event_type="credit_mint",
        correlation_id=correlation_id,
        legs=[
            (system_account_id(TREASURY_USDC_RECEIVED), Bucket.AVAILABLE, -amount_micro_usdc, Denomination.MICRO_USDC),
            (clearing, Bucket.AVAILABLE, amount_micro_usdc, Denomination.MICRO_USDC),
            (clearing, Bucket.AVAILABLE, -credited, Denomination.MICRO_USD),
            (account_id, Bucket.AVAILABLE, credited, Denomination.MICRO_USD),
        ],
        idempotency_key=idempotency_key,
        exchange_rate=usd_per_usdc,
        rounding_direction=RoundingDirection.FLOOR,
        now=now,
    )
    balance = _credit_available(account_id=account_id, amount=credited)
    audit_append(
        event_type="credit_mint",
        payload={
            "account_id": str(account_id),
            "amount": str(credited),
            "amount_micro_usdc": str(amount_micro_usdc),
            "usd_per_usdc": str(usd_per_usdc),
            "journal_entry_id": str(journal_id),
            **(details or {}),
        },
        correlation_id=correlation_id,
        now=now,
        account_id=account_id,
        actor=actor,
        reason=reason,
    )
    return MintResult(journal_entry_id=journal_id, balance=balance)


@transaction.atomic(durable=True)
def account_reserves_freeze(*, account_id: int, reason: str, actor: str, now: datetime) -> bool:
    """Stop new reserves on an account (a reverted payment, say); audited."""
    changed = Account.objects.filter(pk=account_id, reserves_frozen=False).update(reserves_frozen=True)
    if changed:
        audit_append(
            event_type="account_reserves_frozen",
            payload={"account_id": str(account_id), "reason": reason},
            correlation_id=f"freeze:{account_id}",
            now=now,
            account_id=account_id,
            actor=actor,
            reason=reason,
        )
    return bool(changed)


# --- subscriptions, boosts, badges (changed by provider webhooks) ----------------------
# These run inside the caller's transaction (the webhook pipeline records the
# event as processed in the same transaction), so they open none of their own.

GRACE_PERIOD = timedelta(hours=24)
_SUBSCRIPTION_STATUSES = {"active", "past_due", "canceled", "trialing", "unpaid"}


def _require_transaction(name: str) -> None:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError(f"{name} must run inside the caller's transaction")


def _as_datetime(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _entitlements_invalidate(community_id: str) -> None:
    def drop() -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            get_redis().delete(f"entitlement:{community_id}")

    transaction.on_commit(drop)


def subscription_apply(
    *, event_type: str, provider: str, occurred_at: datetime, data: dict[str, Any], now: datetime
) -> str:
    """Apply a subscription event; older than the last applied one → "stale" (recorded, ignored)."""
    from billing.models import Subscription

    _require_transaction("subscription_apply")
    custom = data.get("custom_data") or {}
    community_id = str(custom.get("community_id") or "")
    subscription_id = data.get("subscription_id")
    subscription = None
    if community_id:
        subscription = Subscription.objects.select_for_update().filter(community_id=community_id).first()
    elif subscription_id:
        subscription = Subscription.objects.select_for_update().filter(payment_subscription_id=subscription_id).first()
        community_id = subscription.community_id if subscription else ""
    if not community_id:
        return "ignored"  # nothing identifies the community: recorded, no effect
    if subscription is not None and subscription.last_event_at and occurred_at < subscription.last_event_at:
        return "stale"
    tier = custom.get("tier")
    if tier not in Subscription.Tier.values:
        tier = None
    if subscription is None:
        subscription = Subscription(community_id=community_id, payment_provider=provider, tier=tier or "basic")
    subscription.payment_provider = provider
    if subscription_id:
        subscription.payment_subscription_id = str(subscription_id)
    if data.get("customer_id"):
        subscription.payment_customer_id = str(data["customer_id"])
    if event_type == "subscription.created":
        subscription.status = Subscription.Status.TRIALING
        subscription.tier = tier or subscription.tier
    elif event_type == "subscription.activated":
        subscription.status = Subscription.Status.ACTIVE
        subscription.grace_until = None
    elif event_type == "subscription.updated":
        status = str(data.get("status") or "")
        if status in _SUBSCRIPTION_STATUSES:
            subscription.status = status
        subscription.tier = tier or subscription.tier
        if subscription.status == Subscription.Status.ACTIVE:
            subscription.grace_until = None
    elif event_type == "subscription.canceled":
        subscription.status = Subscription.Status.CANCELED
        subscription.tier = Subscription.Tier.STARTER
        subscription.grace_until = None
    subscription.current_period_start = _as_datetime(data.get("period_start")) or subscription.current_period_start
    subscription.current_period_end = _as_datetime(data.get("period_end")) or subscription.current_period_end
    subscription.last_event_at = occurred_at
    subscription.updated_at = now
    subscription.save()
    audit_append(
        event_type=event_type.replace(".", "_"),
        payload={
            "community_id": community_id,
            "tier": subscription.tier,
            "status": subscription.status,
            "provider": provider,
        },
        correlation_id=str(subscription_id or community_id),
        now=now,
        actor=provider,
    )
    _entitlements_invalidate(community_id)
    return "applied"


def subscription_payment(
    *, succeeded: bool, provider: str, occurred_at: datetime, data: dict[str, Any], now: datetime
) -> str:
    """A subscription payment: success re-activates; failure starts a 24 h grace period."""
    from billing.models import Subscription

    _require_transaction("subscription_payment")
    subscription_id = data.get("subscription_id")
    if not subscription_id:
        return "ignored"
    subscription = Subscription.objects.select_for_update().filter(payment_subscription_id=subscription_id).first()
    if subscription is None:
        return "ignored"
    if subscription.last_event_at and occurred_at < subscription.last_event_at:
        return "stale"
    payload: dict[str, Any] = {"community_id": subscription.community_id, "transaction_id": data.get("transaction_id")}
    if succeeded:
        subscription.status = Subscription.Status.ACTIVE
        subscription.grace_until = None
        events = ["payment_succeeded"]
    else:
        subscription.status = Subscription.Status.PAST_DUE
        subscription.grace_until = now + GRACE_PERIOD
        payload["grace_until"] = subscription.grace_until.isoformat()
        events = ["payment_failed", "grace_period_started"]
    subscription.last_event_at = occurred_at
    subscription.updated_at = now
    subscription.save()
    for event in events:
        audit_append(event_type=event, payload=payload, correlation_id=str(subscription_id), now=now, actor=provider)
    _entitlements_invalidate(subscription.community_id)
    return "applied"


def _add_months(moment: datetime, months: int) -> datetime:
    """Calendar months; the day is clamped to the target month's last day."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    last_day = [
        31,
        29 if (year % 4 == 0 and year % 100 != 0) or year % 400 == 0 else 28,
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][month - 1]
    return moment.replace(year=year, month=month, day=min(moment.day, last_day))


def boost_purchase_record(
    *, payment_id: str, member_id: str, community_id: str, months: int, amount_paid_cents: int, now: datetime
) -> str:
    """A boost stacks after the member's active one (calendar months); once per payment."""
    _require_transaction("boost_purchase_record")
    if BoostPurchase.objects.filter(payment_id=payment_id).exists():
        return "already_recorded"  # the unique payment_id below is the real guard
    active = (
        BoostPurchase.objects.filter(member_id=member_id, community_id=community_id, expires_at__gt=now)
        .order_by("-expires_at")
        .first()
    )
    start = active.expires_at if active else now
    BoostPurchase.objects.create(
        payment_id=payment_id,
        member_id=member_id,
        community_id=community_id,
        months=months,
        amount_paid_cents=amount_paid_cents,
        expires_at=_add_months(start, months),
        created_at=now,
    )
    audit_append(
        event_type="boost_purchased",
        payload={"community_id": community_id, "member_id": member_id, "months": months, "payment_id": payment_id},
        correlation_id=payment_id,
        now=now,
    )
    _entitlements_invalidate(community_id)
    return "applied"


def badge_purchase_record(*, member_id: str, payment_id: str, now: datetime) -> str:
    """One badge per member, with default display settings."""
    _require_transaction("badge_purchase_record")
    if BadgePurchase.objects.filter(member_id=member_id).exists():
        return "already_recorded"
    BadgePurchase.objects.create(member_id=member_id, payment_id=payment_id, created_at=now)
    audit_append(
        event_type="badge_purchased",
        payload={"member_id": member_id, "payment_id": payment_id},
        correlation_id=payment_id,
        now=now,
    )
    return "applied"


def account_credit_mint_in_transaction(
    *, account_id: int, amount: int, idempotency_key: str, correlation_id: str, now: datetime, actor: str, reason: str
) -> MintResult | None:
    """The credit-mint posting inside the caller's transaction; None if this key already minted."""
    _require_transaction("account_credit_mint_in_transaction")
    _validate_amount("amount", amount)
    if JournalEntry.objects.filter(idempotency_key=idempotency_key).exists():
        return None  # the unique idempotency key is the guard against a race
    return _account_credit_mint_body(
        account_id=account_id,
        amount=amount,
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
        actor=actor,
        reason=reason,
        now=now,
    )


# --- boosts and badges paid from prepaid credit ----------------------------------

BOOST_BUNDLE_CENTS = {1: 499, 3: 1347, 6: 2394, 12: 4190}
MICRO_USD_PER_CENT = 10_000
PURCHASE_LOCK_SECONDS = 60
_MEMBER_ID_MAX = 128


def boost_price(months: int) -> int:
    """µUSD for a bundle of ``months`` (the seeds' cent prices, exactly)."""
    if months not in BOOST_BUNDLE_CENTS:
        raise InvalidRequest(
            "months must be one of the bundles 1, 3, 6 or 12",
            reason="invalid_months",
            allowed=sorted(BOOST_BUNDLE_CENTS),
        )
    return BOOST_BUNDLE_CENTS[months] * MICRO_USD_PER_CENT


def badge_price() -> int:
    price = int(settings.BADGE_PRICE_MICRO_USD)
    _validate_amount("badge price", price)
    return price


def _validate_member_ref(name: str, value: str) -> None:
    if not value or len(value) > _MEMBER_ID_MAX or not value.isprintable():
        raise InvalidRequest(f"{name} must be 1-{_MEMBER_ID_MAX} printable characters", reason=f"invalid_{name}")


@contextlib.contextmanager
def _member_purchase_lock(member_id: str) -> Any:
    """The distributed per-member purchase lock; no Redis → 503 (fail closed)."""
    lock = redis_guard(
        "purchase_lock",
        lambda: lock_acquire(
            key=f"billing:lock:purchase:{member_id}",
            fence_key="billing:lock:purchase:fence",
            ttl_seconds=PURCHASE_LOCK_SECONDS,
        ),
    )
    if not lock.acquired:
        raise PurchaseInProgress("another purchase for this member is in progress; retry", member_id=member_id)
    try:
        yield lock
    finally:
        with contextlib.suppress(redis.RedisError, OSError):
            lock_release(key=lock.key, owner=lock.owner)


def _purchase_charge(
    *, account_id: int, amount: int, kind: str, member_id: str, idempotency_key: str, correlation_id: str, now: datetime
) -> tuple[int, Balance]:
    """Move ``amount`` from the account's available credit to revenue; the caller's transaction."""
    # The journal (with its unique idempotency key) first: a concurrent
    # duplicate waits on the index and fails before touching the account row.
    journal_id = _post(
        event_type=f"{kind}_purchase",
        correlation_id=correlation_id,
        legs=[(account_id, Bucket.AVAILABLE, -amount), (system_account_id(SYSTEM_REVENUE), Bucket.AVAILABLE, amount)],
        idempotency_key=idempotency_key,
        now=now,
    )
    balance = _account_apply(
        account_id=account_id,
        available_delta=-amount,
        held_delta=0,
        guard_sql="NOT reserves_frozen AND available + credit_limit >= %s",
        guard_params=(amount,),
    )
    if balance is None:
        current = account_balance(account_id=account_id)  # raises AccountNotFound
        if Account.objects.filter(pk=account_id, reserves_frozen=True).exists():
            raise AccountFrozen("spending on this account is frozen; contact support")
        raise InsufficientFunds(
            f"insufficient funds for this {kind}", available=current.available, held=current.held, required=amount
        )
    if balance.daily_cap is not None:
        _daily_count(
            account_id=account_id, day=utc_day(now), amount=amount, cap=balance.daily_cap, column="spent", what=kind
        )
    audit_append(
        event_type="credit_spend",
        payload={
            "account_id": str(account_id),
            "amount": str(amount),
            "journal_entry_id": str(journal_id),
            "kind": kind,
            "member_id": member_id,
        },
        correlation_id=correlation_id,
        now=now,
        account_id=account_id,
    )
    return journal_id, balance


@transaction.atomic(durable=True)
def _boost_purchase_txn(
    *, account_id: int, member_id: str, community_id: str, months: int, idempotency_key: str, now: datetime
) -> PurchaseResult:
    xact_lock(f"purchase:{member_id}")  # PostgreSQL serializes the member too (a Redis lock can expire)
    amount = boost_price(months)
    journal_id, balance = _purchase_charge(
        account_id=account_id,
        amount=amount,
        kind="boost",
        member_id=member_id,
        idempotency_key=idempotency_key,
        correlation_id=idempotency_key,
        now=now,
    )
    payment_id = f"credit:{journal_id}"
    boost_purchase_record(
        payment_id=payment_id,
        member_id=member_id,
        community_id=community_id,
        months=months,
        amount_paid_cents=BOOST_BUNDLE_CENTS[months],
        now=now,
    )
    expires_at = BoostPurchase.objects.only("expires_at").get(payment_id=payment_id).expires_at
    return PurchaseResult(
        kind="boost",
        payment_id=payment_id,
        journal_entry_id=journal_id,
        amount=amount,
        balance=balance,
        expires_at=expires_at,
    )


@transaction.atomic(durable=True)
def _badge_purchase_txn(*, account_id: int, member_id: str, idempotency_key: str, now: datetime) -> PurchaseResult:
    xact_lock(f"purchase:{member_id}")  # PostgreSQL serializes the member too (a Redis lock can expire)
    if BadgePurchase.objects.filter(member_id=member_id).exists():
        raise AlreadyPurchased("this member already has a badge", member_id=member_id)
    amount = badge_price()
    journal_id, balance = _purchase_charge(
        account_id=account_id,
        amount=amount,
        kind="badge",
        member_id=member_id,
        idempotency_key=idempotency_key,
        correlation_id=idempotency_key,
        now=now,
    )
    payment_id = f"credit:{journal_id}"
    badge_purchase_record(member_id=member_id, payment_id=payment_id, now=now)
    return PurchaseResult(
        kind="badge", payment_id=payment_id, journal_entry_id=journal_id, amount=amount, balance=balance
    )


def _purchase_replay(*, kind: str, account_id: int, idempotency_key: str) -> PurchaseResult:
    """The first purchase made with this key, or 422 if the key paid for something else."""
    first = JournalEntry.objects.get(idempotency_key=idempotency_key)
    debit = Posting.objects.filter(journal_entry=first, bucket=Bucket.AVAILABLE, delta__lt=0).first()
    if first.event_type != f"{kind}_purchase" or debit is None or debit.account_id != account_id:
        raise IdempotencyKeyReused("this idempotency key was used for a different request")
    payment_id = f"credit:{first.pk}"
    boost = BoostPurchase.objects.filter(payment_id=payment_id).first() if kind == "boost" else None
    return PurchaseResult(
        kind=kind,
        payment_id=payment_id,
        journal_entry_id=first.pk,
        amount=-debit.delta,
        balance=account_balance(account_id=account_id),
        expires_at=boost.expires_at if boost else None,
        replayed=True,
    )


def _purchase_key(kind: str, account_id: int, idempotency_key: str | None) -> str:
    return f"{kind}:{account_id}:{idempotency_key or ULID()}"


@counted("boost_purchase")
def boost_purchase_with_credit(
    *,
    account_id: int,
    member_id: str,
    community_id: str,
    months: int,
    idempotency_key: str | None,
    now: datetime,
) -> PurchaseResult:
    """Buy a boost bundle from prepaid credit: charge, stack after the active boost, audit.

    Under the member's distributed lock (Redis down → 503, fail closed) and
    in one transaction. Once per idempotency key: a repeat returns the first
    purchase and charges nothing.
    """
    _validate_member_ref("member_id", member_id)
    _validate_member_ref("community_id", community_id)
    boost_price(months)  # reject a bad bundle before taking the lock
    key = _purchase_key("boost", account_id, idempotency_key)
    with _member_purchase_lock(member_id):
        try:
            return _boost_purchase_txn(
                account_id=account_id,
                member_id=member_id,
                community_id=community_id,
                months=months,
                idempotency_key=key,
                now=now,
            )
        except IntegrityError as exc:
            if not violates(exc, "billing_journalentry_idempotency_key_uniq"):
                raise
    return _purchase_replay(kind="boost", account_id=account_id, idempotency_key=key)


@counted("badge_purchase")
def badge_purchase_with_credit(
    *, account_id: int, member_id: str, idempotency_key: str | None, now: datetime
) -> PurchaseResult:
    """Buy the member's badge from prepaid credit (one per member; a second is 409, uncharged)."""
    _validate_member_ref("member_id", member_id)
    key = _purchase_key("badge", account_id, idempotency_key)
    with _member_purchase_lock(member_id):
        try:
            return _badge_purchase_txn(account_id=account_id, member_id=member_id, idempotency_key=key, now=now)
        except IntegrityError as exc:
            if violates(exc, "billing_badgepurchase_member_id_key"):
                raise AlreadyPurchased("this member already has a badge", member_id=member_id) from exc
            if not violates(exc, "billing_journalentry_idempotency_key_uniq"):
                raise
    return _purchase_replay(kind="badge", account_id=account_id, idempotency_key=key)


# --- x402: USDC received for paid requests, and credit notes ----------------------


def _usd_of(amount_micro_usdc: int, usd_per_usdc: Decimal) -> int:
    """µUSDC → µUSD, rounded down (revenue is never recognized above what was paid)."""
    return int((Decimal(amount_micro_usdc) * usd_per_usdc).to_integral_value(rounding=ROUND_FLOOR))


def _x402_journal(
    *,
    event_type: str,
    correlation_id: str,
    usdc_legs: list[tuple[str, int]],
    usd_to_revenue: int,
    usd_per_usdc: Decimal,
    idempotency_key: str,
    now: datetime,
) -> int:
    """One journal: the µUSDC legs balance through FX clearing, and FX clearing ↔ revenue in µUSD."""
    clearing = system_account_id(SYSTEM_FX_CLEARING)
    usdc_total = sum(delta for _, delta in usdc_legs)
    legs: list[tuple[Any, ...]] = [
        *[(system_account_id(code), Bucket.AVAILABLE, delta, Denomination.MICRO_USDC) for code, delta in usdc_legs],
        (clearing, Bucket.AVAILABLE, -usdc_total, Denomination.MICRO_USDC),
        (clearing, Bucket.AVAILABLE, -usd_to_revenue, Denomination.MICRO_USD),
        (system_account_id(SYSTEM_REVENUE), Bucket.AVAILABLE, usd_to_revenue, Denomination.MICRO_USD),
    ]
    return _post(
        event_type=event_type,
        correlation_id=correlation_id,
        legs=legs,
        idempotency_key=idempotency_key,
        exchange_rate=usd_per_usdc,
        rounding_direction=RoundingDirection.FLOOR,
        now=now,
    )


def x402_payment_post(*, payment_id: str, received: int, credit_used: int, usd_per_usdc: Decimal, now: datetime) -> int:
    """A settled x402 payment: µUSDC received (plus credit notes used) becomes revenue."""
    _require_transaction("x402_payment_post")
    _validate_amount("received", received)
    _validate_amount("credit_used", credit_used, allow_zero=True)
    return _x402_journal(
        event_type="x402_payment",
        correlation_id=payment_id,
        usdc_legs=[(TREASURY_USDC_RECEIVED, -received), (SYSTEM_CREDIT_NOTES, -credit_used)],
        usd_to_revenue=_usd_of(received + credit_used, usd_per_usdc),
        usd_per_usdc=usd_per_usdc,
        idempotency_key=f"x402:payment:{payment_id}",
        now=now,
    )


def x402_credit_note_post(
    *, note_id: str, amount: int, usd_per_usdc: Decimal, now: datetime, expired: bool = False
) -> int:
    """A credit note owed to a wallet: revenue → the credit-notes liability.

    ``expired=True`` is the way back: what is left of an expired note returns to revenue.
    """
    _require_transaction("x402_credit_note_post")
    _validate_amount("amount", amount)
    sign = -1 if expired else 1
    suffix = "_expired" if expired else ""
    return _x402_journal(
        event_type=f"x402_credit_note{suffix}",
        correlation_id=note_id,
        usdc_legs=[(SYSTEM_CREDIT_NOTES, sign * amount)],
        usd_to_revenue=-sign * _usd_of(amount, usd_per_usdc),
        usd_per_usdc=usd_per_usdc,
        idempotency_key=f"x402:credit_note{suffix}:{note_id}",
        now=now,
    )
