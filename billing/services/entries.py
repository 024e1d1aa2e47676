"""Billing entries: reserve, commit, release (one database call each), and void.

Reserve, commit and release are each one call of a plpgsql function (migration
``billing/0011_hot_path_functions``): the entry's compare-and-set, the guarded account
UPDATE, the agent's daily cap, the journal and its postings and the audit row in one round
trip, as one transaction (outside a caller's transaction the call is its own; inside one it
runs in a savepoint, so a refusal rolls back only itself). A refusal RAISEs with a stable
code; the Python side explains it on the cold path with the queries it needs. Every state
change is still a compare-and-set: of two racing callers one wins and the other changes
nothing. Redis is touched only after commit. No shared row is updated per request (system
accounts get append-only postings, never a balance UPDATE).

Void stays in Python: a finance action, off the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from ulid import ULID

from billing.cache import balance_cache_schedule, daily_cache_schedule
from billing.errors import (
    AccountFrozen,
    ExceedsHold,
    FinalizeBacklog,
    IdempotencyKeyReused,
    InsufficientFunds,
)
from billing.metrics import counted, daily_cap_applied_total
from billing.models import Account, BillingEntry, Bucket
from billing.results import Balance, EntryResult, Metering, Usage
from billing.selectors import account_balance
from billing.services.daily_caps import _daily_settle, daily_cap_refusal, low_balance_publish, utc_day
from billing.services.entry_finalize import entry_finalize_enqueue
from billing.services.entry_state import (
    _ENTRY_ATTNAMES,
    _ENTRY_COLUMNS,
    _audit_transition,
    _entry_cas,
    _entry_from_row,
    _entry_locked_state,
    _explain_cas_miss,
    _finalize_exposure,
    _finalize_exposure_limit,
    _money,
)
from billing.services.ledger import (
    MAX_AMOUNT,
    RATE_QUANTUM,
    SYSTEM_REVENUE,
    _account_apply,
    _post,
    _validate_amount,
    system_account_id,
)
from billing.services.outbound import OutboundEvent, outbound_events_record
from billing.services.policies import policy_refusal
from billing.states import EntryState, ReleaseReason
from finn.audit import canonical_json, payload_crc32
from finn.errors import InvalidRequest
from finn.guard import guard

_RESERVE_SQL = (
    "SELECT available, held, version, daily_cap, refill_threshold, cap_day, day_spent, day_held"
    " FROM billing_entry_reserve(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
# The entry's columns in the model's field order (what _entry_from_row expects), then the rest.
_ENTRY_SELECT = ", ".join(f"(r.entry).{column}" for column in _ENTRY_COLUMNS)
_COMMIT_SQL = (
    f"SELECT {_ENTRY_SELECT}, r.available, r.held, r.version, r.daily_cap, r.refill_threshold, r.day_spent,"
    " r.day_held, r.low_balance_first, r.audit_sequence"
    " FROM billing_entry_commit(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) AS r"
)
_RELEASE_SQL = (
    f"SELECT {_ENTRY_SELECT}, r.available, r.held, r.version, r.daily_cap, r.refill_threshold, r.day_spent,"
    " r.day_held FROM billing_entry_release(%s, %s, %s, %s) AS r"
)
_ENTRY_WIDTH = len(_ENTRY_ATTNAMES)


class _Refused(Exception):
    """A plpgsql RAISE: ``code`` is its message, ``detail`` its DETAIL (nothing was written)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


def _call(sql: str, params: list[Any]) -> tuple[Any, ...]:
    """One statement, one round trip: its own transaction, or a savepoint inside the caller's."""
    try:
        if connection.in_atomic_block:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, params)
                return tuple(cursor.fetchone())
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return tuple(cursor.fetchone())
    except DatabaseError as exc:
        cause = exc.__cause__
        if getattr(cause, "sqlstate", None) == "P0001":  # RAISE EXCEPTION in the function
            diag = cause.diag  # type: ignore[union-attr]
            raise _Refused(diag.message_primary or "", diag.message_detail or "") from None
        raise


@dataclass(frozen=True)
class _Counted:
    """What a function returned besides the entry: the balance row and the day's counters."""

    balance: Balance
    day_spent: int | None
    day_held: int | None


