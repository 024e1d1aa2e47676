"""A stolen finance password alone cannot move money: TOTP before every money/policy action,
lockout after failed sign-ins (also with Redis down), audit rows naming actor, IP and factor."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.test import Client, override_settings

from billing.models import Account, BillingEntry
from billing.states import EntryState
from finn.audit_chain import audit_chain, audit_verify
from finn.models import AuditEvent, FeatureFlag
from tests.billing.helpers import entry_in_state
from tests.faults.servers import ThrowawayRedis
from tests.second_factor import current_token, totp_device, verify_second_factor
from webhooks.models import WebhookEvent

CHANGELIST = "/admin/billing/billingentry/"


def _finance(name: str = "fin") -> tuple[User, Client]:
    user = User.objects.create_user(name, password="finance-pass-1", is_staff=True)
    user.groups.add(Group.objects.get(name="Finance"))
    client = Client()
    client.force_login(user)
    return user, client


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["void_entries", "finalize_by_hand", "replay_selected", "replay_poison"])
def test_entry_actions_without_the_second_factor_are_refused_and_change_nothing(action, make_account, now) -> None:
    customer = make_account(10_000)
    poison = entry_in_state(EntryState.FINALIZE_FAILED, account_id=customer.pk, now=now, actual=600)
    _, client = _finance()
    audits = AuditEvent.objects.count()
    selected = {"action": action, "_selected_action": [poison]}
    for form in (selected, {**selected, "confirmed": "yes", "reason": "stolen password"}):
        response = client.post(CHANGELIST, form)
        assert response.status_code == 403
        assert b"second factor" in response.content
        assert b"/admin/second-factor/?next=" in response.content
    assert BillingEntry.objects.get(pk=poison).state == EntryState.FINALIZE_FAILED
    assert Account.objects.get(pk=customer.pk).available == 10_000 - 600
    assert AuditEvent.objects.count() == audits


@pytest.mark.django_db
def test_webhook_replay_flag_and_key_edits_need_the_second_factor() -> None:
    root = User.objects.create_superuser("root", password="root-pass-1")
    client = Client()
    client.force_login(root)
    event = WebhookEvent.objects.create(
        provider="paddle",
        provider_event_id="evt_1",
        event_type="x",
        raw_type="x",
        payload={},
        status="dead",
        occurred_at="2026-01-01T00:00:00Z",
        received_at="2026-01-01T00:00:00Z",
    )
    replay = client.post("/admin/webhooks/webhookevent/", {"action": "replay_events", "_selected_action": [event.pk]})
    assert replay.status_code == 403
    assert WebhookEvent.objects.get(pk=event.pk).status == "dead"
    flag = FeatureFlag.objects.create(name="x402", enabled=False, updated_at="2026-01-01T00:00:00Z")
    assert (
        client.post(f"/admin/finn/featureflag/{flag.pk}/change/", {"name": "x402", "enabled": "on"}).status_code == 403
    )
    assert FeatureFlag.objects.get(pk=flag.pk).enabled is False
    assert client.post("/admin/finn/betaallowlistentry/add/", {"address": "0x" + "ab" * 20}).status_code == 403
    assert client.post("/admin/credits/apikey/add/", {"account": 1, "name": "x"}).status_code == 403
    # verified, the same replay goes through and is audited with actor, IP, reason and factor
    verify_second_factor(client, root)
    selected = {"action": "replay_events", "_selected_action": [event.pk], "confirmed": "yes", "reason": "fixed"}
    assert client.post("/admin/webhooks/webhookevent/", selected).status_code == 302
    assert WebhookEvent.objects.get(pk=event.pk).status == "pending"
    audit = AuditEvent.objects.get(event_type="webhook_replay")
    assert (audit.actor, audit.reason) == ("root", "fixed")
    assert audit.payload["by"] == {"actor": "root", "ip": "127.0.0.1", "second_factor": "totp"}


@pytest.mark.django_db
def test_the_void_is_audited_with_actor_ip_and_factor_and_the_log_verifies(make_account, now) -> None:
    customer = make_account(10_000)
    poison = entry_in_state(EntryState.FINALIZE_FAILED, account_id=customer.pk, now=now, actual=600)
    user, client = _finance()
    verify_second_factor(client, user)
    form = {"action": "void_entries", "_selected_action": [poison], "confirmed": "yes", "reason": "dispute #7"}
    assert client.post(CHANGELIST, form, REMOTE_ADDR="203.0.113.9").status_code == 302
    assert BillingEntry.objects.get(pk=poison).state == EntryState.VOIDED
    audit = AuditEvent.objects.get(event_type="billing_void", billing_entry_id=poison)
    assert (audit.actor, audit.reason) == ("fin", "dispute #7")
    assert audit.payload["by"] == {"actor": "fin", "ip": "203.0.113.9", "second_factor": "totp"}
    audit_chain(lag_seconds=0)
    assert audit_verify().ok  # the "by" block is inside the CRC and the chain


@pytest.mark.django_db
def test_permission_is_rechecked_on_the_confirming_post(make_account, now) -> None:
    customer = make_account(10_000)
    poison = entry_in_state(EntryState.FINALIZE_FAILED, account_id=customer.pk, now=now, actual=600)
    user, client = _finance()
    verify_second_factor(client, user)
    selected = {"action": "void_entries", "_selected_action": [poison]}
    assert client.post(CHANGELIST, selected).status_code == 200  # the confirmation page
    user.groups.clear()  # the permission is withdrawn while the page is open
    user.user_permissions.add(*Group.objects.get(name="Finance").permissions.filter(codename__startswith="view_"))
    client.post(CHANGELIST, {**selected, "confirmed": "yes", "reason": "late"})
    assert BillingEntry.objects.get(pk=poison).state == EntryState.FINALIZE_FAILED


@pytest.mark.django_db
def test_the_token_form_verifies_throttles_wrong_codes_and_refuses_foreign_redirects() -> None:
    user, client = _finance()
    none = client.get("/admin/second-factor/")
    assert b"No authenticator is enrolled" in none.content
    device = totp_device(user)
    wrong = client.post("/admin/second-factor/", {"otp_token": "000000" if current_token(device) != "000000" else "1"})
    assert wrong.status_code == 400
    assert client.post("/admin/second-factor/", {"otp_token": "x" * 10_000}).status_code == 400
    # after failures django-otp throttles the device: even the right code waits (stored in Postgres)
    device.refresh_from_db()
    assert device.throttling_failure_count >= 1
    throttled = client.post("/admin/second-factor/", {"otp_token": current_token(device)})
    assert throttled.status_code == 400
    device.throttle_reset()
    ok = client.post("/admin/second-factor/", {"otp_token": current_token(device), "next": "https://evil.example/"})
    assert (ok.status_code, ok["Location"]) == (302, "/admin/")
    assert b"This login is verified" in client.get("/admin/second-factor/").content


def _login(client: Client, username: str, password: str, ip: str = "198.51.100.1") -> int:
    form = {"username": username, "password": password, "next": "/admin/"}
    return client.post("/admin/login/", form, REMOTE_ADDR=ip).status_code


def _lockout_holds() -> None:
    User.objects.create_user("fin", password="finance-pass-1", is_staff=True)
    for _ in range(4):
        assert _login(Client(), "fin", "guess") == 200  # the form again, with an error
    assert _login(Client(), "fin", "guess") == 429  # the fifth failure locks
    assert _login(Client(), "fin", "finance-pass-1") == 429  # locked: the right password too
    assert _login(Client(), "fin", "finance-pass-1", ip="192.0.2.7") == 429  # the username, from elsewhere
    assert _login(Client(), "other", "x", ip="198.51.100.1") == 429  # and the address, for any username


@pytest.mark.django_db
def test_sign_in_locks_out_after_five_failures() -> None:
    _lockout_holds()


@pytest.mark.django_db
def test_lockout_keeps_working_with_redis_down() -> None:
    server = ThrowawayRedis()
    server.start()
    cache = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": server.url}}
    try:
        with override_settings(REDIS_URL=server.url, CACHES=cache):
            server.stop()  # Redis is down for the whole sign-in sequence
            _lockout_holds()
    finally:
        server.stop()


@pytest.mark.django_db
def test_an_operator_enrolls_a_device_out_of_band(capsys) -> None:
    user, _ = _finance()
    call_command("finn_otp_enroll", "fin", "--no-qr")
    out = capsys.readouterr().out
    assert "otpauth://totp/finn%3Afin?secret=" in out or "otpauth://totp/finn:fin?secret=" in out
    with pytest.raises(CommandError, match="already has an authenticator"):
        call_command("finn_otp_enroll", "fin", "--no-qr")
    call_command("finn_otp_enroll", "fin", "--reset")
    assert user.totpdevice_set.count() == 1
    assert AuditEvent.objects.filter(event_type="second_factor_enrolled").count() == 2
