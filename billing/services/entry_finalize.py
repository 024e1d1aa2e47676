"""Finalize states of a billing entry: pending, acknowledged, failed (poison), rescheduled.

The entries table is the queue: a wake-up message is sent on commit by task name
(``finn.queue``); if the broker loses it, the finalize sweeper finds the row by
``next_attempt_at``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connection, transaction

from billing.metrics import (
    counted,
)
from billing.models import (
    BillingEntry,
)
from billing.results import EntryResult
from billing.selectors import account_balance
from billing.services.entry_state import _audit_transition, _entry_cas, _entry_locked_state
from billing.states import EntryState
from finn.errors import InvalidRequest
from finn.queue import task_enqueue


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
    entry_finalize_enqueue(entry.id, countdown=0)
    return entry


FINALIZE_TASK = "billing.tasks.entry_finalize_task"


def entry_finalize_enqueue(
    entry_id: str, *, countdown: float = 0, on_commit: bool = True, replay: bool = False
) -> None:
    """Wake the finalize pipeline for one entry (by default once the caller's transaction commits).

    The one way finalize work is scheduled (commit, reschedule, the sweeper, the admin's
    replay). ``replay`` retries a poison (FINALIZE_FAILED) entry. The message expires after
    an hour: by then the sweeper has re-enqueued a pending row.
    """
    args: tuple[str] | tuple[str, bool] = (entry_id, True) if replay else (entry_id,)
    task_enqueue(FINALIZE_TASK, args=args, countdown=countdown, expires=3600, on_commit=on_commit)


@transaction.atomic(durable=True)
def entry_finalize_replay_request(*, entry_id: str, actor: str, reason: str, now: datetime) -> bool:
    """Staff ask for one poison (FINALIZE_FAILED) entry to be retried upstream; audited, then enqueued.

    The state does not change here (the finalize attempt moves it); False when the entry is
    not poison (nothing audited, nothing enqueued).
    """
    if not (actor and reason.strip()):
        raise InvalidRequest("a replay needs an actor and a reason", reason="reason_required")
    entry = BillingEntry.objects.select_for_update().filter(pk=entry_id, state=EntryState.FINALIZE_FAILED).first()
    if entry is None:
        return False
    _audit_transition(
        event_type="billing_finalize_replay_requested",
        entry=entry,
        from_state=entry.state,
        now=now,
        actor=actor,
        reason=reason.strip(),
    )
    entry_finalize_enqueue(entry.pk, replay=True)
    return True


@counted("finalize_request")
@transaction.atomic(durable=True)
def entry_finalize_request(*, entry_id: str, now: datetime) -> EntryResult:
    """Queue a COMMITTED entry for finalization upstream (COMMITTED -> FINALIZE_PENDING).

    Commit does this itself when an upstream is configured; this service is
    for entries committed while none was.
    """
    entry = _entry_mark_finalize_pending(entry_id=entry_id, now=now)
    return EntryResult(entry=entry, balance=account_balance(account_id=entry.account_id))


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
        entry_finalize_enqueue(entry.id, countdown=max(0.0, (next_attempt_at - now).total_seconds()))
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
