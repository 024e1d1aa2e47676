"""Export the audit log as JSONL segments (billing-wal-<first seq>.jsonl)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from finn.audit_chain import SEGMENT_MAX_BYTES, audit_export


class Command(BaseCommand):
    help = "Write audit records as JSONL segments of at most 1 GiB each."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path)
        parser.add_argument("--after", type=int, default=0, help="only records with a larger sequence")
        parser.add_argument("--segment-bytes", type=int, default=SEGMENT_MAX_BYTES)

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_export(
            directory=options["directory"], after=options["after"], segment_max_bytes=options["segment_bytes"]
        )
        self.stdout.write(f"exported {report.records} records in {len(report.segments)} segment(s)")
        for name in report.segments:
            self.stdout.write(f"  {name}")
