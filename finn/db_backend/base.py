"""PostgreSQL backend with django-prometheus's database metrics, made cheap per statement.

Same metric families as ``django_prometheus.db.backends.postgresql`` (executions, errors by
type, query duration, new connections), but the labelled children are resolved once per
connection instead of twice per statement, and no context-manager objects are built per
call: on the hot path each request is one statement, and that wrapper cost more than the
statement's own client-side work (measured with py-spy, see the hot-path issue's note).
"""

from __future__ import annotations

import time
from typing import Any

from django.db.backends.postgresql import base
from django.db.backends.postgresql.base import Cursor  # type: ignore[attr-defined]
from django_prometheus.db import errors_total, execute_many_total, execute_total, query_duration_seconds
from django_prometheus.db.common import DatabaseWrapperMixin


def _measured_cursor(cursor_class: type[Any], alias: str, vendor: str) -> type[Any]:
    executed = execute_total.labels(alias, vendor)
    executed_many = execute_many_total.labels(alias, vendor)
    duration = query_duration_seconds.labels(alias, vendor)

    class MeasuredCursor(cursor_class):
        def execute(self, *args: Any, **kwargs: Any) -> Any:
            executed.inc()
            started = time.perf_counter()
            try:
                return super().execute(*args, **kwargs)
            except Exception as exc:
                errors_total.labels(alias, vendor, type(exc).__name__).inc()
                raise
            finally:
                duration.observe(time.perf_counter() - started)

        def executemany(self, query: Any, params_seq: Any, *args: Any, **kwargs: Any) -> Any:
            params_seq = list(params_seq)
            executed.inc(len(params_seq))
            executed_many.inc(len(params_seq))
            started = time.perf_counter()
            try:
                return super().executemany(query, params_seq, *args, **kwargs)
            except Exception as exc:
                errors_total.labels(alias, vendor, type(exc).__name__).inc()
                raise
            finally:
                duration.observe(time.perf_counter() - started)

    return MeasuredCursor


class DatabaseWrapper(DatabaseWrapperMixin, base.DatabaseWrapper):
    def get_new_connection(self, *args: Any, **kwargs: Any) -> Any:
        connection = super().get_new_connection(*args, **kwargs)
        connection.cursor_factory = _measured_cursor(connection.cursor_factory or Cursor, self.alias, self.vendor)
        return connection

    def create_cursor(self, name: str | None = None) -> Any:
        return base.DatabaseWrapper.create_cursor(self, name=name)
