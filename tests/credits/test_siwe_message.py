"""finn's linear EIP-4361 parser against the siwe library (the reference) and hostile inputs."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from eth_account import Account as EthAccount
from eth_account.messages import encode_defunct
from siwe import SiweMessage

from credits.siwe_message import MAX_MESSAGE_CHARS, SiweFields, SiweMessageError, siwe_parse
from tests.credits.test_signin import _iso

WALLET = EthAccount.create("finn-siwe-parser-wallet")
FIELDS = (
    "scheme",
    "domain",
    "address",
    "statement",
    "uri",
    "version",
    "chain_id",
    "nonce",
    "issued_at",
    "expiration_time",
    "not_before",
    "request_id",
)
RESOURCES = [
    "ipfs://bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
    "https://example.com/my-web2-claim.json",
    "urn:recap:eyJhdHQiOnsiaHR0cHM6Ly9leGFtcGxlLmNvbSI6e319fQ",
    "did:pkh:eip155:1:0xb9c5714089478a327f09197987f16f9e5d936e8a",
]


def _library_fields(message: str) -> dict[str, Any]:
    parsed = SiweMessage.from_message(message)
    fields = {name: getattr(parsed, name) for name in FIELDS}
    fields["version"] = str(parsed.version)
    fields["resources"] = tuple(parsed.resources or ())
    return {name: (str(value) if isinstance(value, str) else value) for name, value in fields.items()}


def _finn_fields(parsed: SiweFields) -> dict[str, Any]:
    return {name: getattr(parsed, name) for name in (*FIELDS, "resources")}


def _random_message(rng: random.Random) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    fields: dict[str, Any] = {
        "scheme": rng.choice([None, "https", "http"]),
        "domain": rng.choice(["localhost:8000", "finn.example.com", "app.finn.io:443", "127.0.0.1"]),
        "address": WALLET.address,
        "statement": rng.choice(
            [None, "Sign in to finn", "I accept the ToS: https://finn.example/tos?x=1#y", "a ~ b (c) [d] @e !$&'*+,;="]
        ),
        "uri": rng.choice(
            [
                "http://localhost:8000/login",
                "https://finn.example.com/a/b?c=d&e=%20#frag",
                "did:pkh:eip155:1:0xb9c5714089478a327f09197987f16f9e5d936e8a",
                "https://app.finn.io:443/",
            ]
        ),
        "version": "1",
        "chain_id": rng.choice([1, 8453, 84532, 11155111]),
        "nonce": "".join(rng.choice(alphabet) for _ in range(rng.randint(8, 32))),
        "issued_at": rng.choice(
            ["2026-12-02T06:00:00.000Z", "2026-12-02T06:00:00Z", "2026-12-02T08:00:00.123456+02:00"]
        ),
        "expiration_time": rng.choice([None, "2026-12-02T06:05:00.000Z"]),
        "not_before": rng.choice([None, "2026-12-02T05:59:00Z"]),
        "request_id": rng.choice([None, "req-123", "a:b@c%20d"]),
        "resources": rng.sample(RESOURCES, rng.randint(0, 2)) or None,
    }
    return str(SiweMessage(**fields).prepare_message())


def test_every_message_the_library_renders_parses_to_the_library_fields() -> None:
    # given: 40 messages over the optional parts, rendered by the library itself
    rng = random.Random(4361)
    messages = [_random_message(rng) for _ in range(40)]
    for message in messages:
        # when
        parsed = siwe_parse(message)
        # then
        assert _finn_fields(parsed) == _library_fields(message), message
        assert parsed.render() == message


def test_every_mutant_finn_accepts_the_library_parses_to_the_same_fields() -> None:
    # given: single-character edits of valid messages (insert, delete, replace)
    rng = random.Random(1271)
    seeds = [_random_message(rng) for _ in range(4)]
    alphabet = "a0Z:/ \n-.%@#?[]\x00é"
    accepted = 0
    for _ in range(200):
        text = rng.choice(seeds)
        at = rng.randrange(len(text))
        edit = rng.choice(["insert", "delete", "replace"])
        char = rng.choice(alphabet)
        mutant = {
            "insert": text[:at] + char + text[at:],
            "delete": text[:at] + text[at + 1 :],
            "replace": text[:at] + char + text[at + 1 :],
        }[edit]
        try:
            parsed = siwe_parse(mutant)
        except SiweMessageError:
            continue
        # then: whatever finn accepts, the reference parser accepts with the same fields
        accepted += 1
        assert _finn_fields(parsed) == _library_fields(mutant), mutant
    assert accepted > 10  # the edits reached the accepting side too (nonces, statements, paths)


@pytest.mark.parametrize(
    "message",
    [
        "",
        "hello",
        "0" * 4000,
        "\n" * 4000,
        "- " * 2000,
        "a wants you to sign in with your Ethereum account:\n" * 80,
    ],
)
def test_garbage_is_refused_within_ten_milliseconds(message: str) -> None:
    # when
    started = time.perf_counter()
    with pytest.raises(SiweMessageError):
        siwe_parse(message)
    # then: generous for CI; measured ≈ 0.01-0.1 ms here
    assert time.perf_counter() - started < 0.01


def test_known_bad_messages_are_refused() -> None:
    valid = _random_message(random.Random(7))
    lowercase_address = valid.replace(WALLET.address, WALLET.address.lower())
    for message in [
        lowercase_address,  # not EIP-55
        valid.replace("Version: 1", "Version: 2"),
        valid + "\n",
        valid.replace("\n", "\r\n"),
        valid.replace("Chain ID: ", "Chain ID: 0"),
        valid + "\nResources:",
        valid.replace("Issued At: 2026-12-02", "Issued At: 2026-13-02"),
    ]:
        with pytest.raises(SiweMessageError):
            siwe_parse(message)


@pytest.mark.parametrize(
    ("authority", "accepted"),
    [
        ("localhost:65535", True),
        ("127.0.0.1:8000", True),
        # found by `make fuzz` (mutants of the seed message): finn read these, the library refused them
        ("localhost:80000", False),
        ("localhost:65536", False),
        ("localhost:123456", False),
        ("localho.0:8000", False),  # ends in a number, so the URL parser reads it as IPv4
        ("256.1.1.1", False),
    ],
)
def test_an_authority_the_library_refuses_is_refused(authority: str, accepted: bool) -> None:
    # given
    valid = _random_message(random.Random(7))
    uri = next(line for line in valid.split("\n") if line.startswith("URI: "))
    message = valid.replace(uri, f"URI: http://{authority}/login")
    # when
    try:
        SiweMessage.from_message(message)
        library = True
    except Exception:
        library = False
    # then: the library's verdict, and finn's is the same
    assert library is accepted
    if accepted:
        assert siwe_parse(message).uri == f"http://{authority}/login"
    else:
        with pytest.raises(SiweMessageError):
            siwe_parse(message)


def _largest_message(nonce: str) -> str:
    """All optional fields and as many resources as fit under the 4,096-character cap."""
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "scheme": "http",
        "domain": "localhost:8000",
        "address": WALLET.address,
        "statement": "Sign in to finn and accept the terms at https://finn.example/tos",
        "uri": "http://localhost:8000/login",
        "version": "1",
        "chain_id": 8453,
        "nonce": nonce,
        "issued_at": _iso(now),
        "expiration_time": _iso(now + timedelta(minutes=5)),
        "not_before": _iso(now - timedelta(minutes=1)),
        "request_id": "gateway-request-0001",
        "resources": [],
    }
    while True:
        fields["resources"].append(f"https://finn.example.com/resources/{len(fields['resources']):04d}/read")
        text = str(SiweMessage(**fields).prepare_message())
        if len(text) > MAX_MESSAGE_CHARS:
            fields["resources"].pop()
            return str(SiweMessage(**fields).prepare_message())


@pytest.mark.django_db
def test_the_largest_realistic_message_signs_in_quickly() -> None:
    # given: a signed message of ~4,000 characters (the library needs seconds for it)
    client = Client()
    nonce = str(client.get("/api/v1/auth/nonce").json()["nonce"])
    message = _largest_message(nonce)
    assert len(message) > 3900
    signature = WALLET.sign_message(encode_defunct(text=message)).signature.hex()
    # when
    started = time.perf_counter()
    response = client.post(
        "/api/v1/auth/verify", {"message": message, "signature": "0x" + signature}, content_type="application/json"
    )
    elapsed = time.perf_counter() - started
    # then: one bound on one request, generous for CI (measured ≈ 10 ms here)
    assert response.status_code == 200, response.content
    assert elapsed < 0.5
    assert len(siwe_parse(message).resources) > 60


@pytest.mark.django_db
@pytest.mark.parametrize("length", [500, 2000, 4000])
def test_zeros_that_cost_seconds_before_are_the_generic_401_at_once(length: int) -> None:
    # when
    started = time.perf_counter()
    response = Client().post(
        "/api/v1/auth/verify", {"message": "0" * length, "signature": "0"}, content_type="application/json"
    )
    elapsed = time.perf_counter() - started
    # then: before: 1.8 s, 7.7 s, 31.6 s of CPU, then 400
    assert response.status_code == 401
    assert response.json() == {"error": "authentication failed", "code": "authentication_failed"}
    assert elapsed < 0.5
