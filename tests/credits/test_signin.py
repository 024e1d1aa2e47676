"""Sign-In with Ethereum: real signatures (eth-account), real Redis, real Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client, override_settings
from eth_account import Account as EthAccount
from eth_account.messages import encode_defunct
from siwe import SiweMessage

from credits.models import RefreshToken, WalletIdentity
from tests.conftest import run_threads
from tests.fakes import fake_json_rpc

WALLET = EthAccount.create("finn-test-wallet")
OTHER = EthAccount.create("finn-other-wallet")
CONTRACT_WALLET = "0x" + "c0" * 20


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _message(nonce: str, **overrides: Any) -> str:
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "domain": "localhost:8000",
        "address": WALLET.address,
        "statement": "Sign in to finn",
        "uri": "http://localhost:8000/login",
        "version": "1",
        "chain_id": 8453,
        "nonce": nonce,
        "issued_at": _iso(now),
        "expiration_time": _iso(now + timedelta(minutes=5)),
    }
    fields.update(overrides)
    return str(SiweMessage(**fields).prepare_message())


def _sign(text: str, account: Any = WALLET) -> str:
    return "0x" + account.sign_message(encode_defunct(text=text)).signature.hex().removeprefix("0x")


def _nonce(client: Client) -> str:
    return str(client.get("/api/v1/auth/nonce").json()["nonce"])


def _verify(client: Client, message: str, signature: str) -> Any:
    return client.post(
        "/api/v1/auth/verify", {"message": message, "signature": signature}, content_type="application/json"
    )


@pytest.mark.django_db
def test_sign_in_gives_a_session_that_calls_the_api() -> None:
    # given
    client = Client()
    message = _message(_nonce(client))
    # when
    response = _verify(client, message, _sign(message))
    # then
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["address"] == WALLET.address.lower()
    balance = Client(headers={"Authorization": f"Bearer {body['access_token']}"}).get("/api/v1/accounts/me/balance")
    assert balance.json()["balance"]["account_id"] == body["account_id"]
    assert RefreshToken.objects.get().token_hash != body["refresh_token"]  # stored hashed


@pytest.mark.django_db
@pytest.mark.parametrize(
    "overrides",
    [
        {"domain": "evil.example"},
        {"uri": "https://evil.example/login"},
        {"chain_id": 1},
        {"expiration_time": _iso(datetime.now(UTC) - timedelta(seconds=31))},
        {"issued_at": _iso(datetime.now(UTC) + timedelta(minutes=5))},
        {"not_before": _iso(datetime.now(UTC) + timedelta(minutes=5))},
    ],
)
def test_every_refusal_is_the_same_401(overrides: dict[str, Any]) -> None:
    # given
    client = Client()
    message = _message(_nonce(client), **overrides)
    # when
    response = _verify(client, message, _sign(message))
    # then
    assert response.status_code == 401
    assert response.json() == {"error": "authentication failed", "code": "authentication_failed"}
    assert not WalletIdentity.objects.exists()


@pytest.mark.django_db
def test_expiry_allows_30_seconds_of_skew() -> None:
    client = Client()
    message = _message(_nonce(client), expiration_time=_iso(datetime.now(UTC) - timedelta(seconds=20)))
    assert _verify(client, message, _sign(message)).status_code == 200


@pytest.mark.django_db
def test_wrong_signer_unknown_and_reused_nonces_are_401() -> None:
    # given
    client = Client()
    nonce = _nonce(client)
    message = _message(nonce)
    # when
    wrong_signer = _verify(client, message, _sign(message, OTHER))
    unknown_nonce = _verify(client, _message("abcdef0123456789"), _sign(_message("abcdef0123456789")))
    first = _verify(client, message, _sign(message))
    replay = _verify(client, message, _sign(message))
    # then
    assert [wrong_signer.status_code, unknown_nonce.status_code, first.status_code, replay.status_code] == [
        401,
        401,
        200,
        401,
    ]


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_verifications_of_one_nonce_cannot_both_succeed() -> None:
    # given
    nonce = _nonce(Client())
    message = _message(nonce)
    signature = _sign(message)
    # when
    statuses = run_threads(8, lambda _: _verify(Client(), message, signature).status_code)
    # then
    assert sorted(statuses) == [200] + [401] * 7


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"message": 5, "signature": "0x"},
        {"message": "x" * 5000, "signature": "0x"},
    ],
)
def test_malformed_requests_are_400(body: dict[str, Any]) -> None:
    # when
    response = Client().post("/api/v1/auth/verify", body, content_type="application/json")
    # then
    assert response.status_code == 400


@pytest.mark.django_db
def test_text_that_is_not_an_eip_4361_message_is_the_generic_401() -> None:
    # when
    response = Client().post(
        "/api/v1/auth/verify", {"message": "hello", "signature": "0x00"}, content_type="application/json"
    )
    # then
    assert response.status_code == 401
    assert response.json() == {"error": "authentication failed", "code": "authentication_failed"}


@pytest.mark.django_db
def test_malformed_signature_is_400() -> None:
    client = Client()
    message = _message(_nonce(client))
    assert _verify(client, message, "0xZZ").status_code == 400


@pytest.mark.django_db
def test_contract_wallet_signs_in_through_eip_1271() -> None:
    # given: a node that answers isValidSignature with the magic value
    magic = "0x1626ba7e" + "0" * 56
    client = Client()
    message = _message(_nonce(client), address=EthAccount.from_key("0x" + "11" * 32).address)
    with (
        fake_json_rpc({"eth_call": magic, "eth_chainId": "0x2105"}) as node,
        override_settings(ETH_RPC_URL=node["url"]),
    ):
        # when: the signature is not an EOA signature of that address
        response = _verify(client, message, _sign(message, OTHER))
    # then
    assert response.status_code == 200, response.content
    assert any(call["method"] == "eth_call" for call in node["calls"])


@pytest.mark.django_db
def test_refresh_rotates_and_logout_revokes() -> None:
    # given
    client = Client()
    message = _message(_nonce(client))
    session = _verify(client, message, _sign(message)).json()
    # when
    rotated = client.post(
        "/api/v1/auth/refresh", {"refresh_token": session["refresh_token"]}, content_type="application/json"
    )
    reused = client.post(
        "/api/v1/auth/refresh", {"refresh_token": session["refresh_token"]}, content_type="application/json"
    )
    new_refresh = rotated.json()["refresh_token"]
    logout = client.post("/api/v1/auth/logout", {"refresh_token": new_refresh}, content_type="application/json")
    after_logout = client.post("/api/v1/auth/refresh", {"refresh_token": new_refresh}, content_type="application/json")
    # then
    assert rotated.status_code == 200
    assert (reused.status_code, logout.status_code, after_logout.status_code) == (401, 204, 401)


@pytest.mark.django_db
def test_bad_session_tokens_are_401() -> None:
    # when
    tampered = Client(headers={"Authorization": "Bearer a.b.c"}).get("/api/v1/accounts/me/balance")
    # then
    assert tampered.status_code == 401


@pytest.mark.django_db
def test_sign_in_fails_closed_when_redis_is_down() -> None:
    # when
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        response = Client().get("/api/v1/auth/nonce")
    # then
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"
