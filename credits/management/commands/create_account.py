"""Create an account with starting credit and a new API key."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.models import AccountKind
from billing.services import account_create, account_credit_mint
from credits.api_keys import api_key_create
from finn import clock
from finn.errors import DomainError


class Command(BaseCommand):
    help = "Create a user or agent account, credit it (µUSD) and print its id and a new API key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--credit", type=int, default=0, help="starting credit in micro-USD")
        parser.add_argument("--kind", choices=[AccountKind.USER, AccountKind.AGENT], default=AccountKind.USER)
        parser.add_argument("--credit-limit", type=int, default=0, help="how far below zero available may go (µUSD)")
        parser.add_argument("--owner", default="", help="username of the owner (created if missing)")
        parser.add_argument("--staff", action="store_true", help="the owner is finance staff (may void)")
        parser.add_argument("--name", default="")
        parser.add_argument("--json", action="store_true", help="print JSON only")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["credit"] < 0:
            raise CommandError("--credit must be >= 0")
        now = clock.now()
        owner = None
        if options["owner"]:
            owner, _ = get_user_model().objects.get_or_create(username=options["owner"])
            if options["staff"] and not owner.is_staff:
                owner.is_staff = True
                owner.save(update_fields=["is_staff"])
        try:
            account = account_create(
                kind=options["kind"], owner=owner, name=options["name"], credit_limit=options["credit_limit"]
            )
            if options["credit"]:
                account_credit_mint(
                    account_id=account.pk,
                    amount=options["credit"],
                    idempotency_key=f"create_account:{account.pk}",
                    correlation_id=f"create_account:{account.pk}",
                    actor="create_account",
                    reason="starting credit",
                    now=now,
                )
            issued = api_key_create(account=account, name="create_account", now=now)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        result = {"account_id": account.pk, "api_key": issued.secret, "kind": account.kind, "credit": options["credit"]}
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            self.stdout.write(f"account {account.pk} ({account.kind}) credited {options['credit']} µUSD")
            self.stdout.write(f"API key (shown once): {issued.secret}")
