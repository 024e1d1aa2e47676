"""The x402 wire protocol (v2 and legacy v1) and local EIP-3009 verification.

Protocol types come from the official ``x402`` package (pydantic models of
PaymentRequired, PaymentRequirements, PaymentPayload, SettleResponse); the
EIP-712 ``TransferWithAuthorization`` signature is recovered with
eth-account. Nothing here writes: the services in ``credits.services`` do.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_utils import to_checksum_address
from pydantic import ValidationError
from x402.mechanisms.evm.constants import (
    PERMIT2_ADDRESS,
    SCHEME_UPTO,
    UPTO_PERMIT2_WITNESS_TYPES,
)
from x402.schemas import PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo, SettleResponse
from x402.schemas.v1 import PaymentPayloadV1, PaymentRequiredV1, PaymentRequirementsV1

from credits.chain import RpcUnavailable, rpc_call
from credits.errors import InvalidPayment, VerificationQueueFull
from finn.untrusted_json import UntrustedJsonError, json_loads_untrusted
from finn.validators import is_eth_address

# Header names (matched case-insensitively by Django's request.headers).
PAYMENT_REQUIRED = "PAYMENT-REQUIRED"
PAYMENT_SIGNATURE = "PAYMENT-SIGNATURE"
PAYMENT_RESPONSE = "PAYMENT-RESPONSE"
X_PAYMENT = "X-PAYMENT"
X_PAYMENT_RESPONSE = "X-PAYMENT-RESPONSE"
# A payment payload is ~1 KB; the header itself is bounded by the server (8 KiB per line).
MAX_PAYMENT_HEADER_BYTES = 16 * 1024
# A client without header support asks for the v1 body form with this header.
VERSION_HEADER = "X402-Version"
# A client may name its wallet so that its credit notes reduce the quote.
PAYER_HEADER = "X402-Payer"

DUST_MICRO_USDC = 100  # smaller payments are refused (payment_too_small)
CLOCK_SKEW_SECONDS = 30
CREDIT_CAP_MICRO_USDC = 1_000_000_000_000  # 1,000,000 USDC per wallet
EIP1271_MAGIC = "0x1626ba7e"

_NONCE = re.compile(r"^0x[0-9a-fA-F]{64}$")
_SIGNATURE = re.compile(r"^0x[0-9a-fA-F]{130,}$")
_UINT = re.compile(r"^[0-9]{1,78}$")


@dataclass(frozen=True)
class X402Network:
    caip2: str
    chain_id: int
    v1_name: str
    usdc: str  # checksummed, as x402 clients' default-asset tables spell it
    eip712_name: str
    eip712_version: str


NETWORKS: dict[str, X402Network] = {
    "eip155:8453": X402Network(
        "eip155:8453", 8453, "base", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "USD Coin", "2"
    ),
    "eip155:84532": X402Network(
        "eip155:84532", 84532, "base-sepolia", "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "USDC", "2"
    ),
}
V1_NAMES = {network.v1_name: caip2 for caip2, network in NETWORKS.items()}


def current_network() -> X402Network:
    return NETWORKS[settings.X402_NETWORK]


# --- documents ----------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """What a quote offers, enough to build either protocol version's 402."""

    quote_id: str
    network: str
    asset: str
    pay_to: str
    amount: int
    max_timeout_seconds: int
    resource_url: str
    description: str
    upto: bool = False  # also offer the upto scheme (variable cost: settled for the actual, at most amount)


def upto_enabled() -> bool:
    """``upto`` is offered when a facilitator address to bind the Permit2 witness to is configured."""
    return bool(settings.X402_UPTO_FACILITATOR_ADDRESS)


def requirement_v2(offer: Offer, scheme: str = "exact") -> PaymentRequirements:
    network = NETWORKS[offer.network]
    extra: dict[str, Any] = {"name": network.eip712_name, "version": network.eip712_version, "quoteId": offer.quote_id}
    if scheme == SCHEME_UPTO:
        extra["assetTransferMethod"] = "permit2"
        extra["facilitatorAddress"] = to_checksum_address(settings.X402_UPTO_FACILITATOR_ADDRESS)
    return PaymentRequirements(
        scheme=scheme,
        network=offer.network,
        asset=to_checksum_address(offer.asset),
        amount=str(offer.amount),
        pay_to=to_checksum_address(offer.pay_to),
        max_timeout_seconds=offer.max_timeout_seconds,
        extra=extra,
    )


