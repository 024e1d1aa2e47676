"""Property-based fuzzing of the public parsers: any input is refused with their own error, quickly.

Short rounds in `make test` (the ``ci`` profile); `make fuzz` runs the ``long`` profile. Every
example is also held to a time bound: no input makes a parser spend more than 50 ms.
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from siwe import SiweMessage

from credits.errors import InvalidPayment
from credits.siwe_message import SiweMessageError, siwe_parse
from credits.x402.protocol import decode_payment
from finn.errors import DomainError
from finn.untrusted_json import UntrustedJsonError, json_loads_untrusted
from webhooks.adapters import (
    InvalidEvent,
    SignatureError,
    normalize_standard,
    verify_paddle,
    verify_standard,
    verify_stripe,
)

settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("FINN_FUZZ_PROFILE", "ci"))

BOUND_SECONDS = 0.05


def _once(call: Callable[[], Any], expected: tuple[type[BaseException], ...]) -> tuple[Any, float]:
    started = time.perf_counter()
    try:
        result = call()
    except expected:
        result = None
    return result, time.perf_counter() - started


def _bounded(call: Callable[[], Any], *expected: type[BaseException]) -> Any:
    """``call()`` (its expected refusals → None), held to the time bound.

    An input over the bound is timed twice more and the fastest run counts: a slow input is slow
    every time, a scheduler stall on a loaded machine is not (the long fuzz once saw 160 ms on a
    6-byte input that took microseconds on every retry).
    """
    result, elapsed = _once(call, expected)
    for _ in range(2):
        if elapsed < BOUND_SECONDS:
            break
        elapsed = min(elapsed, _once(call, expected)[1])
    assert elapsed < BOUND_SECONDS
    return result


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@given(st.binary(max_size=4096))
def test_untrusted_json_refuses_any_bytes_with_its_own_error(raw: bytes) -> None:
    _bounded(lambda: json_loads_untrusted(raw), UntrustedJsonError)


def _storable(value: Any) -> bool:
    """No string (key or value) holds what PostgreSQL cannot store: U+0000 or a lone surrogate."""
    if isinstance(value, str):
        return not any(ch == "\x00" or "\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(item) for item in value)
    return True


@given(_json_values)
def test_untrusted_json_reads_every_shallow_document_like_json(value: Any) -> None:
    # Documents PostgreSQL can store decode exactly as json does; the others are refused.
    raw = json.dumps(value).encode()
    if _storable(value):
        assert _bounded(lambda: json_loads_untrusted(raw)) == json.loads(raw)
    else:
        assert _bounded(lambda: json_loads_untrusted(raw), UntrustedJsonError) is None


@given(st.text(max_size=4200))
def test_siwe_parser_refuses_any_text_with_its_own_error(text: str) -> None:
    _bounded(lambda: siwe_parse(text), SiweMessageError)


_SEED_MESSAGE = SiweMessage(
    domain="localhost:8000",
    address="0x71C7656EC7ab88b098defB751B7401B5f6d8976F",
    statement="Sign in to finn",
    uri="http://localhost:8000/login",
    version="1",
    chain_id=8453,
    nonce="abcdef0123456789",
    issued_at="2026-12-02T06:00:00.000Z",
    resources=["https://example.com/a"],
).prepare_message()


@given(st.integers(min_value=0, max_value=len(_SEED_MESSAGE) - 1), st.text(max_size=3), st.integers(0, 2))
def test_siwe_parser_on_mutated_messages_accepts_only_what_the_library_reads_the_same(
    at: int, insert: str, drop: int
) -> None:
    mutant = _SEED_MESSAGE[:at] + insert + _SEED_MESSAGE[at + drop :]
    parsed = _bounded(lambda: siwe_parse(mutant), SiweMessageError)
    if parsed is not None:
        reference = SiweMessage.from_message(mutant)
        assert (parsed.address, parsed.nonce, parsed.uri, parsed.chain_id, parsed.statement) == (
            reference.address,
            reference.nonce,
            str(reference.uri),
            reference.chain_id,
            reference.statement,
        )


@given(st.text(max_size=2048) | st.binary(max_size=1500).map(lambda b: base64.b64encode(b).decode()))
def test_payment_headers_are_refused_with_a_payment_error(value: str) -> None:
    _bounded(lambda: decode_payment(value, version_hint=random.choice([1, 2])), InvalidPayment, DomainError)


@given(_json_values.map(lambda v: base64.b64encode(json.dumps({"x402Version": 2, "payload": v}).encode()).decode()))
def test_payment_headers_of_any_json_are_refused_with_a_payment_error(value: str) -> None:
    _bounded(lambda: decode_payment(value, version_hint=2), InvalidPayment, DomainError)


@given(st.binary(max_size=512), st.text(max_size=300) | st.none())
def test_webhook_signature_headers_are_refused_with_a_signature_error(raw: bytes, header: str | None) -> None:
    now = time.time()
    _bounded(lambda: verify_paddle(raw, header, "pdl_secret", now=now, tolerance=300), SignatureError)
    _bounded(lambda: verify_stripe(raw, header, "whsec_x", now=now, tolerance=300), SignatureError)
    _bounded(
        lambda: verify_standard(
            raw,
            webhook_id="msg_1",
            timestamp=str(int(now)),
            header=header,
            secret="whsec_c2VjcmV0",
            now=now,
            tolerance=300,
        ),
        SignatureError,
    )


@given(_json_values, st.text(max_size=40) | st.none())
def test_standard_bodies_normalize_or_are_refused_as_invalid_events(body: Any, timestamp: str | None) -> None:
    _bounded(lambda: normalize_standard(body, webhook_id="msg_1", webhook_timestamp=timestamp), InvalidEvent)
