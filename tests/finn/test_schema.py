"""The OpenAPI schema is valid and complete (every endpoint annotated)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

ROOT = Path(__file__).resolve().parents[2]


def test_spectacular_validates_without_warnings(tmp_path: Path) -> None:
    # when
    completed = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yml")],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "finn.settings_test"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    # then
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "/api/v1/billing/entries" in (tmp_path / "s.yml").read_text()


@pytest.mark.django_db
def test_schema_and_docs_are_served() -> None:
    # when
    schema = Client().get("/api/schema/")
    docs = Client().get("/api/docs/")
    # then
    assert schema.status_code == 200
    assert docs.status_code == 200


def test_models_and_migrations_agree() -> None:
    # when
    completed = subprocess.run(
        [sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "finn.settings_test"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    # then
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.django_db
def test_every_operation_documents_the_refusals_every_route_can_give() -> None:
    # when
    schema = Client().get("/api/schema/?format=json").json()
    # then: what the shared machinery answers is in the schema of each operation
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            statuses = set(operation["responses"])
            assert {"400", "429", "503"} <= statuses, (method, path, statuses)
            if any(requirement for requirement in operation.get("security", [])):
                assert "401" in statuses, (method, path)
            if "requestBody" in operation:
                assert "413" in statuses, (method, path)
    commit = schema["paths"]["/api/v1/billing/entries/{entry_id}/commit"]["post"]
    entry_id = next(p for p in commit["parameters"] if p["in"] == "path")
    assert entry_id["schema"]["pattern"].startswith("^[0-7]")
