"""Build ledger state through the services (never by writing rows directly)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connection
from django.test import override_settings

from billing import services
from billing.states import EntryState


def entry_in_state(
    state: EntryState, *, account_id: int, now: datetime, estimate: int = 1000, actual: int = 600
) -> str:
    """Create an entry and walk it to ``state`` with the public services."""
    if state == EntryState.IDLE:
        raise ValueError("IDLE entries are never stored")
    entry_id = services.entry_reserve(
        account_id=account_id, estimated_cost=estimate, correlation_id="test", now=now
    ).entry.id
    if state == EntryState.RESERVE_HELD:
        return entry_id
    if state == EntryState.RELEASED:
        services.entry_release(entry_id=entry_id, reason="user_cancel", now=now)
        return entry_id
    services.entry_commit(entry_id=entry_id, actual_cost=actual, now=now)
    if state == EntryState.COMMITTED:
        return entry_id
    if state == EntryState.VOIDED:
        services.entry_void(entry_id=entry_id, reason="test", actor="tester", now=now)
        return entry_id
    services.entry_finalize_request(entry_id=entry_id, now=now)
    if state == EntryState.FINALIZE_PENDING:
        return entry_id
    if state == EntryState.FINALIZE_ACKED:
        services.entry_finalize_ack(entry_id=entry_id, response_status=200, now=now)
        return entry_id
    if state == EntryState.FINALIZE_FAILED:
        services.entry_finalize_fail(entry_id=entry_id, attempt=5, reason="test", now=now)
        return entry_id
    raise AssertionError(state)


def ledger_snapshot() -> dict[str, Any]:
    """Everything a refused operation must leave untouched."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM billing_posting), (SELECT count(*) FROM billing_journalentry),"
            " (SELECT count(*) FROM finn_auditevent),"
            " (SELECT coalesce(json_agg(json_build_array(id, available, held, version) ORDER BY id), '[]')"
            "    FROM billing_account),"
            " (SELECT coalesce(json_agg(json_build_array(id, state, actual_cost, updated_at) ORDER BY id), '[]')"
            "    FROM billing_billingentry)"
        )
        postings, journals, audits, accounts, entries = cursor.fetchone()
    return {"postings": postings, "journals": journals, "audits": audits, "accounts": accounts, "entries": entries}


with_upstream = override_settings(FINALIZE_URL="http://127.0.0.1:9/finalize")
