"""x402 without double payment: a settlement whose answer is lost is settlement_pending, never a fresh 402,
and is resolved to exactly one of "served + settled" or "refused + not settled"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.test import Client, override_settings
from eth_account import Account
from x402 import x402ClientSync
from x402.http.clients.requests import wrapRequestsWithPayment
from x402.mechanisms.evm.exact.register import register_exact_evm_client

from billing.models import JournalEntry
from credits.models import CreditNote, X402Payment
from credits.x402.payments import x402_settlement_resolve, x402_settlements_resolve
from credits.x402.settle import settlement_breaker
from finn import clock
from finn.models import AuditEvent
from tests.conftest import run_threads
from tests.fakes import Facilitator, fake_chain, fake_facilitator

from .x402_helpers import PAYER_KEY, X402_SETTINGS, pay_v2, unb64

URL = "/api/v1/x402/invoke"
BODY = {"model": "echo", "prompt": "hello paid world", "max_tokens": 64}


@pytest.fixture
def facilitator() -> Iterator[Facilitator]:
    with (
        fake_facilitator() as fake,
        fake_chain(fake) as node,
        override_settings(
            **X402_SETTINGS, X402_FACILITATOR_URL=fake.url, X402_RPC_URL=node["url"], X402_RESOLVE_LEASE_SECONDS=0
        ),
    ):
        settlement_breaker().reset()
        yield fake


def _post(**headers: str) -> Any:
    return Client().post(URL, data=BODY, content_type="application/json", headers=headers or None)


def _paid_header() -> str:
    response = _post()
    assert response.status_code == 402
    return pay_v2(unb64(response.headers["PAYMENT-REQUIRED"]))


def _journals() -> int:
    return JournalEntry.objects.filter(event_type="x402_payment").count()


@pytest.mark.django_db
@pytest.mark.parametrize("settle_mode", ["apply_then_500", "apply_then_pending"])
def test_a_lost_settlement_answer_is_pending_not_402_and_the_same_payment_is_then_served_once(
    facilitator, settle_mode
) -> None:
    # given: the facilitator moves the funds and its answer is lost (a 502, or x402's settlement_pending)
    header = _paid_header()
    facilitator.settle_mode = settle_mode
    # when
    first = _post(**{"PAYMENT-SIGNATURE": header})
    # then: not a 402 (a well-behaved client would sign a fresh authorization and pay again)
    assert (first.status_code, first.json()["code"]) == (409, "settlement_pending"), first.content
    assert "PAYMENT-REQUIRED" not in first.headers
    assert first.headers["Retry-After"]
    payment = X402Payment.objects.get()
    assert payment.status == "settlement_pending"
    assert _journals() == 0
    assert AuditEvent.objects.filter(event_type="x402_settlement_unknown").count() == 1
    # when: the client presents the same payment again (finn resolves it from the chain)
    facilitator.settle_mode = "ok"
    again = _post(**{"PAYMENT-SIGNATURE": header})
    replay = _post(**{"PAYMENT-SIGNATURE": header})
    # then: served, settled once, never settled twice
    assert again.status_code == 200, again.content
    assert again.json()["result"] == "hello paid world"
    assert replay.json() == again.json()
    assert len(facilitator.settle_calls) == 1
    assert len(facilitator.chain) == 1
    payment.refresh_from_db()
    assert (payment.status, payment.tx_hash) == ("completed", next(iter(facilitator.chain.values())))
    assert _journals() == 1
    assert AuditEvent.objects.get(event_type="x402_settlement_resolved").payload["outcome"] == "settled"


@pytest.mark.django_db
def test_the_beat_settles_a_lost_settlement_by_asking_the_facilitator_again_and_serves_the_next_presentation(
    facilitator,
) -> None:
    # given: /settle answered 500 and moved nothing
    header = _paid_header()
    facilitator.settle_mode = "lost_unapplied"
    assert _post(**{"PAYMENT-SIGNATURE": header}).json()["code"] == "settlement_pending"
    assert facilitator.chain == {}
    # when: the beat runs while the facilitator is back (the authorization is still valid)
    facilitator.settle_mode = "ok"
    counts = x402_settlements_resolve(now=clock.now())
    # then: settled through the facilitator, awaiting its payer
    assert counts["settled"] == 1
    payment = X402Payment.objects.get()
    assert (payment.status, payment.awaiting_presentation) == ("settled", True)
    assert _journals() == 1
    served = _post(**{"PAYMENT-SIGNATURE": header})
    assert served.status_code == 200, served.content
    assert X402Payment.objects.get().status == "completed"
    assert len(facilitator.chain) == 1


@pytest.mark.django_db
def test_an_authorization_never_used_by_validbefore_is_refused_and_nothing_moved(facilitator) -> None:
    # given: /settle lost, nothing moved, and the facilitator keeps failing
    header = _paid_header()
    facilitator.settle_mode = "lost_unapplied"
    assert _post(**{"PAYMENT-SIGNATURE": header}).json()["code"] == "settlement_pending"
    payment = X402Payment.objects.get()
    # when: the beat runs before and after validBefore (+ finality)
    before = x402_settlements_resolve(now=clock.now())
    after_expiry = clock.now() + timedelta(seconds=payment.valid_before - clock.now().timestamp() + 121)
    after = x402_settlements_resolve(now=after_expiry)
    # then
    assert (before["pending"], after["not_settled"]) == (1, 1)
    payment.refresh_from_db()
    assert payment.status == "failed"
    assert _journals() == 0
    assert facilitator.chain == {}
    assert not CreditNote.objects.exists()
    # presented again once expired: refused (a 402 now says "pay again", which is safe), not settled again
    settle_calls = len(facilitator.settle_calls)
    X402Payment.objects.filter(pk=payment.pk).update(valid_before=int(clock.now().timestamp()) - 1)
    again = _post(**{"PAYMENT-SIGNATURE": header})
    assert (again.status_code, again.json()["code"]) == (402, "authorization_expired")
    assert len(facilitator.settle_calls) == settle_calls


@pytest.mark.django_db
def test_without_a_chain_reading_an_expired_unknown_settlement_stays_pending(facilitator) -> None:
    header = _paid_header()
    facilitator.settle_mode = "apply_then_500"
    assert _post(**{"PAYMENT-SIGNATURE": header}).json()["code"] == "settlement_pending"
    payment = X402Payment.objects.get()
    later = clock.now() + timedelta(seconds=payment.valid_before - clock.now().timestamp() + 121)
    with override_settings(X402_RPC_URL="http://127.0.0.1:9/"):
        counts = x402_settlements_resolve(now=later)
    assert counts["pending"] == 1
    assert X402Payment.objects.get().status == "settlement_pending"  # never "not settled" without evidence


@pytest.mark.django_db
def test_an_unclaimed_settled_payment_is_refunded_as_a_credit_note(facilitator) -> None:
    header = _paid_header()
    facilitator.settle_mode = "apply_then_500"
    _post(**{"PAYMENT-SIGNATURE": header})
    assert x402_settlements_resolve(now=clock.now())["settled"] == 1
    counts = x402_settlements_resolve(now=clock.now() + timedelta(hours=2))
    assert counts["unclaimed"] == 1
    payment = X402Payment.objects.get()
    assert payment.status == "completed"
    assert CreditNote.objects.get().amount == payment.amount


@pytest.mark.django_db(transaction=True)
def test_resolvers_racing_on_one_payment_settle_it_once(facilitator) -> None:
    # given: one unknown settlement whose funds moved
    header = _paid_header()
    facilitator.settle_mode = "apply_then_500"
    _post(**{"PAYMENT-SIGNATURE": header})
    payment_id = X402Payment.objects.get().pk
    later = clock.now() + timedelta(seconds=20)
    # when: eight beats / presentations at once (the real lease)
    with override_settings(X402_RESOLVE_LEASE_SECONDS=15):
        outcomes = run_threads(8, lambda _: x402_settlement_resolve(payment_id, now=later))
    # then
    assert sorted(outcomes) == ["pending"] * 7 + ["settled"]
    assert _journals() == 1
    assert AuditEvent.objects.filter(event_type="x402_settlement_resolved").count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_official_client_is_not_asked_to_pay_again_when_the_settlement_answer_is_lost(
    live_server, facilitator
) -> None:
    # given: the official x402 client, and a facilitator that moves the funds and loses the answer
    client = x402ClientSync()
    register_exact_evm_client(client, Account.from_key(PAYER_KEY))
    session = wrapRequestsWithPayment(requests.Session(), client)
    facilitator.settle_mode = "apply_then_500"
    # when
    response = session.post(f"{live_server.url}{URL}", json=BODY, timeout=30)
    # then: one authorization signed and settled; the client sees settlement_pending, not a new 402
    assert (response.status_code, response.json()["code"]) == (409, "settlement_pending")
    assert X402Payment.objects.count() == 1
    assert len(facilitator.chain) == 1
    assert len(facilitator.settle_calls) == 1


@pytest.mark.django_db
def test_default_pay_per_request_quotes_stay_within_the_official_clients_one_dollar_cap(facilitator) -> None:
    from x402.client_base import DEFAULT_MAX_AMOUNT_PER_PAYMENT

    # the largest call: 100,000 four-byte characters (a token is >= 1 byte) and 8,192 tokens of sonnet
    big = Client().post(
        URL,
        data=json.dumps(
            {"model": "claude-sonnet-4", "prompt": "\N{GRINNING FACE}" * 100_000, "max_tokens": 8192},
            ensure_ascii=False,
        ),
        content_type="application/json",
    )
    fits = _post()
    assert DEFAULT_MAX_AMOUNT_PER_PAYMENT == "$1"
    assert big.status_code == 400, big.content[:300]
    assert big.json()["reason"] == "quote_too_large"
    assert int(unb64(fits.headers["PAYMENT-REQUIRED"])["accepts"][0]["amount"]) <= 1_000_000


@pytest.mark.django_db
def test_a_presentation_that_finds_the_authorization_expired_unused_is_refused_not_pending(facilitator) -> None:
    header = _paid_header()
    facilitator.settle_mode = "lost_unapplied"
    assert _post(**{"PAYMENT-SIGNATURE": header}).json()["code"] == "settlement_pending"
    X402Payment.objects.update(valid_before=int(clock.now().timestamp()) - 200)
    # when: presented again after validBefore + finality, nothing on chain
    again = _post(**{"PAYMENT-SIGNATURE": header})
    # then: refused + not settled (a 402 is safe now: nothing moved and nothing can)
    assert (again.status_code, again.json()["code"]) == (402, "settlement_failed")
    assert X402Payment.objects.get().status == "failed"
    assert _journals() == 0