def payment_required_v2(offer: Offer, *, error: str = "Payment required") -> dict[str, Any]:
    document = PaymentRequired(
        x402_version=2,
        error=error,
        resource=ResourceInfo(url=offer.resource_url, description=offer.description, mime_type="application/json"),
        accepts=[requirement_v2(offer)]
        + ([requirement_v2(offer, SCHEME_UPTO)] if offer.upto and upto_enabled() else []),
    )
    return dict(document.model_dump(mode="json", by_alias=True, exclude_none=True))


def payment_required_v1(offer: Offer, *, error: str = "Payment required") -> dict[str, Any]:
    network = NETWORKS[offer.network]
    document = PaymentRequiredV1(
        x402_version=1,
        error=error,
        accepts=[
            PaymentRequirementsV1(
                scheme="exact",
                network=network.v1_name,
                max_amount_required=str(offer.amount),
                resource=offer.resource_url,
                description=offer.description,
                mime_type="application/json",
                pay_to=to_checksum_address(offer.pay_to),
                max_timeout_seconds=offer.max_timeout_seconds,
                asset=to_checksum_address(offer.asset),
                extra={"name": network.eip712_name, "version": network.eip712_version, "quoteId": offer.quote_id},
            )
        ],
    )
    return dict(document.model_dump(mode="json", by_alias=True, exclude_none=True))


def encode_header(document: dict[str, Any]) -> str:
    """Standard base64 (padded, ``+/``) of compact UTF-8 JSON."""
    return base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()


def settle_response_header(*, success: bool, transaction: str, network: str, payer: str, amount: int) -> str:
    response = SettleResponse(
        success=success, transaction=transaction, network=network, payer=payer, amount=str(amount)
    )
    return encode_header(dict(response.model_dump(mode="json", by_alias=True, exclude_none=True)))


# --- incoming payments --------------------------------------------------------------


@dataclass(frozen=True)
class Authorization:
    """An EIP-3009 ``TransferWithAuthorization`` (exact), or an upto Permit2 ``PermitWitnessTransferFrom``
    in the same terms: ``value`` is then the most it may move, ``valid_before`` its deadline, ``nonce``
    its uint256 Permit2 nonce as 32 bytes of hex."""

    payer: str  # lower-case
    to: str  # lower-case
    value: int
    valid_after: int
    valid_before: int
    nonce: str  # lower-case 0x + 64 hex
    signature: str  # 0x hex
    scheme: str = "exact"
    token: str = ""  # upto: the permitted token
    spender: str = ""  # upto: the Permit2 proxy allowed to pull it
    facilitator: str = ""  # upto: the facilitator the witness binds


@dataclass(frozen=True)
class DecodedPayment:
    version: int
    network: str  # CAIP-2 (v1 names mapped); "" when unknown
    accepted: dict[str, Any] | None  # v2: the requirement the client chose, as sent
    authorization: Authorization
    raw: dict[str, Any]  # the payload as sent (forwarded to the facilitator)


