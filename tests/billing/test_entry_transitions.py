"""Every allowed and every refused transition of a billing entry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from billing import services
from billing.errors import InvalidTransition
from billing.models import BillingEntry
from billing.states import TRANSITIONS, EntryState
from finn.models import AuditEvent

from .helpers import entry_in_state, ledger_snapshot

Operation = Callable[[str, datetime], object]

OPERATIONS: dict[str, tuple[EntryState, Operation]] = {
    "commit": (EntryState.COMMITTED, lambda eid, now: services.entry_commit(entry_id=eid, actual_cost=500, now=now)),
    "release": (
        EntryState.RELEASED,
        lambda eid, now: services.entry_release(entry_id=eid, reason="pre_stream_failure", now=now),
    ),
    "void": (
        EntryState.VOIDED,
        lambda eid, now: services.entry_void(entry_id=eid, reason="refund", actor="finance", now=now),
    ),
    "finalize_request": (
        EntryState.FINALIZE_PENDING,
        lambda eid, now: services.entry_finalize_request(entry_id=eid, now=now),
    ),
    "finalize_ack": (
        EntryState.FINALIZE_ACKED,
        lambda eid, now: services.entry_finalize_ack(entry_id=eid, response_status=200, now=now),
    ),
    "finalize_fail": (
        EntryState.FINALIZE_FAILED,
        lambda eid, now: services.entry_finalize_fail(entry_id=eid, attempt=5, reason="max_retries_exceeded", now=now),
    ),
}

STORED_STATES = [state for state in EntryState if state != EntryState.IDLE]
CASES = [(state, op) for state in STORED_STATES for op in OPERATIONS]


def test_transition_table_is_exactly_the_specified_one() -> None:
    # then
    assert {s: sorted(t) for s, t in TRANSITIONS.items()} == {
        EntryState.IDLE: [EntryState.RESERVE_HELD],
        EntryState.RESERVE_HELD: [EntryState.COMMITTED, EntryState.RELEASED],
        EntryState.COMMITTED: [EntryState.FINALIZE_PENDING, EntryState.VOIDED],
        EntryState.FINALIZE_PENDING: [EntryState.FINALIZE_ACKED, EntryState.FINALIZE_FAILED],
        EntryState.FINALIZE_FAILED: [EntryState.FINALIZE_ACKED, EntryState.VOIDED],
        EntryState.FINALIZE_ACKED: [],
        EntryState.RELEASED: [],
        EntryState.VOIDED: [],
    }


@pytest.mark.django_db
def test_reserve_is_the_idle_to_reserve_held_transition(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    # when
    result = services.entry_reserve(account_id=funded.pk, estimated_cost=1000, correlation_id="c1", now=now)
    # then
    audit = AuditEvent.objects.get(billing_entry_id=result.entry.id)
    assert result.entry.state == EntryState.RESERVE_HELD
    assert (audit.event_type, audit.payload["from_state"], audit.payload["to_state"]) == (
        "billing_reserve",
        "IDLE",
        "RESERVE_HELD",
    )


@pytest.mark.django_db
@pytest.mark.parametrize(("state", "operation"), CASES, ids=[f"{s.value}-{o}" for s, o in CASES])
def test_operation_from_every_state(make_account, now, state: EntryState, operation: str) -> None:
    # given
    funded = make_account(10_000)
    entry_id = entry_in_state(state, account_id=funded.pk, now=now)
    target, call = OPERATIONS[operation]
    before = ledger_snapshot()
    # when / then
    if target in TRANSITIONS[state]:
        result = call(entry_id, now)
        assert BillingEntry.objects.get(pk=entry_id).state == target
        assert result.entry.state == target  # type: ignore[attr-defined]
        assert AuditEvent.objects.count() > before["audits"]
    else:
        with pytest.raises(InvalidTransition) as info:
            call(entry_id, now)
        assert (info.value.current, info.value.target) == (state.value, target.value)
        assert info.value.code == "invalid_transition"
        assert ledger_snapshot() == before
