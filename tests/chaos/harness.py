"""Chaos with a history checker: seeded schedules of money operations and faults, then the books.

    .venv/bin/python -m tests.chaos.harness --schedules 20 [--seed 1] [--quiet-every 5]

One run starts its own world: a throwaway PostgreSQL cluster, a throwaway Redis, a fake finalize
upstream, and finn as it is deployed (gunicorn with 2 workers, a Celery worker, Celery beat).
Each schedule (a seed) picks client operations — reserve, commit (full and partial), release,
void (staff), idempotent retries of reserves, Standard Webhooks deliveries with duplicates and
reordering, x402 payments (and the same authorization again) against the fake facilitator, commits
finalized against the fake upstream — run by 4 client threads, and faults at
random moments: SIGKILL of a gunicorn worker or the Celery worker, a PostgreSQL restart (fast or
immediate), a Redis restart or FLUSHALL, the upstream answering 500 or hanging, the facilitator
answering 500 or slow, network delay between finn and Redis (through the harness's TCP proxy). The client side
records every request with its acknowledged answer, or "unknown" (5xx, timeout, broken connection).

After each schedule the faults stop and the checker reads the database:
- every journal sums to zero per denomination; every balance row equals its postings; each
  account's held equals the estimates of its open holds;
- every acknowledged reserve, commit, release and void is there with its effect; an unknown one is
  resolved one way or the other, never both;
- at most one entry per idempotency key, one resolution per hold (commit or release, then at most
  one void), each webhook event stored once;
and every ``--quiet-every`` schedules (and at the end), after a bounded quiet period: no hold past
its TTL + sweep interval, no finalize row past its schedule + lease, no webhook event left pending;
the audit chain verifies and ``rebuild_balances`` finds no difference.

A failing schedule prints a one-line reproduction command. Exit status 1 on any violation.
Not covered (said so in the README): clock jumps.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
# The x402 signing helpers read finn's protocol constants (no database, no server of its own).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finn.settings_test")
import django  # noqa: E402

django.setup()

from billing.selectors import BALANCE_DIFF_SQL, UNBALANCED_JOURNALS_SQL  # noqa: E402
from tests.credits.x402_helpers import PAY_TO, pay_v2, unb64  # noqa: E402
from tests.fakes import Facilitator, Upstream, fake_facilitator, fake_upstream  # noqa: E402
from tests.faults.servers import PG_BIN, ThrowawayRedis, as_postgres, free_port, wait_http_ok  # noqa: E402

STANDARD_KEY = b"finn-chaos-standard-webhook-key!"
STANDARD_SECRET = "whsec_" + base64.b64encode(STANDARD_KEY).decode()
SWEEP_SLACK_SECONDS = 6  # hold TTL + sweep interval (1 s) + a beat tick's delay under faults
FINALIZE_SLACK_SECONDS = 75  # next attempt + the sweep's 60 s lease + backoff
FAULTS = (
    "kill_web_worker",
    "kill_celery",
    "pg_restart",
    "redis_restart",
    "redis_flushall",
    "upstream_500",
    "upstream_hang",
    "facilitator_500",
    "facilitator_slow",
    "net_delay",
    "clock_jump",
)
# A clock jump for every finn process (gunicorn, Celery worker and beat): each reads the host's wall
# clock through finn.clock.wall(), which adds the seconds in FINN_CLOCK_OFFSET_FILE (libfaketime
# 0.9.10 with the monotonic clock left alone, as a real step leaves it, fails time.sleep: EINVAL).
CLOCK_JUMPS = (-86400, -3600, -600, 600, 3600, 86400)
CREATED_SLACK_SECONDS = 5  # an entry's "now" vs the database's clock at its insert

SETUP = r"""
import json, django
django.setup()
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone
from billing.services import account_create, account_credit_mint
from credits.api_keys import api_key_create
call_command("migrate", verbosity=0)
keys = []
for i in range(4):
    account = account_create()
    account_credit_mint(account_id=account.pk, amount=10**12, idempotency_key=f"chaos{account.pk}",
                        correlation_id="chaos", now=timezone.now())
    keys.append([account.pk, api_key_create(account=account, now=timezone.now()).secret])
