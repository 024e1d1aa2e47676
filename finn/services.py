"""Writes of finn's cross-cutting tables: waitlist signups and CSP reports."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from prometheus_client import Counter

from finn.db import violates
from finn.errors import InvalidRequest
from finn.models import CspReport, WaitlistSignup
from finn.validators import is_eth_address

csp_violations_total = Counter("finn_csp_violations_total", "CSP violation reports received.", ["directive"])

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{2,63}$")


def waitlist_signup(*, email: str, wallet: str, now: datetime) -> bool:
    """Record a signup; False when the email or wallet was already on the list (nothing changes)."""
    email = email.strip().lower()
    wallet = wallet.strip()
    if not _EMAIL.match(email):
        raise InvalidRequest("enter a valid email address", reason="invalid_email")
    if wallet and not is_eth_address(wallet):
        raise InvalidRequest("a wallet address is 0x followed by 40 hex digits", reason="invalid_wallet")
    try:
        with transaction.atomic(durable=True):
            WaitlistSignup.objects.create(email=email, wallet=wallet.lower() or None, created_at=now)
    except IntegrityError as exc:
        if violates(exc, "finn_waitlistsignup_email_uniq") or violates(exc, "finn_waitlistsignup_wallet_uniq"):
            return False
        raise
    return True


@dataclass(frozen=True)
class Violation:
    document_uri: str
    violated_directive: str
    blocked_uri: str
    disposition: str


def _text(value: Any, limit: int) -> str:
    return str(value)[:limit] if isinstance(value, str | int) else ""


def csp_violations_parse(body: Any) -> list[Violation]:
    """The legacy ``{"csp-report": {...}}`` form or the Reporting API list; [] if neither."""
    if isinstance(body, dict) and isinstance(body.get("csp-report"), dict):
        reports = [body["csp-report"]]
    elif isinstance(body, list):
        reports = [
            item["body"]
            for item in body
            if isinstance(item, dict) and item.get("type") == "csp-violation" and isinstance(item.get("body"), dict)
        ]
    else:
        return []
    return [
        Violation(
            document_uri=_text(r.get("document-uri") or r.get("documentURL") or "unknown", 500),
            violated_directive=_text(r.get("violated-directive") or r.get("effectiveDirective") or "unknown", 200),
            blocked_uri=_text(r.get("blocked-uri") or r.get("blockedURL") or "unknown", 500),
            disposition=_text(r.get("disposition") or "", 16),
        )
        for r in reports
    ]


def csp_reports_record(*, violations: list[Violation], now: datetime) -> int:
    with transaction.atomic(durable=True):
        CspReport.objects.bulk_create(
            [
                CspReport(
                    document_uri=v.document_uri,
                    violated_directive=v.violated_directive,
                    blocked_uri=v.blocked_uri,
                    disposition=v.disposition,
                    created_at=now,
                )
                for v in violations
            ]
        )
    for violation in violations:
        csp_violations_total.labels(violation.violated_directive.split(" ")[0][:40]).inc()
    return len(violations)
