"""Access tokens: ES256 with a dedicated key and a kid, rotation without logging anyone out, JWKS."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
from django.test import Client, override_settings

from credits.tokens import keyring, public_jwk, token_sign, token_verify

KEYS = Path(__file__).resolve().parents[1] / "keys"
ROOT = Path(__file__).resolve().parents[2]
CURRENT = (KEYS / "jwt_es256_test.pem").read_text()
NEXT = (KEYS / "jwt_es256_test_next.pem").read_text()


def _public_pem(private_pem: str) -> str:
    key = load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def _claims(ttl: int = 300) -> dict[str, object]:
    now = int(time.time())
    return {"sub": "1", "iat": now, "exp": now + ttl, "typ": "access"}


def test_tokens_carry_the_kid_of_a_dedicated_es256_key_served_in_jwks() -> None:
    token = token_sign(_claims())
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] == keyring().signing_kid
    assert token_verify(token, required=["exp"])["sub"] == "1"
    jwks = Client().get("/.well-known/jwks.json").json()
    assert [k["kid"] for k in jwks["keys"]] == [header["kid"]]
    assert jwks["keys"][0]["kty"] == "EC"
    assert "d" not in jwks["keys"][0]  # never the private part


def test_rotation_keeps_old_tokens_valid_until_they_expire() -> None:
    old_token = token_sign(_claims())
    old_kid = keyring().signing_kid
    with override_settings(JWT_SIGNING_KEY=NEXT, JWT_VERIFICATION_KEYS=_public_pem(CURRENT)):
        new_token = token_sign(_claims())
        assert jwt.get_unverified_header(new_token)["kid"] != old_kid
        assert token_verify(old_token, required=["exp"])["sub"] == "1"
        assert token_verify(new_token, required=["exp"])["sub"] == "1"
        assert {k["kid"] for k in Client().get("/.well-known/jwks.json").json()["keys"]} == {
            old_kid,
            jwt.get_unverified_header(new_token)["kid"],
        }
    with override_settings(JWT_SIGNING_KEY=NEXT, JWT_VERIFICATION_KEYS=""), pytest.raises(jwt.InvalidTokenError):
        token_verify(old_token, required=["exp"])  # the old key retired: its tokens stop


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_tampered_headers_are_refused() -> None:
    token = token_sign(_claims())
    _, payload, signature = token.split(".")
    kid = keyring().signing_kid
    cases = [
        f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{payload}.",
        f"{_b64({'alg': 'ES256', 'typ': 'JWT', 'kid': 'someone-else'})}.{payload}.{signature}",
        f"{_b64({'alg': 'ES384', 'typ': 'JWT', 'kid': kid})}.{payload}.{signature}",
        # HS256 keyed with our public key (the classic algorithm confusion)
        jwt.api_jws.PyJWS().encode(
            payload=base64.urlsafe_b64decode(payload + "==="), key=b"x", algorithm="HS256", headers={"kid": kid}
        ),
    ]
    for forged in cases:
        with pytest.raises(jwt.InvalidTokenError):
            token_verify(forged, required=["exp"])
    expired = token_sign(_claims(ttl=-10))
    with pytest.raises(jwt.ExpiredSignatureError):
        token_verify(expired, required=["exp"])
    assert public_jwk(keyring().signing_key.public_key())["kid"] == kid


def test_without_a_signing_key_and_debug_off_finn_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWT_")}
    env.update({"DJANGO_SETTINGS_MODULE": "finn.settings", "SECRET_KEY": "x" * 50, "DEBUG": "false"})
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "refusing to start: JWT_SIGNING_KEY" in done.stderr