staff = account_create(owner=get_user_model().objects.create(username="chaos-staff", is_staff=True))
print(json.dumps({"keys": keys, "staff": api_key_create(account=staff, now=timezone.now()).secret}))
"""


# --- the world ----------------------------------------------------------------------------------


class DelayProxy:
    """A TCP proxy on a spare port in front of ``target_port``; ``delay`` seconds are added to every chunk."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay = 0.0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def close(self) -> None:
        self.listener.close()


@dataclass
class World:
    data: str
    pg_port: int
    redis: ThrowawayRedis
    upstream: Upstream
    facilitator: Facilitator
    redis_proxy: DelayProxy
    env: dict[str, str]
    logs: Path
    base: str = ""
    web: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    beat: subprocess.Popen[bytes] | None = None
    keys: list[tuple[int, str]] = field(default_factory=list)
    staff: str = ""

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/finn_chaos"

    def pg_start(self) -> None:
        options = f"-p {self.pg_port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        as_postgres(f"{PG_BIN}/pg_ctl", "-D", self.data, "-o", options, "-l", f"{self.data}/log", "-w", "start")

    def pg_restart(self, mode: str) -> None:
        as_postgres(f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", f"{self.data}/log", "-m", mode, "-w", "restart")

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=(self.logs / f"{name}.log").open("ab"), stderr=subprocess.STDOUT
        )

    def start_worker(self) -> None:
        self.worker = self._spawn(
            "worker",
            [sys.executable, "-m", "celery", "-A", "finn", "worker", "-P", "solo", "-c", "1", "-l", "WARNING",
             "--without-heartbeat", "--without-gossip", "--without-mingle"],
        )  # fmt: skip

    def start(self) -> None:
        port = free_port()
        self.env["FINN_BIND"] = f"127.0.0.1:{port}"
        self.base = f"http://127.0.0.1:{port}"
        self.web = self._spawn("web", [sys.executable, "-m", "gunicorn", "finn.wsgi", "--config", "gunicorn.conf.py"])
        self.start_worker()
        self.beat = self._spawn(
            "beat",
            [sys.executable, "-m", "celery", "-A", "finn", "beat", "-l", "WARNING", "-s", str(self.logs / "beat")],
        )
        wait_http_ok(f"{self.base}/health", timeout=60)

    def web_workers(self) -> list[int]:
        assert self.web is not None
        found = subprocess.run(["pgrep", "-P", str(self.web.pid)], capture_output=True, text=True).stdout.split()
        return [int(pid) for pid in found]

    def stop(self) -> None:
        for process in (self.web, self.worker, self.beat):
            if process is not None and process.poll() is None:
                process.terminate()
        for process in (self.web, self.worker, self.beat):
            if process is not None:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


