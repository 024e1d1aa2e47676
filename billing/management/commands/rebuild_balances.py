"""Recompute balances from postings into a shadow and diff them with the live rows."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.wal import rebuild_balances
from finn import clock


class Command(BaseCommand):
    help = "Diff every balance row with the sum of its postings; --repair fixes rows (audited)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--repair", action="store_true", help="set differing rows to the postings' sums")

    def handle(self, *args: Any, **options: Any) -> None:
        report = rebuild_balances(repair=options["repair"], now=clock.now())
        self.stdout.write(
            f"accounts {report.accounts}, differences {len(report.differences)}, repaired {report.repaired},"
            f" {report.seconds:.2f} s"
        )
        for account_id, available, held, posted_available, posted_held in report.differences[:100]:
            self.stdout.write(
                f"  account {account_id}: row {available}/{held}, postings {posted_available}/{posted_held}"
            )
        if report.differences and not options["repair"]:
            raise CommandError("balance rows differ from their postings", returncode=1)
