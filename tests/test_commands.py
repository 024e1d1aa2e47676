"""Operator commands: seed_demo, create_account, ledger_check."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from billing.models import Account
from credits.api_keys import api_key_hash
from credits.models import ApiKey


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_seed_demo_is_idempotent_and_prints_the_same_key() -> None:
    # when
    first = json.loads(_run("seed_demo"))
    second = json.loads(_run("seed_demo"))
    # then
    assert first == second
    assert first["available"] == 100_000_000
    account = Account.objects.get(pk=first["account_id"])
    assert account.available == 100_000_000
    assert ApiKey.objects.filter(account=account).count() == 1
    assert ApiKey.objects.get(account=account).key_hash == api_key_hash(first["api_key"])


@pytest.mark.django_db
def test_create_account_prints_id_and_a_working_key(client) -> None:
    # when
    result = json.loads(
        _run("create_account", "--credit", "5000000", "--kind", "agent", "--credit-limit", "100", "--json")
    )
    # then
    account = Account.objects.get(pk=result["account_id"])
    assert (account.kind, account.available, account.credit_limit) == ("agent", 5_000_000, 100)
    response = client.get("/api/v1/accounts/me/balance", headers={"Authorization": f"Bearer {result['api_key']}"})
    assert response.json()["balance"]["available"] == 5_000_000
    assert not ApiKey.objects.filter(key_hash=result["api_key"]).exists()  # only the hash is stored


@pytest.mark.django_db
def test_ledger_check_passes_on_a_sound_ledger() -> None:
    # given
    _run("seed_demo")
    # when
    output = _run("ledger_check")
    # then
    assert "checked 1 journal entries, 2 postings, 1 balance rows" in output
    assert output.strip().endswith("ledger OK")


@pytest.mark.django_db
def test_ledger_check_fails_when_a_balance_row_drifts() -> None:
    # given
    account_id = json.loads(_run("seed_demo"))["account_id"]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_account SET available = available + 1 WHERE id = %s", [account_id])
    out = io.StringIO()
    # when
    with pytest.raises(CommandError) as info:
        call_command("ledger_check", stdout=out)
    # then
    assert info.value.returncode == 1
    assert f"MISMATCH account {account_id} available: row 100000001, postings 100000000" in out.getvalue()
    with connection.cursor() as cursor:  # undo, so the autouse ledger check passes
        cursor.execute("UPDATE billing_account SET available = available - 1 WHERE id = %s", [account_id])
