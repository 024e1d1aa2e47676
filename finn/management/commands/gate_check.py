"""Launch gates 0-4 against a running finn (the seeds' gate-check, in this stack).

    manage.py gate_check <0-4> [--json] [--dry-run] [--url URL] [--api-key KEY]

0 Smoke: health 200, /metrics reachable, alert rules present and valid.
1 Ignition: a reserve → commit round trip on a test account; conservation holds.
2 Warmup: personality, onboarding and credit purchase endpoints answer.
3 Idle: feature flags readable and toggleable.
4 Launch: the x402 402 challenge is served, models are listed, no breaker is open.
Exit 0 when every check passes, 1 when one fails, 2 on bad usage.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from finn import clock
from finn.flags import FLAGS, feature_enabled, feature_flag_set
from finn.registry import breakers, check_run

GATE_NAMES = {0: "Smoke", 1: "Ignition", 2: "Warmup", 3: "Idle", 4: "Launch"}
ALERT_RULES = Path(settings.BASE_DIR) / "deploy" / "prometheus" / "alerts.yml"
PROBE_COLLECTION = "0x" + "00" * 19 + "01"


class CheckFailed(Exception):
    pass


def _require(condition: object, message: str) -> None:
    """A check's condition (not ``assert``: checks must hold under ``python -O`` too)."""
    if not condition:
        raise CheckFailed(message)


@dataclass
class Check:
    name: str
    status: str  # PASS | FAIL
    detail: str


class Gate:
    def __init__(self, url: str, api_key: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def _get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=self.timeout, **kwargs)

    def _post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body if body is not None else {}, timeout=self.timeout, **kwargs)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    # gate 0
    def health(self) -> str:
        response = self._get("/health")
        _require(response.status_code == 200, f"/health answered {response.status_code}: {response.text[:200]}")
        return "200 " + response.text[:80]

    def metrics(self) -> str:
        headers = {"Authorization": f"Bearer {settings.METRICS_BEARER_TOKEN}"} if settings.METRICS_BEARER_TOKEN else {}
        response = self._get("/metrics", headers=headers)
        _require(response.status_code == 200, f"/metrics answered {response.status_code}")
        _require("billing_ops_total" in response.text or "python_info" in response.text, "no finn metrics exported")
        return f"200, {len(response.text)} bytes"

    def alert_rules(self) -> str:
        _require(ALERT_RULES.exists(), f"{ALERT_RULES} is missing")
        promtool = shutil.which("promtool")
        if promtool is None:
            import yaml

            groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
            return f"{sum(len(g['rules']) for g in groups)} rules (parsed; promtool not installed)"
        done = subprocess.run(  # noqa: S603 - a fixed tool on a file of this repository
            [promtool, "check", "rules", str(ALERT_RULES)], capture_output=True, text=True
        )
        _require(done.returncode == 0, done.stdout + done.stderr)
        return done.stdout.strip().splitlines()[-1].strip()

    # gate 1
    def round_trip(self) -> str:
        _require(self.api_key, "an API key is needed (--api-key, or var/demo.json from make run)")
        headers = {**self._auth(), "Idempotency-Key": f"gate-{uuid.uuid4().hex}"}
        reserved = self._post(
            "/api/v1/billing/entries", {"estimated_cost": 1000, "correlation_id": "gate-check"}, headers=headers
        )
        _require(reserved.status_code == 201, f"reserve answered {reserved.status_code}: {reserved.text[:200]}")
        entry = reserved.json()["entry"]["id"]
        committed = self._post(f"/api/v1/billing/entries/{entry}/commit", {"actual_cost": 400}, headers=self._auth())
        _require(committed.status_code == 200, f"commit answered {committed.status_code}: {committed.text[:200]}")
        return f"entry {entry} {committed.json()['entry']['state']}"

    def conservation(self) -> str:
        result = check_run("ledger")
        _require(result.ok, result.summary[:300])
        return "journals sum to zero per denomination; balances equal their postings"

    # gate 2
    def personality(self) -> str:
        response = self._get(f"/api/v1/nft/{PROBE_COLLECTION}/1/personality")
        _require(response.status_code in (200, 404, 503), f"answered {response.status_code}")
        _require("code" in response.json() or "name" in response.json(), "not a personality answer")
        return str(response.status_code)

    def onboarding(self) -> str:
        response = self._post("/api/v1/onboarding/start", headers=self._auth())
        _require(response.status_code in (201, 401, 403, 503), f"answered {response.status_code}")
        return str(response.status_code)

    def credit_purchase(self) -> str:
        response = self._post("/api/v1/credits/purchase", {}, headers=self._auth())
        _require(response.status_code in (400, 401, 403), f"answered {response.status_code}")
        return str(response.status_code)

    # gate 3
    def flags(self) -> str:
        states = {name: feature_enabled(name) for name in FLAGS}
        probe = "x402_public"
        feature_flag_set(name=probe, enabled=not states[probe], actor="gate_check", now=clock.now())
        flipped = feature_enabled(probe)
        feature_flag_set(name=probe, enabled=states[probe], actor="gate_check", now=clock.now())
        _require(flipped is not states[probe], "toggling x402_public had no effect")
        _require(feature_enabled(probe) is states[probe], "x402_public was not restored")
        return ", ".join(f"{k}={'on' if v else 'off'}" for k, v in states.items())

    # gate 4
    def x402_challenge(self) -> str:
        response = self._post("/api/v1/x402/invoke", {"model": "echo", "prompt": "gate check"})
        _require(response.status_code == 402, f"answered {response.status_code}: {response.text[:200]}")
        _require("PAYMENT-REQUIRED" in response.headers, "no PAYMENT-REQUIRED header")
        return "402 with PAYMENT-REQUIRED"

    def models(self) -> str:
        response = self._get("/api/v1/models")
        _require(response.status_code == 200, f"answered {response.status_code}")
        listed = [m["model"] for m in response.json()["models"]]
        _require(listed, "no models listed")
        return ", ".join(listed)

    def breakers(self) -> str:
        states = {name: breaker.state() for name, breaker in breakers().items()}
        _require({"finalize", "settlement", "nft_detection"} <= set(states), f"registered: {', '.join(states)}")
        open_ = [name for name, state in states.items() if state != "CLOSED"]
        _require(not open_, f"open: {', '.join(open_)}")
        return "all closed"

    def plan(self, gate: int) -> list[tuple[str, Callable[[], str]]]:
        return {
            0: [("health", self.health), ("metrics", self.metrics), ("alert_rules", self.alert_rules)],
            1: [("billing_round_trip", self.round_trip), ("conservation", self.conservation)],
            2: [
                ("personality_endpoint", self.personality),
                ("onboarding_endpoint", self.onboarding),
                ("credit_purchase_endpoint", self.credit_purchase),
            ],
            3: [("feature_flags", self.flags)],
            4: [
                ("x402_challenge", self.x402_challenge),
                ("models_listed", self.models),
                ("no_breaker_open", self.breakers),
            ],
        }[gate]


