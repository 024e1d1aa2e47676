"""Billing entries: reserve, commit, release, void.

Each public service is one durable transaction that writes the state change, its journal
postings and its audit row together; Redis is touched only after commit. Hot paths (reserve,
commit) use compare-and-set UPDATEs with RETURNING so they take few round trips and lock only
the caller's account row and entry row: no shared row is updated per request (system
accounts get append-only postings, never a balance UPDATE).
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from ulid import ULID

from billing.errors import (
    AccountFrozen,
    ExceedsHold,
    FinalizeBacklog,
    IdempotencyKeyReused,
    InsufficientFunds,
)
from billing.metrics import (
    counted,
    daily_cap_applied_total,
)
from billing.models import (
    Account,
    BillingEntry,
    Bucket,
)
from billing.results import EntryResult
from billing.selectors import account_balance
from billing.services.daily_caps import _daily_hold, _daily_remaining_for, _daily_settle, _low_balance_check, utc_day
from billing.services.entry_finalize import _entry_mark_finalize_pending
from billing.services.entry_state import (
    _EXPOSURE_SQL,
    _audit_transition,
    _entry_cas,
    _entry_locked_state,
    _finalize_exposure,
    _finalize_exposure_limit,
)
from billing.services.ledger import (
    RATE_QUANTUM,
    SYSTEM_REVENUE,
    _account_apply,
    _post,
    _validate_amount,
    system_account_id,
)
from billing.states import EntryState, ReleaseReason
from finn.db import violates
from finn.errors import InvalidRequest
from finn.guard import guard


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
