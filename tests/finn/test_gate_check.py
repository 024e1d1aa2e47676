"""gate_check against a live finn: every gate passes; failures, JSON, dry run and usage errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings

from finn.management.commands.gate_check import run_gate
from tests.credits.x402_helpers import X402_SETTINGS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db(transaction=True)
def test_every_gate_passes_against_a_live_server(live_server, make_account) -> None:
    funded = make_account(10_000_000)
    with override_settings(**X402_SETTINGS):
        results = {gate: run_gate(gate, url=live_server.url, api_key=funded.key, dry_run=False) for gate in range(5)}
    for gate, result in results.items():
        assert result["overall"] == "PASS", (gate, result["checks"])
    assert [c["name"] for c in results[1]["checks"]] == ["billing_round_trip", "conservation"]


@pytest.mark.django_db(transaction=True)
def test_text_output_and_exit_code_when_a_check_fails(live_server) -> None:
    out = StringIO()
    with override_settings(FEATURE_X402=False), pytest.raises(SystemExit) as exited:
        call_command("gate_check", "4", "--url", live_server.url, stdout=out)
    assert exited.value.code == 1
    text = out.getvalue()
    assert "[FAIL] x402_challenge" in text
    assert text.strip().endswith("Gate 4 (Launch): FAIL (2 passed, 1 failed)")


def test_json_dry_run_needs_no_network() -> None:
    out = StringIO()
    call_command("gate_check", "2", "--json", "--dry-run", "--url", "http://127.0.0.1:1", stdout=out)
    result = json.loads(out.getvalue())
    assert result == {
        "gate": 2,
        "gate_name": "Warmup",
        "overall": "PASS",
        "passed": 3,
        "failed": 0,
        "checks": [
            {"name": "personality_endpoint", "status": "PASS", "detail": "dry run: not executed"},
            {"name": "onboarding_endpoint", "status": "PASS", "detail": "dry run: not executed"},
            {"name": "credit_purchase_endpoint", "status": "PASS", "detail": "dry run: not executed"},
        ],
    }


def test_an_unreachable_server_fails_gate_0() -> None:
    result = run_gate(0, url="http://127.0.0.1:1", api_key="", dry_run=False)
    assert result["overall"] == "FAIL"
    assert [c["status"] for c in result["checks"]] == ["FAIL", "FAIL", "PASS"]  # the rules are local and valid


@pytest.mark.parametrize("args", [["9"], [], ["x"]])
def test_bad_usage_exits_2(args: list[str]) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "finn.settings_test"}
    done = subprocess.run([sys.executable, "manage.py", "gate_check", *args], cwd=ROOT, env=env, capture_output=True)
    assert done.returncode == 2