def run_gate(gate: int, *, url: str, api_key: str, dry_run: bool) -> dict[str, Any]:
    runner = Gate(url, api_key)
    checks: list[Check] = []
    for name, check in runner.plan(gate):
        if dry_run:
            checks.append(Check(name, "PASS", "dry run: not executed"))
            continue
        try:
            checks.append(Check(name, "PASS", check()))
        except CheckFailed as exc:
            checks.append(Check(name, "FAIL", str(exc)[:300]))
        except Exception as exc:  # any other failure (connection refused, bad JSON) fails the check
            checks.append(Check(name, "FAIL", f"{type(exc).__name__}: {exc}"[:300]))
    failed = sum(c.status == "FAIL" for c in checks)
    return {
        "gate": gate,
        "gate_name": GATE_NAMES[gate],
        "overall": "FAIL" if failed else "PASS",
        "passed": len(checks) - failed,
        "failed": failed,
        "checks": [asdict(c) for c in checks],
    }


def _demo_key() -> str:
    demo = Path(settings.BASE_DIR) / "var" / "demo.json"
    try:
        return str(json.loads(demo.read_text())["api_key"])
    except (OSError, ValueError, KeyError):
        return ""


class Command(BaseCommand):
    help = "Check a launch gate (0-4) against a running finn."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("gate", type=int, choices=sorted(GATE_NAMES))
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.add_argument("--dry-run", action="store_true", help="list the checks without running them")
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--api-key", default="", help="for gate 1 (default: var/demo.json's key)")

    def handle(self, *args: Any, **options: Any) -> None:
        result = run_gate(
            options["gate"], url=options["url"], api_key=options["api_key"] or _demo_key(), dry_run=options["dry_run"]
        )
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            for check in result["checks"]:
                self.stdout.write(f"  [{check['status']}] {check['name']}: {check['detail']}")
            self.stdout.write(
                f"Gate {result['gate']} ({result['gate_name']}): {result['overall']} "
                f"({result['passed']} passed, {result['failed']} failed)"
            )
        if result["failed"]:
            sys.exit(1)


__all__ = ["Command", "CommandError", "run_gate"]
