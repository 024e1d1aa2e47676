"""x402 upto (Permit2, variable cost): the official client signs a maximum, finn settles what the call cost."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.test import Client, override_settings
from eth_account import Account
from x402 import x402ClientSync
from x402.http.clients.requests import wrapRequestsWithPayment
from x402.http.utils import decode_payment_response_header
from x402.mechanisms.evm.upto import UptoEvmClientScheme

from billing.models import JournalEntry
from credits.models import CreditNote, X402Payment
from credits.x402.payments import x402_settlements_resolve
from credits.x402.settle import settlement_breaker
from finn import clock
from tests.credits.test_receipts import verify_offline
from tests.fakes import Facilitator, fake_chain, fake_facilitator

from .x402_helpers import PAYER, PAYER_KEY, X402_SETTINGS, b64, unb64

URL = "/api/v1/x402/invoke"
BODY = {"model": "echo", "prompt": "paid up to a maximum", "max_tokens": 64}


@pytest.fixture
def facilitator() -> Iterator[Facilitator]:
    with (
        fake_facilitator() as fake,
        fake_chain(fake) as node,
        override_settings(
            **X402_SETTINGS, X402_FACILITATOR_URL=fake.url, X402_RPC_URL=node["url"], X402_RESOLVE_LEASE_SECONDS=0,
            X402_UPTO_FACILITATOR_ADDRESS=fake.address,
        ),
    ):  # fmt: skip
        settlement_breaker().reset()
        yield fake


def _upto_session() -> requests.Session:
    client = x402ClientSync()
    client.register("eip155:*", UptoEvmClientScheme(Account.from_key(PAYER_KEY)))
    return wrapRequestsWithPayment(requests.Session(), client)


@pytest.mark.django_db
def test_a_quote_offers_upto_beside_exact_bound_to_the_facilitator(facilitator) -> None:
    offer = unb64(Client().post(URL, data=BODY, content_type="application/json").headers["PAYMENT-REQUIRED"])
    schemes = [requirement["scheme"] for requirement in offer["accepts"]]
    assert schemes == ["exact", "upto"]
    upto = offer["accepts"][1]
    assert upto["extra"]["facilitatorAddress"].lower() == facilitator.address
    assert upto["extra"]["assetTransferMethod"] == "permit2"
    assert upto["amount"] == offer["accepts"][0]["amount"]
    with override_settings(X402_UPTO_FACILITATOR_ADDRESS=""):
        plain = unb64(Client().post(URL, data=BODY, content_type="application/json").headers["PAYMENT-REQUIRED"])
    assert [r["scheme"] for r in plain["accepts"]] == ["exact"]


@pytest.mark.django_db(transaction=True)
def test_the_official_upto_client_pays_what_the_call_cost_not_the_maximum(live_server, facilitator) -> None:
    # when
    response = _upto_session().post(f"{live_server.url}{URL}", json=BODY, timeout=30)
    # then: verified before the work, settled after it for the actual cost; no credit note needed
    assert response.status_code == 200, response.text
    body = response.json()
    payment = X402Payment.objects.get()
    assert (payment.scheme, payment.status, payment.payer) == ("upto", "completed", PAYER)
    actual = body["receipt"]["actual"]
    assert 0 < actual < payment.amount  # the permit allowed the quote; the call cost less
    assert payment.settle_amount == actual
    assert [int(call["paymentRequirements"]["amount"]) for call in facilitator.settle_calls] == [actual]
    assert len(facilitator.verify_calls) == 2  # before the work, and /settle's own verify
    assert body["receipt"]["credit_note"] is None
    assert not CreditNote.objects.exists()
    settle = decode_payment_response_header(response.headers["PAYMENT-RESPONSE"])
    assert (settle.success, int(settle.amount or 0)) == (True, actual)
    assert JournalEntry.objects.filter(event_type="x402_payment").count() == 1
    jwks = requests.get(f"{live_server.url}/.well-known/jwks.json", timeout=10).json()
    claims = verify_offline(body["signed_receipt"], jwks)
    assert (claims["scheme"], claims["amounts"]["paid"]) == ("upto", actual)


@pytest.mark.django_db(transaction=True)
def test_a_lost_upto_settlement_is_resolved_from_the_permit2_nonce_and_served_from_the_stored_answer(
    live_server, facilitator
) -> None:
    # given: the facilitator moves the actual cost and loses the answer
    facilitator.settle_mode = "apply_then_500"
    session = _upto_session()
    first = session.post(f"{live_server.url}{URL}", json=BODY, timeout=30)
    assert (first.status_code, first.json()["code"]) == (409, "settlement_pending")
    payment = X402Payment.objects.get()
    assert (payment.status, payment.scheme) == ("settlement_pending", "upto")
    # when: the beat resolves it (Permit2 bitmap says used; the Transfer of the settled amount is found)
    counts = x402_settlements_resolve(now=clock.now())
    # then
    assert counts["settled"] == 1
    payment.refresh_from_db()
    assert (payment.status, payment.awaiting_presentation) == ("settled", True)
    assert len(facilitator.settle_calls) == 1
    assert JournalEntry.objects.filter(event_type="x402_payment").count() == 1
    # the same payment presented again gets the answer computed before the settlement
    header = first.request.headers["PAYMENT-SIGNATURE"]
    again = requests.post(f"{live_server.url}{URL}", json=BODY, headers={"PAYMENT-SIGNATURE": header}, timeout=30)
    assert again.status_code == 200, again.text
    assert again.json()["result"] == "paid up to a maximum"
    assert X402Payment.objects.get().status == "completed"


@pytest.mark.django_db
def test_an_upto_permit_for_another_facilitator_or_spender_is_refused(facilitator) -> None:
    offer = unb64(Client().post(URL, data=BODY, content_type="application/json").headers["PAYMENT-REQUIRED"])
    upto = offer["accepts"][1]
    wrong = {**upto, "extra": {**upto["extra"], "facilitatorAddress": "0x" + "ee" * 20}}
    payload = UptoEvmClientScheme(Account.from_key(PAYER_KEY)).create_payment_payload(_requirements(wrong))
    document: dict[str, Any] = {"x402Version": 2, "accepted": upto, "payload": payload, "resource": offer["resource"]}

    refused = Client().post(
        URL, data=BODY, content_type="application/json", headers={"PAYMENT-SIGNATURE": b64(document)}
    )
    assert (refused.status_code, refused.json()["code"]) == (402, "invalid_recipient")
    assert not facilitator.settle_calls


def _requirements(requirement: dict[str, Any]) -> Any:
    from x402.schemas import PaymentRequirements

    return PaymentRequirements.model_validate(requirement)


@pytest.mark.django_db
def test_a_failed_upto_call_settles_nothing_and_charges_nothing(facilitator) -> None:
    # given: an upstream that is down
    body = {"model": "claude-haiku-4", "prompt": "will fail", "max_tokens": 16}
    with override_settings(INFERENCE_URL="http://127.0.0.1:9/infer", INFERENCE_TIMEOUT_SECONDS=1):
        offer = unb64(Client().post(URL, data=body, content_type="application/json").headers["PAYMENT-REQUIRED"])
        upto = offer["accepts"][1]
        payload = UptoEvmClientScheme(Account.from_key(PAYER_KEY)).create_payment_payload(_requirements(upto))
        document = {"x402Version": 2, "accepted": upto, "payload": payload, "resource": offer["resource"]}
        # when
        failed = Client().post(
            URL, data=body, content_type="application/json", headers={"PAYMENT-SIGNATURE": b64(document)}
        )
    # then
    assert failed.status_code == 502, failed.content
    assert "nothing was charged" in failed.json()["error"]
    assert X402Payment.objects.get().status == "failed"
    assert facilitator.settle_calls == []
    assert not JournalEntry.objects.filter(event_type="x402_payment").exists()
    assert not CreditNote.objects.exists()
