"""Prove the ledger balances: exit 0 only if every check passes."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.selectors import ledger_check


class Command(BaseCommand):
    help = (
        "Check that every journal entry sums to zero per denomination, that each denomination "
        "sums to zero over the whole ledger, and that every balance row equals the sum of its postings."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--limit", type=int, default=100, help="report at most this many problems per check")

    def handle(self, *args: Any, **options: Any) -> None:
        report = ledger_check(limit=options["limit"])
        for line in report.lines():
            self.stdout.write(line)
        if not report.ok:
            raise CommandError("ledger check failed", returncode=1)