@contextmanager
def world(logs: Path) -> Iterator[World]:
    if not PG_BIN or os.geteuid() != 0:
        raise SystemExit("chaos: needs the PostgreSQL server binaries and root (clusters run as postgres)")
    owner = pwd.getpwnam("postgres")
    data = tempfile.mkdtemp(prefix="finn-chaos-pg-")
    os.chown(data, owner.pw_uid, owner.pw_gid)
    as_postgres(f"{PG_BIN}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
    cache = ThrowawayRedis()
    cache.start()
    # finn reaches Redis through a proxy that can add network delay (the "net_delay" fault).
    proxy = DelayProxy(cache.port)
    with fake_upstream() as upstream, fake_facilitator() as facilitator:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "finn.settings_test",
            "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0",
            "FINALIZE_URL": upstream.url,
            "FINALIZE_TIMEOUT_SECONDS": "2",
            "STANDARD_WEBHOOK_SECRET": STANDARD_SECRET,
            "RECONCILIATION_INTERVAL_SECONDS": "5",
            "FINALIZE_BREAKER_COOLDOWN_SECONDS": "3",
            "FEATURE_X402": "true",
            "X402_PAY_TO": PAY_TO,
            "X402_NETWORK": "eip155:84532",
            "X402_FACILITATOR_URL": facilitator.url,
            "X402_BREAKER_COOLDOWN_SECONDS": "3",
            "WEB_CONCURRENCY": "2",
            "WEB_THREADS": "4",
        }
        (logs / "clock-offset").write_text("0")
        env["FINN_CLOCK_OFFSET_FILE"] = str(logs / "clock-offset")
        the_world = World(
            data=data,
            pg_port=free_port(),
            redis=cache,
            upstream=upstream,
            facilitator=facilitator,
            redis_proxy=proxy,
            env=env,
            logs=logs,
        )
        the_world.env["DATABASE_URL"] = the_world.dsn.replace("postgresql://", "postgres://")
        try:
            the_world.pg_start()
            with psycopg.connect(the_world.dsn.replace("/finn_chaos", "/postgres"), autocommit=True) as conn:
                conn.execute("CREATE DATABASE finn_chaos")
            made = subprocess.run(
                [sys.executable, "-c", SETUP],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                text=True,
                timeout=300,
            )
            setup = json.loads(made.stdout.strip().splitlines()[-1])
            the_world.keys = [(int(pk), key) for pk, key in setup["keys"]]
            the_world.staff = setup["staff"]
            the_world.start()
            yield the_world
        finally:
            the_world.stop()
            proxy.close()
            cache.stop()
            as_postgres(f"{PG_BIN}/pg_ctl", "-D", data, "-m", "immediate", "stop", check=False)
            shutil.rmtree(data, ignore_errors=True)


# --- one schedule -------------------------------------------------------------------------------


@dataclass
class Record:
    kind: str
    target: str  # entry id, idempotency key or webhook id
    status: int | None  # None: unknown (5xx, timeout, broken connection)
    body: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and self.status < 300


@dataclass
class History:
    records: list[Record] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    faults: list[str] = field(default_factory=list)

    def add(self, record: Record) -> None:
        with self.lock:
            self.records.append(record)

    def acked(self, kind: str) -> list[Record]:
        with self.lock:
            return [r for r in self.records if r.kind == kind and r.acknowledged]


def _call(client: httpx.Client, method: str, path: str, **kw: Any) -> tuple[int | None, dict[str, Any]]:
    try:
        answer = client.request(method, path, **kw)
    except httpx.HTTPError:
        return None, {}
    if answer.status_code >= 500:
        return None, {}
    try:
        body = answer.json()
    except ValueError:
        body = {}
    return answer.status_code, body if isinstance(body, dict) else {}


