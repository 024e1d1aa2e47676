"""Seed the demo account (idempotent) and print its id and API key as JSON."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from billing.models import Account, AccountKind
from billing.services import account_create, account_credit_mint
from credits.api_keys import api_key_demo_secret, api_key_ensure
from finn import clock

DEMO_USERNAME = "demo"
DEMO_CREDIT = 100_000_000  # 100 USD in µUSD


class Command(BaseCommand):
    help = "Create the demo user, account, credit (100 USD) and API key once; print them as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--credit", type=int, default=DEMO_CREDIT, help="demo credit in µUSD (first run only)")

    def handle(self, *args: Any, **options: Any) -> None:
        now = clock.now()
        user, _ = get_user_model().objects.get_or_create(username=DEMO_USERNAME)
        account = Account.objects.filter(owner=user, kind=AccountKind.USER).order_by("pk").first()
        if account is None:
            account = account_create(kind=AccountKind.USER, owner=user, name="demo")
        mint = account_credit_mint(
            account_id=account.pk,
            amount=options["credit"],
            idempotency_key="seed_demo:credit",
            correlation_id="seed_demo",
            actor="seed_demo",
            reason="demo credit",
            now=now,
        )
        issued = api_key_ensure(account=account, secret=api_key_demo_secret("demo"), name="demo", now=now)
        self.stdout.write(
            json.dumps(
                {
                    "account_id": account.pk,
                    "api_key": issued.secret,
                    "available": mint.balance.available,
                    "held": mint.balance.held,
                }
            )
        )
