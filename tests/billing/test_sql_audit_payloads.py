"""Audit rows written by the plpgsql hot path carry the canonical JSON and CRC32 finn.audit writes."""

from __future__ import annotations

import pytest
from django.test import override_settings

from billing import services
from billing.models import Account
from finn.audit import payload_crc32
from finn.audit_chain import audit_verify
from finn.models import AuditEvent


@pytest.mark.django_db
def test_commit_release_cap_and_finalize_rows_verify(make_account, now) -> None:
    # given: every SQL-built audit payload shape (commit, release, daily-cap applied, finalize pending)
    funded = make_account(1_000_000, allow_overcapture=True)
    Account.objects.filter(pk=funded.pk).update(daily_cap=1_500)
    held = services.entry_reserve(account_id=funded.pk, estimated_cost=1_000, correlation_id="c", now=now)
    services.entry_commit(entry_id=held.entry.id, actual_cost=5_000, now=now)  # capped at 1,500
    Account.objects.filter(pk=funded.pk).update(daily_cap=None)
    released = services.entry_reserve(account_id=funded.pk, estimated_cost=100, correlation_id="c", now=now)
    services.entry_release(entry_id=released.entry.id, reason="user_cancel", now=now)
    with override_settings(FINALIZE_URL="http://127.0.0.1:1/finalize"):
        pending = services.entry_reserve(account_id=funded.pk, estimated_cost=100, correlation_id="c", now=now)
        services.entry_commit(entry_id=pending.entry.id, actual_cost=40, now=now)
    # then: each row's CRC is the CRC of its payload, and the log verifies
    kinds = {"billing_commit", "billing_release", "billing_daily_cap_applied", "billing_finalize_pending"}
    rows = list(AuditEvent.objects.filter(event_type__in=kinds))
    assert {row.event_type for row in rows} == kinds
    assert all(row.crc32 == payload_crc32(row.payload) for row in rows)
    capped = next(row for row in rows if row.event_type == "billing_daily_cap_applied")
    assert (capped.payload["requested_actual_cost"], capped.payload["charged_actual_cost"]) == ("5000", "1500")
    assert audit_verify().ok
