"""Signed receipts, verified the way a customer would: another JOSE library (jwcrypto) and the served JWKS."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from credits import receipts
from finn.audit_chain import audit_chain
from finn.models import AuditEvent
from tests.conftest import post_json

KEYS = Path(__file__).resolve().parents[1] / "keys"
CURRENT = (KEYS / "jwt_es256_test.pem").read_text()
NEXT = (KEYS / "jwt_es256_test_next.pem").read_text()
RESERVE = "/api/v1/billing/entries"


def _public_pem(private_pem: str) -> str:
    key = load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def verify_offline(token: str, jwks_document: dict) -> dict:
    """What a customer runs: pick the key by the header's kid, check ES256, read the claims."""
    keys = jwk.JWKSet.from_json(json.dumps(jwks_document))
    signed = jws.JWS()
    signed.deserialize(token)
    header = signed.jose_header
    assert (header["alg"], header["typ"]) == ("ES256", "finn-receipt+jwt")
    signed.verify(keys.get_key(header["kid"]), alg="ES256")
    return json.loads(signed.payload)


def _kid(token: str) -> str:
    signed = jws.JWS()
    signed.deserialize(token)
    return str(signed.jose_header["kid"])


def _jwks() -> dict:
    response = Client().get("/.well-known/jwks.json")
    assert response.status_code == 200
    return response.json()


@pytest.mark.django_db
def test_a_metered_commit_answers_a_receipt_that_verifies_offline(make_account) -> None:
    # given
    funded = make_account(1_000_000)
    audit_chain(lag_seconds=0)
    receipts._head = None  # the head another test's receipt left in this process's 5-s cache
    head = AuditEvent.objects.filter(chain_hash__isnull=False).order_by("-sequence").first()
    held = post_json(
        funded.client(), RESERVE, {"model": "claude-sonnet-4", "input_tokens": 1000, "max_output_tokens": 500}
    ).json()["entry"]
    # when
    response = post_json(
        funded.client(), f"{RESERVE}/{held['id']}/commit", {"usage": {"input_tokens": 900, "output_tokens": 120}}
    )
    # then
    assert response.status_code == 200, response.content
    claims = verify_offline(response.json()["receipt"], _jwks())
    commit_row = AuditEvent.objects.get(billing_entry_id=held["id"], event_type="billing_commit")
    assert claims["iss"] == "finn"
    assert (claims["kind"], claims["event"], claims["entry_id"], claims["account_id"]) == (
        "billing_entry", "commit", held["id"], funded.pk,
    )  # fmt: skip
    assert claims["currency_unit"] == "micro_usd"
    assert claims["amounts"] == {"estimated_cost": 10_500, "actual_cost": 4_500, "refunded": 6_000, "charged": 4_500}
    assert (claims["model"], claims["price_version"]) == ("claude-sonnet-4", held["price_version"])
    assert claims["usage"] == {"input_tokens": 900, "output_tokens": 120}
    assert claims["audit"]["sequence"] == commit_row.sequence
    assert claims["audit"]["chain_head"] == {"sequence": head.sequence, "hash": head.chain_hash}
    # the same receipt on request, for the owner only
    again = funded.client().get(f"{RESERVE}/{held['id']}/receipt")
    assert again.status_code == 200
    assert verify_offline(again.json()["receipt"], _jwks())["audit"]["sequence"] == commit_row.sequence
    assert make_account(0).client().get(f"{RESERVE}/{held['id']}/receipt").status_code == 404


@pytest.mark.django_db
def test_a_hold_has_no_receipt_and_a_void_has_one(make_account) -> None:
    # given
    funded = make_account(1_000_000)
    staff = make_account(0, staff=True)
    held = post_json(funded.client(), RESERVE, {"estimated_cost": 5_000}).json()["entry"]
    # when
    none_yet = funded.client().get(f"{RESERVE}/{held['id']}/receipt")
    post_json(funded.client(), f"{RESERVE}/{held['id']}/commit", {"actual_cost": 3_000})
    voided = post_json(staff.client(), f"{RESERVE}/{held['id']}/void", {"reason": "customer dispute"})
    # then
    assert (none_yet.status_code, none_yet.json()["code"]) == (409, "not_charged")
    claims = verify_offline(voided.json()["receipt"], _jwks())
    assert (claims["event"], claims["amounts"]["refunded"], claims["amounts"]["charged"]) == ("void", 3_000, 0)
    assert claims["audit"]["event_type"] == "billing_void"
    assert claims["model"] is None
    assert claims["usage"] is None


@pytest.mark.django_db
def test_receipts_signed_before_a_key_rotation_still_verify_and_a_forgery_does_not(make_account) -> None:
    # given: a receipt signed with the current key
    funded = make_account(1_000_000)
    held = post_json(funded.client(), RESERVE, {"estimated_cost": 5_000}).json()["entry"]
    old = post_json(funded.client(), f"{RESERVE}/{held['id']}/commit", {"actual_cost": 1_000}).json()["receipt"]
    old_kid = _kid(old)
    # when: the key rotates (the old public key stays in the JWKS)
    with override_settings(JWT_SIGNING_KEY=NEXT, JWT_VERIFICATION_KEYS=_public_pem(CURRENT)):
        rotated_jwks = _jwks()
        new = funded.client().get(f"{RESERVE}/{held['id']}/receipt").json()
    # then
    assert _kid(new["receipt"]) == new["kid"] != old_kid
    assert verify_offline(old, rotated_jwks)["amounts"]["actual_cost"] == 1_000
    assert verify_offline(new["receipt"], rotated_jwks)["amounts"]["actual_cost"] == 1_000
    assert len(rotated_jwks["keys"]) == 2
    assert new["kid"] in {key["kid"] for key in rotated_jwks["keys"]}
    # a receipt whose amount was edited fails, and so does one checked against the new key only
    header, _payload, signature = old.split(".")
    forged_claims = verify_offline(old, rotated_jwks) | {"amounts": {"actual_cost": 1}}
    forged_payload = base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).rstrip(b"=").decode()
    with pytest.raises(JWException):
        verify_offline(f"{header}.{forged_payload}.{signature}", rotated_jwks)
    with override_settings(JWT_SIGNING_KEY=NEXT, JWT_VERIFICATION_KEYS=""):
        only_new = _jwks()
    with pytest.raises(JWException):
        verify_offline(old, only_new)


@pytest.mark.django_db
def test_finance_can_void_only_with_staff_rights(make_account) -> None:
    funded = make_account(1_000_000)
    held = post_json(funded.client(), RESERVE, {"estimated_cost": 5_000}).json()["entry"]
    post_json(funded.client(), f"{RESERVE}/{held['id']}/commit", {"actual_cost": 3_000})
    refused = post_json(funded.client(), f"{RESERVE}/{held['id']}/void", {"reason": "mine"})
    assert refused.status_code == 403
    assert get_user_model().objects.filter(is_staff=True).count() == 0
