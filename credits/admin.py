"""Credits in the admin: API keys (created here, the secret shown once), model prices (a new
version through the audited service, never an edit), and read-only x402 quotes, payments,
credit notes and used nonces."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.admin_money import amount_range_filter, money
from credits.api_keys import api_key_create, api_key_rate_limit_set, api_key_revoke
from credits.models import ApiKey, CreditNote, ModelPriceVersion, UsedNonce, X402Payment, X402Quote
from credits.pricing import model_price_check, model_price_set
from finn import clock
from finn.admin_base import ReadOnlyAdmin, SecondFactorEditsMixin, require_second_factor
from finn.errors import InvalidRequest
from finn.second_factor import admin_audit_context


class ApiKeyCreateForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ["account", "name"]


@admin.register(ApiKey)
class ApiKeyAdmin(SecondFactorEditsMixin, admin.ModelAdmin[ApiKey]):
    list_display = ["prefix", "account", "name", "rate_limit_per_minute", "created_at", "revoked_at"]
    list_select_related = ["account"]
    raw_id_fields = ["account"]
    search_fields = ["prefix", "name"]
    actions = ["revoke_keys"]
    show_full_result_count = False

    def get_form(self, request: HttpRequest, obj: ApiKey | None = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        if obj is None:
            return []
        return ["account", "name", "prefix", "key_hash", "created_at", "revoked_at"]

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        require_second_factor(request, "credits.change_apikey" if change else "credits.add_apikey")
        with admin_audit_context(request):
            self._save(request, obj, form, change)

    def _save(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            # Only the rate limit can change (the key itself is immutable: revoke and create).
            if "rate_limit_per_minute" in form.changed_data:
                api_key_rate_limit_set(
                    api_key=obj,
                    per_minute=obj.rate_limit_per_minute,
                    actor=request.user.get_username(),
                    now=clock.now(),
                )
            return
        issued = api_key_create(account=obj.account, name=obj.name, now=clock.now(), actor=request.user.get_username())
        obj.pk = issued.api_key.pk
        obj.prefix = issued.api_key.prefix
        obj.key_hash = issued.api_key.key_hash
        obj.created_at = issued.api_key.created_at
        self.message_user(
            request,
            f"New API key for account {obj.account_id} (copy it now; it is not shown again): {issued.secret}",
            messages.WARNING,
        )

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        require_second_factor(request, "credits.change_apikey")
        now, actor = clock.now(), request.user.get_username()
        with admin_audit_context(request):
            for api_key in queryset:
                api_key_revoke(api_key=api_key, now=now, actor=actor)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


@admin.register(CreditNote)
class CreditNoteAdmin(ReadOnlyAdmin[CreditNote]):
    amount_money = money("amount", "amount", denomination="micro_usdc")
    remaining_money = money("remaining", "remaining", denomination="micro_usdc")
    list_display = [
        "id", "wallet", "amount_money", "remaining_money", "reason", "quote", "created_at", "expires_at", "expired_at",
    ]  # fmt: skip
    list_filter = ["reason", amount_range_filter("remaining", "remaining (USDC)")]
    search_fields = ["=wallet", "=id"]
    raw_id_fields = ["quote"]


@admin.register(X402Payment)
class X402PaymentAdmin(ReadOnlyAdmin[X402Payment]):
    amount_money = money("amount", "amount", denomination="micro_usdc")
    list_display = ["id", "payer", "amount_money", "network", "status", "tx_hash", "attempts", "created_at"]
    list_filter = ["status", "network", amount_range_filter("amount", "amount (USDC)")]
    search_fields = ["=id", "=payer", "=tx_hash"]
    raw_id_fields = ["quote"]


@admin.register(X402Quote)
class X402QuoteAdmin(ReadOnlyAdmin[X402Quote]):
    amount_money = money("amount", "amount", denomination="micro_usdc")
    credit_money = money("credit_applied", "credit applied", denomination="micro_usdc")
    list_display = ["id", "purpose", "amount_money", "credit_money", "model", "status", "created_at", "expires_at"]
    list_filter = ["purpose", "status"]
    search_fields = ["=id"]


@admin.register(UsedNonce)
class UsedNonceAdmin(ReadOnlyAdmin[UsedNonce]):
    list_display = ["key", "kind", "created_at"]
    list_filter = ["kind"]
    search_fields = ["=key"]


class ModelPriceForm(forms.ModelForm):
    effective_from = forms.DateTimeField(required=False, help_text="empty: now. Never in the past.")
    reason = forms.CharField(widget=forms.Textarea, help_text="why the price changes (audited)")

    def clean(self) -> dict[str, Any]:
        """The service's own checks, shown on the form (the save runs them again)."""
        data = super().clean() or {}
        if self.errors:
            return data
        try:
            model_price_check(
                model=data.get("model"), input_per_million=data.get("input_per_million"),
                output_per_million=data.get("output_per_million"), effective_from=data.get("effective_from"),
                now=clock.now(),
            )  # fmt: skip
        except InvalidRequest as refused:
            field = refused.extra.get("field")
            self.add_error(field if field in self.fields else None, refused.message)
        return data

    def validate_unique(self) -> None:
        """(model, effective_from) is checked by the service: an empty effective_from means now."""

    class Meta:
        model = ModelPriceVersion
        fields = ["model", "input_per_million", "output_per_million", "effective_from", "reason"]
        help_texts = {
            "input_per_million": "µUSD per million input tokens (3,000,000 = 3 µUSD per token)",
            "output_per_million": "µUSD per million output tokens",
        }


@admin.register(ModelPriceVersion)
class ModelPriceVersionAdmin(SecondFactorEditsMixin, admin.ModelAdmin[ModelPriceVersion]):
    """A price change is a new version (reserved entries keep theirs); versions are never edited."""

    list_display = [
        "model", "id", "input_per_million", "output_per_million", "effective_from", "created_by", "created_at",
    ]  # fmt: skip
    list_filter = ["model"]
    search_fields = ["=model"]
    ordering = ["model", "-effective_from"]
    form = ModelPriceForm

    def get_readonly_fields(self, request: HttpRequest, obj: ModelPriceVersion | None = None) -> list[str]:
        if obj is None:
            return []
        return [f.name for f in ModelPriceVersion._meta.fields]

    def has_change_permission(self, request: HttpRequest, obj: ModelPriceVersion | None = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: ModelPriceVersion | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ModelPriceVersion, form: Any, change: bool) -> None:
        require_second_factor(request, "credits.add_modelpriceversion")
        data = form.cleaned_data
        with admin_audit_context(request):
            price = model_price_set(
                model=data["model"],
                input_per_million=data["input_per_million"],
                output_per_million=data["output_per_million"],
                effective_from=data.get("effective_from"),
                actor=request.user.get_username(),
                reason=data["reason"],
                now=clock.now(),
            )
        obj.pk = price.version
        assert price.effective_from is not None
        obj.effective_from = price.effective_from
