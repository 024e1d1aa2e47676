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
    assert 'finn_billing_operations_total{operation="reserve",outcome="insufficient_funds"}' in body
    assert "django_http_requests_total_by_method_total" in body
