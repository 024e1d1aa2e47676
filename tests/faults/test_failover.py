"""PostgreSQL failover under load: a synchronous standby is promoted after the primary is SIGKILLed.

Two throwaway clusters (the machine's PostgreSQL is never touched): a primary with
``synchronous_standby_names = '*'`` and a streaming standby made by ``pg_basebackup -R``. finn
(gunicorn) connects with both hosts in ``DATABASE_URL`` and ``target_session_attrs=read-write``.
A client reserves and commits in a loop; the primary's postmaster is killed with SIGKILL and the
standby promoted. Every operation acknowledged before the kill is on the new primary with its
effect; during the gap finn answers 503, never 500; after the promotion it serves again by itself.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from django.conf import settings

from tests.faults.servers import PG_BIN, as_postgres, free_port, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]

SETUP = r"""
import django
django.setup()
from django.core.management import call_command
from django.utils import timezone
from billing.services import account_create, account_credit_mint
from credits.api_keys import api_key_create
call_command("migrate", verbosity=0)
account = account_create()
account_credit_mint(account_id=account.pk, amount=10**12, idempotency_key="f", correlation_id="f", now=timezone.now())
print(api_key_create(account=account, now=timezone.now()).secret)
"""


class Cluster:
    def __init__(self, data: str, port: int) -> None:
        self.data, self.port = data, port

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/finn_failover"

    def start(self, *settings_: str) -> None:
        # fsync off: a throwaway cluster; the durability under test is the synchronous standby's.
        options = " ".join([f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off", *settings_])
        as_postgres(f"{PG_BIN}/pg_ctl", "-D", self.data, "-o", options, "-l", f"{self.data}/log", "-w", "start")

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash of the primary's machine would stop it."""
        pid = int(Path(self.data, "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        subprocess.run(["pkill", "-9", "-f", f"-D {self.data}"], capture_output=True, timeout=30)
        as_postgres(f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "immediate", "stop", check=False)


@pytest.fixture
def primary_and_standby() -> Iterator[tuple[Cluster, Cluster]]:
    if not PG_BIN or os.geteuid() != 0:
        pytest.skip("needs the PostgreSQL server binaries and root (to run the clusters as postgres)")
    owner = pwd.getpwnam("postgres")
    root = tempfile.mkdtemp(prefix="finn-failover-")
    os.chown(root, owner.pw_uid, owner.pw_gid)
    primary = Cluster(os.path.join(root, "primary"), free_port())
    standby = Cluster(os.path.join(root, "standby"), free_port())
    try:
        as_postgres(f"{PG_BIN}/initdb", "-D", primary.data, "-A", "trust", "-U", "postgres", "--no-sync")
        primary.start("-c wal_level=replica", "-c synchronous_commit=on")
        admin = primary.dsn.replace("/finn_failover", "/postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE finn_failover")
        as_postgres(
            f"{PG_BIN}/pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
            "-D", standby.data, "-R", "-X", "stream", "--no-sync", "--checkpoint=fast",
        )  # fmt: skip
        standby.start("-c hot_standby=on")
        # Synchronous only once the standby streams (a commit would wait for it forever before).
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            conn.execute("SELECT pg_reload_conf()")
            deadline = time.monotonic() + 30
            while conn.execute("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'").fetchone()[0] < 1:
                assert time.monotonic() < deadline, "the standby never became synchronous"
                time.sleep(0.1)
        yield primary, standby
    finally:
        standby.stop()
        primary.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_every_acknowledged_operation_survives_a_failover_and_the_gap_is_503(
    primary_and_standby: tuple[Cluster, Cluster], tmp_path: Path
) -> None:
    # given: finn on both hosts, a funded account (migrated through the primary)
    primary, standby = primary_and_standby
    url = (
        f"postgres://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/finn_failover"
        "?target_session_attrs=read-write"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "finn.settings_test",
        "DATABASE_URL": url,
        "REDIS_URL": settings.REDIS_URL,
    }
    key = subprocess.run(
        [sys.executable, "-c", SETUP], cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=300
    ).stdout.split()[-1]
    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "finn.wsgi", "--config", "gunicorn.conf.py"],
        cwd=ROOT,
        env={**env, "FINN_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1", "WEB_THREADS": "4"},
        stdout=(tmp_path / "web.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    acked_reserves: list[str] = []
    acked_commits: list[str] = []
    statuses: list[int] = []
    after_promotion: list[int] = []
    promoted = threading.Event()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=15) as client:
            while not stop.is_set():
                try:
                    held = client.post("/api/v1/billing/entries", json={"estimated_cost": 1_000})
                except httpx.HTTPError:
                    continue
                statuses.append(held.status_code)
                if promoted.is_set():
                    after_promotion.append(held.status_code)
                if held.status_code != 201:
                    time.sleep(0.05)
                    continue
                entry = held.json()["entry"]["id"]
                acked_reserves.append(entry)
                try:
                    committed = client.post(f"/api/v1/billing/entries/{entry}/commit", json={"actual_cost": 400})
                except httpx.HTTPError:
                    continue
                statuses.append(committed.status_code)
                if committed.status_code == 200:
                    acked_commits.append(entry)

    try:
        wait_http_ok(f"{base}/health")
        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(2)
        # when: the primary dies; the standby is promoted a moment later
        acked_before_kill = (list(acked_reserves), list(acked_commits))
        primary.kill()
        time.sleep(1)
        as_postgres(f"{PG_BIN}/pg_ctl", "-D", standby.data, "-w", "promote")
        promoted.set()
        time.sleep(3)
        stop.set()
        worker.join(timeout=60)
    finally:
        web.terminate()
        web.wait(timeout=60)
    log = (tmp_path / "web.log").read_text()
    print(
        f"failover: {len(acked_reserves)} reserves and {len(acked_commits)} commits acknowledged"
        f" ({len(acked_before_kill[0])}/{len(acked_before_kill[1])} before the kill);"
        f" answers {dict(sorted((code, statuses.count(code)) for code in set(statuses)))}"
    )
    # then: never a 500; the gap answered 503; finn served again after the promotion by itself
    assert 500 not in statuses, log[-5_000:]
    assert set(statuses) <= {200, 201, 503}, sorted(set(statuses))
    assert 503 in statuses
    assert 201 in after_promotion, after_promotion[:20]
    # and every acknowledged operation is on the new primary (nothing acknowledged was lost)
    with psycopg.connect(standby.dsn) as conn:
        states = dict(conn.execute("SELECT id, state FROM billing_billingentry").fetchall())
        unbalanced = conn.execute(
            "SELECT count(*) FROM (SELECT journal_entry_id FROM billing_posting"
            " GROUP BY journal_entry_id, denomination HAVING sum(delta) <> 0) x"
        ).fetchone()[0]
    reserves_before, commits_before = acked_before_kill
    assert len(reserves_before) > 10
    assert all(entry in states for entry in acked_reserves)
    assert all(states[entry] in ("COMMITTED", "FINALIZE_PENDING") for entry in acked_commits)
    assert all(states[entry] != "IDLE" for entry in reserves_before)
    assert len(commits_before) > 10  # the load was running when the primary died
    assert unbalanced == 0
