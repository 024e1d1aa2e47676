"""Rebuild the Redis billing state from exported audit segments (idempotent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.wal import audit_replay


class Command(BaseCommand):
    help = "Replay billing-wal-*.jsonl segments into Redis (entries, cached balances, pending count)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        directory: Path = options["directory"]
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a directory")
        report = audit_replay(directory=directory)
        self.stdout.write(
            f"processed {report.processed}, skipped {report.skipped}, corrupted {report.corrupted},"
            f" truncated {report.truncated_bytes} bytes, last sequence {report.last_sequence},"
            f" {report.seconds:.2f} s"
        )
