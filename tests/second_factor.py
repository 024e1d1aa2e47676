"""Enroll a TOTP device and verify a test client's login with a real token (as an authenticator app would)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice


def totp_device(user: AbstractBaseUser) -> TOTPDevice:
    return TOTPDevice.objects.get_or_create(user=user, defaults={"name": "authenticator", "confirmed": True})[0]


def current_token(device: TOTPDevice) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{totp.token():0{device.digits}d}"


def verify_second_factor(client: Client, user: AbstractBaseUser) -> TOTPDevice:
    """POST the current code to the admin's second-factor form; the session is verified after it."""
    device = totp_device(user)
    response = client.post("/admin/second-factor/", {"otp_token": current_token(device), "next": "/admin/"})
    assert response.status_code == 302, response.content[:500]
    return device


def verified_client(user: AbstractBaseUser) -> Client:
    client = Client()
    client.force_login(user)
    verify_second_factor(client, user)
    return client