def _authorization(payload: dict[str, Any]) -> Authorization:
    auth = payload.get("authorization")
    signature = payload.get("signature")
    if not isinstance(auth, dict) or not isinstance(signature, str):
        raise InvalidPayment("payment payload must carry authorization and signature")
    fields = {name: auth.get(name) for name in ("from", "to", "value", "validAfter", "validBefore", "nonce")}
    if not all(isinstance(value, str) for value in fields.values()):
        raise InvalidPayment("authorization fields must be strings")
    if not (is_eth_address(fields["from"]) and is_eth_address(fields["to"])):
        raise InvalidPayment("authorization from/to must be 20-byte hex addresses")
    if not all(_UINT.match(fields[name]) for name in ("value", "validAfter", "validBefore")):  # type: ignore[arg-type]
        raise InvalidPayment("authorization value/validAfter/validBefore must be decimal integers")
    if not _NONCE.match(fields["nonce"]) or not _SIGNATURE.match(signature):  # type: ignore[arg-type]
        raise InvalidPayment("authorization nonce must be bytes32 hex and signature 0x hex")
    value = int(fields["value"])  # type: ignore[arg-type]
    if value >= 2**256:
        raise InvalidPayment("authorization value out of range")
    return Authorization(
        payer=str(fields["from"]).lower(),
        to=str(fields["to"]).lower(),
        value=value,
        valid_after=int(fields["validAfter"]),  # type: ignore[arg-type]
        valid_before=int(fields["validBefore"]),  # type: ignore[arg-type]
        nonce=str(fields["nonce"]).lower(),
        signature=signature.lower(),
    )


def _permit2_authorization(payload: dict[str, Any]) -> Authorization:
    auth = payload.get("permit2Authorization")
    signature = payload.get("signature")
    if not isinstance(auth, dict) or not isinstance(signature, str) or not _SIGNATURE.match(signature):
        raise InvalidPayment("an upto payload must carry permit2Authorization and a 0x hex signature")
    permitted, witness = auth.get("permitted"), auth.get("witness")
    if not isinstance(permitted, dict) or not isinstance(witness, dict):
        raise InvalidPayment("permit2Authorization needs permitted and witness")
    addresses = [
        auth.get("from"),
        auth.get("spender"),
        permitted.get("token"),
        witness.get("to"),
        witness.get("facilitator"),
    ]
    numbers = [permitted.get("amount"), auth.get("nonce"), auth.get("deadline"), witness.get("validAfter")]
    if not all(isinstance(a, str) and is_eth_address(a) for a in addresses):
        raise InvalidPayment("permit2Authorization addresses must be 20-byte hex")
    if not all(isinstance(n, str) and _UINT.match(n) and int(n) < 2**256 for n in numbers):
        raise InvalidPayment("permit2Authorization amounts, nonce and times must be decimal uint256")
    payer, spender, token, to, facilitator = (str(a).lower() for a in addresses)
    amount, nonce, deadline, valid_after = (int(str(n)) for n in numbers)
    return Authorization(
        payer=payer, to=to, value=amount, valid_after=valid_after, valid_before=deadline,
        nonce=f"0x{nonce:064x}", signature=signature.lower(), scheme=SCHEME_UPTO, token=token, spender=spender,
        facilitator=facilitator,
    )  # fmt: skip


def decode_payment(raw: str, *, version_hint: int) -> DecodedPayment:
    """Decode a ``PAYMENT-SIGNATURE`` (v2) or ``X-PAYMENT`` (v1) header; 400 ``invalid_payment`` if malformed."""
    try:
        data = json_loads_untrusted(base64.b64decode(raw.strip(), validate=True), max_bytes=MAX_PAYMENT_HEADER_BYTES)
    except (ValueError, UntrustedJsonError):  # binascii.Error and non-ASCII text are ValueErrors
        raise InvalidPayment("payment header is not base64 of JSON") from None
    if not isinstance(data, dict):
        raise InvalidPayment("payment header must hold a JSON object")
    version = data.get("x402Version", version_hint)
    try:
        if version == 2:
            v2 = PaymentPayload.model_validate(data)
            accepted = data.get("accepted")
            if v2.accepted.scheme not in ("exact", SCHEME_UPTO):
                raise InvalidPayment("only the exact and upto schemes are accepted")
            upto = v2.accepted.scheme == SCHEME_UPTO
            return DecodedPayment(
                version=2,
                network=v2.accepted.network,
                accepted=accepted if isinstance(accepted, dict) else None,
                authorization=_permit2_authorization(v2.payload) if upto else _authorization(v2.payload),
                raw=data,
            )
        if version == 1:
            v1 = PaymentPayloadV1.model_validate(data)
            if v1.scheme != "exact":
                raise InvalidPayment("only the exact scheme is accepted")
            return DecodedPayment(
                version=1,
                network=V1_NAMES.get(v1.network, ""),
                accepted=None,
                authorization=_authorization(v1.payload),
                raw=data,
            )
    except ValidationError:
        raise InvalidPayment("payment header does not follow the x402 schema") from None
    raise InvalidPayment("unsupported x402Version")


