"""Start a real Celery worker (solo pool) against the test database and Redis; the env of any finn process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def finn_env(**extra_env: str) -> dict[str, str]:
    """The environment of a finn process (web, worker, beat) on the test database and Redis."""
    db = connection.settings_dict
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "finn.settings_test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        **extra_env,
    }


def start_worker(log: Path, **extra_env: str) -> subprocess.Popen[bytes]:
    env = finn_env(**extra_env)
    command = [sys.executable, "-m", "celery", "-A", "finn", "worker", "-P", "solo", "-c", "1", "-l", "INFO"]
    command += ["--without-heartbeat", "--without-gossip", "--without-mingle"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
