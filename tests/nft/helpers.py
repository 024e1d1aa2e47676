"""Sign in with Ethereum for the nft tests, and the fakes' settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.test import Client
from eth_account import Account as EthAccount
from eth_account.messages import encode_defunct
from siwe import SiweMessage

OWNER = EthAccount.from_key("0x" + "a1" * 32)
STRANGER = EthAccount.from_key("0x" + "b2" * 32)
COLLECTION = "0x" + "c0ffee" + "00" * 17
OTHER_COLLECTION = "0x" + "beef" + "00" * 18


def signed_in(account: Any = OWNER) -> tuple[Client, str]:
    """A client with a SIWE session (Bearer JWT) for ``account``; returns it and the wallet (lower-case)."""
    client = Client()
    nonce = client.get("/api/v1/auth/nonce").json()["nonce"]
    now = datetime.now(UTC)
    message = SiweMessage(
        domain="localhost:8000",
        address=account.address,
        statement="Sign in to finn",
        uri="http://localhost:8000/login",
        version="1",
        chain_id=8453,
        nonce=nonce,
        issued_at=now.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        expiration_time=(now + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    ).prepare_message()
    signature = "0x" + account.sign_message(encode_defunct(text=message)).signature.hex().removeprefix("0x")
    session = client.post(
        "/api/v1/auth/verify", {"message": message, "signature": signature}, content_type="application/json"
    )
    assert session.status_code == 200, session.content
    token = session.json()["access_token"]
    return Client(headers={"Authorization": f"Bearer {token}"}), account.address.lower()
