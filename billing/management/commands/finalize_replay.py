"""Retry poison (FINALIZE_FAILED) entries upstream with bounded concurrency."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from billing.finalize import finalize_bulk_replay


class Command(BaseCommand):
    help = "Replay FINALIZE_FAILED entries against FINALIZE_URL; acknowledged ones become FINALIZE_ACKED."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", type=int, default=settings.FINALIZE_REPLAY_CONCURRENCY)
        parser.add_argument("--limit", type=int, default=100)

    def handle(self, *args: Any, **options: Any) -> None:
        outcomes = finalize_bulk_replay(concurrency=options["concurrency"], limit=options["limit"])
        self.stdout.write(f"replay outcomes: {outcomes}")
