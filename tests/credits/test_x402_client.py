"""The official x402 Python client pays finn end to end (live server + fake facilitator).

Both protocol versions: v2 (PAYMENT-REQUIRED / PAYMENT-SIGNATURE / PAYMENT-RESPONSE)
and v1 (the body form, asked for with ``X402-Version: 1``; X-PAYMENT / X-PAYMENT-RESPONSE).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from django.test import override_settings
from eth_account import Account
from x402 import x402ClientSync
from x402.http.clients.requests import wrapRequestsWithPayment
from x402.http.utils import decode_payment_response_header
from x402.mechanisms.evm.exact.register import register_exact_evm_client

from billing.models import JournalEntry
from credits.models import X402Payment
from credits.x402.settle import settlement_breaker
from tests.fakes import Facilitator, fake_facilitator

from .x402_helpers import PAYER, PAYER_KEY, X402_SETTINGS

BODY = {"model": "echo", "prompt": "paid by the official client", "max_tokens": 32}


@pytest.fixture
def facilitator() -> Iterator[Facilitator]:
    with fake_facilitator() as fake, override_settings(**X402_SETTINGS, X402_FACILITATOR_URL=fake.url):
        settlement_breaker().reset()
        yield fake


def _session(**headers: str) -> requests.Session:
    client = x402ClientSync()
    register_exact_evm_client(client, Account.from_key(PAYER_KEY))
    session = requests.Session()
    session.headers.update(headers)
    return wrapRequestsWithPayment(session, client)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("version", "headers", "response_header"), [
    (2, {}, "PAYMENT-RESPONSE"),
    (1, {"X402-Version": "1"}, "X-PAYMENT-RESPONSE"),
])  # fmt: skip
def test_the_official_client_pays_and_gets_the_answer(
    live_server, facilitator, version, headers, response_header
) -> None:
    # when
    response = _session(**headers).post(f"{live_server.url}/api/v1/x402/invoke", json=BODY, timeout=30)
    # then
    assert response.status_code == 200, response.text
    settle = decode_payment_response_header(response.headers[response_header])
    assert settle.success is True
    assert settle.network == "eip155:84532"
    assert settle.transaction.startswith("0x")
    body = response.json()
    assert body["result"] == "paid by the official client"
    assert body["receipt"]["quoted"] == int(settle.amount or 0)
    assert body["receipt"]["actual"] + body["receipt"]["credit_note"]["amount"] == body["receipt"]["quoted"]
    assert len(facilitator.settle_calls) == 1
    assert facilitator.settle_calls[0]["x402Version"] == version
    payment = X402Payment.objects.get()
    assert (payment.payer, payment.status, payment.x402_version) == (PAYER, "completed", version)
    assert JournalEntry.objects.filter(event_type="x402_payment").count() == 1
