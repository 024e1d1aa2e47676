"""finn's Python client (clients/python) against a live finn, through a proxy that loses answers.

The proxy is a real HTTP server in front of the live server: it forwards every request and can,
once per rule, drop the answer after finn applied the request (the connection closes), or answer
a 503 / 409 request_in_progress itself. The client must retry, never double-charge, and resolve
a lost commit by reading the entry.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from finn_client import ExceedsHold, Finn, InsufficientFunds, InvalidTransition, OutcomeUnknown

from billing.models import Account, BillingEntry, JournalEntry
from billing.states import EntryState

pytestmark = pytest.mark.django_db(transaction=True)


class Proxy:
    """Forwards to ``upstream``; ``faults`` maps (method, path suffix) → [what to do, in turn]."""

    def __init__(self, upstream: str) -> None:
        self.upstream, self.faults, self.seen = upstream, {}, []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                key = (self.command, self.path.rsplit("/", 1)[-1])
                proxy.seen.append((*key, self.headers.get("Idempotency-Key")))
                fault = proxy.faults.get(key, []).pop(0) if proxy.faults.get(key) else None
                if fault in ("503", "in_progress"):
                    status, code = (503, "database_unavailable") if fault == "503" else (409, "request_in_progress")
                    payload = json.dumps({"error": "try again", "code": code}).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = httpx.request(self.command, proxy.upstream + self.path, headers=headers, content=body)
                if fault == "drop":  # finn applied it; the answer is lost on the way back
                    self.close_connection = True
                    return
                self.send_response(answer.status_code)
                for name in ("Content-Type", "Idempotent-Replayed", "Retry-After"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def proxy(live_server) -> Iterator[Proxy]:
    running = Proxy(live_server.url)
    yield running
    running.server.shutdown()
    running.server.server_close()


@pytest.fixture
def customer(make_account) -> Any:
    return make_account(10_000_000)


def _client(proxy: Proxy, key: str) -> Finn:
    return Finn(proxy.url, key, backoff=0.01, timeout=10)


def test_a_gateway_wraps_one_inference_call(proxy, customer) -> None:
    with _client(proxy, customer.key) as finn, finn.hold(estimated_cost=2_000_000, correlation_id="req-1") as hold:
        tokens = ["Hello", ",", " world"]  # the model streams
        result = hold.commit(actual_cost=len(tokens) * 100_000)
    assert result.entry.state in ("COMMITTED", "FINALIZE_PENDING")
    assert result.balance.available == 10_000_000 - 300_000
    assert Account.objects.get(pk=customer.account.pk).available == 9_700_000


def test_a_block_that_raises_releases_the_hold_and_the_error_goes_on(proxy, customer) -> None:
    with _client(proxy, customer.key) as finn:
        with pytest.raises(ConnectionResetError), finn.hold(estimated_cost=1_000_000) as hold:
            raise ConnectionResetError("the model went away")
        entry = BillingEntry.objects.get(pk=hold.entry.id)
        assert (entry.state, entry.release_reason) == (EntryState.RELEASED, "pre_stream_failure")
        assert finn.balance().available == 10_000_000


def test_a_commit_above_the_estimate_is_refused_before_it_is_sent(proxy, customer) -> None:
    with _client(proxy, customer.key) as finn, pytest.raises(ExceedsHold), finn.hold(estimated_cost=1_000) as hold:
        hold.commit(1_001)
    assert ("POST", "commit", None) not in proxy.seen
    assert BillingEntry.objects.get(pk=hold.entry.id).state == EntryState.RELEASED


def test_errors_are_typed_by_code(proxy, customer) -> None:
    with _client(proxy, customer.key) as finn:
        with pytest.raises(InsufficientFunds) as refused:
            finn.reserve(10_000_001)
        assert (refused.value.status, refused.value.code) == (402, "insufficient_funds")
        result = finn.reserve(1_000)
        finn.release(result.entry.id, "user_cancel")
        with pytest.raises(InvalidTransition):  # the first try refused: not a lost answer
            finn.commit(result.entry.id, 10)


def test_a_lost_reserve_answer_is_retried_with_the_same_key_and_holds_once(proxy, customer) -> None:
    proxy.faults[("POST", "entries")] = ["drop", "in_progress", "503"]
    with _client(proxy, customer.key) as finn:
        result = finn.reserve(1_500_000, correlation_id="lost-once")
    keys = [key for method, path, key in proxy.seen if (method, path) == ("POST", "entries")]
    assert len(keys) == 4
    assert len(set(keys)) == 1  # one Idempotency-Key for every try
    assert result.replayed
    assert BillingEntry.objects.filter(account_id=customer.account.pk, correlation_id="lost-once").count() == 1
    assert Account.objects.get(pk=customer.account.pk).held == 1_500_000


def test_a_lost_commit_answer_is_resolved_by_reading_the_entry_and_charges_once(proxy, customer) -> None:
    with _client(proxy, customer.key) as finn:
        held = finn.reserve(1_000_000)
        proxy.faults[("POST", "commit")] = ["drop"]
        result = finn.commit(held.entry.id, 400_000)
    assert result.entry.actual_cost == 400_000
    assert [path for _, path, _ in proxy.seen].count("commit") == 2
    assert JournalEntry.objects.filter(billing_entry_id=held.entry.id, event_type="billing_commit").count() == 1
    assert Account.objects.get(pk=customer.account.pk).available == 9_600_000


def test_an_unreachable_finn_is_an_outcome_unknown_after_the_retries(customer) -> None:
    with Finn("http://127.0.0.1:9", customer.key, retries=2, backoff=0.01) as finn, pytest.raises(OutcomeUnknown):
        finn.reserve(1_000)


def test_a_stream_extends_its_hold_until_refused_then_commits_what_it_used(proxy, make_account) -> None:
    customer = make_account(1_000_000)
    with _client(proxy, customer.key) as finn, finn.hold(estimated_cost=400_000) as hold:
        extended = 0
        with pytest.raises(InsufficientFunds):
            while True:  # every K tokens: ask for 200,000 more; stop the stream when refused
                hold.extend(200_000)
                extended += 1
        assert (extended, hold.estimated_cost) == (3, 1_000_000)
        hold.commit(950_000)
    assert Account.objects.get(pk=customer.account.pk).available == 50_000


def test_a_metered_call_is_priced_by_finn_and_a_lost_commit_answer_charges_once(proxy, customer) -> None:
    # given: sonnet at 3 / 15 µUSD per token
    with _client(proxy, customer.key) as finn:
        held = finn.reserve_metered("claude-sonnet-4", input_tokens=1_000, max_output_tokens=500)
        proxy.faults[("POST", "commit")] = ["drop"]
        # when: the commit lands, its answer is lost, the client retries
        result = finn.commit_usage(held.entry.id, input_tokens=900, output_tokens=120)
    # then
    assert (held.entry.estimated_cost, held.entry.model, held.entry.price_version is not None) == (
        10_500, "claude-sonnet-4", True,
    )  # fmt: skip
    assert (result.entry.actual_cost, result.entry.usage) == (4_500, {"input_tokens": 900, "output_tokens": 120})
    assert result.entry.price_version == held.entry.price_version
    assert JournalEntry.objects.filter(billing_entry_id=held.entry.id, event_type="billing_commit").count() == 1
    assert Account.objects.get(pk=customer.account.pk).available == 10_000_000 - 4_500
