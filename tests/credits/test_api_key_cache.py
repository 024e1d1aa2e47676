"""API key lookups: cached in Redis for 300 s, PostgreSQL when Redis is down."""

from __future__ import annotations

import pytest
from django.test import override_settings

from credits.api_keys import api_key_cache_key, api_key_hash, api_key_revoke
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
