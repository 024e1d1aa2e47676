"""Holds that grow with a stream: ``entry_extend`` adds to a RESERVE_HELD hold.

A gateway streaming tokens extends every K tokens and stops the stream when an extend is
refused. One transaction: the entry row locked (so concurrent extends of one hold queue),
the account's guarded UPDATE (the same balance, credit-limit and frozen checks as a reserve),
the day's cap counter when the hold counts against one, the entry's new estimate and expiry,
the journal (available → held), the audit row (``billing_reserve_extend``). A commit may
then charge up to the extended estimate.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

from billing.errors import EntryNotFound, HoldExpired, InvalidTransition
from billing.metrics import counted
from billing.models import BillingEntry, Bucket
from billing.results import EntryResult
from billing.services.daily_caps import _daily_count
from billing.services.entries import _call, _Refused, _reserve_refusal
from billing.services.entry_state import _audit_transition, _finalize_exposure_limit
from billing.services.ledger import _account_apply, _post, _validate_amount
from billing.services.policies import policy_refusal
from billing.states import EntryState
from finn.errors import InvalidRequest
from finn.guard import guard

_POLICY_SQL = "SELECT billing_spend_policy_check(%s, %s, %s, %s, %s, %s, false)"


@counted("extend")
@transaction.atomic(durable=True)
def entry_extend(
    *, entry_id: str, additional_cost: int, now: datetime, account_id: int | None = None, ttl_seconds: int | None = None
) -> EntryResult:
    """Add ``additional_cost`` µUSD to a held reserve; optionally push its expiry to now + ``ttl_seconds``.

    The expiry never moves earlier, and never past the hold's creation + BILLING_RESERVE_TTL_MAX_SECONDS.
    Refusals are the reserve's: 402 insufficient_funds / daily_cap_exceeded / account_frozen,
    409 hold_expired or invalid_transition (no longer held), 404 for another account's entry.
    """
    _validate_amount("additional_cost", additional_cost)
    longest = settings.BILLING_RESERVE_TTL_MAX_SECONDS
    if ttl_seconds is not None and not 1 <= ttl_seconds <= longest:
        raise InvalidRequest(f"ttl_seconds must be between 1 and {longest}")
    rows = BillingEntry.objects.select_for_update().filter(pk=entry_id)
    if account_id is not None:
        rows = rows.filter(account_id=account_id)
    entry = rows.first()
    if entry is None:
        raise EntryNotFound(f"billing entry {entry_id} not found")
    if entry.state != EntryState.RESERVE_HELD:
        raise InvalidTransition(entry.state, EntryState.RESERVE_HELD)  # only a held reserve can grow
    if entry.expires_at <= now:
        raise HoldExpired(f"the hold on billing entry {entry_id} expired at {entry.expires_at.isoformat()}",
                          expires_at=entry.expires_at.isoformat())  # fmt: skip
    balance = _account_apply(
        account_id=entry.account_id,
        available_delta=-additional_cost,
        held_delta=additional_cost,
        guard_sql="available - %s >= -credit_limit AND NOT reserves_frozen",
        guard_params=(additional_cost,),
    )
    if balance is None:
        raise _reserve_refusal(
            account_id=entry.account_id, estimated_cost=additional_cost, exposure_limit=_finalize_exposure_limit()
        )
    if entry.cap_day is not None and balance.daily_cap is not None:
        _daily_count(account_id=entry.account_id, day=entry.cap_day, amount=additional_cost, cap=balance.daily_cap,
                     column="held", what="extend")  # fmt: skip
    expires_at = entry.expires_at
    if ttl_seconds is not None:
        expires_at = max(
            expires_at, min(now + timedelta(seconds=ttl_seconds), entry.created_at + timedelta(seconds=longest))
        )
    entry.estimated_cost += additional_cost
    entry.expires_at, entry.updated_at = expires_at, now
    entry.save(update_fields=["estimated_cost", "expires_at", "updated_at"])
    try:  # the agent's budget policy, with the grown hold counted (the account row is locked)
        _call(_POLICY_SQL, [entry.account_id, entry.id, entry.estimated_cost, additional_cost, entry.model, now])
    except _Refused as refused:
        if refused.code == "policy_refused":
            raise policy_refusal(refused.detail, now=now) from None
        raise
    _post(
        event_type="billing_reserve_extend",
        billing_entry_id=entry.id,
        correlation_id=entry.correlation_id,
        legs=[(entry.account_id, Bucket.AVAILABLE, -additional_cost), (entry.account_id, Bucket.HELD, additional_cost)],
        now=now,
    )
    _audit_transition(
        event_type="billing_reserve_extend",
        entry=entry,
        from_state=EntryState.RESERVE_HELD,
        now=now,
        extra={"additional_cost": str(additional_cost), "expires_at": expires_at.isoformat()},
    )
    guard("reserve_within_allocation", balance.held >= entry.estimated_cost, held=balance.held)
    return EntryResult(entry=entry, balance=balance)
