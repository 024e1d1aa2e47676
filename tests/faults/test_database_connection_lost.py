"""A database connection that broke answers 503 (not 500), and the next request reconnects."""

from __future__ import annotations

import psycopg
import pytest
from django.db import close_old_connections, connection

from tests.conftest import post_json


@pytest.mark.django_db(transaction=True)
def test_a_killed_connection_is_503_then_the_next_request_reconnects(make_account) -> None:
    # given: the request's persistent connection, killed by the server (a restart, a failover)
    funded = make_account(10_000)
    client = funded.client()
    assert post_json(client, "/api/v1/billing/entries", {"estimated_cost": 10}).status_code == 201
    connection.ensure_connection()
    backend = connection.connection.info.backend_pid
    settings_dict = connection.settings_dict
    with psycopg.connect(
        host=settings_dict["HOST"],
        port=settings_dict["PORT"],
        user=settings_dict["USER"],
        dbname="postgres",
        autocommit=True,
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [backend])
    # when
    broken = post_json(client, "/api/v1/billing/entries", {"estimated_cost": 10})
    # What Django's handler runs at every request's end (request_finished); the test client
    # disconnects it, so it is called here: it drops the connection that saw the error.
    close_old_connections()
    after = post_json(client, "/api/v1/billing/entries", {"estimated_cost": 10})
    # then: no health-check query per request, yet no 500: 503 with Retry-After, then served again
    assert broken.status_code == 503, broken.content
    assert broken.json()["code"] == "database_unavailable"
    assert broken.headers["Retry-After"] == "1"
    assert after.status_code == 201