def _operation(rng: random.Random, account: int, history: History, client: httpx.Client, staff: httpx.Client,
               seed: int, index: int) -> None:  # fmt: skip
    kind = rng.choices(
        ["reserve", "retry", "commit", "release", "void", "webhook", "webhook_again", "x402", "x402_again"],
        [5, 1, 4, 2, 1, 2, 1, 1, 1],
    )[0]
    # Idempotency keys and entries belong to an account: each client works on its own.
    held = [r for r in history.acked("reserve") if r.target and r.detail["account"] == account]
    if kind == "reserve" or (kind in ("retry", "commit", "release") and not held):
        estimate, ttl = rng.randint(100, 5_000), rng.choice([1, 2, 5])
        key = f"chaos-{seed}-{index}"
        status, body = _call(
            client, "POST", "/api/v1/billing/entries",
            json={"estimated_cost": estimate, "ttl_seconds": ttl}, headers={"Idempotency-Key": key},
        )  # fmt: skip
        entry = str(body.get("entry", {}).get("id", "")) if status == 201 else ""
        detail = {"key": key, "estimate": estimate, "ttl": ttl, "entry": entry, "account": account}
        history.add(Record("reserve", entry, status, body, detail))
        history.add(Record("key", key, status, body, detail))
    elif kind == "retry":
        keys = [r for r in history.acked("key") if r.detail["account"] == account]
        if not keys:
            return
        first = rng.choice(keys)
        status, body = _call(
            client, "POST", "/api/v1/billing/entries",
            json={"estimated_cost": first.detail["estimate"], "ttl_seconds": first.detail["ttl"]},
            headers={"Idempotency-Key": first.target},
        )  # fmt: skip
        entry = str(body.get("entry", {}).get("id", "")) if status == 201 else ""
        history.add(Record("retry", first.target, status, body, {"entry": entry, "first": first.detail["entry"]}))
    elif kind in ("commit", "release"):
        target = rng.choice(held).target
        if kind == "commit":
            reserve = next(r for r in history.acked("reserve") if r.target == target)
            actual = rng.choice([reserve.detail["estimate"], rng.randint(0, reserve.detail["estimate"])])
            status, body = _call(
                client, "POST", f"/api/v1/billing/entries/{target}/commit", json={"actual_cost": actual}
            )
            history.add(Record("commit", target, status, body, {"actual": actual, "account": account}))
        else:
            status, body = _call(
                client, "POST", f"/api/v1/billing/entries/{target}/release", json={"reason": "user_cancel"}
            )
            history.add(Record("release", target, status, body))
    elif kind in ("x402", "x402_again"):
        paid = [r for r in history.records if r.kind == "x402" and r.detail.get("header")]
        if kind == "x402_again" and paid:  # the same authorization presented again
            again = rng.choice(paid)
            body, header = again.detail["body"], again.detail["header"]
        else:
            body = {"model": "echo", "prompt": f"chaos {seed} {index}"}
            try:
                offer = client.post("/api/v1/x402/invoke", json=body).headers.get("PAYMENT-REQUIRED")
            except httpx.HTTPError:
                offer = None
            if not offer:
                history.add(Record("x402", "", None, {}, {}))
                return
            header = pay_v2(unb64(offer))
        status, answer = _call(client, "POST", "/api/v1/x402/invoke", json=body, headers={"PAYMENT-SIGNATURE": header})
        nonce = json.loads(base64.b64decode(header))["payload"]["authorization"]["nonce"]
        history.add(Record("x402", nonce, status, answer, {"body": body, "header": header}))
    elif kind == "void":
        committed = [r for r in history.acked("commit") if r.detail["account"] == account]
        if not committed:
            return
        target = rng.choice(committed).target
        status, body = _call(staff, "POST", f"/api/v1/billing/entries/{target}/void", json={"reason": "chaos refund"})
        history.add(Record("void", target, status, body))
    else:
        sent = [r for r in history.records if r.kind == "webhook"]
        if kind == "webhook_again" and sent:  # a duplicate, delivered out of order
            again = rng.choice(sent)
            message_id, raw = again.detail["id"], again.detail["raw"]
        else:
            message_id = f"msg_chaos_{seed}_{index}"
            raw = json.dumps({"type": "chaos.ping", "timestamp": "2026-12-02T00:00:00Z", "data": {"n": index}})
        stamp = str(int(time.time()))
        signature = base64.b64encode(
            hmac.new(STANDARD_KEY, f"{message_id}.{stamp}.".encode() + raw.encode(), hashlib.sha256).digest()
        ).decode()
        status, body = _call(
            client, "POST", "/api/v1/webhooks/standard", content=raw,
            headers={"webhook-id": message_id, "webhook-timestamp": stamp, "webhook-signature": f"v1,{signature}",
                     "Content-Type": "application/json"},
        )  # fmt: skip
        history.add(Record("webhook", message_id, status, body, {"id": message_id, "raw": raw}))


