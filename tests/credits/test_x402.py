"""x402 pay-per-request: the 402, every refusal code, settlement, replays, credit notes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.utils import timezone

from billing.models import JournalEntry, Posting
from billing.services import SYSTEM_CREDIT_NOTES, SYSTEM_REVENUE, TREASURY_USDC_RECEIVED, system_account_id
from credits.models import CreditNote, X402Payment, X402Quote
from credits.selectors import wallet_credit_balance
from credits.x402.credit_notes import apply_credit_notes, credit_notes_expire
from credits.x402.protocol import CREDIT_CAP_MICRO_USDC
from credits.x402.settle import settlement_breaker
from finn.models import AuditEvent
from tests.conftest import run_threads
from tests.credits.test_receipts import verify_offline
from tests.fakes import Facilitator, fake_facilitator

from .x402_helpers import OTHER_KEY, PAY_TO, PAYER, X402_SETTINGS, pay_v2, unb64

URL = "/api/v1/x402/invoke"
BODY = {"model": "echo", "prompt": "hello paid world", "max_tokens": 64}


@pytest.fixture
def facilitator() -> Iterator[Facilitator]:
    with fake_facilitator() as fake, override_settings(**X402_SETTINGS, X402_FACILITATOR_URL=fake.url):
        settlement_breaker().reset()
        yield fake


def _post(body: dict[str, Any] | None = None, **headers: str) -> Any:
    return Client().post(URL, data=body or BODY, content_type="application/json", headers=headers or None)


def _quote(body: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    response = _post(body, **headers)
    assert response.status_code == 402, response.content
    return unb64(response.headers["PAYMENT-REQUIRED"])


def _revenue() -> int:
    return sum(
        Posting.objects.filter(account_id=system_account_id(SYSTEM_REVENUE), denomination="micro_usd").values_list(
            "delta", flat=True
        )
    )


@pytest.mark.django_db
def test_no_payment_header_is_a_402_with_the_standard_v2_document(facilitator) -> None:
    response = _post()
    assert response.status_code == 402
    assert response.headers["Cache-Control"] == "no-store"
    document = unb64(response.headers["PAYMENT-REQUIRED"])
    body = response.json()
    assert body["code"] == "payment_required"
    assert {k: v for k, v in body.items() if k != "code"} == document
    assert document["x402Version"] == 2
    (offer,) = document["accepts"]
    assert offer["scheme"] == "exact"
    assert offer["network"] == "eip155:84532"
    assert offer["asset"] == "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
    assert offer["payTo"].lower() == PAY_TO
    assert offer["maxTimeoutSeconds"] == 300
    assert offer["extra"]["name"] == "USDC"
    assert offer["extra"]["version"] == "2"
    # echo: 16 prompt bytes at 1 µUSD + 64 tokens at 2 µUSD = 144 µUSD → 144 µUSDC at rate 1, markup 1
    assert offer["amount"] == "144"
    quote = X402Quote.objects.get(pk=offer["extra"]["quoteId"])
    assert (quote.amount, quote.status) == (144, "open")


@pytest.mark.django_db
def test_v1_form_on_request(facilitator) -> None:
    response = _post(**{"X402-Version": "1"})
    assert response.status_code == 402
    assert "PAYMENT-REQUIRED" not in response.headers
    body = response.json()
    assert body["x402Version"] == 1
    assert body["accepts"][0]["network"] == "base-sepolia"
    assert body["accepts"][0]["maxAmountRequired"] == "144"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("settings_override", "status", "code"),
    [({"FEATURE_X402": False}, 404, "feature_disabled")],
)
def test_feature_flag_off(facilitator, settings_override, status, code) -> None:
    with override_settings(**settings_override):
        response = _post()
    assert (response.status_code, response.json()["code"]) == (status, code)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"model": "echo"}, None),
        ({"model": "echo", "prompt": "   "}, "blank_prompt"),
        ({"model": "nope", "prompt": "x"}, None),
        ({"model": "echo", "prompt": "x", "max_tokens": "5"}, None),
        ({"model": "echo", "prompt": "x", "max_tokens": 10**9}, None),
    ],
)
def test_bad_body_is_a_400_before_any_payment_work(facilitator, body, reason) -> None:
    response = _post(body)
    assert response.status_code == 400
    assert not X402Quote.objects.exists()
    if reason:
        assert response.json()["reason"] == reason


@pytest.mark.django_db
def test_a_signed_payment_settles_once_answers_and_issues_the_credit_note(facilitator) -> None:
    required = _quote()
    response = _post(**{"PAYMENT-SIGNATURE": pay_v2(required)})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["result"] == "hello paid world"
    settle = unb64(response.headers["PAYMENT-RESPONSE"])
    assert settle["success"] is True
    assert settle["network"] == "eip155:84532"
    assert settle["transaction"].startswith("0x")
    # echo actual: ceil(16/4)=4 input tokens at 1 + 4 output tokens at 2 = 12 µUSDC; the rest is a credit note
    assert body["receipt"]["quoted"] == 144
    assert body["receipt"]["actual"] == 12
    assert body["receipt"]["credit_note"]["amount"] == 132
    assert body["receipt"]["credit_balance"] == 132
    assert len(facilitator.settle_calls) == 1
    payment = X402Payment.objects.get()
    assert payment.status == "completed"
    assert payment.payer == PAYER
    assert _revenue() == 12
    usdc = Posting.objects.filter(denomination="micro_usdc")
    assert (
        sum(usdc.filter(account_id=system_account_id(TREASURY_USDC_RECEIVED)).values_list("delta", flat=True)) == -144
    )
    assert sum(usdc.filter(account_id=system_account_id(SYSTEM_CREDIT_NOTES)).values_list("delta", flat=True)) == 132
    # the signed receipt of the payment and its credit note, verified with another JOSE library
    claims = verify_offline(body["signed_receipt"], Client().get("/.well-known/jwks.json").json())
    assert (claims["kind"], claims["payment_id"], claims["payer"], claims["currency_unit"]) == (
        "x402_payment", payment.pk, PAYER, "micro_usdc",
    )  # fmt: skip
    assert claims["amounts"] == {"paid": 144, "quoted": 144, "credit_applied": 0, "actual": 12}
    assert claims["credit_note"] == body["receipt"]["credit_note"]
    assert claims["tx_hash"] == settle["transaction"]
    completed = AuditEvent.objects.get(event_type="x402_payment_completed")
    assert claims["audit"]["sequence"] == completed.sequence


@pytest.mark.django_db
def test_the_same_authorization_again_returns_the_first_answer_and_never_settles_twice(facilitator) -> None:
    required = _quote()
    header = pay_v2(required)
    first = _post(**{"PAYMENT-SIGNATURE": header})
    again = _post(**{"PAYMENT-SIGNATURE": header})
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(facilitator.settle_calls) == 1
    assert JournalEntry.objects.filter(event_type="x402_payment").count() == 1


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_presentations_of_one_authorization_settle_once(facilitator) -> None:
    required = _quote()
    header = pay_v2(required)
    answers = run_threads(20, lambda _: _post(**{"PAYMENT-SIGNATURE": header}))
    results = [(a.status_code, a.json().get("code", "")) for a in answers]
    assert [status for status, _ in results].count(200) >= 1
    # losers: the nonce is taken (402), settling (409), or more than 10 signature checks at once (503)
    assert {r for r in results if r[0] != 200} <= {
        (402, "nonce_reused"),
        (409, "settlement_in_progress"),
        (503, "verification_queue_full"),
    }
    assert len(facilitator.settle_calls) == 1
    assert JournalEntry.objects.filter(event_type="x402_payment").count() == 1
    assert X402Payment.objects.count() == 1


def _refusal(header: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    response = _post(body, **{"PAYMENT-SIGNATURE": header})
    return response.status_code, response.json().get("code", "")


@pytest.mark.django_db
def test_each_refusal_code(facilitator) -> None:
    now = int(time.time())
    cases = [
        ("quote_not_found", lambda r: pay_v2(r, accepted={"amount": "1"})),
        ("invalid_recipient", lambda r: pay_v2(r, to="0x" + "ab" * 20)),
        ("insufficient_payment", lambda r: pay_v2(r, value="143")),
        ("authorization_not_yet_valid", lambda r: pay_v2(r, validAfter=str(now + 600))),
        ("authorization_expired", lambda r: pay_v2(r, validBefore=str(now - 60))),
        ("invalid_signature", lambda r: pay_v2(r, sign_key=OTHER_KEY)),
    ]
    for code, make in cases:
        assert _refusal(make(_quote())) == (402, code), code
    with override_settings(X402_MAX_PAYMENT_MICRO_USDC=150):
        assert _refusal(pay_v2(_quote(), value="151")) == (402, "payment_exceeds_ceiling")
    # a quote made before the network changed is for another chain now
    stale = _quote()
    with override_settings(X402_NETWORK="eip155:8453"):
        assert _refusal(pay_v2(stale)) == (402, "invalid_chain")
    # a quote whose asset is not the network's USDC (defence in depth)
    odd = _quote()
    X402Quote.objects.filter(pk=odd["accepts"][0]["extra"]["quoteId"]).update(asset="0x" + "cd" * 20)
    odd["accepts"][0]["asset"] = "0x" + "cd" * 20
    assert _refusal(pay_v2(odd)) == (402, "quote_not_found")  # the echo no longer matches the quote's offer
    assert _refusal("not base64!") == (400, "invalid_payment")
    assert not X402Payment.objects.exists()
    assert not facilitator.settle_calls


@pytest.mark.django_db
def test_dust_and_token_refusals_on_crafted_quotes(facilitator) -> None:
    required = _quote()
    quote_id = required["accepts"][0]["extra"]["quoteId"]
    X402Quote.objects.filter(pk=quote_id).update(amount=50, gross_amount=50)
    required["accepts"][0]["amount"] = "50"
    assert _refusal(pay_v2(required)) == (402, "payment_too_small")
    other = _quote()
    X402Quote.objects.filter(pk=other["accepts"][0]["extra"]["quoteId"]).update(asset="0x" + "cd" * 20)
    # the client echoes the offer it was given, which still names USDC; match the crafted row
    from credits.x402.quotes import _requirement_dict

    quote = X402Quote.objects.get(pk=other["accepts"][0]["extra"]["quoteId"])
    other["accepts"][0] = _requirement_dict(quote, 2)
    assert _refusal(pay_v2(other)) == (402, "invalid_token")


@pytest.mark.django_db
def test_a_nonce_used_for_another_quote_is_refused(facilitator) -> None:
    first = _quote()
    header = pay_v2(first)
    assert _post(**{"PAYMENT-SIGNATURE": header}).status_code == 200
    second = _quote()
    payload = unb64(header)
    reuse = pay_v2(second, nonce=payload["payload"]["authorization"]["nonce"])
    assert _refusal(reuse) == (402, "nonce_reused")
    assert len(facilitator.settle_calls) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["http500", "garbage", "refuse"])
def test_facilitator_failures_are_settlement_failed_and_retry_settles(facilitator, mode) -> None:
    header = pay_v2(_quote())
    facilitator.mode = mode
    failed = _post(**{"PAYMENT-SIGNATURE": header})
    assert (failed.status_code, failed.json()["code"]) == (402, "settlement_failed")
    assert X402Payment.objects.get().status == "failed"
    assert not JournalEntry.objects.filter(event_type="x402_payment").exists()
    facilitator.mode = "ok"
    retried = _post(**{"PAYMENT-SIGNATURE": header})
    assert retried.status_code == 200
    assert X402Payment.objects.get().status == "completed"


@pytest.mark.django_db
def test_slow_facilitator_times_out_as_settlement_failed(facilitator) -> None:
    header = pay_v2(_quote())
    facilitator.mode, facilitator.delay_seconds = "slow", 2.0
    with override_settings(X402_FACILITATOR_TIMEOUT_SECONDS=1):
        response = _post(**{"PAYMENT-SIGNATURE": header})
    assert (response.status_code, response.json()["code"]) == (402, "settlement_failed")


@pytest.mark.django_db
def test_no_facilitator_is_503_settlement_unavailable(facilitator) -> None:
    header = pay_v2(_quote())
    with override_settings(X402_FACILITATOR_URL=""):
        response = _post(**{"PAYMENT-SIGNATURE": header})
    assert (response.status_code, response.json()["code"]) == (503, "settlement_unavailable")


@pytest.mark.django_db
def test_breaker_opens_after_three_failures_and_closes_after_a_probe(facilitator) -> None:
    facilitator.mode = "http500"
    for _ in range(3):
        assert _refusal(pay_v2(_quote()))[1] == "settlement_failed"
    assert settlement_breaker().state() == "OPEN"
    calls = len(facilitator.verify_calls)
    blocked = _post(**{"PAYMENT-SIGNATURE": pay_v2(_quote())})
    assert (blocked.status_code, blocked.json()["code"]) == (503, "settlement_unavailable")
    assert len(facilitator.verify_calls) == calls  # not even tried
    facilitator.mode = "ok"
    with override_settings(X402_BREAKER_COOLDOWN_SECONDS=0):
        assert _post(**{"PAYMENT-SIGNATURE": pay_v2(_quote())}).status_code == 200
    assert settlement_breaker().state() == "CLOSED"


@pytest.mark.django_db
def test_redis_down_fails_closed_with_503(facilitator) -> None:
    header = pay_v2(_quote())
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        response = _post(**{"PAYMENT-SIGNATURE": header})
    assert response.status_code == 503
    assert not X402Payment.objects.exists()
    assert not facilitator.settle_calls


@pytest.mark.django_db
def test_inference_failure_after_settlement_is_502_with_a_full_credit_note(facilitator) -> None:
    with override_settings(INFERENCE_URL="http://127.0.0.1:1/infer"):
        response = _post({"model": "claude-sonnet-4", "prompt": "hi", "max_tokens": 10}, **{"X402-Version": "2"})
        required = unb64(response.headers["PAYMENT-REQUIRED"])
        paid = _post(
            {"model": "claude-sonnet-4", "prompt": "hi", "max_tokens": 10}, **{"PAYMENT-SIGNATURE": pay_v2(required)}
        )
    assert paid.status_code == 502
    body = paid.json()
    assert body["code"] == "inference_failed"
    amount = int(required["accepts"][0]["amount"])
    assert body["credit_note"]["amount"] == amount
    assert wallet_credit_balance(wallet=PAYER, now=timezone.now()) == amount
    assert _revenue() == 0


@pytest.mark.django_db
def test_credit_notes_reduce_the_next_quote_of_a_named_payer(facilitator) -> None:
    assert _post(**{"PAYMENT-SIGNATURE": pay_v2(_quote())}).status_code == 200  # leaves a 132 µUSDC note
    reduced = _quote(**{"X402-Payer": PAYER})
    quote = X402Quote.objects.get(pk=reduced["accepts"][0]["extra"]["quoteId"])
    assert (quote.gross_amount, quote.credit_applied, quote.amount) == (144, 44, 100)  # never below dust
    assert _post(**{"PAYMENT-SIGNATURE": pay_v2(reduced)}).status_code == 200
    # 132 - 44 used + 132 new note
    assert wallet_credit_balance(wallet=PAYER, now=timezone.now()) == 220
    assert _revenue() == 24
    # another wallet cannot pay a quote made for this one
    other = _quote(**{"X402-Payer": PAYER})
    assert _refusal(pay_v2(other, key=OTHER_KEY)) == (402, "quote_not_found")


def test_apply_credit_notes_arithmetic_matches_the_reference() -> None:
    first = apply_credit_notes(balance=1_800, required=3_000)
    assert (first.credit_used, first.reduced_amount, first.remaining_credit) == (1_800, 1_200, 0)
    second = apply_credit_notes(balance=7_000, required=5_000)
    assert (second.credit_used, second.reduced_amount, second.remaining_credit) == (5_000, 0, 2_000)
    none = apply_credit_notes(balance=0, required=5)
    assert (none.credit_used, none.reduced_amount) == (0, 5)


@pytest.mark.django_db
def test_credit_note_cap_boundary(facilitator) -> None:
    # given: the wallet sits exactly 132 below the cap
    seed = _quote()
    quote = X402Quote.objects.get(pk=seed["accepts"][0]["extra"]["quoteId"])
    now = timezone.now()
    CreditNote.objects.create(
        id="cn_seed",
        wallet=PAYER,
        amount=CREDIT_CAP_MICRO_USDC - 132,
        remaining=CREDIT_CAP_MICRO_USDC - 132,
        quote=quote,
        quoted_amount=0,
        actual_amount=0,
        reason="seed",
        created_at=now,
        expires_at=now + timedelta(days=7),
    )
    X402Quote.objects.filter(pk=quote.pk).update(status="used")
    # when: a 132 note brings it exactly to the cap, the next one would pass it
    at_cap = _post(**{"PAYMENT-SIGNATURE": pay_v2(_quote())}).json()
    over = _post(**{"PAYMENT-SIGNATURE": pay_v2(_quote())}).json()
    # then
    assert at_cap["receipt"]["credit_note"]["amount"] == 132
    assert over["receipt"]["credit_note"] is None
    assert over["receipt"]["credit_note_refused"] == "credit_note_cap_exceeded"
    assert wallet_credit_balance(wallet=PAYER, now=timezone.now()) == CREDIT_CAP_MICRO_USDC
    CreditNote.objects.filter(pk="cn_seed").delete()  # not journaled; keep the ledger check honest


@pytest.mark.django_db
def test_expired_credit_notes_return_to_revenue_once(facilitator) -> None:
    assert _post(**{"PAYMENT-SIGNATURE": pay_v2(_quote())}).status_code == 200
    later = timezone.now() + timedelta(days=8)
    assert credit_notes_expire(now=later) == 1
    assert credit_notes_expire(now=later) == 0
    assert wallet_credit_balance(wallet=PAYER, now=later) == 0
    assert _revenue() == 144


@pytest.mark.django_db
def test_a_credit_pack_bought_with_x402_mints_once_into_the_signed_in_account(facilitator, make_account) -> None:
    funded = make_account(0)
    client = funded.client()
    asked = client.post("/api/v1/credits/x402", {"pack_size": 500}, content_type="application/json")
    assert asked.status_code == 402
    required = unb64(asked.headers["PAYMENT-REQUIRED"])
    assert required["accepts"][0]["amount"] == "5000000"  # 500 CU = 5 USD = 5 USDC at rate 1
    header = pay_v2(required)
    paid = client.post(
        "/api/v1/credits/x402",
        {"pack_size": 500},
        content_type="application/json",
        headers={"PAYMENT-SIGNATURE": header},
    )
    again = client.post(
        "/api/v1/credits/x402",
        {"pack_size": 500},
        content_type="application/json",
        headers={"PAYMENT-SIGNATURE": header},
    )
    assert paid.status_code == 200, paid.content
    assert paid.json()["balance"]["available"] == 5_000_000
    assert again.json() == paid.json()
    funded.account.refresh_from_db()
    assert funded.account.available == 5_000_000
    assert len(facilitator.settle_calls) == 1
    # another account cannot use this quote: the request fingerprint names the account
    assert Client().post("/api/v1/credits/x402", {"pack_size": 500}, content_type="application/json").status_code == 401
    assert (
        make_account(0)
        .client()
        .post("/api/v1/credits/x402", {"pack_size": 7}, content_type="application/json")
        .json()["code"]
        == "invalid_pack_size"
    )


@pytest.mark.django_db
def test_quotes_and_payments_are_rate_limited(facilitator) -> None:
    limits = {**settings.RATE_LIMITS, "x402_quote": (2, 60), "x402": (1, 60)}
    with override_settings(RATE_LIMITS=limits):
        assert [_post().status_code for _ in range(3)] == [402, 402, 429]
    quotes = list(X402Quote.objects.order_by("created_at"))
    with override_settings(RATE_LIMITS={**settings.RATE_LIMITS, "x402": (1, 60)}):
        required = {"x402Version": 2, "accepts": [_requirement_of(quotes[0])]}
        assert _post(**{"PAYMENT-SIGNATURE": pay_v2(required)}).status_code == 200
        second = {"x402Version": 2, "accepts": [_requirement_of(quotes[1])]}
        limited = _post(**{"PAYMENT-SIGNATURE": pay_v2(second)})
    assert limited.status_code == 429
    assert limited.headers["Retry-After"]


def _requirement_of(quote: X402Quote) -> dict[str, Any]:
    from credits.x402.quotes import _requirement_dict

    return _requirement_dict(quote, 2)


@pytest.mark.django_db
def test_signature_verification_is_bounded_503_when_full(facilitator) -> None:
    from credits.x402.protocol import verification_slot

    header = pay_v2(_quote())
    with override_settings(X402_VERIFY_CONCURRENCY=1), verification_slot():
        response = _post(**{"PAYMENT-SIGNATURE": header})
    assert (response.status_code, response.json()["code"]) == (503, "verification_queue_full")
    assert not X402Payment.objects.exists()


@pytest.mark.django_db
def test_a_contract_wallet_pays_through_eip1271(facilitator) -> None:
    from tests.fakes import fake_json_rpc

    contract = "0x" + "c0" * 20
    magic = "0x1626ba7e" + "00" * 28
    with fake_json_rpc({"eth_call": magic}) as node, override_settings(ETH_RPC_URL=node["url"]):
        response = _post(**{"PAYMENT-SIGNATURE": pay_v2(_quote(), **{"from": contract})})
    assert response.status_code == 200, response.content
    assert node["calls"][0]["params"][0]["to"] == contract
    with fake_json_rpc({"eth_call": "0x" + "00" * 32}) as node, override_settings(ETH_RPC_URL=node["url"]):
        refused = _post(**{"PAYMENT-SIGNATURE": pay_v2(_quote(), **{"from": contract})})
    assert refused.json()["code"] == "invalid_signature"


@pytest.mark.django_db
def test_credit_is_used_oldest_expiring_note_first_in_one_statement(facilitator, django_assert_max_num_queries) -> None:
    from django.db import transaction

    from credits.x402.credit_notes import _credit_consume

    quote = X402Quote.objects.get(pk=_quote()["accepts"][0]["extra"]["quoteId"])
    now = timezone.now()
    for index, (amount, days) in enumerate([(50, 3), (70, 1), (40, 2), (500, -1)]):  # the last one has expired
        CreditNote.objects.create(
            id=f"cn_order_{index}", wallet=PAYER, amount=amount, remaining=amount, quote=quote, quoted_amount=0,
            actual_amount=0, reason="seed", created_at=now, expires_at=now + timedelta(days=days),
        )  # fmt: skip
    with transaction.atomic(), django_assert_max_num_queries(2):  # the wallet lock and the UPDATE
        used = _credit_consume(wallet=PAYER, amount=100, now=now)
    remaining = dict(CreditNote.objects.filter(pk__startswith="cn_order_").values_list("pk", "remaining"))
    assert used == 100
    assert remaining == {"cn_order_1": 0, "cn_order_2": 10, "cn_order_0": 50, "cn_order_3": 500}
    with transaction.atomic():
        assert _credit_consume(wallet=PAYER, amount=1_000, now=now) == 60  # all that is left and live
    CreditNote.objects.filter(pk__startswith="cn_order_").delete()
