"""JSON logs carry request and correlation ids; /metrics exports finn's counters."""

from __future__ import annotations

import json
import logging

import pytest
from django.test import Client

from finn.logging import RequestContextFilter, correlation_id_var, request_id_var
from tests.conftest import post_json


def test_json_log_lines_carry_request_and_correlation_ids() -> None:
    # given
    from django.conf import settings
    from pythonjsonlogger.json import JsonFormatter

    formatter = JsonFormatter(settings.LOGGING["formatters"]["json"]["fmt"], rename_fields={"levelname": "level"})
    record = logging.LogRecord("finn.test", logging.INFO, __file__, 1, "hello", None, None)
    tokens = request_id_var.set("req-1"), correlation_id_var.set("flow-1")
    # when
    try:
        RequestContextFilter().filter(record)
        line = json.loads(formatter.format(record))
    finally:
        request_id_var.reset(tokens[0])
        correlation_id_var.reset(tokens[1])
    # then
    assert (line["message"], line["request_id"], line["correlation_id"], line["level"]) == (
        "hello",
        "req-1",
        "flow-1",
        "INFO",
    )


@pytest.mark.django_db
def test_metrics_endpoint_exports_billing_counters(make_account) -> None:
    # given
    funded = make_account(1_000)
    post_json(funded.client(), "/api/v1/billing/entries", {"estimated_cost": 5_000})
    # when
    body = Client().get("/metrics").content.decode()
    # then
    assert 'billing_ops_total{op="reserve",status="insufficient_funds"}' in body
    assert "django_http_requests_total_by_method_total" in body


@pytest.mark.django_db
def test_domain_metrics_carry_reasons_durations_and_ledger_gauges(make_account, now) -> None:
    from billing.states import EntryState
    from billing.tasks import metrics_refresh_task
    from tests.billing.helpers import entry_in_state

    funded = make_account(10_000)
    post_json(funded.client(), "/api/v1/billing/entries", {"estimated_cost": 50_000})  # refused
    entry_in_state(EntryState.RESERVE_HELD, account_id=funded.pk, now=now, estimate=100)
    entry_in_state(EntryState.FINALIZE_FAILED, account_id=funded.pk, now=now, estimate=100, actual=50)
    metrics_refresh_task()
    body = Client().get("/metrics").content.decode()
    assert 'billing_rejected_total{reason="insufficient_funds"}' in body
    assert 'billing_op_duration_seconds_bucket{le="0.005",op="reserve"}' in body
    assert "billing_holds_open 1.0" in body
    assert "billing_finalize_poison 1.0" in body
    assert "billing_hold_age_seconds" in body


@pytest.mark.django_db
def test_metrics_can_be_restricted_by_token_and_ip() -> None:
    from django.test import override_settings

    with override_settings(METRICS_BEARER_TOKEN="s3cret"):
        assert Client().get("/metrics").status_code == 401
        assert Client(headers={"Authorization": "Bearer nope"}).get("/metrics").status_code == 401
        assert Client(headers={"Authorization": "Bearer s3cret"}).get("/metrics").status_code == 200
    with override_settings(METRICS_ALLOWED_IPS=["10.0.0.9"]):
        assert Client().get("/metrics").status_code == 403
        assert Client(REMOTE_ADDR="10.0.0.9").get("/metrics").status_code == 200


def test_alert_rules_are_valid_and_the_circuit_alert_fires() -> None:
    import subprocess
    from pathlib import Path

    deploy = Path(__file__).resolve().parents[2] / "deploy"
    rules = subprocess.run(
        ["promtool", "check", "rules", "alerts.yml"], cwd=deploy / "prometheus", capture_output=True, text=True
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 10 rules found" in rules.stdout
    unit = subprocess.run(
        ["promtool", "test", "rules", "alerts_test.yml"], cwd=deploy / "prometheus", capture_output=True, text=True
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    config = subprocess.run(
        ["amtool", "check-config", "alertmanager.yml"], cwd=deploy / "alertmanager", capture_output=True, text=True
    )
    assert config.returncode == 0, config.stdout + config.stderr


def test_breaker_state_changes_log_one_json_line_with_the_fields(caplog: pytest.LogCaptureFixture) -> None:
    from finn.breaker import CircuitBreaker

    breaker = CircuitBreaker(name="obs", failure_threshold=2, window_seconds=60, cooldown_seconds=30)
    breaker.reset()
    caplog.set_level(logging.WARNING, logger="finn.breaker")
    breaker.record_failure()
    breaker.record_failure()
    (change,) = [r for r in caplog.records if r.getMessage() == "circuit breaker state change"]
    assert (change.breaker, getattr(change, "from"), change.to, change.failure_count) == ("obs", "CLOSED", "OPEN", 2)  # type: ignore[attr-defined]