_FAULT_LOCK = threading.Lock()


def _fault(kind: str, the_world: World) -> None:
    with _FAULT_LOCK:  # one fault at a time (two restarts of one server would race each other)
        _inject(kind, the_world)


def _inject(kind: str, the_world: World) -> None:
    if kind == "kill_web_worker":
        workers = the_world.web_workers()
        if workers:
            os.kill(random.choice(workers), signal.SIGKILL)
    elif kind == "kill_celery":
        assert the_world.worker is not None
        the_world.worker.send_signal(signal.SIGKILL)
        the_world.worker.wait(timeout=30)
        time.sleep(0.3)
        the_world.start_worker()
    elif kind == "pg_restart":
        the_world.pg_restart(random.choice(["fast", "immediate"]))
    elif kind == "redis_restart":
        the_world.redis.stop()
        time.sleep(0.3)
        the_world.redis.start()
    elif kind == "redis_flushall":
        redis.Redis.from_url(the_world.redis.url).flushall()
    elif kind == "upstream_500":
        the_world.upstream.statuses = [500]
    elif kind == "upstream_hang":
        the_world.upstream.delay_seconds = 4.0
    elif kind == "net_delay":  # 300 ms on every chunk between finn and Redis, for 1.5 s
        the_world.redis_proxy.delay = 0.3
        threading.Timer(1.5, setattr, args=(the_world.redis_proxy, "delay", 0.0)).start()
    elif kind == "clock_jump":  # the host's wall clock jumps (back or forward) until the schedule heals
        Path(the_world.env["FINN_CLOCK_OFFSET_FILE"]).write_text(str(random.choice(CLOCK_JUMPS)))
    elif kind == "facilitator_500":
        the_world.facilitator.mode = "http500"
    elif kind == "facilitator_slow":
        the_world.facilitator.mode = "slow"
        the_world.facilitator.delay_seconds = 4.0


def _heal(the_world: World) -> None:
    the_world.upstream.statuses = [200]
    the_world.upstream.delay_seconds = 0.0
    the_world.facilitator.mode = "ok"
    the_world.facilitator.delay_seconds = 0.0
    the_world.redis_proxy.delay = 0.0
    Path(the_world.env["FINN_CLOCK_OFFSET_FILE"]).write_text("0")
    if the_world.worker is not None and the_world.worker.poll() is not None:
        the_world.start_worker()
    try:
        redis.Redis.from_url(the_world.redis.url, socket_timeout=1).ping()
    except redis.RedisError:
        the_world.redis.start()


def run_schedule(seed: int, the_world: World, kinds: tuple[str, ...] = FAULTS) -> History:
    rng = random.Random(seed)
    history = History()
    operations = rng.randint(20, 40)
    faults = [(rng.uniform(0.0, 1.5), rng.choice(kinds)) for _ in range(rng.randint(1, 3))]
    history.faults = [kind for _, kind in faults]
    started = time.monotonic()
    timers = []
    for at, kind in faults:
        timer = threading.Timer(at, _fault, args=(kind, the_world))
        timer.start()
        timers.append(timer)
    next_index = iter(range(operations))
    index_lock = threading.Lock()

    def client_thread(number: int) -> None:
        own = random.Random(seed * 1000 + number)
        account, key = the_world.keys[number % len(the_world.keys)]
        with (
            httpx.Client(base_url=the_world.base, headers={"Authorization": f"Bearer {key}"}, timeout=8) as client,
            httpx.Client(
                base_url=the_world.base, headers={"Authorization": f"Bearer {the_world.staff}"}, timeout=8
            ) as staff,
        ):
            while True:
                with index_lock:
                    index = next(next_index, None)
                if index is None:
                    return
                _operation(own, account, history, client, staff, seed, index)
                time.sleep(own.uniform(0, 0.05))

    threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for timer in timers:
        timer.join(timeout=120)
    _heal(the_world)
    history.faults.append(f"ran {time.monotonic() - started:.1f}s")
    return history


