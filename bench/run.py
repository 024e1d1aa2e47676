#!/usr/bin/env python
"""Billed requests per second on the hot path, as a ratio to the database's own limit.

Usage (with `make run` serving on 127.0.0.1:8000, in another terminal):

    make bench                                  # every scenario, 8 connections, 20 s each
    make bench BENCH_ARGS="--scenario uniform --seconds 60"

One billed request = reserve (POST /api/v1/billing/entries) + its commit. Scenarios:

- ``uniform``: wrk (C, Lua script ``bench/wrk/billed.lua``) over 8 connections on 10,000 accounts,
  each with its own API key (created once through finn's services; cached in var/bench.json).
- ``hot``: the same against one account.
- ``inprocess``: finn's services called directly (no HTTP), 2 processes x 4 threads.

For the HTTP scenarios it reads the CPU time of the web server's processes (/proc) before and after,
and prints the web-process CPU per HTTP request. Last it runs the pgbench anchor
(``bench/anchor/raw_anchor.sh``, a copy of ../shared/bench: reserve and commit as two prepared
plpgsql calls) with the same connection count and prints every figure as a ratio to it, since
these machines' absolute speed varies from day to day. A JSON copy goes to bench/results/.
Both finn's runs and the anchor write real, balanced rows: `manage.py ledger_check` passes after.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / "var"
sys.path.insert(0, str(ROOT))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def django_setup() -> None:
    """The settings `make run` uses: its key files and the finn_app role."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finn.settings")
    if "SECRET_KEY" not in os.environ and (VAR / "secret_key").exists():
        os.environ["SECRET_KEY"] = (VAR / "secret_key").read_text().strip()
    if "JWT_SIGNING_KEY" not in os.environ and (VAR / "jwt_es256.pem").exists():
        os.environ.setdefault("JWT_SIGNING_KEY_FILE", str(VAR / "jwt_es256.pem"))
    os.environ.setdefault("DATABASE_URL", "postgres://finn_app@127.0.0.1:5432/finn")
    os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
    import django

    django.setup()


def setup_accounts(count: int, credit: int, cache_name: str) -> list[tuple[int, str]]:
    """(account_id, api_key) pairs, creating missing accounts through finn's services."""
    from django.utils import timezone

    from billing.models import Account
    from billing.services import account_create, account_credit_mint
    from credits.api_keys import api_key_create

    cache = VAR / cache_name
    pairs: list[tuple[int, str]] = []
    if cache.exists():
        stored = [tuple(p) for p in json.loads(cache.read_text())]
        existing = set(Account.objects.filter(pk__in=[p[0] for p in stored]).values_list("pk", flat=True))
        pairs = [(int(a), str(k)) for a, k in stored if a in existing]
    started = time.monotonic()
    while len(pairs) < count:
        now = timezone.now()
        account = account_create(name="bench")
        account_credit_mint(
            account_id=account.pk, amount=credit, idempotency_key=f"bench:{account.pk}", correlation_id="bench", now=now
        )
        pairs.append((account.pk, api_key_create(account=account, name="bench", now=now).secret))
        if len(pairs) % 1000 == 0:
            print(f"  created {len(pairs)} accounts ({time.monotonic() - started:.0f} s)", flush=True)
            cache.write_text(json.dumps(pairs))
    VAR.mkdir(exist_ok=True)
    cache.write_text(json.dumps(pairs))
    return pairs[:count]


def _pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found if int(pid) != os.getpid()]


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (those that ended meanwhile count as 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


DEFAULT_SERVER_PATTERN = "granian .*finn.wsgi|gunicorn finn.wsgi"
SERVER_PATTERN = DEFAULT_SERVER_PATTERN


def run_wrk(url: str, keys: list[str], connections: int, seconds: int, warmup: int = 0) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (make bench installs the Debian package)")
    keys_file = VAR / "bench_keys.txt"
    keys_file.write_text("\n".join(keys) + "\n")
    if warmup:
        # Not measured: fresh worker threads, connections and key caches (steady state is the figure).
        run_wrk(url, keys, connections, warmup)
    web = _pids(SERVER_PATTERN)
    database = _pids("postgres: finn_app")
    if not web:
        raise SystemExit(f"no process matches {SERVER_PATTERN!r}: start finn with `make run` first")
    web_before, db_before = cpu_seconds(web), cpu_seconds(database)
    command = ["wrk", "-t", str(connections), "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    command += ["-s", str(ROOT / "bench" / "wrk" / "billed.lua"), url]
    output = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "FINN_BENCH_KEYS": str(keys_file)}, check=True
    ).stdout
    web_after, db_after = cpu_seconds(web), cpu_seconds(database)
    line = next(line for line in output.splitlines() if line.startswith("FINN_RESULT"))
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    wall = int(fields["duration_us"]) / 1e6
    requests = int(fields["requests"])
    return {
        "billed_per_s": int(fields["commits"]) / wall,
        "http_per_s": requests / wall,
        "p50_ms": int(fields["p50_us"]) / 1000,
        "p99_ms": int(fields["p99_us"]) / 1000,
        "max_ms": int(fields["max_us"]) / 1000,
        "errors": int(fields["failures"]) + int(fields["socket_errors"]),
        "error_kinds": fields.get("kinds", ""),
        "web_cpu_ms_per_request": (web_after - web_before) * 1000 / max(requests, 1),
        "db_cpu_ms_per_request": (db_after - db_before) * 1000 / max(requests, 1),
    }


