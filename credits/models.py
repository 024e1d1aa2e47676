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


class AgentWallet(models.Model):
    """An agent's account bound to an NFT (token id) and its owner's address."""

    account = models.OneToOneField(Account, on_delete=models.PROTECT, related_name="agent_wallet")
    token_id = models.CharField(max_length=78)  # a uint256 in decimal
    owner_address = models.CharField(max_length=42)
    identity_anchor = models.CharField(max_length=66, null=True, blank=True)  # noqa: DJ001 - NULL: no anchor
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            # One identity can back only one wallet (a second binding is an impersonation).
            models.UniqueConstraint(
                fields=["identity_anchor"],
                condition=Q(identity_anchor__isnull=False),
                name="credits_agentwallet_identity_anchor_uniq",
            ),
            models.CheckConstraint(
                condition=Q(owner_address__regex=r"^0x[0-9a-f]{40}$"), name="credits_agentwallet_owner_lowercase_hex"
            ),
            models.CheckConstraint(
                condition=Q(token_id__regex=r"^[0-9]{1,78}$"),  # noqa: S106 - a regex, not a password
                name="credits_agentwallet_token_id_decimal",
            ),
        ]

    def __str__(self) -> str:
        return f"agent {self.token_id} ({self.owner_address})"


class WalletIdentity(models.Model):
    """A wallet that signed in with Ethereum, and the account it uses."""

    address = models.CharField(max_length=42, unique=True)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="wallets")
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(address__regex=r"^0x[0-9a-f]{40}$"), name="credits_walletidentity_address_hex"
            ),
        ]

    def __str__(self) -> str:
        return self.address


class RefreshToken(models.Model):
    """A sign-in session's refresh token, stored as its SHA-256; rotated on use."""

    token_hash = models.CharField(max_length=64, unique=True)
    wallet = models.ForeignKey(WalletIdentity, on_delete=models.PROTECT, related_name="refresh_tokens")
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(token_hash__regex=r"^[0-9a-f]{64}$"),  # noqa: S106 - a regex, not a password
                name="credits_refreshtoken_hash_sha256",
            ),
        ]

    def __str__(self) -> str:
        return f"refresh {self.token_hash[:8]}… ({self.wallet_id})"


class CreditPurchase(models.Model):
    """A credit pack paid on chain; (chain, tx, log index) can credit only once, ever."""

    class Status(models.TextChoices):
        MINTED = "minted"
        REVALIDATED = "revalidated"
        REVERTED = "reverted"

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="credit_purchases")
    chain_id = models.BigIntegerField()
    tx_hash = models.CharField(max_length=66)
    log_index = models.IntegerField()
    block_number = models.BigIntegerField()
    block_hash = models.CharField(max_length=66)
    sender = models.CharField(max_length=42)
    pack_size = models.IntegerField()
    amount_micro_usdc = models.BigIntegerField()
    credited_micro_usd = models.BigIntegerField()
    journal_entry_id = models.BigIntegerField()
    idempotency_key = models.CharField(max_length=255)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.MINTED)
    created_at = models.DateTimeField()
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # The same on-chain transfer must never mint twice (a replayed proof).
            models.UniqueConstraint(
                fields=["chain_id", "tx_hash", "log_index"], name="credits_creditpurchase_transfer_uniq"
            ),
            models.CheckConstraint(condition=Q(amount_micro_usdc__gt=0), name="credits_creditpurchase_amount_positive"),
            models.CheckConstraint(
                condition=Q(tx_hash__regex=r"^0x[0-9a-f]{64}$"), name="credits_creditpurchase_tx_hash_hex"
            ),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="credits_purchase_recent_idx")]

    def __str__(self) -> str:
        return f"{self.tx_hash}#{self.log_index} ({self.status})"