# --- the checker --------------------------------------------------------------------------------


def check_books(conn: psycopg.Connection[Any], history: History) -> list[str]:
    problems: list[str] = []
    q = conn.execute
    # The ledger check's own queries (billing.selectors), on the chaos database.
    for journal, denomination, total in q(UNBALANCED_JOURNALS_SQL).fetchall():
        problems.append(f"journal {journal} sums to {total} in {denomination}")
    for account, available, held, posted_available, posted_held in q(BALANCE_DIFF_SQL).fetchall():
        problems.append(f"account {account}: row {available}/{held}, postings {posted_available}/{posted_held}")
    for account, held, open_holds in q(
        "SELECT a.id, a.held, COALESCE(SUM(e.estimated_cost) FILTER (WHERE e.state = 'RESERVE_HELD'), 0)"
        " FROM billing_account a LEFT JOIN billing_billingentry e ON e.account_id = a.id"
        " WHERE a.kind <> 'system' GROUP BY a.id, a.held"
        " HAVING a.held <> COALESCE(SUM(e.estimated_cost) FILTER (WHERE e.state = 'RESERVE_HELD'), 0)"
    ).fetchall():
        problems.append(f"account {account}: held {held} but open holds sum to {open_holds}")
    entries = {
        row[0]: row[1:]
        for row in q("SELECT id, state, estimated_cost, actual_cost, release_reason FROM billing_billingentry")
    }
    journals: dict[str, list[str]] = {}
    for entry, event in q(
        "SELECT billing_entry_id, event_type FROM billing_journalentry WHERE billing_entry_id IS NOT NULL"
    ):
        journals.setdefault(entry, []).append(event)
    for record in history.records:
        if not record.acknowledged:
            continue
        state = entries.get(record.target, (None,))[0]
        if record.kind == "reserve" and state in (None, "IDLE"):
            problems.append(f"acknowledged reserve {record.target} is {state}")
        elif record.kind == "commit":
            actual = entries.get(record.target, (None, None, None))[2]
            if state not in ("COMMITTED", "FINALIZE_PENDING", "FINALIZE_ACKED", "FINALIZE_FAILED", "VOIDED"):
                problems.append(f"acknowledged commit {record.target} is {state}")
            elif actual != record.detail["actual"]:
                problems.append(f"acknowledged commit {record.target} of {record.detail['actual']} charged {actual}")
        elif record.kind == "release" and state != "RELEASED":
            problems.append(f"acknowledged release {record.target} is {state}")
        elif record.kind == "void" and state != "VOIDED":
            problems.append(f"acknowledged void {record.target} is {state}")
        elif record.kind == "retry" and record.detail["first"] and record.detail["entry"] != record.detail["first"]:
            problems.append(
                f"idempotency key {record.target} gave two entries: {record.detail} (status {record.status})"
            )
    for entry, events in journals.items():
        resolutions = [e for e in events if e in ("billing_commit", "billing_release", "billing_reserve_expired")]
        if len(resolutions) > 1 or events.count("billing_void") > 1 or events.count("billing_reserve") > 1:
            problems.append(f"entry {entry} resolved more than once: {sorted(events)}")
    for key, count in q(
        "SELECT idempotency_key, count(*) FROM billing_journalentry WHERE idempotency_key IS NOT NULL"
        " GROUP BY idempotency_key HAVING count(*) > 1"
    ).fetchall():
        problems.append(f"idempotency key {key} has {count} journals")
    for event, count in q(
        "SELECT provider_event_id, count(*) FROM webhooks_webhookevent GROUP BY provider, provider_event_id"
        " HAVING count(*) > 1"
    ).fetchall():
        problems.append(f"webhook {event} stored {count} times")
    payments = {
        nonce: (status, journals)
        for nonce, status, journals in q(
            "SELECT p.nonce, p.status, (SELECT count(*) FROM billing_journalentry j"
            " WHERE j.idempotency_key = 'x402:payment:' || p.id) FROM credits_x402payment p"
        )
    }
    for nonce, (status, journals) in payments.items():
        if status in ("settled", "completed") and journals != 1:
            problems.append(f"x402 authorization {nonce[:18]}… settled with {journals} journals")
        if status not in ("settled", "completed") and journals:
            problems.append(f"x402 authorization {nonce[:18]}… is {status} but has a journal")
    for nonce, count in q("SELECT nonce, count(*) FROM credits_x402payment GROUP BY payer, nonce HAVING count(*) > 1"):
        problems.append(f"x402 authorization {nonce[:18]}… has {count} payments")
    for record in history.records:
        state = payments.get(record.target, ("missing", 0))[0]
        if record.kind == "x402" and record.status == 200 and state not in ("settled", "completed"):
            problems.append(f"paid x402 answer for {record.target[:18]}… but the payment is {state}")
    # Time: finn acts on the database's clock whatever the host's does (clock_jump).
    for entry, created, inserted in q(
        "SELECT e.id, e.created_at, a.inserted_at FROM billing_billingentry e JOIN finn_auditevent a"
        " ON a.billing_entry_id = e.id AND a.event_type = 'billing_reserve'"
        " WHERE abs(extract(epoch FROM e.created_at - a.inserted_at)) > %s",
        [CREATED_SLACK_SECONDS],
    ).fetchall():
        problems.append(f"entry {entry} created at {created} by finn, inserted at {inserted} by the database")
    for entry, expires, released in q(
        "SELECT e.id, e.expires_at, a.inserted_at FROM billing_billingentry e JOIN finn_auditevent a"
        " ON a.billing_entry_id = e.id AND a.event_type = 'billing_reserve_expired'"
        " WHERE a.inserted_at < e.expires_at - interval '1 second'"
    ).fetchall():
        problems.append(f"hold {entry} expiring at {expires} was released early, at {released}")
    stored = {row[0] for row in q("SELECT provider_event_id FROM webhooks_webhookevent")}
    for record in history.records:
        if record.kind == "webhook" and record.acknowledged and record.target not in stored:
            problems.append(f"acknowledged webhook {record.target} is not stored")
    return problems


