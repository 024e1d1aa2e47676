"""gunicorn settings for `make run` (override any with GUNICORN_CMD_ARGS)."""

from __future__ import annotations

import os
from typing import Any

bind = os.environ.get("FINN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "8"))
# No access log by default: through honcho's pipe it cost ~0.3 ms of CPU per request.
# FINN_ACCESS_LOG=- (stdout) or a file path turns it on; request ids and errors are logged
# by finn's own JSON logs either way.
accesslog = os.environ.get("FINN_ACCESS_LOG") or None
timeout = 30
# Longer than the default 2 s so a busy client reusing a keep-alive
# connection does not race the server closing it (seen as client ReadErrors).
keepalive = 30


def post_worker_init(worker: Any) -> None:
    # After the fork and the app load: tracing exporters run a thread, which does not survive a fork.
    from finn.tracing import tracing_init

    tracing_init()


def child_exit(server: Any, worker: Any) -> None:
    # With several workers, Prometheus metrics are aggregated from files in
    # PROMETHEUS_MULTIPROC_DIR; a dead worker's live gauges are dropped.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
