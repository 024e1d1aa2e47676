"""django-prometheus's request metrics, with the labelled children looked up once.

The same metric families as ``django_prometheus.middleware.PrometheusAfterMiddleware``; its
``label_metric`` resolves ``metric.labels(**labels)`` (validation, a lock, a dict lookup)
about ten times per request. Here each (metric, labels) child is resolved once per process
and kept: the label values are bounded (methods are normalized, views come from the URL
conf, statuses and charsets are few).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django_prometheus import middleware


class PrometheusAfterMiddleware(middleware.PrometheusAfterMiddleware):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._children: dict[tuple[int, tuple[tuple[str, str], ...]], Any] = {}

    def label_metric(
        self, metric: Any, request: HttpRequest, response: HttpResponse | None = None, **labels: str
    ) -> Any:
        if not labels:
            return metric
        key = (id(metric), tuple(labels.items()))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(**labels)
        return child
