"""API keys (hashed at rest; the secret is shown once at creation)."""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q

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
    # Requests per minute for this key; empty = the api_key tier's default (a gateway's
    # service key bills every inference call twice, so its default is high).
    rate_limit_per_minute = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(
                condition=Q(key_hash__regex=r"^[0-9a-f]{64}$"), name="credits_apikey_hash_is_sha256"
            ),
            # 0 would silently block a key: revoke it instead.
            models.CheckConstraint(
                condition=Q(rate_limit_per_minute__isnull=True) | Q(rate_limit_per_minute__gte=1),
                name="credits_apikey_rate_limit_positive",
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
    # The NFT's collection and its ERC-6551 token-bound account (computed by nft.erc6551).
    token_contract = models.CharField(max_length=42, blank=True, default="")
    account_address = models.CharField(max_length=42, blank=True, default="")
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            # One identity can back only one wallet (a second binding is an impersonation).
            models.UniqueConstraint(
                fields=["identity_anchor"],
                condition=Q(identity_anchor__isnull=False),
                name="credits_agentwallet_identity_anchor_uniq",
            ),
            # One agent per token-bound account.
            models.UniqueConstraint(
                fields=["account_address"],
                condition=~Q(account_address=""),
                name="credits_agentwallet_account_address_uniq",
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


class AgentWalletAnchor(models.Model):
    """Every identity anchor a wallet has had: rotation ends one binding and starts another."""

    wallet = models.ForeignKey(AgentWallet, on_delete=models.PROTECT, related_name="anchor_history")
    identity_anchor = models.CharField(max_length=66)
    bound_at = models.DateTimeField()
    unbound_at = models.DateTimeField(null=True, blank=True)
    actor = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        constraints = [
            # An anchor backs at most one wallet at a time (a second binding is an impersonation).
            models.UniqueConstraint(
                fields=["identity_anchor"],
                condition=Q(unbound_at__isnull=True),
                name="credits_agentwalletanchor_live_uniq",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.identity_anchor} → wallet {self.wallet_id}"


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


class X402Quote(models.Model):
    """A price offered in a 402: what an x402 payment must match exactly.

    ``amount`` is what the wallet signs (µUSDC); ``gross_amount`` is the full
    price, of which ``credit_applied`` is covered by the payer's credit notes
    (only when the request named its payer).
    """

    class Purpose(models.TextChoices):
        INVOKE = "invoke"
        CREDIT_PACK = "credit_pack"

    class Status(models.TextChoices):
        OPEN = "open"
        USED = "used"

    id = models.CharField(primary_key=True, max_length=40)
    purpose = models.CharField(max_length=12, choices=Purpose.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    network = models.CharField(max_length=32)
    asset = models.CharField(max_length=42)
    pay_to = models.CharField(max_length=42)
    amount = models.BigIntegerField()
    gross_amount = models.BigIntegerField()
    credit_applied = models.BigIntegerField(default=0)
    payer = models.CharField(max_length=42, blank=True, default="")
    max_timeout_seconds = models.IntegerField()
    resource_url = models.CharField(max_length=512)
    model = models.CharField(max_length=64, blank=True, default="")
    max_tokens = models.IntegerField(null=True, blank=True)
    request_sha256 = models.CharField(max_length=64)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, null=True, blank=True, related_name="x402_quotes")
    pack_size = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        verbose_name = "x402 quote"
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="credits_x402quote_amount_positive"),
            models.CheckConstraint(
                condition=Q(credit_applied__gte=0) & Q(gross_amount=models.F("amount") + models.F("credit_applied")),
                name="credits_x402quote_gross_is_amount_plus_credit",
            ),
            models.CheckConstraint(
                condition=Q(purpose="invoke", pack_size__isnull=True)
                | Q(purpose="credit_pack", pack_size__isnull=False, account__isnull=False),
                name="credits_x402quote_purpose_fields",
            ),
        ]
        indexes = [models.Index(fields=["expires_at"], name="credits_x402quote_expiry_idx")]

    def __str__(self) -> str:
        return f"{self.id} {self.amount} µUSDC ({self.status})"


class X402Payment(models.Model):
    """One EIP-3009 authorization presented for a quote, and what became of it.

    Unique on (network, asset, payer, nonce): the same authorization can be
    recorded, hence settled, only once; a retry finds this row and gets its
    first answer.
    """

    class Status(models.TextChoices):
        PENDING = "pending"  # being settled (exclusive)
        # /settle was sent and its outcome is unknown (timeout, 5xx, garbage, "settlement_pending"):
        # funds may have moved. Never answered with a fresh 402; resolved from the chain or by
        # asking the facilitator again (x402_settlements_resolve) until validBefore has passed.
        SETTLEMENT_PENDING = "settlement_pending"
        SETTLED = "settled"  # funds moved; journal written
        FAILED = "failed"  # settlement refused or unreachable; nothing moved; may be retried
        COMPLETED = "completed"  # the paid work is done and its answer stored

    id = models.CharField(primary_key=True, max_length=40)
    quote = models.OneToOneField(X402Quote, on_delete=models.PROTECT, related_name="payment")
    x402_version = models.SmallIntegerField()
    network = models.CharField(max_length=32)
    asset = models.CharField(max_length=42)
    payer = models.CharField(max_length=42)
    pay_to = models.CharField(max_length=42)
    amount = models.BigIntegerField()
    nonce = models.CharField(max_length=66)
    valid_after = models.BigIntegerField()
    valid_before = models.BigIntegerField()
    signature = models.CharField(max_length=300)
    status = models.CharField(max_length=20, choices=Status.choices)
    # The payment payload as presented (to ask the facilitator again while the outcome is unknown).
    payload = models.JSONField(null=True, blank=True)
    # "exact" (EIP-3009, settled for ``amount`` before the work) or "upto" (Permit2: ``amount`` is the
    # most it may move; settled after the work for ``settle_amount``, what the call cost).
    scheme = models.CharField(max_length=8, default="exact")
    settle_amount = models.BigIntegerField(null=True, blank=True)
    # Settled by the resolver while nobody waited: the next presentation of the same
    # authorization is served (the paid work runs then).
    awaiting_presentation = models.BooleanField(default=False)
    attempts = models.IntegerField(default=0)
    tx_hash = models.CharField(max_length=66, blank=True, default="")
    error = models.CharField(max_length=300, blank=True, default="")
    journal_entry_id = models.BigIntegerField(null=True, blank=True)
    response_status = models.SmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name = "x402 payment"
        indexes = [
            models.Index(
                fields=["updated_at"],
                condition=Q(status="settlement_pending") | Q(awaiting_presentation=True),
                name="credits_x402_unresolved_idx",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["network", "asset", "payer", "nonce"], name="credits_x402payment_authorization_uniq"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="credits_x402payment_amount_positive"),
            # An upto settlement moves at most what the payer permitted.
            models.CheckConstraint(
                condition=Q(scheme__in=["exact", "upto"])
                & (Q(settle_amount__isnull=True) | Q(settle_amount__gt=0, settle_amount__lte=F("amount"))),
                name="credits_x402payment_upto_within_permit",
            ),
            models.CheckConstraint(
                condition=Q(nonce__regex=r"^0x[0-9a-f]{64}$"), name="credits_x402payment_nonce_bytes32"
            ),
            models.CheckConstraint(
                condition=Q(payer__regex=r"^0x[0-9a-f]{40}$"), name="credits_x402payment_payer_lower_hex"
            ),
            models.CheckConstraint(
                condition=~Q(status__in=["settled", "completed"])
                | (Q(journal_entry_id__isnull=False) & ~Q(tx_hash="")),
                name="credits_x402payment_settled_has_journal",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.amount} µUSDC from {self.payer} ({self.status})"


class CreditNote(models.Model):
    """What a wallet overpaid (quoted - actual, or all of it when the paid work failed).

    The wallet's credit balance is the sum of ``remaining`` over notes not
    yet expired; it reduces the wallet's next quotes and is capped at
    1,000,000 USDC. Postgres is the truth; Redis only caches the balance.
    """

    id = models.CharField(primary_key=True, max_length=40)
    wallet = models.CharField(max_length=42)
    amount = models.BigIntegerField()
    remaining = models.BigIntegerField()
    quote = models.ForeignKey(X402Quote, on_delete=models.PROTECT, related_name="credit_notes")
    quoted_amount = models.BigIntegerField()
    actual_amount = models.BigIntegerField()
    reason = models.CharField(max_length=24)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    expired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="credits_creditnote_amount_positive"),
            models.CheckConstraint(
                condition=Q(remaining__gte=0) & Q(remaining__lte=models.F("amount")),
                name="credits_creditnote_remaining_in_range",
            ),
            models.CheckConstraint(
                condition=Q(wallet__regex=r"^0x[0-9a-f]{40}$"), name="credits_creditnote_wallet_lower_hex"
            ),
        ]
        indexes = [
            models.Index(fields=["wallet", "expires_at"], name="credits_creditnote_wallet_idx"),
            models.Index(fields=["expires_at"], name="credits_creditnote_expiry_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.remaining}/{self.amount} µUSDC for {self.wallet}"


class ModelPriceVersion(models.Model):
    """One model's price from ``effective_from`` on (µUSD per million tokens; exact integers).

    Append-only (a trigger refuses UPDATE and DELETE): a new price is a new row, so an entry
    reserved at version N is charged at version N however prices move while it is in flight.
    """

    model = models.CharField(max_length=100)
    input_per_million = models.BigIntegerField()
    output_per_million = models.BigIntegerField()
    effective_from = models.DateTimeField()
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=150)
    reason = models.TextField(blank=True, default="")

    class Meta:
        verbose_name = "model price"
        constraints = [
            models.CheckConstraint(
                condition=Q(input_per_million__gte=0, output_per_million__gte=0),
                name="credits_modelpriceversion_prices_non_negative",
            ),
            models.CheckConstraint(condition=~Q(model=""), name="credits_modelpriceversion_model_named"),
            # Also the index of "the version in effect at t": (model, effective_from DESC).
            models.UniqueConstraint(
                fields=["model", "effective_from"], name="credits_modelpriceversion_model_from_uniq"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} v{self.pk}"
