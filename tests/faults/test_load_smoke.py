"""A short run of the load scenarios (bench/load.py) in the suite: live server, real Celery worker."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from billing.finalize import finalize_sweep
from tests.credits.x402_helpers import X402_SETTINGS
from tests.fakes import fake_upstream
from tests.faults.celery_worker import start_worker

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))


@pytest.mark.django_db(transaction=True)
def test_the_load_scenarios_hold_their_invariants(live_server, make_account, tmp_path: Path) -> None:
    import load  # bench/load.py

    keys = [make_account(10**9).key for _ in range(3)]
    limits = {**settings.RATE_LIMITS, "x402_quote": (10_000, 60), "api_key": (10_000, 60)}
    with fake_upstream() as upstream:
        worker = start_worker(tmp_path / "worker.log", FINALIZE_URL=upstream.url, FINALIZE_BREAKER_COOLDOWN_SECONDS="1")
        try:
            with override_settings(**X402_SETTINGS, FINALIZE_URL=upstream.url, RATE_LIMITS=limits):
                results = load.run_scenarios(
                    base_url=live_server.url,
                    keys=keys,
                    upstream=upstream,
                    sweep=lambda: finalize_sweep(now=timezone.now(), grace_seconds=0),
                    flows=8,
                    quotes=20,
                    finalize_timeout=60,
                )
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    summary = {r.name: r.summary() for r in results}
    assert all(r.ok for r in results), json.dumps(summary, indent=2)
    assert summary["3_finalize_breaker_trips"]["checks"]["breaker_opened"] is True
    assert summary["4_x402_quotes"]["checks"]["distinct_ids"] == 20
    path = load.report(results, directory=tmp_path)
    assert json.loads(path.read_text())["scenarios"][0]["scenario"] == "1_reserve_commit"
    assert path.with_suffix(".png").stat().st_size > 10_000
