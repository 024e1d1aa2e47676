"""Prices frozen at reserve: versioned prices, reserve by model and tokens, commit by usage at the reserved version."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, transaction

from billing.models import BillingEntry, Posting
from billing.services.ledger import SYSTEM_REVENUE, system_account_id
from credits.models import ModelPriceVersion
from credits.pricing import model_price, model_price_set
from finn import clock
from finn.audit_chain import audit_verify
from finn.errors import InvalidRequest
from finn.models import AuditEvent
from tests.conftest import post_json, run_threads
from tests.second_factor import verified_client

RESERVE = "/api/v1/billing/entries"
SONNET = {"model": "claude-sonnet-4", "input_tokens": 1000, "max_output_tokens": 500}


def _commit(client, entry_id: str, body: dict):
    return post_json(client, f"{RESERVE}/{entry_id}/commit", body)


def _revenue_of(entry_id: str) -> int:
    revenue = system_account_id(SYSTEM_REVENUE)
    return sum(
        Posting.objects.filter(journal_entry__billing_entry_id=entry_id, account_id=revenue).values_list(
            "delta", flat=True
        )
    )


@pytest.mark.django_db
def test_a_metered_reserve_holds_the_rounded_up_price_and_records_its_version(make_account) -> None:
    # given: sonnet at 3 / 15 µUSD per token (seeded)
    funded = make_account(1_000_000)
    version = ModelPriceVersion.objects.get(model="claude-sonnet-4")
    # when
    response = post_json(funded.client(), RESERVE, SONNET)
    # then: 1000 x 3 + 500 x 15
    assert response.status_code == 201, response.content
    entry = response.json()["entry"]
    assert (entry["estimated_cost"], entry["model"], entry["price_version"]) == (10_500, "claude-sonnet-4", version.pk)
    assert entry["usage"] is None
    row = AuditEvent.objects.get(billing_entry_id=entry["id"], event_type="billing_reserve")
    assert row.payload["price_version"] == str(version.pk)
    assert row.payload["reserved_tokens"] == {"input_tokens": 1000, "max_output_tokens": 500}


@pytest.mark.django_db
def test_commit_by_usage_charges_at_the_reserved_version_after_the_price_changed(make_account) -> None:
    # given: a hold at the old price, then sonnet's price triples
    funded = make_account(1_000_000)
    old = ModelPriceVersion.objects.get(model="claude-sonnet-4")
    held = post_json(funded.client(), RESERVE, SONNET).json()["entry"]
    new = model_price_set(
        model="claude-sonnet-4", input_per_million=9_000_000, output_per_million=45_000_000,
        actor="finance@example.com", reason="upstream price change", now=clock.now(),
    )  # fmt: skip
    # when: the first request commits its usage; a second request reserves after the change
    committed = _commit(funded.client(), held["id"], {"usage": {"input_tokens": 800, "output_tokens": 333}})
    later = post_json(funded.client(), RESERVE, SONNET).json()["entry"]
    # then: 800 x 3 + 333 x 15 at the old version; the later hold is at the new one
    assert committed.status_code == 200, committed.content
    body = committed.json()["entry"]
    assert (body["actual_cost"], body["price_version"]) == (800 * 3 + 333 * 15, old.pk)
    assert body["usage"] == {"input_tokens": 800, "output_tokens": 333}
    assert _revenue_of(held["id"]) == 7_395
    assert (later["price_version"], later["estimated_cost"]) == (new.version, 31_500)
    row = AuditEvent.objects.get(billing_entry_id=held["id"], event_type="billing_commit")
    assert row.payload["usage"] == {"input_tokens": 800, "output_tokens": 333}
    assert row.payload["price_version"] == str(old.pk)
    assert audit_verify().ok


@pytest.mark.django_db
def test_the_charge_rounds_each_side_down_and_the_hold_each_side_up(make_account) -> None:
    # given: gpt-4.1-mini at 0.4 / 1.6 µUSD per token
    funded = make_account(1_000_000)
    # when
    held = post_json(funded.client(), RESERVE, {"model": "gpt-4.1-mini", "input_tokens": 3, "max_output_tokens": 3})
    charged = _commit(funded.client(), held.json()["entry"]["id"], {"usage": {"input_tokens": 3, "output_tokens": 1}})
    # then: hold ⌈1.2⌉ + ⌈4.8⌉ = 2 + 5; charge ⌊1.2⌋ + ⌊1.6⌋ = 1 + 1
    assert held.json()["entry"]["estimated_cost"] == 7
    assert charged.json()["entry"]["actual_cost"] == 2
    assert charged.json()["balance"]["available"] == 1_000_000 - 2


@pytest.mark.django_db
def test_usage_above_the_hold_is_refused_like_any_overcapture(make_account) -> None:
    funded = make_account(1_000_000)
    held = post_json(funded.client(), RESERVE, SONNET).json()["entry"]
    # when: more output than reserved
    response = _commit(funded.client(), held["id"], {"usage": {"input_tokens": 1000, "output_tokens": 501}})
    # then
    assert response.status_code == 409
    assert response.json()["code"] == "exceeds_hold"
    assert BillingEntry.objects.get(pk=held["id"]).state == "RESERVE_HELD"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"model": "claude-sonnet-4", "input_tokens": 1}, "invalid_request"),
        (
            {"estimated_cost": 5, "model": "claude-sonnet-4", "input_tokens": 1, "max_output_tokens": 1},
            "invalid_request",
        ),
        ({"model": "gpt-9", "input_tokens": 1, "max_output_tokens": 1}, "unknown_model"),
        ({"model": "claude-sonnet-4", "input_tokens": -1, "max_output_tokens": 1}, "invalid_request"),
        ({"model": "claude-sonnet-4", "input_tokens": 1, "max_output_tokens": 10**12}, "invalid_request"),
        ({"model": 7, "input_tokens": 1, "max_output_tokens": 1}, "invalid_request"),
    ],
)
def test_bad_metered_reserves_are_a_400_and_hold_nothing(make_account, body: dict, code: str) -> None:
    funded = make_account(1_000_000)
    response = post_json(funded.client(), RESERVE, body)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    assert not BillingEntry.objects.filter(account_id=funded.pk).exists()


@pytest.mark.django_db
def test_commit_by_usage_needs_a_metered_entry_and_exactly_one_form(make_account) -> None:
    funded = make_account(1_000_000)
    raw = post_json(funded.client(), RESERVE, {"estimated_cost": 1_000}).json()["entry"]
    metered = post_json(funded.client(), RESERVE, SONNET).json()["entry"]
    # when
    not_metered = _commit(funded.client(), raw["id"], {"usage": {"input_tokens": 1, "output_tokens": 1}})
    both = _commit(funded.client(), metered["id"], {"actual_cost": 5, "usage": {"input_tokens": 1, "output_tokens": 1}})
    neither = _commit(funded.client(), metered["id"], {})
    bad_usage = _commit(funded.client(), metered["id"], {"usage": {"input_tokens": "1", "output_tokens": 1}})
    someone_elses = _commit(make_account(0).client(), metered["id"], {"usage": {"input_tokens": 1, "output_tokens": 1}})
    # then
    assert (not_metered.status_code, not_metered.json()["code"]) == (409, "not_metered")
    assert [r.status_code for r in (both, neither, bad_usage)] == [400, 400, 400]
    assert someone_elses.status_code == 404
    assert set(BillingEntry.objects.filter(account_id=funded.pk).values_list("state", flat=True)) == {"RESERVE_HELD"}
    # a metered entry may still be committed by a raw actual cost (the gateway priced it itself)
    assert _commit(funded.client(), metered["id"], {"actual_cost": 10}).json()["entry"]["usage"] is None


@pytest.mark.django_db
def test_price_changes_are_audited_never_retroactive_and_versions_are_never_edited(now) -> None:
    # when
    with pytest.raises(InvalidRequest) as past:
        model_price_set(
            model="gpt-4.1", input_per_million=1, output_per_million=1, actor="a", reason="r",
            now=now, effective_from=now - timedelta(seconds=1),
        )  # fmt: skip
    with pytest.raises(InvalidRequest) as no_reason:
        model_price_set(model="gpt-4.1", input_per_million=1, output_per_million=1, actor="a", reason=" ", now=now)
    future = model_price_set(
        model="gpt-4.1", input_per_million=1_000_000, output_per_million=2_000_000, actor="finance", reason="cut",
        now=now, effective_from=now + timedelta(hours=1),
    )  # fmt: skip
    # then
    assert getattr(past.value, "extra", {}).get("reason") == "retroactive_price"
    assert getattr(no_reason.value, "extra", {}).get("reason") == "reason_required"
    assert model_price("gpt-4.1", now).input_per_million == 2_000_000  # the cut is not in effect yet
    assert model_price("gpt-4.1", now + timedelta(hours=2)).version == future.version
    row = AuditEvent.objects.get(event_type="credits_model_price_set")
    assert (row.actor, row.reason, row.payload["input_per_million"]) == ("finance", "cut", "1000000")
    for sql in ("UPDATE credits_modelpriceversion SET input_per_million = 0", "DELETE FROM credits_modelpriceversion"):
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)


@pytest.mark.django_db
def test_finance_staff_set_a_price_in_the_admin_through_the_audited_service() -> None:
    # given
    admin_user = get_user_model().objects.create_superuser("price-admin", "p@example.com", "pw")
    client = verified_client(admin_user)
    form = {"model": "new-model", "input_per_million": 2_500_000, "output_per_million": 10_000_000}
    # when
    refused = client.post("/admin/credits/modelpriceversion/add/", {**form, "reason": ""})
    past = client.post(
        "/admin/credits/modelpriceversion/add/",
        {**form, "reason": "launch", "effective_from": "2001-01-01 00:00:00"},
    )
    added = client.post("/admin/credits/modelpriceversion/add/", {**form, "reason": "launch"})
    # then
    assert refused.status_code == past.status_code == 200  # the form again, with its errors
    assert b"cannot take effect in the past" in past.content
    assert added.status_code == 302, added.content[:2000]
    version = ModelPriceVersion.objects.get(model="new-model")
    assert (version.created_by, version.reason, version.input_per_million) == ("price-admin", "launch", 2_500_000)
    audit = AuditEvent.objects.get(event_type="credits_model_price_set")
    assert (audit.actor, audit.payload["model"]) == ("price-admin", "new-model")
    page = client.get(f"/admin/credits/modelpriceversion/{version.pk}/change/")
    assert page.status_code == 200
    assert b'name="input_per_million"' not in page.content  # read-only


@pytest.mark.django_db(transaction=True)
def test_reserves_racing_a_price_change_each_charge_at_the_version_they_recorded(make_account) -> None:
    # given: 24 gateways; half reserve before finance changes sonnet's price, half after, and every
    # commit (the same usage) comes after the change, racing the other reserves
    funded = make_account(100_000_000)
    old = ModelPriceVersion.objects.get(model="claude-sonnet-4")
    usage = {"input_tokens": 700, "output_tokens": 400}
    before, changed = threading.Barrier(13), threading.Barrier(25)

    def work(index: int) -> tuple[int, int]:
        if index == 0:
            before.wait(timeout=30)  # the first twelve holds exist
            model_price_set(
                model="claude-sonnet-4", input_per_million=6_000_000, output_per_million=30_000_000,
                actor="finance", reason="race", now=clock.now(),
            )  # fmt: skip
            changed.wait(timeout=30)
            return (0, 0)
        entry = None
        if index <= 12:
            entry = post_json(funded.client(), RESERVE, SONNET).json()["entry"]
            before.wait(timeout=30)
        changed.wait(timeout=30)
        if entry is None:
            entry = post_json(funded.client(), RESERVE, SONNET).json()["entry"]
        charged = _commit(funded.client(), entry["id"], {"usage": usage}).json()["entry"]
        return (charged["price_version"], charged["actual_cost"])

    # when
    results = run_threads(25, work)
    # then: twelve charged at the old price although the new one was in effect, twelve at the new one
    assert not [r for r in results if isinstance(r, BaseException)], results
    new = ModelPriceVersion.objects.exclude(pk=old.pk).get(model="claude-sonnet-4")
    charges = results[1:]
    assert sorted(charges) == sorted([(old.pk, 700 * 3 + 400 * 15)] * 12 + [(new.pk, 700 * 6 + 400 * 30)] * 12)
    entries = BillingEntry.objects.filter(account_id=funded.pk)
    assert all(e.estimated_cost == (10_500 if e.price_version == old.pk else 21_000) for e in entries)
    assert sum(e.actual_cost or 0 for e in entries) == sum(actual for _, actual in charges)
    funded.account.refresh_from_db()
    assert (funded.account.available, funded.account.held) == (100_000_000 - sum(a for _, a in charges), 0)
    assert audit_verify().ok
