"""Signing keys of the tokens finn issues (SIWE access tokens): ES256, a ``kid`` per key, JWKS.

The signing key is a PEM EC P-256 private key (``JWT_SIGNING_KEY`` or ``…_FILE``), never
``SECRET_KEY``. ``JWT_VERIFICATION_KEYS`` holds earlier public keys (PEM, concatenated): tokens
they signed stay valid until they expire, so a key rotates without logging anyone out. Each
key's ``kid`` is its RFC 7638 JWK thumbprint; a token whose header names another ``kid`` or
another ``alg`` is refused. ``/.well-known/jwks.json`` serves every public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from django.conf import settings

ALGORITHM = "ES256"
_PEM_BLOCK = re.compile(r"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----", re.S)
_lock = threading.Lock()
_cache: dict[tuple[str | None, str], Keyring] = {}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = key.public_numbers()
    jwk = {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64(numbers.x.to_bytes(32, "big")),
        "y": _b64(numbers.y.to_bytes(32, "big")),
    }
    thumbprint = _b64(hashlib.sha256(json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()).digest())
    return {**jwk, "kid": thumbprint, "use": "sig", "alg": ALGORITHM}


@dataclass(frozen=True)
class Keyring:
    signing_key: ec.EllipticCurvePrivateKey
    signing_kid: str
    verification: dict[str, ec.EllipticCurvePublicKey]  # kid -> key (the signing key's public half included)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(key) for key in self.verification.values()]}


def _load(signing_pem: str | None, previous_pem: str) -> Keyring:
    if signing_pem:
        private = load_pem_private_key(signing_pem.encode(), password=None)
    else:  # DEBUG only (settings refuse to start otherwise): a key for this process alone
        private = ec.generate_private_key(ec.SECP256R1())
    if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(private.curve, ec.SECP256R1):
        raise ValueError("JWT_SIGNING_KEY must be an EC P-256 private key (ES256)")
    public = private.public_key()
    verification = {public_jwk(public)["kid"]: public}
    for block in _PEM_BLOCK.findall(previous_pem or ""):
        key = load_pem_public_key(block.encode())
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("JWT_VERIFICATION_KEYS must hold EC P-256 public keys")
        verification[public_jwk(key)["kid"]] = key
    return Keyring(signing_key=private, signing_kid=public_jwk(public)["kid"], verification=verification)


def keyring() -> Keyring:
    """The configured keys (parsed once per configuration)."""
    config = (settings.JWT_SIGNING_KEY, settings.JWT_VERIFICATION_KEYS)
    ring = _cache.get(config)
    if ring is None:
        with _lock:
            ring = _cache.get(config) or _load(*config)
            _cache[config] = ring
    return ring


def token_sign(claims: dict[str, Any]) -> str:
    ring = keyring()
    return jwt.encode(claims, ring.signing_key, algorithm=ALGORITHM, headers={"kid": ring.signing_kid})


def token_verify(token: str, *, required: list[str]) -> dict[str, Any]:
    """The claims of a token signed by one of our keys; raises ``jwt.InvalidTokenError`` otherwise."""
    header = jwt.get_unverified_header(token)
    if header.get("alg") != ALGORITHM:
        raise jwt.InvalidAlgorithmError("only ES256 tokens are accepted")
    key = keyring().verification.get(str(header.get("kid")))
    if key is None:
        raise jwt.InvalidTokenError("unknown key id")
    claims: dict[str, Any] = jwt.decode(token, key, algorithms=[ALGORITHM], options={"require": required})
    return claims


def jwt_decode(token: str) -> dict[str, Any]:
    """Verify a SIWE access token (ES256, a known kid, not expired, ``typ`` access)."""
    claims = token_verify(token, required=["exp", "sub", "iat"])
    if claims.get("typ") != "access":
        raise jwt.InvalidTokenError("not an access token")
    return claims
