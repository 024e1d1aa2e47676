"""PostgreSQL restarts in the middle of a hold-expiry sweep (a throwaway cluster).

The machine's shared PostgreSQL is never touched: this test initdb's its own
cluster on a spare port, drives finn against it from a separate process, and
restarts it with ``pg_ctl restart -m fast`` while the sweeper is between
batches. Afterwards every hold is released exactly once and the ledger checks
hold.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from tests.faults.servers import PG_BIN, as_postgres, free_port

ROOT = Path(__file__).resolve().parents[2]

DRIVER = r"""
import json, time
import django
django.setup()
from django.core.management import call_command
from django.db import DatabaseError, InterfaceError, connections
from django.utils import timezone
from billing import services

call_command("migrate", verbosity=0)
accounts = [services.account_create() for _ in range(20)]
for account in accounts:
    services.account_credit_mint(account_id=account.pk, amount=10**9, idempotency_key=f"m{account.pk}",
                                 correlation_id="m", now=timezone.now())
now = timezone.now()
for i in range(1000):
    services.entry_reserve(account_id=accounts[i % 20].pk, estimated_cost=1000, correlation_id="f",
                           ttl_seconds=1, now=now)
time.sleep(1.2)
print("sweeping", flush=True)
errors = 0
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    try:
        count = services.holds_expire_batch(now=timezone.now(), batch_size=10)
    except (DatabaseError, InterfaceError) as exc:  # the server went away: reconnect, as the next beat tick would
        errors += 1
        connections.close_all()
        time.sleep(0.2)
        continue
    if count == 0:
        break
    time.sleep(0.02)
print(json.dumps({"errors": errors}), flush=True)
"""


@pytest.fixture
def throwaway_postgres() -> Iterator[tuple[str, int]]:
    if not PG_BIN or os.geteuid() != 0:
        pytest.skip("needs the PostgreSQL server binaries and root (to run initdb as postgres)")
    data = tempfile.mkdtemp(prefix="finn-pg-")
    owner = pwd.getpwnam("postgres")
    os.chown(data, owner.pw_uid, owner.pw_gid)
    port = free_port()
    as_postgres(f"{PG_BIN}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    as_postgres(f"{PG_BIN}/pg_ctl", "-D", data, "-o", options, "-l", f"{data}/log", "-w", "start")
    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE finn_fault")
        yield data, port
    finally:
        as_postgres(f"{PG_BIN}/pg_ctl", "-D", data, "-m", "immediate", "stop", check=False)
        shutil.rmtree(data, ignore_errors=True)


def test_restart_mid_sweep_releases_every_hold_once(throwaway_postgres: tuple[str, int]) -> None:
    # given
    data, port = throwaway_postgres
    dsn = f"postgres://postgres@127.0.0.1:{port}/finn_fault"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "finn.settings_test",
        "DATABASE_URL": dsn,
        "REDIS_URL": settings.REDIS_URL,
    }
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert driver.stdout is not None
    line = driver.stdout.readline()
    assert line.strip() == "sweeping", driver.stderr.read() if driver.stderr else ""
    # when: the server restarts while the sweeper is working through its batches
    time.sleep(0.3)
    as_postgres(f"{PG_BIN}/pg_ctl", "-D", data, "-l", f"{data}/log", "-m", "fast", "-w", "restart")
    output, errors_text = driver.communicate(timeout=120)
    # then
    assert driver.returncode == 0, errors_text
    summary = json.loads(output.strip().splitlines()[-1])
    assert summary["errors"] >= 1  # the restart really interrupted the sweep
    with psycopg.connect(dsn.replace("postgres://", "postgresql://")) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM billing_billingentry WHERE state = 'RELEASED'),"
            " (SELECT count(*) FROM billing_billingentry WHERE state = 'RESERVE_HELD'),"
            " (SELECT count(*) FROM billing_journalentry WHERE event_type = 'billing_reserve_expired'),"
            " (SELECT count(*) FROM finn_auditevent WHERE event_type = 'billing_reserve_expired'),"
            " (SELECT coalesce(sum(held), 0) FROM billing_account)"
        ).fetchone()
    assert counts == (1000, 0, 1000, 1000, 0)
    check = subprocess.run(
        [sys.executable, "manage.py", "ledger_check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ledger OK" in check.stdout
