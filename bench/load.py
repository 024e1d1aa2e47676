#!/usr/bin/env python
"""The seeds' load scenarios against real PostgreSQL, Redis, Celery and a running finn.

    make load                       # starts its own finn (gunicorn + Celery worker) on a spare port
    .venv/bin/python bench/load.py --flows 50 --quotes 100

1. N concurrent reserve→commit flows: all complete, conservation holds.
2. N concurrent reserve→commit flows while the upstream ledger fails 5 finalize calls: the
   retries (dead-letter pipeline) finish every entry, the per-account exposure cap holds.
3. The finalize breaker trips under load (the upstream fails until it has opened): entries are
   deferred, not lost; after recovery every entry reaches FINALIZE_ACKED.
4. M concurrent x402 quotes: all ids distinct.

After each: every journal sums to zero per denomination, balances equal their postings, no
entry is stuck. Prints a table; writes JSON and a latency histogram PNG under bench/results/.
``run_scenarios`` is also what the test suite's smoke version calls (small N).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


@dataclass
class ScenarioResult:
    name: str
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    ok: bool = True

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms) or [0.0]

        def pct(p: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))], 1)

        return {
            "scenario": self.name,
            "requests": self.requests,
            "throughput_per_s": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(statistics.median(ordered), 1),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
            "error_rate": round(self.errors / self.requests, 4) if self.requests else 0.0,
            "ok": self.ok,
            "checks": self.checks,
        }


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    try:
        result = call()
    except Exception as exc:  # a transport error is an error of the scenario, not of the runner
        result = exc
    return (time.perf_counter() - started) * 1000, result


def _flows(base_url: str, keys: list[str], n: int, tag: str, result: ScenarioResult) -> list[str]:
    """N concurrent reserve→commit flows over HTTP; returns the committed entry ids."""
    import httpx

    def flow(index: int) -> list[tuple[float, int, str]]:
        headers = {"Authorization": f"Bearer {keys[index % len(keys)]}", "Idempotency-Key": f"{tag}-{index}"}
        with httpx.Client(base_url=base_url, timeout=30) as client:
            ms1, reserved = _timed(
                lambda: client.post("/api/v1/billing/entries", json={"estimated_cost": 10_000}, headers=headers)
            )
            if isinstance(reserved, Exception) or reserved.status_code != 201:
                return [(ms1, getattr(reserved, "status_code", 0), "")]
            entry = reserved.json()["entry"]["id"]
            auth = {"Authorization": headers["Authorization"]}
            ms2, committed = _timed(
                lambda: client.post(
                    f"/api/v1/billing/entries/{entry}/commit", json={"actual_cost": 6_000}, headers=auth
                )
            )
            return [(ms1, 201, ""), (ms2, getattr(committed, "status_code", 0), entry)]

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        outcomes = [step for steps in pool.map(flow, range(n)) for step in steps]
    result.seconds += time.perf_counter() - started
    result.requests += len(outcomes)
    result.latencies_ms += [ms for ms, _, _ in outcomes]
    result.errors += sum(1 for _, status, _ in outcomes if status not in (200, 201))
    return [entry for _, status, entry in outcomes if status == 200 and entry]


def _conservation(result: ScenarioResult) -> None:
    from billing.selectors import ledger_check

    report = ledger_check()
    result.checks["conservation"] = report.ok
    result.ok = result.ok and report.ok


def _wait_finalized(entries: list[str], result: ScenarioResult, *, timeout: float, sweep: Callable[[], None]) -> None:
    """Until every entry is FINALIZE_ACKED (the sweeper runs as beat would); record what is stuck."""
    from billing.models import BillingEntry

    deadline = time.monotonic() + timeout
    pending = len(entries)
    while time.monotonic() < deadline:
        sweep()
        pending = BillingEntry.objects.filter(pk__in=entries).exclude(state="FINALIZE_ACKED").count()
        if pending == 0:
            break
        time.sleep(0.5)
    result.checks["not_finalized"] = pending
    result.ok = result.ok and pending == 0 and len(entries) > 0


def run_scenarios(
    *,
    base_url: str,
    keys: list[str],
    upstream: Any,
    sweep: Callable[[], None],
    flows: int = 50,
    quotes: int = 100,
    finalize_timeout: float = 120.0,
) -> list[ScenarioResult]:
    """Run the four scenarios; ``upstream`` is the fake ledger (tests.fakes.Upstream) behind FINALIZE_URL."""
    import httpx

    from billing.finalize import finalize_breaker
    from billing.models import BillingEntry

    results: list[ScenarioResult] = []

    # 1. plain flows
    upstream.statuses[:] = [200]
    upstream.requests.clear()
    first = ScenarioResult("1_reserve_commit")
    committed = _flows(base_url, keys, flows, f"s1-{time.time_ns()}", first)
    first.checks["completed"] = len(committed)
    first.ok = len(committed) == flows
    _wait_finalized(committed, first, timeout=finalize_timeout, sweep=sweep)
    _conservation(first)
    results.append(first)

    # 2. five upstream failures: retried, nothing lost
    upstream.statuses[:] = [500] * 5 + [200]
    upstream.requests.clear()
    second = ScenarioResult("2_finalize_failures_retried")
    committed = _flows(base_url, keys, flows, f"s2-{time.time_ns()}", second)
    second.checks["completed"] = len(committed)
    _wait_finalized(committed, second, timeout=finalize_timeout, sweep=sweep)
    second.checks["upstream_failures_served"] = sum(1 for _ in upstream.requests[:5])
    _conservation(second)
    results.append(second)

    # 3. the breaker trips: enough failures to open it, then the upstream recovers
    finalize_breaker().reset()
    upstream.statuses[:] = [500] * 8 + [200]
    upstream.requests.clear()
    third = ScenarioResult("3_finalize_breaker_trips")
    committed = _flows(base_url, keys, flows, f"s3-{time.time_ns()}", third)
    third.checks["completed"] = len(committed)
    opened = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not opened:
        sweep()
        opened = finalize_breaker().state() != "CLOSED"
        time.sleep(0.2)
    third.checks["breaker_opened"] = opened
    third.checks["deferred_while_open"] = BillingEntry.objects.filter(
        pk__in=committed, state="FINALIZE_PENDING"
    ).count()
    _wait_finalized(committed, third, timeout=finalize_timeout, sweep=sweep)
    third.ok = third.ok and opened
    _conservation(third)
    results.append(third)

    # 4. concurrent quotes
    fourth = ScenarioResult("4_x402_quotes")

    def quote(_: int) -> tuple[float, Any]:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            return _timed(lambda: client.post("/api/v1/x402/invoke", json={"model": "echo", "prompt": "load"}))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(quotes, 100)) as pool:
        answers = list(pool.map(quote, range(quotes)))
    fourth.seconds = time.perf_counter() - started
    fourth.requests = len(answers)
    fourth.latencies_ms = [ms for ms, _ in answers]
    ids = [
        a.json()["accepts"][0]["extra"]["quoteId"]
        for _, a in answers
        if not isinstance(a, Exception) and a.status_code == 402
    ]
    fourth.errors = quotes - len(ids)
    fourth.checks["distinct_ids"] = len(set(ids))
    fourth.ok = len(set(ids)) == quotes
    _conservation(fourth)
    results.append(fourth)
    return results


def report(results: list[ScenarioResult], *, directory: Path = RESULTS) -> Path:
    """Print the table; write JSON and a latency histogram PNG; return the JSON path."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = [r.summary() for r in results]
    header = f"{'scenario':32} {'req':>5} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}  ok"
    print(header)
    for row in rows:
        print(
            f"{row['scenario']:32} {row['requests']:>5} {row['throughput_per_s']:>8} {row['p50_ms']:>8} "
            f"{row['p95_ms']:>8} {row['p99_ms']:>8} {row['error_rate']:>7.2%}  {row['ok']}"
        )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = directory / f"load-{stamp}.json"
    path.write_text(json.dumps({"at": stamp, "scenarios": rows}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for result in results:
        if result.latencies_ms:
            axes.hist(result.latencies_ms, bins=40, alpha=0.55, label=result.name)
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("requests")
    axes.set_title("finn load scenarios: request latency")
    axes.legend()
    figure.tight_layout()
    figure.savefig(directory / f"load-{stamp}.png", dpi=100)
    plt.close(figure)
    return path


# --- `make load`: its own finn on a spare port ------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, default=50)
    parser.add_argument("--quotes", type=int, default=100)
    parser.add_argument("--database", default="finn_load")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.fakes import fake_upstream
    from tests.faults.servers import free_port, wait_http_ok

    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", args.database], capture_output=True)
    port = free_port()
    with fake_upstream() as upstream:
        env = {
            **os.environ,
            "SECRET_KEY": os.environ.get("SECRET_KEY", "finn-load-only-secret"),
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{args.database}",
            "REDIS_URL": "redis://127.0.0.1:6379/13",
            "FINALIZE_URL": upstream.url,
            "FINALIZE_BREAKER_COOLDOWN_SECONDS": "1",
            "FEATURE_X402": "true",
            "X402_PAY_TO": "0x000000000000000000000000000000000000dead",
            "RATE_LIMIT_X402_QUOTE": "100000/60",
            "RATE_LIMIT_API_KEY": "100000/60",
            "FINN_BIND": f"127.0.0.1:{port}",
            "DJANGO_SETTINGS_MODULE": "finn.settings",
        }
        os.environ.update(
            {k: env[k] for k in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "FINALIZE_URL", "DJANGO_SETTINGS_MODULE")}
        )
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
        logs = RESULTS / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "finn.wsgi", "--config", "gunicorn.conf.py", "--access-logfile", "/dev/null"],
            cwd=ROOT, env=env, stdout=(logs / "web.log").open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "finn", "worker", "-c", "4", "-l", "WARNING"],
            cwd=ROOT, env=env, stdout=(logs / "worker.log").open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            import django

            django.setup()
            from django.utils import timezone

            from billing.finalize import finalize_sweep
            from billing.services import account_create, account_credit_mint
            from credits.api_keys import api_key_create

            base = f"http://127.0.0.1:{port}"
            wait_http_ok(f"{base}/health")
            keys = []
            for index in range(10):
                account = account_create(kind="user")
                account_credit_mint(
                    account_id=account.pk, amount=10**9, idempotency_key=f"load:{time.time_ns()}:{index}",
                    correlation_id="load", now=timezone.now(),
                )  # fmt: skip
                keys.append(api_key_create(account=account, now=timezone.now()).secret)
            results = run_scenarios(
                base_url=base,
                keys=keys,
                upstream=upstream,
                sweep=lambda: finalize_sweep(now=timezone.now(), grace_seconds=0),
                flows=args.flows,
                quotes=args.quotes,
            )
            path = report(results)
            print(f"results: {path} (+ .png)")
            if not all(r.ok for r in results):
                sys.exit(1)
        finally:
            for process in (web, worker):
                process.terminate()
            for process in (web, worker):
                process.wait(timeout=30)


if __name__ == "__main__":
    main()
