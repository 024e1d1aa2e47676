"""Finance staff create API keys in the admin; the secret is shown once."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from credits.api_keys import api_key_hash
from credits.models import ApiKey
from tests.second_factor import verified_client


@pytest.mark.django_db
def test_admin_creates_a_key_and_shows_it_once(make_account) -> None:
    # given
    funded = make_account(1_000)
    admin_user = get_user_model().objects.create_superuser("root-admin", "a@example.com", "pw")
    client = verified_client(admin_user)
    # when
    response = client.post("/admin/credits/apikey/add/", {"account": funded.pk, "name": "ci"}, follow=True)
    # then
    secret = re.search(r"(finn_[A-Za-z0-9_-]{20,})", response.content.decode()).group(1)  # type: ignore[union-attr]
    created = ApiKey.objects.get(name="ci")
    assert created.key_hash == api_key_hash(secret)
    assert secret not in str(ApiKey.objects.values_list().filter(pk=created.pk).first())
    balance = Client().get("/api/v1/accounts/me/balance", headers={"Authorization": f"Bearer {secret}"})
    assert balance.json()["balance"]["available"] == 1_000
    page = client.get(f"/admin/credits/apikey/{created.pk}/change/").content.decode()
    assert secret not in page


@pytest.mark.django_db
def test_ledger_admin_pages_are_read_only(make_account) -> None:
    # given
    make_account(1_000)
    admin_user = get_user_model().objects.create_superuser("root-admin", "a@example.com", "pw")
    client = Client()
    client.force_login(admin_user)
    # when / then
    for model in ("account", "billingentry", "journalentry"):
        assert client.get(f"/admin/billing/{model}/").status_code == 200
        assert client.get(f"/admin/billing/{model}/add/").status_code == 403
    assert client.get("/admin/finn/auditevent/").status_code == 200


@pytest.mark.django_db
def test_admin_void_asks_for_a_reason_then_voids(make_account, now) -> None:
    # given
    from billing.models import BillingEntry
    from billing.states import EntryState
    from tests.billing.helpers import entry_in_state

    funded = make_account(10_000)
    entry_id = entry_in_state(EntryState.COMMITTED, account_id=funded.pk, now=now)
    admin_user = get_user_model().objects.create_superuser("fin", "f@example.com", "pw")
    client = verified_client(admin_user)
    url = "/admin/billing/billingentry/"
    # when
    confirm = client.post(url, {"action": "void_entries", "_selected_action": [entry_id]})
    no_reason = client.post(url, {"action": "void_entries", "_selected_action": [entry_id], "confirmed": "yes"})
    done = client.post(
        url,
        {"action": "void_entries", "_selected_action": [entry_id], "confirmed": "yes", "reason": "dup"},
        follow=True,
    )
    # then
    assert "Reason (required" in confirm.content.decode()
    assert "A reason is required." in no_reason.content.decode()
    assert BillingEntry.objects.get(pk=entry_id).state == EntryState.VOIDED
    assert BillingEntry.objects.get(pk=entry_id).voided_by == "fin"
    assert "1 entry done." in done.content.decode()
