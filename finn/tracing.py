"""Optional OpenTelemetry traces: off unless OTEL_ENABLED=true (then no spans, no overhead).

Console exporter by default, OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
``tracing_init()`` runs in each serving process, after any fork (``finn/wsgi.py`` when a
web worker loads the app, gunicorn's ``post_worker_init``, Celery's ``worker_process_init``),
because an exporter's thread does not survive a fork; it is idempotent per process.
``span(name, **attributes)`` nests: the payment path is x402.quote → x402.verify →
x402.settle → billing.finalize → billing.ledger, each with the correlation id.
Celery tasks continue the publisher's trace (context in the message headers).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from django.conf import settings

_provider: Any = None
_provider_pid = 0


def tracing_enabled() -> bool:
    return _provider is not None


def tracing_init(*, exporter: Any = None) -> None:
    """Install the tracer provider of this process (no-op when tracing is off, or already done here)."""
    global _provider, _provider_pid
    if exporter is None and _provider is not None and _provider_pid == os.getpid():
        return  # once per process: the web server's hook and the WSGI module may both call it
    if not settings.OTEL_ENABLED and exporter is None:
        _provider = None
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "finn"}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    _provider = provider
    _provider_pid = os.getpid()


def tracing_shutdown() -> None:
    global _provider
    if _provider is not None:
        _provider.shutdown()
    _provider = None


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A child of the current span (or a root); nothing at all while tracing is off."""
    if _provider is None:
        yield None
        return
    from finn.logging import current_correlation_id

    tracer = _provider.get_tracer("finn")
    with tracer.start_as_current_span(name) as current:
        correlation = current_correlation_id()
        if correlation:
            current.set_attribute("correlation_id", correlation)
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(key, value)
        yield current


# --- Celery: continue the publisher's trace ------------------------------------------

_task_spans: dict[str, Any] = {}


def celery_inject(headers: dict[str, Any]) -> None:
    if _provider is None:
        return
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    headers.update(carrier)


def celery_task_start(task_id: str, task_name: str, headers: dict[str, Any]) -> None:
    if _provider is None:
        return
    from opentelemetry import context
    from opentelemetry.propagate import extract

    parent = extract({k: v for k, v in headers.items() if isinstance(v, str)})
    tracer = _provider.get_tracer("finn")
    from opentelemetry.trace import set_span_in_context

    current = tracer.start_span(f"celery.{task_name}", context=parent)
    token = context.attach(set_span_in_context(current, parent))
    _task_spans[task_id] = (current, token)


def celery_task_end(task_id: str) -> None:
    entry = _task_spans.pop(task_id, None)
    if entry is None:
        return
    from opentelemetry import context

    current, token = entry
    current.end()
    context.detach(token)
