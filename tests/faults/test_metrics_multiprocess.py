"""Metrics under several gunicorn workers: /metrics sums what every worker counted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection

from tests.faults.servers import free_port, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]


def _requests_total(body: str) -> float:
    found = re.findall(r'^django_http_requests_total_by_method_total\{method="GET"\} ([0-9.e+]+)$', body, re.M)
    return float(found[0]) if found else 0.0


@pytest.mark.django_db(transaction=True)
def test_counters_are_summed_across_gunicorn_workers(tmp_path: Path) -> None:
    db = connection.settings_dict
    port = free_port()
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "finn.settings_test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "FINN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "3",
        "WEB_THREADS": "1",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "finn.wsgi",
            "--config",
            "gunicorn.conf.py",
            "--access-logfile",
            "/dev/null",
        ],
        cwd=ROOT,
        env=env,
        stdout=(tmp_path / "web.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{base}/health")
        before = _requests_total(httpx.get(f"{base}/metrics").text)
        for _ in range(60):  # new connections: the requests spread over the workers
            httpx.get(f"{base}/health", headers={"Connection": "close"})
        after = _requests_total(httpx.get(f"{base}/metrics").text)
        worker_files = {p.name.split("_")[-1] for p in metrics_dir.glob("counter_*.db")}
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert len(worker_files) >= 2, worker_files  # more than one worker counted
    assert after - before >= 61  # the 60 health checks and the first scrape, whichever worker served them
