"""NFT agents: personalities (versioned) and onboarding sessions."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

VOICES = ("analytical", "creative", "witty", "sage")
STEPS = ("wallet_connect", "nft_detect", "nft_select", "personality_config", "credit_purchase", "agent_live")


class Personality(models.Model):
    """The current personality of one NFT (collection + token id); every change is a new version."""

    collection = models.CharField(max_length=42)
    token_id = models.CharField(max_length=78)
    name = models.CharField(max_length=100)
    voice = models.CharField(max_length=12)
    expertise_domains = models.JSONField(default=list)
    custom_instructions = models.TextField(blank=True, default="")
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "personalities"
        constraints = [
            # One personality per NFT: a second create is 409 personality_exists.
            models.UniqueConstraint(fields=["collection", "token_id"], name="nft_personality_nft_uniq"),
            models.CheckConstraint(
                condition=Q(collection__regex=r"^0x[0-9a-f]{40}$"), name="nft_personality_collection_hex"
            ),
            models.CheckConstraint(
                condition=Q(token_id__regex=r"^[0-9]{1,78}$"),  # noqa: S106 - a regex, not a password
                name="nft_personality_token_id_decimal",
            ),
            models.CheckConstraint(condition=Q(voice__in=VOICES), name="nft_personality_voice_known"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.collection}:{self.token_id})"


class PersonalityVersion(models.Model):
    """One version of a personality, kept forever (who wrote it, when)."""

    version_id = models.CharField(primary_key=True, max_length=40)
    personality = models.ForeignKey(Personality, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    voice = models.CharField(max_length=12)
    expertise_domains = models.JSONField(default=list)
    custom_instructions = models.TextField(blank=True, default="")
    author = models.CharField(max_length=150)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["personality", "version"], name="nft_personalityversion_number_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.personality_id} v{self.version}"


class OnboardingSession(models.Model):
    """A wallet's way from sign-in to a live agent; steps only move forward, one at a time."""

    id = models.CharField(primary_key=True, max_length=40)
    wallet = models.CharField(max_length=42)
    account_id = models.BigIntegerField()
    current_step = models.CharField(max_length=20)
    detected_nfts = models.JSONField(default=list)
    selected_collection = models.CharField(max_length=42, blank=True, default="")
    selected_token_id = models.CharField(max_length=78, blank=True, default="")
    personality_configured = models.BooleanField(default=False)
    credits_purchased = models.BooleanField(default=False)
    agent_address = models.CharField(max_length=42, blank=True, default="")
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(current_step__in=STEPS) | Q(current_step="done"), name="nft_onboardingsession_step_known"
            ),
            models.CheckConstraint(
                condition=Q(wallet__regex=r"^0x[0-9a-f]{40}$"), name="nft_onboardingsession_wallet_hex"
            ),
        ]
        indexes = [models.Index(fields=["expires_at"], name="nft_onboarding_expiry_idx")]

    def __str__(self) -> str:
        return f"{self.id} ({self.wallet} at {self.current_step})"

    @property
    def step_index(self) -> int:
        """Steps only move forward one at a time, so the position is derived from the current step."""
        return len(STEPS) if self.current_step == "done" else STEPS.index(self.current_step)

    @property
    def completed_steps(self) -> list[str]:
        return list(STEPS[: self.step_index])
