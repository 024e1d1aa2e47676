"""Optional OpenTelemetry: nothing when off; the x402 payment path as nested spans when on."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client, override_settings
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from credits.x402.settle import settlement_breaker
from finn.tracing import celery_inject, celery_task_end, celery_task_start, span, tracing_init, tracing_shutdown
from tests.credits.x402_helpers import X402_SETTINGS, pay_v2, unb64
from tests.fakes import fake_facilitator


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    tracing_init(exporter=memory)
    try:
        yield memory
    finally:
        tracing_shutdown()


def test_spans_are_nothing_when_tracing_is_off() -> None:
    tracing_init()  # OTEL_ENABLED is false in tests
    with span("x402.quote") as current:
        assert current is None


@pytest.mark.django_db
def test_the_payment_path_is_one_chain_of_spans_with_the_correlation_id(exporter: InMemorySpanExporter) -> None:
    body = {"model": "echo", "prompt": "trace me", "max_tokens": 8}
    with fake_facilitator() as fake, override_settings(**X402_SETTINGS, X402_FACILITATOR_URL=fake.url):
        settlement_breaker().reset()
        asked = Client().post("/api/v1/x402/invoke", body, content_type="application/json")
        header = pay_v2(unb64(asked.headers["PAYMENT-REQUIRED"]))
        paid = Client().post(
            "/api/v1/x402/invoke",
            body,
            content_type="application/json",
            headers={"PAYMENT-SIGNATURE": header, "X-Correlation-ID": "trace-42"},
        )
    assert paid.status_code == 200
    spans: dict[str, Any] = {s.name: s for s in exporter.get_finished_spans()}
    chain = ["x402.quote", "x402.verify", "x402.settle", "billing.finalize", "billing.ledger"]
    assert set(chain) <= set(spans)
    for parent, child in itertools.pairwise(chain):
        assert spans[child].parent.span_id == spans[parent].context.span_id, (parent, child)
    assert len({spans[name].context.trace_id for name in chain}) == 1
    assert all(spans[name].attributes["correlation_id"] == "trace-42" for name in chain)


def test_a_celery_task_continues_the_publishers_trace(exporter: InMemorySpanExporter) -> None:
    headers: dict[str, Any] = {}
    with span("publish") as publisher:
        celery_inject(headers)
    assert "traceparent" in headers
    celery_task_start("task-1", "billing.tasks.entry_finalize_task", headers)
    with span("inside.task"):
        pass
    celery_task_end("task-1")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    task = spans["celery.billing.tasks.entry_finalize_task"]
    assert task.parent.span_id == publisher.context.span_id
    assert spans["inside.task"].parent.span_id == task.context.span_id
