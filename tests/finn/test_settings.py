"""Settings come from the environment; a missing secret stops startup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _check(env_overrides: dict[str, str], drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in drop and k != "DJANGO_SETTINGS_MODULE"}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_refuses_to_start_without_secret_key_when_debug_is_off() -> None:
    # when
    completed = _check({"DEBUG": "false"}, drop=("SECRET_KEY",))
    # then
    assert completed.returncode != 0
    assert completed.stderr.strip() == "finn: refusing to start: SECRET_KEY is not set and DEBUG is off"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG must be a boolean"),
        ("BILLING_RESERVE_TTL_SECONDS", "soon", "BILLING_RESERVE_TTL_SECONDS must be an integer"),
        ("USD_USDC_RATE", "-1", "USD_USDC_RATE must be a positive decimal"),
    ],
)
def test_refuses_to_start_with_an_unusable_value(name: str, value: str, message: str) -> None:
    # when
    completed = _check({"SECRET_KEY": "x" * 50, name: value})
    # then
    assert completed.returncode != 0
    assert message in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1


def test_starts_with_a_secret_key() -> None:
    # when
    completed = _check({"SECRET_KEY": "x" * 50, "DEBUG": "false"})
    # then
    assert completed.returncode == 0, completed.stderr
