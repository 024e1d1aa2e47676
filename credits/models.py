"""API keys (hashed at rest; the secret is shown once at creation)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from billing.models import Account


class ApiKey(models.Model):
    """A bearer key for one account. Only its SHA-256 is stored.

    Keys are 256 bits of randomness, so a fast hash is enough: there is no
    password to brute-force, and lookup by hash stays one indexed query.
    """

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=16)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(
                condition=Q(key_hash__regex=r"^[0-9a-f]{64}$"), name="credits_apikey_hash_is_sha256"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… (account {self.account_id})"


class UsedNonce(models.Model):
    """A consumed nonce (x402 authorization, SIWE): consuming is an INSERT.

    ``key`` is the SHA-256 of the identifying fields, so a replay hits the
    primary key and is refused by the database, whatever Redis says.
    """

    class Kind(models.TextChoices):
        X402 = "x402"
        SIWE = "siwe"

    key = models.CharField(primary_key=True, max_length=64)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="credits_nonce_created_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(key__regex=r"^[0-9a-f]{64}$"), name="credits_usednonce_key_is_sha256"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.key[:12]}"
