"""Feature flags and the beta allowlist: Postgres rows, cached in Redis, edited in the admin."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from django.utils import timezone

from finn.flags import allowlisted, feature_enabled, feature_flag_set
from finn.models import AuditEvent, FeatureFlag
from finn.redis import get_redis
from tests.second_factor import verified_client


@pytest.mark.django_db
def test_defaults_without_rows_and_x402_needs_its_treasury() -> None:
    assert feature_enabled("onboarding") is True
    assert feature_enabled("x402_public") is False
    with override_settings(FEATURE_X402=True, X402_PAY_TO=""):
        get_redis().delete("finn:flag:x402")
        assert feature_enabled("x402") is False
    with pytest.raises(KeyError):
        feature_enabled("nope")


@pytest.mark.django_db
def test_a_flag_change_is_stored_audited_and_seen_at_once() -> None:
    assert feature_enabled("nft") is True  # now cached
    feature_flag_set(name="nft", enabled=False, actor="ops", now=timezone.now())
    assert feature_enabled("nft") is False
    assert FeatureFlag.objects.get(name="nft").enabled is False
    assert AuditEvent.objects.get(event_type="feature_flag_set").actor == "ops"


@pytest.mark.django_db
def test_redis_down_reads_the_database() -> None:
    feature_flag_set(name="credits", enabled=False, actor="ops", now=timezone.now())
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        assert feature_enabled("credits") is False


@pytest.mark.django_db
def test_admin_edits_flags_and_the_allowlist_through_the_services() -> None:
    admin = User.objects.create_superuser("root", password="pw")
    client = verified_client(admin)
    wallet = "0x" + "AB" * 20
    assert allowlisted(wallet) is False  # cached "no"
    response = client.post("/admin/finn/betaallowlistentry/add/", {"address": wallet.lower(), "note": "friend"})
    assert response.status_code == 302
    assert allowlisted(wallet) is True
    client.post("/admin/finn/featureflag/add/", {"name": "x402_public", "enabled": "on"})
    assert feature_enabled("x402_public") is True
    assert (
        AuditEvent.objects.filter(event_type__in=["beta_allowlist_add", "feature_flag_set"], actor="root").count() == 2
    )
    with override_settings(BETA_BYPASS_ADDRESSES=["0x" + "cd" * 20]):
        assert allowlisted("0x" + "CD" * 20) is True
