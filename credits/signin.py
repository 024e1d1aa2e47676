"""Sign-In with Ethereum (EIP-4361): nonces, verification, sessions.

``credits.siwe_message`` parses the message in linear time (the ``siwe``
library's parser is quadratic and stays a reference in the tests); the checks
are done here with an explicit 30 s clock skew, the signature is recovered with
eth-account (EIP-191) and, for contract wallets, checked through the
library's EIP-1271 helper against ETH_RPC_URL. Every failure becomes the same
401 (no detail leaks to the caller; the reason is logged).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from eth_account import Account as EthAccount
from eth_account.messages import encode_defunct

from billing.services import account_create
from credits.errors import SignInFailed
from credits.models import RefreshToken, WalletIdentity
from credits.services import nonce_consume
from credits.siwe_message import SiweFields, SiweMessageError, siwe_parse, siwe_time
from credits.tokens import token_sign
from finn.degradation import redis_guard
from finn.errors import InvalidRequest
from finn.redis import get_redis

logger = logging.getLogger(__name__)

NONCE_TTL_SECONDS = 300
SKEW = timedelta(seconds=30)


def _nonce_key(nonce: str) -> str:
    return f"credits:nonce:siwe:{nonce}"


def signin_nonce_issue() -> str:
    """A single-use nonce, valid 300 s (Redis; fails closed with 401 when Redis is down)."""
    nonce = secrets.token_hex(16)
    redis_guard("siwe_nonce", lambda: get_redis().set(_nonce_key(nonce), "1", ex=NONCE_TTL_SECONDS, nx=True))
    return nonce


def _nonce_take(nonce: str, now: datetime) -> bool:
    """GETDEL in Redis (only one verifier can take it) and a unique row in Postgres."""
    taken = redis_guard("siwe_nonce", lambda: get_redis().getdel(_nonce_key(nonce)))
    return bool(taken) and nonce_consume(kind="siwe", parts=(nonce,), now=now)


@dataclass(frozen=True)
class Session:
    access_token: str
    refresh_token: str
    expires_in: int
    account_id: int
    address: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _issue(wallet: WalletIdentity, now: datetime) -> Session:
    access = token_sign(
        {
            "sub": str(wallet.account_id),
            "wallet": wallet.address,
            "iat": int(now.timestamp()),
            "exp": int(now.timestamp()) + settings.JWT_TTL_SECONDS,
            "typ": "access",
        }
    )
    refresh = "finnr_" + secrets.token_urlsafe(32)
    RefreshToken.objects.create(
        token_hash=_hash(refresh),
        wallet=wallet,
        expires_at=now + timedelta(days=settings.REFRESH_TOKEN_TTL_DAYS),
        created_at=now,
    )
    return Session(access, refresh, settings.JWT_TTL_SECONDS, wallet.account_id, wallet.address)


def _parse(message: str) -> SiweFields:
    try:
        return siwe_parse(message)
    except SiweMessageError as exc:
        raise SignInFailed(f"message: {exc}") from None


def _signature_ok(parsed: SiweFields, message: str, signature: str) -> bool:
    signable = encode_defunct(text=message)  # the parser checked it is the canonical rendering
    try:
        recovered = EthAccount.recover_message(signable, signature=signature)
    except Exception:
        recovered = None
    if recovered is not None and recovered.lower() == str(parsed.address).lower():
        return True
    if not settings.ETH_RPC_URL:
        return False
    # siwe's EIP-1271 helper (it needs only address, hash and signature); web3 is heavy,
    # so it is imported only for contract wallets.
    from siwe.siwe import check_contract_wallet_signature
    from web3 import HTTPProvider, Web3

    web3 = Web3(HTTPProvider(settings.ETH_RPC_URL, request_kwargs={"timeout": 5}))
    try:
        return bool(
            check_contract_wallet_signature(address=parsed.address, message=signable, signature=signature, w3=web3)
        )
    except Exception:  # RPC down or garbage: not verified
        return False


def signin_verify(*, message: str, signature: str, now: datetime) -> Session:
    """Check an EIP-4361 message and its signature; open a session for the wallet."""
    parsed = _parse(message)
    if not isinstance(signature, str) or not signature.startswith("0x") or len(signature) > 4096:
        raise InvalidRequest("signature must be 0x-prefixed hex", reason="malformed_signature")
    try:
        bytes.fromhex(signature[2:])
    except ValueError:
        raise InvalidRequest("signature must be 0x-prefixed hex", reason="malformed_signature") from None
    if parsed.domain != settings.SIWE_DOMAIN:
        raise SignInFailed("domain")
    if not parsed.uri.startswith(settings.SIWE_URI_PREFIX):
        raise SignInFailed("uri")
    if parsed.chain_id not in settings.SIWE_CHAIN_IDS:
        raise SignInFailed("chain_id")
    if siwe_time(parsed.issued_at) > now + SKEW:
        raise SignInFailed("issued_in_future")
    if parsed.expiration_time is not None and now >= siwe_time(parsed.expiration_time) + SKEW:
        raise SignInFailed("expired")
    if parsed.not_before is not None and now + SKEW < siwe_time(parsed.not_before):
        raise SignInFailed("not_yet_valid")
    if not _signature_ok(parsed, message, signature):
        raise SignInFailed("signature")
    # Last, so a bad signature cannot burn someone else's nonce.
    if not _nonce_take(parsed.nonce, now):
        raise SignInFailed("nonce")
    address = parsed.address.lower()
    with transaction.atomic(durable=True):
        wallet = WalletIdentity.objects.filter(address=address).first()
        if wallet is None:
            try:
                with transaction.atomic():
                    wallet = WalletIdentity.objects.create(
                        address=address, account=account_create(name=f"wallet {address}"), created_at=now
                    )
            except IntegrityError:  # a concurrent first sign-in of the same wallet
                wallet = WalletIdentity.objects.get(address=address)
        return _issue(wallet, now)


def session_refresh(*, refresh_token: str, now: datetime) -> Session:
    """Rotate a refresh token: the old one is revoked by a compare-and-set."""
    if not isinstance(refresh_token, str) or len(refresh_token) > 200:
        raise InvalidRequest("refresh_token must be a string", reason="malformed_token")
    with transaction.atomic(durable=True):
        token = RefreshToken.objects.select_related("wallet").filter(token_hash=_hash(refresh_token)).first()
        if token is None or token.expires_at <= now:
            raise SignInFailed("refresh_unknown_or_expired")
        if RefreshToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now) != 1:
            raise SignInFailed("refresh_reused")
        return _issue(token.wallet, now)


def session_logout(*, refresh_token: str, now: datetime) -> None:
    if not isinstance(refresh_token, str) or len(refresh_token) > 200:
        raise InvalidRequest("refresh_token must be a string", reason="malformed_token")
    RefreshToken.objects.filter(token_hash=_hash(refresh_token), revoked_at__isnull=True).update(revoked_at=now)