def _count(conn: psycopg.Connection[Any], sql: str, *params: object) -> int:
    row = conn.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def check_quiet(conn: psycopg.Connection[Any], deadline_seconds: float) -> tuple[list[str], float]:
    """Wait until nothing is stuck (or the deadline); the problems left, and how long it took."""
    started = time.monotonic()
    entries = "SELECT count(*) FROM billing_billingentry WHERE "
    while True:
        late_holds = _count(
            conn, entries + "state = 'RESERVE_HELD' AND expires_at < now() - make_interval(secs => %s)",
            SWEEP_SLACK_SECONDS,
        )  # fmt: skip
        late_finalize = _count(
            conn, entries + "state = 'FINALIZE_PENDING' AND next_attempt_at < now() - make_interval(secs => %s)",
            FINALIZE_SLACK_SECONDS,
        )  # fmt: skip
        pending = _count(conn, entries + "state = 'FINALIZE_PENDING'")
        expired = _count(conn, entries + "state = 'RESERVE_HELD' AND expires_at < now()")
        webhooks = _count(conn, "SELECT count(*) FROM webhooks_webhookevent WHERE status IN ('pending', 'failed')")
        waited = time.monotonic() - started
        if not (pending or expired or webhooks):
            return [], waited
        if waited > deadline_seconds:  # what is still there after the quiet period is stuck
            stuck = [
                f"{late_holds} holds past TTL + sweep interval" if late_holds else "",
                f"{expired} expired holds not released" if expired and not late_holds else "",
                f"{late_finalize} finalize rows past their schedule + lease" if late_finalize else "",
                f"{pending} finalize rows still pending after {waited:.0f} s of quiet" if pending else "",
                f"{webhooks} webhook events left pending/failed" if webhooks else "",
            ]
            return [line for line in stuck if line], waited
        time.sleep(0.5)