def _counted(account_id: int, values: tuple[Any, ...]) -> _Counted:
    available, held, version, daily_cap, refill_threshold, day_spent, day_held = values
    return _Counted(
        balance=Balance(
            account_id=account_id,
            available=int(available),
            held=int(held),
            version=int(version),
            daily_cap=daily_cap,
            refill_threshold=refill_threshold,
        ),
        day_spent=day_spent,
        day_held=day_held,
    )


def _after_commit(entry: BillingEntry, counted: _Counted, *, spent_delta: int, held_delta: int) -> None:
    """The derived copies in Redis, written once the operation has committed."""
    balance = counted.balance
    balance_cache_schedule(
        account_id=balance.account_id, available=balance.available, held=balance.held, version=balance.version
    )
    if entry.cap_day is not None and counted.day_spent is not None and counted.day_held is not None:
        daily_cache_schedule(
            account_id=entry.account_id,
            day=entry.cap_day,
            spent_delta=spent_delta,
            held_delta=held_delta,
            spent=int(counted.day_spent),
            held=int(counted.day_held),
        )


def _invariant(refused: _Refused, **context: Any) -> None:
    """The database refused an operation that would break a named invariant: count it, 409."""
    guard(refused.detail or "unknown", False, **context)


def _reserve_refusal(*, account_id: int, estimated_cost: int, exposure_limit: int) -> Exception:
    """Why the guarded account UPDATE matched nothing (cold path)."""
    current = account_balance(account_id=account_id)  # raises AccountNotFound
    if Account.objects.filter(pk=account_id, reserves_frozen=True).exists():
        return AccountFrozen("new reserves on this account are frozen; contact support")
    exposure = _finalize_exposure(account_id)
    if exposure > exposure_limit:
        return FinalizeBacklog(
            "too much spend is still waiting to be finalized upstream; retry when it drains",
            exposure=exposure,
            limit=exposure_limit,
        )
    return InsufficientFunds(
        "insufficient funds for this reserve", available=current.available, held=current.held, required=estimated_cost
    )


def _reserve_replay(*, account_id: int, estimated_cost: int, idempotency_key: str) -> EntryResult:
    first = BillingEntry.objects.get(account_id=account_id, idempotency_key=idempotency_key)
    if first.estimated_cost != estimated_cost:
        raise IdempotencyKeyReused(
            "this idempotency key was used for a reserve of a different amount", idempotency_key=idempotency_key
        )
    return EntryResult(entry=first, balance=account_balance(account_id=account_id), replayed=True)