def inprocess_worker(pairs_file: str, threads: int, seconds: float) -> None:
    """One process of the in-process scenario: ``threads`` threads of reserve → commit; JSON on stdout."""
    django_setup()
    from django.db import connection
    from django.utils import timezone

    from billing.services import entry_commit, entry_reserve

    accounts = [a for a, _ in json.loads(Path(pairs_file).read_text())]
    counts: list[int] = []
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop() -> None:
        done, mine = 0, []
        try:
            while time.monotonic() < deadline:
                account = random.choice(accounts)
                started = time.perf_counter()
                entry = entry_reserve(
                    account_id=account, estimated_cost=1000, correlation_id="bench", now=timezone.now()
                )
                entry_commit(entry_id=entry.entry.id, actual_cost=700, now=timezone.now())
                mine.append(time.perf_counter() - started)
                done += 1
        finally:
            connection.close()
        with lock:
            counts.append(done)
            latencies.extend(mine)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(json.dumps({"billed": sum(counts), "latencies": latencies}))


def run_inprocess(pairs: list[tuple[int, str]], processes: int, threads: int, seconds: int) -> dict[str, Any]:
    pairs_file = VAR / "bench_inprocess.json"
    pairs_file.write_text(json.dumps(pairs))
    command = [sys.executable, __file__, "--inprocess-worker", str(pairs_file), str(threads), str(seconds)]
    started = time.monotonic()
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    results = [json.loads(child.communicate()[0]) for child in children]
    wall = time.monotonic() - started
    latencies = sorted(x for r in results for x in r["latencies"])
    billed = sum(r["billed"] for r in results)
    return {
        "billed_per_s": billed / seconds,
        "wall_s": wall,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan"),
        "errors": 0,
    }


def run_anchor(clients: int, seconds: int) -> float:
    output = subprocess.run(
        ["bash", str(ROOT / "bench" / "anchor" / "raw_anchor.sh"), str(clients), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(output.split("billed_per_s=")[1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--scenario", choices=["all", "uniform", "hot", "inprocess"], default="all")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--credit", type=int, default=10**12, help="µUSD minted per bench account")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured seconds of load before each HTTP run")
    parser.add_argument("--no-anchor", action="store_true", help="skip the pgbench anchor")
    parser.add_argument("--server-pattern", default=DEFAULT_SERVER_PATTERN, help="pgrep -f regex of the web processes")
    parser.add_argument("--inprocess-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global SERVER_PATTERN  # one command-line setting, read by run_wrk
    SERVER_PATTERN = args.server_pattern
    if args.inprocess_worker:
        pairs_file, threads, seconds = args.inprocess_worker
        inprocess_worker(pairs_file, int(threads), float(seconds))
        return
    django_setup()
    from django.db import connections

    pairs = setup_accounts(args.accounts, args.credit, "bench.json")
    hot = setup_accounts(1, args.credit, "bench_hot.json")
    connections.close_all()
    results: dict[str, dict[str, Any]] = {}
    wanted = ["uniform", "hot", "inprocess"] if args.scenario == "all" else [args.scenario]
    for scenario in wanted:
        print(f"{scenario}: {args.seconds} s ...", flush=True)
        if scenario == "uniform":
            keys = [k for _, k in pairs]
            results[scenario] = run_wrk(args.url, keys, args.connections, args.seconds, args.warmup)
        elif scenario == "hot":
            keys = [k for _, k in hot]
            results[scenario] = run_wrk(args.url, keys, args.connections, args.seconds, args.warmup)
        else:
            results[scenario] = run_inprocess(pairs, 2, 4, args.seconds)
    anchor = None if args.no_anchor else run_anchor(args.connections, args.seconds)
    print()
    print(
        f"{'scenario':<10} {'billed/s':>9} {'ratio':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'web CPU ms/req':>15}"
    )
    for name, r in results.items():
        ratio = f"{r['billed_per_s'] / anchor:.3f}" if anchor else "-"
        cpu = f"{r['web_cpu_ms_per_request']:.2f}" if "web_cpu_ms_per_request" in r else "-"
        print(
            f"{name:<10} {r['billed_per_s']:9.1f} {ratio:>7} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}"
            f" {r['errors']:7d} {cpu:>15}"
        )
        if r.get("error_kinds"):
            print(f"           errors: {r['error_kinds']}")
    if anchor:
        print(f"{'anchor':<10} {anchor:9.1f}   1.000   (pgbench, {args.connections} clients, prepared plpgsql)")
    out = ROOT / "bench" / "results" / f"hot-path-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"anchor_billed_per_s": anchor, "connections": args.connections, **results}, indent=2))
    print(f"\nwritten {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
