"""Production settings: secrets from NAME or NAME_FILE, no defaults, `check --deploy` clean."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEY = ROOT / "tests" / "keys" / "jwt_es256_test.pem"


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JWT_", "SECRET_KEY", "DEBUG", "SECURE_", "DJANGO_ALLOW_ASYNC_UNSAFE"))
    }
    return subprocess.run(
        [sys.executable, *code.split(" ", 1)] if code.startswith("manage.py") else [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "finn.settings", **env},
        capture_output=True,
        text=True,
    )


def test_check_deploy_is_clean_with_the_production_settings() -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("JWT_", "SECRET_KEY", "DEBUG", "SECURE_", "DJANGO_ALLOW_ASYNC_UNSAFE"))
            },
            "DJANGO_SETTINGS_MODULE": "finn.settings",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "JWT_SIGNING_KEY_FILE": str(KEY),
        },
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_secrets_are_read_from_files_and_both_forms_at_once_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret_key"
    secret.write_text(secrets.token_urlsafe(50) + "\n")
    code = "import django; django.setup(); from django.conf import settings as s; print(len(s.SECRET_KEY))"
    ok = _run(code, SECRET_KEY_FILE=str(secret), JWT_SIGNING_KEY_FILE=str(KEY))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(len(secret.read_text().strip()))
    both = _run(code, SECRET_KEY="x" * 50, SECRET_KEY_FILE=str(secret), JWT_SIGNING_KEY_FILE=str(KEY))
    assert both.returncode != 0
    assert "set SECRET_KEY or SECRET_KEY_FILE, not both" in both.stderr
    missing = _run(code, JWT_SIGNING_KEY_FILE=str(KEY))
    assert "refusing to start: SECRET_KEY is not set" in missing.stderr