@counted("reserve")
def entry_reserve(
    *,
    account_id: int,
    estimated_cost: int,
    correlation_id: str,
    now: datetime,
    ttl_seconds: int | None = None,
    idempotency_key: str | None = None,
    metering: Metering | None = None,
) -> EntryResult:
    """Hold ``estimated_cost`` µUSD of the account's credit for one request.

    With an idempotency key, a retry returns the first entry (``replayed``)
    instead of holding twice; a retry with a different estimate is refused.
    ``metering`` (a reserve priced by model and tokens) is recorded on the entry
    and in its audit row: commit then charges at that price version.
    """
    _validate_amount("estimated_cost", estimated_cost)
    ttl = settings.BILLING_RESERVE_TTL_SECONDS if ttl_seconds is None else ttl_seconds
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= settings.BILLING_RESERVE_TTL_MAX_SECONDS:
        raise InvalidRequest(
            f"ttl_seconds must be an integer between 1 and {settings.BILLING_RESERVE_TTL_MAX_SECONDS}",
            reason="invalid_ttl",
        )
    entry_id = str(ULID())
    expires_at = now + timedelta(seconds=ttl)
    cu_per_usd = settings.CREDIT_UNITS_PER_USD
    rate = settings.USD_USDC_RATE.quantize(RATE_QUANTUM)
    exposure_limit = _finalize_exposure_limit()
    payload: dict[str, Any] = {
        "account_id": str(account_id),
        "from_state": EntryState.IDLE.value,
        "to_state": EntryState.RESERVE_HELD.value,
        "estimated_cost": _money(estimated_cost),
        "actual_cost": None,
        "exchange_rate_snapshot": {
            "credit_units_per_usd": str(cu_per_usd),
            "usd_usdc_rate": str(rate),
            "frozen_at": now.isoformat(),
        },
        "expires_at": expires_at.isoformat(),
    }
    if metering is not None:
        payload.update(metering.audit())
    try:
        row = _call(
            _RESERVE_SQL,
            [
                entry_id,
                account_id,
                correlation_id,
                estimated_cost,
                cu_per_usd,
                rate,
                now,
                expires_at,
                idempotency_key,
                exposure_limit,
                canonical_json(payload).decode("utf-8"),
                payload_crc32(payload),
                bool(settings.FINN_GUARD_BYPASS),
                "" if metering is None else metering.model,
                None if metering is None else metering.price_version,
            ],
        )
    except _Refused as refused:
        if refused.code == "idempotent_replay" and idempotency_key is not None:
            return _reserve_replay(
                account_id=account_id, estimated_cost=estimated_cost, idempotency_key=idempotency_key
            )
        if refused.code == "reserve_refused":
            raise _reserve_refusal(
                account_id=account_id, estimated_cost=estimated_cost, exposure_limit=exposure_limit
            ) from None
        if refused.code == "daily_cap_exceeded":
            raise daily_cap_refusal(account_id=account_id, day=utc_day(now), what="reserve") from None
        if refused.code == "policy_refused":
            raise policy_refusal(refused.detail, now=now) from None
        if refused.code == "invariant_violation":
            _invariant(refused, account_id=account_id, estimate=estimated_cost)
        raise
    available, held, version, daily_cap, refill_threshold, cap_day, day_spent, day_held = row
    counted = _counted(account_id, (available, held, version, daily_cap, refill_threshold, day_spent, day_held))
    # Checked in the function (refused there unless the break glass is on); here it is counted.
    guard("reserve_within_allocation", counted.balance.held >= estimated_cost, held=held, estimate=estimated_cost)
    fields = {
        "id": entry_id,
        "correlation_id": correlation_id,
        "state": EntryState.RESERVE_HELD.value,
        "estimated_cost": estimated_cost,
        "actual_cost": None,
        "credit_units_per_usd": cu_per_usd,
        "usd_usdc_rate": rate,
        "rate_frozen_at": now,
        "expires_at": expires_at,
        "finalize_attempts": 0,
        "idempotency_key": idempotency_key,
        "release_reason": "",
        "void_reason": "",
        "voided_by": "",
        "created_at": now,
        "updated_at": now,
        "account_id": account_id,
        "escalated_at": None,
        "fence_token": 0,
        "finalize_last_error": "",
        "next_attempt_at": None,
        "cap_day": cap_day,
        "model": "" if metering is None else metering.model,
        "price_version": None if metering is None else metering.price_version,
        "usage_input_tokens": None,
        "usage_output_tokens": None,
    }
    entry = BillingEntry.from_db(None, _ENTRY_ATTNAMES, [fields[name] for name in _ENTRY_ATTNAMES])
    _after_commit(entry, counted, spent_delta=0, held_delta=estimated_cost)
    return EntryResult(entry=entry, balance=counted.balance)


class _CapOvershoot(Exception):
    """The requested actual cost exceeds what the daily cap allows: retry capped."""

    def __init__(self, allowed: int) -> None:
        super().__init__(allowed)
        self.allowed = allowed


@counted("commit")
def entry_commit(
    *, entry_id: str, actual_cost: int, now: datetime, account_id: int | None = None, usage: Usage | None = None
) -> EntryResult:
    """Charge the actual cost of a held entry; the rest of the hold goes back.

    ``account_id`` scopes the call to one account (API callers); None is for
    staff and internal callers. Actual above the estimate is refused
    (``exceeds_hold``) unless the account allows overcapture, in which case
    the extra is debited from available under the same credit-limit check.
    For an agent wallet with a daily cap, an overcapture beyond what the cap
    still allows is charged only up to the cap, and the capping is audited
    (``billing_daily_cap_applied``) and counted. When an upstream finalize
    target is configured, the entry continues to FINALIZE_PENDING in the same
    transaction. ``usage`` (a metered entry's tokens, priced by the caller at the
    entry's price version) is recorded on the entry and in the commit's audit row.
    """
    _validate_amount("actual_cost", actual_cost, allow_zero=True)
    try:
        return _entry_commit_call(
            entry_id=entry_id, actual_cost=actual_cost, now=now, account_id=account_id, usage=usage
        )
    except _CapOvershoot as overshoot:
        result = _entry_commit_call(
            entry_id=entry_id,
            actual_cost=overshoot.allowed,
            now=now,
            account_id=account_id,
            requested_actual=actual_cost,
            usage=usage,
        )
        daily_cap_applied_total.inc()
        return result


