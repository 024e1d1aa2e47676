"""Credit packs against two local fake JSON-RPC nodes (primary and fallback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from billing.errors import AccountFrozen
from billing.models import Account, JournalEntry, Posting
from billing.services import entry_reserve
from credits.models import CreditPurchase, WalletIdentity
from credits.purchases import TRANSFER_TOPIC, purchase_reorg_check
from finn.flags import feature_flag_set
from finn.models import AuditEvent
from tests.conftest import post_json, run_threads
from tests.fakes import fake_json_rpc

USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
TREASURY = "0x" + "7e" * 20
SENDER = "0x" + "5e" * 20
TX = "0x" + "ab" * 32
BLOCK_HASH = "0x" + "b1" * 32


def _topic(address: str) -> str:
    return "0x" + "0" * 24 + address[2:]


def _receipt(
    *, amount: int = 5_000_000, status: str = "0x1", block_hash: str = BLOCK_HASH, to: str = TREASURY
) -> dict[str, Any]:
    return {
        "transactionHash": TX,
        "status": status,
        "blockNumber": hex(100),
        "blockHash": block_hash,
        "logs": [
            {
                "address": "0x" + "99" * 20,
                "topics": [TRANSFER_TOPIC, _topic(SENDER), _topic(to)],
                "data": hex(amount),
                "logIndex": "0x0",
            },
            {
                "address": USDC,
                "topics": [TRANSFER_TOPIC, _topic(SENDER), _topic(to)],
                "data": hex(amount),
                "logIndex": "0x3",
            },
        ],
    }


class Chain:
    def __init__(self) -> None:
        self.primary: dict[str, Any] = {"eth_getTransactionReceipt": _receipt(), "eth_blockNumber": hex(111)}
        self.fallback: dict[str, Any] = {"eth_getTransactionReceipt": _receipt()}


@pytest.fixture
def chain() -> Iterator[Chain]:
    state = Chain()
    with ExitStack() as stack:
        primary = stack.enter_context(fake_json_rpc(state.primary))
        fallback = stack.enter_context(fake_json_rpc(state.fallback))
        stack.enter_context(
            override_settings(
                RPC_PRIMARY_URL=primary["url"], RPC_FALLBACK_URL=fallback["url"], TREASURY_ADDRESS=TREASURY
            )
        )
        yield state


def _buyer(make_account) -> Any:  # type: ignore[no-untyped-def]
    funded = make_account(0)
    WalletIdentity.objects.create(address=SENDER, account=funded.account, created_at=timezone.now())
    return funded


def _body(**proof: Any) -> dict[str, Any]:
    return {
        "pack_size": 500,
        "idempotency_key": "buy-1",
        "payment_proof": {
            "tx_hash": TX,
            "chain_id": 8453,
            "token": USDC,
            "sender": SENDER,
            "amount_micro_usdc": 5_000_000,
            **proof,
        },
    }


@pytest.mark.django_db
def test_confirmed_payment_mints_once_through_fx_clearing(make_account, chain: Chain) -> None:
    # given
    buyer = _buyer(make_account)
    # when
    first = post_json(buyer.client(), "/api/v1/credits/purchase", _body())
    again = post_json(buyer.client(), "/api/v1/credits/purchase", _body())
    # then
    assert first.status_code == 200, first.content
    assert first.json()["credited"] == 5_000_000
    assert first.json()["balance"]["available"] == 5_000_000
    assert first.json()["log_index"] == 3
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (200, "true")
    assert Account.objects.get(pk=buyer.pk).available == 5_000_000
    journal = JournalEntry.objects.get(idempotency_key__startswith="purchase:")
    by_denomination: dict[str, int] = {}
    for posting in Posting.objects.filter(journal_entry=journal):
        by_denomination[posting.denomination] = by_denomination.get(posting.denomination, 0) + posting.delta
    assert by_denomination == {"micro_usdc": 0, "micro_usd": 0}
    assert Posting.objects.filter(journal_entry=journal).count() == 4


@pytest.mark.django_db
def test_the_same_payment_cannot_credit_another_account(make_account, chain: Chain) -> None:
    # given
    buyer, thief = _buyer(make_account), make_account(0)
    post_json(buyer.client(), "/api/v1/credits/purchase", _body())
    WalletIdentity.objects.filter(address=SENDER).update(account=thief.account)
    # when
    response = post_json(thief.client(), "/api/v1/credits/purchase", _body())
    # then
    assert (response.status_code, response.json()["code"]) == (409, "already_minted")
    assert Account.objects.get(pk=thief.pk).available == 0


@pytest.mark.django_db
def test_eleven_confirmations_are_not_enough(make_account, chain: Chain) -> None:
    chain.primary["eth_blockNumber"] = hex(110)
    response = post_json(_buyer(make_account).client(), "/api/v1/credits/purchase", _body())
    assert (response.status_code, response.json()["code"]) == (402, "payment_not_confirmed")
    assert response.json()["confirmations"] == 11
    assert not CreditPurchase.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"pack": 7}, 400, "invalid_pack_size"),
        ({"chain_id": 1}, 400, "invalid_proof"),
        ({"token": "0x" + "11" * 20}, 400, "invalid_proof"),
        ({"sender": "0x" + "66" * 20}, 403, "sender_mismatch"),
        ({"amount_micro_usdc": 4_000_000}, 409, "payment_mismatch"),
        ({"receipt": _receipt(amount=4_000_000)}, 409, "payment_mismatch"),
        ({"receipt": _receipt(to="0x" + "22" * 20)}, 409, "payment_mismatch"),
        ({"receipt": _receipt(status="0x0")}, 400, "invalid_proof"),
        ({"receipt": None}, 402, "payment_not_confirmed"),
        ({"fallback": _receipt(block_hash="0x" + "c2" * 32)}, 503, "verification_unavailable"),
        ({"fallback_down": True}, 503, "verification_unavailable"),
    ],
)
def test_refusals(make_account, chain: Chain, change: dict[str, Any], status: int, code: str) -> None:
    # given
    buyer = _buyer(make_account)
    body = _body()
    if "pack" in change:
        body["pack_size"] = change["pack"]
    for field in ("chain_id", "token", "sender", "amount_micro_usdc"):
        if field in change:
            body["payment_proof"][field] = change[field]
    if "receipt" in change:
        chain.primary["eth_getTransactionReceipt"] = change["receipt"]
    if "fallback" in change:
        chain.fallback["eth_getTransactionReceipt"] = change["fallback"]
    if "fallback_down" in change:
        chain.fallback.clear()
    # when
    response = post_json(buyer.client(), "/api/v1/credits/purchase", body)
    # then
    assert (response.status_code, response.json()["code"]) == (status, code), response.content
    assert Account.objects.get(pk=buyer.pk).available == 0
    assert not CreditPurchase.objects.exists()


@pytest.mark.django_db
def test_not_configured_is_a_disabled_feature_not_an_outage(make_account) -> None:
    with override_settings(TREASURY_ADDRESS=""):
        response = post_json(_buyer(make_account).client(), "/api/v1/credits/purchase", _body())
    assert (response.status_code, response.json()["code"]) == (404, "feature_disabled")


@pytest.mark.django_db
def test_the_credits_flag_off_turns_purchases_off(make_account, chain: Chain) -> None:
    feature_flag_set(name="credits", enabled=False, actor="test", now=timezone.now())
    response = post_json(_buyer(make_account).client(), "/api/v1/credits/purchase", _body())
    assert (response.status_code, response.json()["code"]) == (404, "feature_disabled")
    assert not CreditPurchase.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_of_one_payment_mint_once(make_account, chain: Chain) -> None:
    # given
    buyer = _buyer(make_account)
    # when
    statuses = run_threads(8, lambda _: post_json(buyer.client(), "/api/v1/credits/purchase", _body()).status_code)
    # then
    assert statuses == [200] * 8
    assert Account.objects.get(pk=buyer.pk).available == 5_000_000
    assert CreditPurchase.objects.count() == 1


@pytest.mark.django_db
def test_reorg_that_drops_the_payment_freezes_reserves(make_account, chain: Chain, now) -> None:
    # given: minted, then the block disappears and the receipt is gone
    buyer = _buyer(make_account)
    post_json(buyer.client(), "/api/v1/credits/purchase", _body())
    chain.primary["eth_getBlockByNumber"] = {"hash": "0x" + "dd" * 32}
    chain.primary["eth_getTransactionReceipt"] = None
    # when
    result = purchase_reorg_check(now=timezone.now())
    # then
    assert result == {"checked": 1, "reorgs": 1, "reverted": 1}
    assert CreditPurchase.objects.get().status == CreditPurchase.Status.REVERTED
    assert Account.objects.get(pk=buyer.pk).reserves_frozen is True
    assert AuditEvent.objects.filter(event_type="credit_mint_reverted").count() == 1
    with pytest.raises(AccountFrozen):
        entry_reserve(account_id=buyer.pk, estimated_cost=1, correlation_id="c", now=now)


@pytest.mark.django_db
def test_reorg_that_keeps_the_payment_revalidates(make_account, chain: Chain) -> None:
    # given: the block hash changed but the transfer is in the new block
    buyer = _buyer(make_account)
    post_json(buyer.client(), "/api/v1/credits/purchase", _body())
    moved = _receipt(block_hash="0x" + "e5" * 32)
    chain.primary["eth_getBlockByNumber"] = {"hash": "0x" + "dd" * 32}
    chain.primary["eth_getTransactionReceipt"] = moved
    chain.fallback["eth_getTransactionReceipt"] = moved
    # when
    result = purchase_reorg_check(now=timezone.now())
    # then
    assert result == {"checked": 1, "reorgs": 1}
    assert CreditPurchase.objects.get().status == CreditPurchase.Status.REVALIDATED
    assert Account.objects.get(pk=buyer.pk).reserves_frozen is False
    assert purchase_reorg_check(now=timezone.now() + timedelta(hours=2)) == {}
