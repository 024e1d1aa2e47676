"""Walk the audit log from genesis: every CRC32 and every chain link."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from finn.audit_chain import audit_verify


class Command(BaseCommand):
    help = "Verify the audit log's checksums and hash chain; exit 1 at the first fault."

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_verify(progress=lambda n: self.stdout.write(f"verified {n} records ..."))
        self.stdout.write(
            f"records {report.records}, chained {report.chained}, unchained tail {report.unchained_tail},"
            f" {report.seconds:.1f} s"
        )
        if not report.ok:
            self.stdout.write(f"FIRST BAD SEQUENCE {report.first_bad_sequence}: {report.problem}")
            raise CommandError(f"audit log verification failed at sequence {report.first_bad_sequence}", returncode=1)
        self.stdout.write("audit log OK")