def _commit_refusal(*, entry_id: str, actual_cost: int) -> Exception:
    """Why the account UPDATE of a commit matched nothing: no overcapture, or no funds for it."""
    row = BillingEntry.objects.filter(pk=entry_id).values("estimated_cost", "account__allow_overcapture").first()
    estimate = int(row["estimated_cost"]) if row else 0
    if not (row and row["account__allow_overcapture"]):
        return ExceedsHold(
            f"actual cost {actual_cost} exceeds the hold of {estimate}",
            estimated_cost=estimate,
            actual_cost=actual_cost,
        )
    return InsufficientFunds("insufficient funds for the cost above the hold", required=actual_cost - estimate)


def _entry_commit_call(
    *,
    entry_id: str,
    actual_cost: int,
    now: datetime,
    account_id: int | None,
    requested_actual: int | None = None,
    usage: Usage | None = None,
) -> EntryResult:
    guard("cost_non_negative", 0 <= actual_cost <= MAX_AMOUNT, actual_cost=actual_cost)
    try:
        row = _call(
            _COMMIT_SQL,
            [
                entry_id,
                account_id,
                actual_cost,
                now,
                system_account_id(SYSTEM_REVENUE),
                bool(settings.FINALIZE_URL),
                requested_actual,
                bool(settings.FINN_GUARD_BYPASS),
                None if usage is None else usage.input_tokens,
                None if usage is None else usage.output_tokens,
            ],
        )
    except _Refused as refused:
        if refused.code == "cas_miss":
            raise _explain_cas_miss(
                entry_id=entry_id, account_id=account_id, target=EntryState.COMMITTED, now=now, check_expiry=True
            ) from None
        if refused.code == "commit_refused":
            raise _commit_refusal(entry_id=entry_id, actual_cost=actual_cost) from None
        if refused.code == "cap_overshoot":
            raise _CapOvershoot(int(refused.detail)) from None
        if refused.code == "invariant_violation":
            _invariant(refused, entry_id=entry_id, actual_cost=actual_cost)
        raise
    entry = _entry_from_row(row[:_ENTRY_WIDTH])
    counted = _counted(entry.account_id, row[_ENTRY_WIDTH : _ENTRY_WIDTH + 7])
    balance = counted.balance
    if counted.day_spent is not None and balance.daily_cap is not None:
        guard("budget_conservation", counted.day_spent <= balance.daily_cap, spent=counted.day_spent)
    guard("reserve_within_allocation", balance.held >= 0, held=balance.held, estimate=entry.estimated_cost)
    _after_commit(entry, counted, spent_delta=actual_cost, held_delta=-entry.estimated_cost)
    if row[_ENTRY_WIDTH + 7]:  # first time today under the refill threshold
        low_balance_publish(balance=balance, day=utc_day(now))
    if entry.state == EntryState.FINALIZE_PENDING:
        entry_finalize_enqueue(entry.id)
    return EntryResult(entry=entry, balance=balance, audit_sequence=int(row[_ENTRY_WIDTH + 8]))


@counted("release")
def entry_release(*, entry_id: str, reason: str, now: datetime, account_id: int | None = None) -> EntryResult:
    """Return the whole hold of a reserved entry to available."""
    if reason not in ReleaseReason.values:
        raise InvalidRequest(f"reason must be one of: {', '.join(ReleaseReason.values)}", reason="invalid_reason")
    try:
        row = _call(_RELEASE_SQL, [entry_id, account_id, reason, now])
    except _Refused as refused:
        if refused.code == "cas_miss":
            raise _explain_cas_miss(
                entry_id=entry_id, account_id=account_id, target=EntryState.RELEASED, now=now
            ) from None
        raise
    entry = _entry_from_row(row[:_ENTRY_WIDTH])
    counted = _counted(entry.account_id, row[_ENTRY_WIDTH : _ENTRY_WIDTH + 7])
    _after_commit(entry, counted, spent_delta=0, held_delta=-entry.estimated_cost)
    return EntryResult(entry=entry, balance=counted.balance)


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
    voided = {"entry_id": entry.id, "refunded": actual, "reason": reason, "correlation_id": entry.correlation_id}
    outbound_events_record([OutboundEvent(entry.account_id, "entry.voided", voided)], now=now)
    return EntryResult(entry=entry, balance=balance)