# --- signature verification ---------------------------------------------------------


def _typed_data(auth: Authorization, network: X402Network, asset: str) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "TransferWithAuthorization": [
                {"name": "from", "type": "address"},
                {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "validAfter", "type": "uint256"},
                {"name": "validBefore", "type": "uint256"},
                {"name": "nonce", "type": "bytes32"},
            ],
        },
        "primaryType": "TransferWithAuthorization",
        "domain": {
            "name": network.eip712_name,
            "version": network.eip712_version,
            "chainId": network.chain_id,
            "verifyingContract": to_checksum_address(asset),
        },
        "message": {
            "from": to_checksum_address(auth.payer),
            "to": to_checksum_address(auth.to),
            "value": auth.value,
            "validAfter": auth.valid_after,
            "validBefore": auth.valid_before,
            "nonce": bytes.fromhex(auth.nonce[2:]),
        },
    }


def _permit2_typed_data(auth: Authorization, network: X402Network) -> dict[str, Any]:
    """The upto scheme's Permit2 PermitWitnessTransferFrom, typed as the x402 package types it."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            **UPTO_PERMIT2_WITNESS_TYPES,
        },
        "primaryType": "PermitWitnessTransferFrom",
        "domain": {"name": "Permit2", "chainId": network.chain_id, "verifyingContract": PERMIT2_ADDRESS},
        "message": {
            "permitted": {"token": to_checksum_address(auth.token), "amount": auth.value},
            "spender": to_checksum_address(auth.spender),
            "nonce": int(auth.nonce, 16),
            "deadline": auth.valid_before,
            "witness": {
                "to": to_checksum_address(auth.to),
                "facilitator": to_checksum_address(auth.facilitator),
                "validAfter": auth.valid_after,
            },
        },
    }


def signature_valid(auth: Authorization, network: X402Network, asset: str) -> bool:
    """EIP-712 TransferWithAuthorization (upto: Permit2 PermitWitnessTransferFrom): the recovered
    signer must be ``from``.

    A signature that does not recover to ``from`` is checked with EIP-1271
    (``isValidSignature``) against the payer's contract when ETH_RPC_URL is
    set; without a node, contract wallets cannot pay.
    """
    typed = _permit2_typed_data(auth, network) if auth.scheme == SCHEME_UPTO else _typed_data(auth, network, asset)
    signable = encode_typed_data(full_message=typed)
    try:
        recovered = Account.recover_message(signable, signature=auth.signature)
    except Exception:  # any malformed signature is simply invalid
        recovered = ""
    if recovered.lower() == auth.payer:
        return True
    if not settings.ETH_RPC_URL:
        return False
    digest = _hash_eip191_message(signable)
    call_data = "0x1626ba7e" + abi_encode(["bytes32", "bytes"], [digest, bytes.fromhex(auth.signature[2:])]).hex()
    try:
        result = rpc_call(settings.ETH_RPC_URL, "eth_call", [{"to": auth.payer, "data": call_data}, "latest"])
    except RpcUnavailable:
        return False
    return isinstance(result, str) and result.lower().startswith(EIP1271_MAGIC)


_verify_slots: tuple[int, threading.BoundedSemaphore] | None = None
_verify_slots_lock = threading.Lock()


@contextmanager
def verification_slot() -> Iterator[None]:
    """At most X402_VERIFY_CONCURRENCY signature verifications at once per process; else 503."""
    global _verify_slots
    size = settings.X402_VERIFY_CONCURRENCY
    with _verify_slots_lock:
        if _verify_slots is None or _verify_slots[0] != size:
            _verify_slots = (size, threading.BoundedSemaphore(size))
        slots = _verify_slots[1]
    if not slots.acquire(blocking=False):
        raise VerificationQueueFull()
    try:
        yield
    finally:
        slots.release()
