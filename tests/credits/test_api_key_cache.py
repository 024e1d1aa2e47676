"""API key lookups: an in-process copy for seconds, Redis for 300 s, PostgreSQL when Redis is down."""

from __future__ import annotations

import time

import pytest
from django.test import override_settings

from credits.api_keys import FORGET_CHANNEL, api_key_cache_key, api_key_hash, api_key_lookup, api_key_revoke
from credits.models import ApiKey
from finn.redis import get_redis


@pytest.mark.django_db
def test_lookup_is_cached_then_served_from_redis(make_account, django_assert_num_queries) -> None:
    # given
    funded = make_account(1_000)
    client = funded.client()
    client.get("/api/v1/accounts/me/balance")
    # then: the cache holds it with a TTL of at most 300 s
    ttl = get_redis().ttl(api_key_cache_key(api_key_hash(funded.key)))
    assert 0 < ttl <= 300
    # when: the second request needs no key query (only the balance read)
    with django_assert_num_queries(1):
        response = client.get("/api/v1/accounts/me/balance")
    assert response.status_code == 200


@pytest.mark.django_db(transaction=True)
def test_revocation_clears_the_cache_at_once(make_account, now) -> None:
    # given
    funded = make_account(1_000)
    client = funded.client()
    assert client.get("/api/v1/accounts/me/balance").status_code == 200
    # when
    api_key_revoke(api_key=ApiKey.objects.get(account=funded.account), now=now)
    # then
    assert get_redis().get(api_key_cache_key(api_key_hash(funded.key))) is None
    assert client.get("/api/v1/accounts/me/balance").status_code == 401


@pytest.mark.django_db
def test_keys_work_from_the_database_when_redis_is_down(make_account) -> None:
    # given
    funded = make_account(1_000)
    # when
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        ok = funded.client().get("/api/v1/accounts/me/balance")
        bad = funded.client().get("/api/v1/accounts/me/balance", headers={"Authorization": "Bearer nope"})
    # then
    assert ok.status_code == 200
    assert bad.status_code == 401


@pytest.mark.django_db(transaction=True)
def test_the_in_process_copy_serves_a_key_without_redis_or_postgres(
    make_account, now, django_assert_num_queries
) -> None:
    # given: the in-process copy on, and one lookup that filled it
    funded = make_account(1_000)
    key_hash = api_key_hash(funded.key)
    with override_settings(API_KEY_LOCAL_CACHE_SECONDS=5):
        assert api_key_lookup(key_hash) is not None
        get_redis().delete(api_key_cache_key(key_hash))
        # when: neither Redis nor PostgreSQL has to answer
        with django_assert_num_queries(0):
            found = api_key_lookup(key_hash)
        # then
        assert found is not None
        assert found.account_id == funded.pk
        assert get_redis().get(api_key_cache_key(key_hash)) is None


@pytest.mark.django_db(transaction=True)
def test_a_key_revoked_on_another_process_stops_within_the_local_ttl(make_account, now) -> None:
    # given: this process holds a copy for 1 s
    funded = make_account(1_000)
    client = funded.client()
    with override_settings(API_KEY_LOCAL_CACHE_SECONDS=1):
        assert client.get("/api/v1/accounts/me/balance").status_code == 200
        # when: another process revokes it (its row and the shared cache; not this process's copy)
        ApiKey.objects.filter(account=funded.account).update(revoked_at=now)
        get_redis().delete(api_key_cache_key(api_key_hash(funded.key)))
        # then: still served from the copy, and refused once the copy expired
        assert client.get("/api/v1/accounts/me/balance").status_code == 200
        time.sleep(1.1)
        assert client.get("/api/v1/accounts/me/balance").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_revocation_on_this_process_drops_the_local_copy_at_once(make_account, now) -> None:
    funded = make_account(1_000)
    client = funded.client()
    with override_settings(API_KEY_LOCAL_CACHE_SECONDS=60):
        assert client.get("/api/v1/accounts/me/balance").status_code == 200
        api_key_revoke(api_key=ApiKey.objects.get(account=funded.account), now=now)
        assert client.get("/api/v1/accounts/me/balance").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_a_revocation_on_another_process_is_heard_at_once(make_account, now) -> None:
    # given: this process holds a copy for a minute and listens for revocations
    funded = make_account(1_000)
    client = funded.client()
    key_hash = api_key_hash(funded.key)
    with override_settings(API_KEY_LOCAL_CACHE_SECONDS=60):
        assert client.get("/api/v1/accounts/me/balance").status_code == 200
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and get_redis().pubsub_numsub(FORGET_CHANNEL)[0][1] < 1:
            time.sleep(0.02)
        # when: another process revokes it (its row, and the publication it sends)
        ApiKey.objects.filter(account=funded.account).update(revoked_at=now)
        get_redis().delete(api_key_cache_key(key_hash))
        get_redis().publish(FORGET_CHANNEL, key_hash)
        # then: refused well before the copy's minute is up
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and client.get("/api/v1/accounts/me/balance").status_code == 200:
            time.sleep(0.05)
        assert client.get("/api/v1/accounts/me/balance").status_code == 401
