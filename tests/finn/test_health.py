"""/health checks PostgreSQL and Redis for real; each down gives a 503."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client, override_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_health_is_ok_when_both_answer() -> None:
    # when
    response = Client().get("/health")
    # then
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


@pytest.mark.django_db
@override_settings(REDIS_URL="redis://127.0.0.1:1/0")
def test_health_is_503_when_redis_is_down() -> None:
    # when (port 1 is closed: nothing listens there)
    response = Client().get("/health")
    # then
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"database": "ok", "redis": "down"}}


def test_health_is_503_when_postgres_is_down() -> None:
    # given: a process whose DATABASE_URL points at a closed port
    script = (
        "import django, json; django.setup();"
        "from django.test import Client;"
        "r = Client().get('/health');"
        "print(json.dumps({'status': r.status_code, 'body': r.json()}))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "finn.settings_test",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:1/finn",
    }
    # when
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    # then
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result == {"status": 503, "body": {"status": "unavailable", "checks": {"database": "down", "redis": "ok"}}}
