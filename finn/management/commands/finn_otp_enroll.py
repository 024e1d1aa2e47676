"""Enroll (or replace) a staff user's TOTP authenticator, out of band (README "Security")."""

from __future__ import annotations

import getpass
import io
from base64 import b32encode
from typing import Any

import segno
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from finn import clock
from finn.audit import audit_append


class Command(BaseCommand):
    help = (
        "Create a TOTP device for a staff user and print its otpauth:// URI and a QR code to scan."
        " Hand it to the user in person or over a channel other than their password's."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--reset", action="store_true", help="replace the user's existing devices")
        parser.add_argument("--no-qr", action="store_true", help="print the URI and secret only")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user {options['username']!r}")
        with transaction.atomic():
            existing = TOTPDevice.objects.select_for_update().filter(user=user)
            if existing.exists() and not options["reset"]:
                raise CommandError(f"{user.username} already has an authenticator; --reset replaces it")
            replaced = existing.count()
            existing.delete()
            device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
            audit_append(
                event_type="second_factor_enrolled",
                payload={"username": user.username, "device": "totp", "replaced": replaced},
                correlation_id=f"user:{user.pk}",
                now=clock.now(),
                actor=f"manage.py finn_otp_enroll ({getpass.getuser()})",
            )
        url = device.config_url
        self.stdout.write(f"TOTP enrolled for {user.username} (replaced {replaced}).")
        self.stdout.write(f"secret: {b32encode(device.bin_key).decode()}")
        self.stdout.write(f"uri:    {url}")
        if not options["no_qr"]:
            drawn = io.StringIO()
            segno.make(url, error="m").terminal(out=drawn, compact=True)
            self.stdout.write(drawn.getvalue())
