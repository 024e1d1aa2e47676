"""The finance admin: read-only ledger, finalize/void with a confirmation and a reason, fast lists."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from billing.models import Account, BillingEntry
from billing.states import EntryState
from finn.models import AuditEvent
from tests.second_factor import verified_client

from .helpers import entry_in_state

CHANGELIST = "/admin/billing/billingentry/"
PINNED_CHANGELIST_QUERIES = 9  # session, user, verified TOTP device, permissions, capped count, page rows, ...


def _user(name: str, *, finance: bool) -> Client:
    user = User.objects.create_user(name, password="pw-" + name, is_staff=True)
    if finance:
        user.groups.add(Group.objects.get(name="Finance"))
    if finance:
        return verified_client(user)
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_finance_group_exists_with_the_finance_permissions() -> None:
    perms = set(Group.objects.get(name="Finance").permissions.values_list("codename", flat=True))
    assert {"finalize_billingentry", "void_billingentry", "view_billingentry", "view_auditevent"} <= perms
    assert "change_billingentry" not in perms
    assert "delete_account" not in perms


@pytest.mark.django_db
def test_ledger_models_are_read_only_even_for_superusers(make_account) -> None:
    admin = User.objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(admin)
    account = make_account(1_000).account
    assert client.get("/admin/billing/account/add/").status_code == 403
    assert client.get(f"/admin/billing/account/{account.pk}/delete/").status_code == 403
    page = client.get(f"/admin/billing/account/{account.pk}/change/")
    assert page.status_code == 200
    assert b"Spent today" in page.content
    assert b"Open holds" in page.content
    assert b"Last reconciliation" in page.content
    assert b'name="available"' not in page.content  # shown, not editable
    assert client.post(f"/admin/billing/account/{account.pk}/change/", {"available": 10**12}).status_code == 403
    assert Account.objects.get(pk=account.pk).available == 1_000


@pytest.mark.django_db
def test_finance_voids_with_a_reason_after_a_confirmation_page(make_account, now) -> None:
    # given
    customer = make_account(10_000)
    poison = entry_in_state(EntryState.FINALIZE_FAILED, account_id=customer.pk, now=now, actual=600)
    held = entry_in_state(EntryState.RESERVE_HELD, account_id=customer.pk, now=now)
    client = _user("fin", finance=True)
    selected = {"action": "void_entries", "_selected_action": [poison, held]}
    # when: the first POST shows the confirmation page
    confirm = client.post(CHANGELIST, selected)
    # then
    assert confirm.status_code == 200
    assert b"cannot: left unchanged" in confirm.content
    assert b"actual cost refunded" in confirm.content
    assert BillingEntry.objects.get(pk=poison).state == EntryState.FINALIZE_FAILED
    # when: confirmed without a reason, then with one
    no_reason = client.post(CHANGELIST, {**selected, "confirmed": "yes", "reason": " "})
    done = client.post(CHANGELIST, {**selected, "confirmed": "yes", "reason": "customer dispute #42"}, follow=True)
    # then
    assert b"A reason is required." in no_reason.content
    assert BillingEntry.objects.get(pk=poison).state == EntryState.VOIDED
    assert BillingEntry.objects.get(pk=held).state == EntryState.RESERVE_HELD  # reported, unchanged
    assert b"Left unchanged" in done.content
    audit = AuditEvent.objects.get(event_type="billing_void", billing_entry_id=poison)
    assert (audit.actor, audit.reason) == ("fin", "customer dispute #42")
    assert Account.objects.get(pk=customer.pk).available == 10_000 - 1_000  # 600 refunded; the hold remains


@pytest.mark.django_db
def test_staff_without_the_permission_do_not_see_or_run_the_actions(make_account, now) -> None:
    customer = make_account(10_000)
    poison = entry_in_state(EntryState.FINALIZE_FAILED, account_id=customer.pk, now=now)
    viewer = _user("viewer", finance=False)
    viewer_user = User.objects.get(username="viewer")
    viewer_user.user_permissions.add(
        *Group.objects.get(name="Finance").permissions.filter(codename__startswith="view_")
    )
    page = viewer.get(CHANGELIST)
    assert page.status_code == 200
    assert b"void_entries" not in page.content
    assert b"finalize_by_hand" not in page.content
    attempt = viewer.post(
        CHANGELIST, {"action": "void_entries", "_selected_action": [poison], "confirmed": "yes", "reason": "x"}
    )
    assert attempt.status_code in (200, 302)
    assert BillingEntry.objects.get(pk=poison).state == EntryState.FINALIZE_FAILED


@pytest.mark.django_db
def test_finance_finalizes_a_poison_entry_from_the_dead_letter_list(make_account, now) -> None:
    customer = make_account(10_000)
    poison = entry_in_state(EntryState.FINALIZE_FAILED, account_id=customer.pk, now=now)
    entry_in_state(EntryState.COMMITTED, account_id=customer.pk, now=now)
    client = _user("fin", finance=True)
    listing = client.get("/admin/billing/finalizedeadletter/")
    assert listing.status_code == 200
    assert poison.encode() in listing.content
    assert listing.content.count(b'class="action-select"') == 1  # only the poison entry
    client.post(
        "/admin/billing/finalizedeadletter/",
        {"action": "finalize_by_hand", "_selected_action": [poison], "confirmed": "yes", "reason": "paid by wire"},
    )
    assert BillingEntry.objects.get(pk=poison).state == EntryState.FINALIZE_ACKED
    assert AuditEvent.objects.filter(billing_entry_id=poison, reason="paid by wire").exists()


@pytest.mark.django_db
def test_the_entries_changelist_query_count_does_not_grow_with_rows(make_account, now) -> None:
    customer = make_account(10**9)
    client = _user("fin", finance=True)
    counts = []
    for batch in (5, 60):
        for _ in range(batch):
            entry_in_state(EntryState.COMMITTED, account_id=customer.pk, now=now, estimate=10, actual=5)
        with CaptureQueriesContext(connection) as queries:
            assert client.get(CHANGELIST).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]
    assert counts[1] == PINNED_CHANGELIST_QUERIES, counts
