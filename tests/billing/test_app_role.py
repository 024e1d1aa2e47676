"""The running app's database role can append to the journal and the audit log but never rewrite them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.backends.signals import connection_created
from django.db.utils import ProgrammingError
from django.test import Client, override_settings
from django.utils import timezone

from billing import services
from billing.models import Account, BillingEntry
from billing.states import EntryState
from finn.audit_chain import audit_chain
from finn.idempotency import idempotency_key_cleanup
from tests.conftest import post_json


def _as_app_role(sender: Any, connection: Any, **kwargs: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SET ROLE {settings.DATABASE_APP_ROLE}")


@pytest.fixture
def app_role() -> Iterator[None]:
    """Every query of this test runs as the app role (including connections opened meanwhile)."""
    connection.ensure_connection()
    _as_app_role(None, connection)
    connection_created.connect(_as_app_role)
    try:
        yield
    finally:
        connection_created.disconnect(_as_app_role)
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE billing_posting SET delta = delta",
        "DELETE FROM billing_posting",
        "UPDATE billing_journalentry SET event_type = event_type",
        "DELETE FROM billing_journalentry",
        "UPDATE finn_auditevent SET reason = reason",
        "DELETE FROM finn_auditevent",
        "TRUNCATE finn_auditevent",
    ],
)
def test_the_app_role_cannot_rewrite_history(app_role: None, statement: str) -> None:
    with pytest.raises(ProgrammingError) as refused, connection.cursor() as cursor:
        cursor.execute(statement)
    assert isinstance(refused.value.__cause__, psycopg.errors.InsufficientPrivilege)


@pytest.mark.django_db(transaction=True)
def test_every_money_flow_works_as_the_app_role(app_role: None, make_account, now) -> None:
    # accounts, minting, API keys
    customer = make_account(100_000_000)
    staff = make_account(0, staff=True)
    client = customer.client()
    # reserve → commit, reserve → release, with an idempotent replay
    reserved = post_json(client, "/api/v1/billing/entries", {"estimated_cost": 10_000}, **{"Idempotency-Key": "k1"})
    assert reserved.status_code == 201, reserved.content
    entry = reserved.json()["entry"]["id"]
    assert (
        post_json(
            client, "/api/v1/billing/entries", {"estimated_cost": 10_000}, **{"Idempotency-Key": "k1"}
        ).status_code
        == 201
    )
    assert post_json(client, f"/api/v1/billing/entries/{entry}/commit", {"actual_cost": 4_000}).status_code == 200
    other = post_json(client, "/api/v1/billing/entries", {"estimated_cost": 5_000}).json()["entry"]["id"]
    assert post_json(client, f"/api/v1/billing/entries/{other}/release", {"reason": "user_cancel"}).status_code == 200
    # finance: void, finalize by hand
    assert post_json(staff.client(), f"/api/v1/billing/entries/{entry}/void", {"reason": "refund"}).status_code == 200
    with override_settings(FINALIZE_URL="http://127.0.0.1:9/finalize"):
        poison = services.entry_reserve(
            account_id=customer.pk, estimated_cost=100, correlation_id="p", now=now
        ).entry.id
        services.entry_commit(entry_id=poison, actual_cost=50, now=now)
        services.entry_finalize_fail(entry_id=poison, attempt=5, reason="test", now=now)
        assert (
            post_json(staff.client(), f"/api/v1/billing/entries/{poison}/finalize", {"reason": "wired"}).status_code
            == 200
        )
    # boosts from credit, hold expiry, the audit chain, cleanups
    boost = post_json(client, "/api/v1/billing/boosts", {"member_id": "m", "community_id": "c", "months": 1})
    assert boost.status_code == 201, boost.content
    services.entry_reserve(account_id=customer.pk, estimated_cost=100, correlation_id="x", ttl_seconds=1, now=now)
    assert services.holds_expire(now=now + timezone.timedelta(seconds=5)) == 1
    assert audit_chain(lag_seconds=0) > 0
    idempotency_key_cleanup(now=now + timezone.timedelta(days=2))
    assert Client().get("/api/v1/accounts/me/balance").status_code == 401
    assert client.get("/api/v1/accounts/me/balance").status_code == 200
    assert BillingEntry.objects.filter(state=EntryState.VOIDED).count() == 1


def _committed(sql: str, params: list[object] | None = None) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params or [])


@pytest.mark.django_db(transaction=True)
def test_the_app_role_cannot_mint_credit_by_editing_a_balance_row(app_role: None, make_account) -> None:
    # given
    funded = make_account(1_000_000)
    # when: a compromised app role adds a dollar to its balance, without postings
    with pytest.raises(IntegrityError, match="billing_account_balance_follows_postings"):
        _committed("UPDATE billing_account SET available = available + 1000000 WHERE id = %s", [funded.pk])
    # or moves the posted sums along, or starts an account with money, or steps out of the check
    with pytest.raises(ProgrammingError) as denied:
        _committed(
            "UPDATE billing_account SET available = available + 1, posted_available = posted_available + 1"
            " WHERE id = %s",
            [funded.pk],
        )
    with pytest.raises(IntegrityError, match="billing_account_balance_follows_postings"):
        _committed(
            "INSERT INTO billing_account (kind, name, available, held, credit_limit, allow_overcapture,"
            " reserves_frozen, version, created_at) VALUES ('user', 'x', 1000000, 0, 0, false, false, 0, now())"
        )
    with (
        pytest.raises(IntegrityError, match="billing_account_balance_follows_postings"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        # forging the hot-path functions' mark: the posted sums stay where they are
        cursor.execute("SELECT set_config('finn.posted_by', 'hot_path', true)")
        cursor.execute("UPDATE billing_account SET available = available + 5 WHERE id = %s", [funded.pk])
    with pytest.raises(IntegrityError, match="billing_account_kind_immutable"):
        _committed("UPDATE billing_account SET kind = 'system', available = 5 WHERE id = %s", [funded.pk])
    # then: nothing changed
    assert isinstance(denied.value.__cause__, psycopg.errors.InsufficientPrivilege)
    assert Account.objects.get(pk=funded.pk).available == 1_000_000