def check_audit(the_world: World) -> list[str]:
    code = (
        "import django; django.setup()\n"
        "from django.utils import timezone\n"
        "from billing.wal import rebuild_balances\n"
        "from finn.audit_chain import audit_chain, audit_verify\n"
        "audit_chain(lag_seconds=0)\n"
        "v = audit_verify()\n"
        "r = rebuild_balances(now=timezone.now())\n"
        "print('OK' if v.ok and not r.differences else f'FAIL chain={v.problem!r} differences={r.differences[:5]}')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=the_world.env, capture_output=True, text=True, timeout=300
    )
    line = (out.stdout.strip().splitlines() or ["no output: " + out.stderr[-500:]])[-1]
    return [] if line == "OK" else [line]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedules", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1, help="the first schedule's seed (the others follow)")
    parser.add_argument("--seeds", default="", help="comma-separated seeds to run instead (regressions)")
    parser.add_argument("--quiet-every", type=int, default=5, help="quiet-period and audit checks every N schedules")
    parser.add_argument("--quiet-seconds", type=float, default=240.0)
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated fault kinds to draw from")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s] or list(range(args.seed, args.seed + args.schedules))
    logs = Path(tempfile.mkdtemp(prefix="finn-chaos-logs-"))
    started = time.monotonic()
    faults: dict[str, int] = {}
    violations = 0
    longest_quiet = 0.0
    with world(logs) as the_world, psycopg.connect(the_world.dsn, autocommit=True) as conn:
        for number, seed in enumerate(seeds, 1):
            history = run_schedule(seed, the_world, tuple(args.faults.split(",")))
            for kind in history.faults[:-1]:
                faults[kind] = faults.get(kind, 0) + 1
            conn_ok = _reconnect(conn, the_world)
            problems = check_books(conn_ok, history)
            if number % args.quiet_every == 0 or number == len(seeds) or problems:
                stuck, waited = check_quiet(conn_ok, args.quiet_seconds)
                longest_quiet = max(longest_quiet, waited)
                problems += stuck + check_audit(the_world)
            acked = sum(r.acknowledged for r in history.records)
            paid = sum(r.kind == "x402" and r.status == 200 for r in history.records)
            unknown = sum(r.status is None for r in history.records)
            print(
                f"schedule {seed}: {len(history.records)} requests ({acked} acknowledged, {unknown} unknown,"
                f" {paid} x402 paid),"
                f" faults {history.faults}: {'OK' if not problems else 'VIOLATIONS'}",
                flush=True,
            )
            if problems:
                violations += len(problems)
                for problem in problems[:20]:
                    print(f"  - {problem}", flush=True)
                print(
                    f"  reproduce: .venv/bin/python -m tests.chaos.harness --seeds {seed}  (logs: {logs})", flush=True
                )
            conn = conn_ok
    print(
        f"chaos: {len(seeds)} schedules, faults {dict(sorted(faults.items()))}, {violations} violations,"
        f" longest quiet period {longest_quiet:.1f} s, wall time {time.monotonic() - started:.0f} s",
        flush=True,
    )
    if not violations:
        shutil.rmtree(logs, ignore_errors=True)
    return 1 if violations else 0


def _reconnect(conn: psycopg.Connection[Any], the_world: World) -> psycopg.Connection[Any]:
    """The checker's own connection, again if a PostgreSQL restart broke it."""
    try:
        conn.execute("SELECT 1")
        return conn
    except psycopg.Error:
        deadline = time.monotonic() + 30
        while True:
            try:
                return psycopg.connect(the_world.dsn, autocommit=True)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


if __name__ == "__main__":
    raise SystemExit(main())
