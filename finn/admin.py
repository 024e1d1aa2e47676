"""Feature flags and the beta allowlist in the admin (changes go through finn.flags, which audits)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django_otp.plugins.otp_totp.models import TOTPDevice

from finn import clock
from finn.admin_base import ReadOnlyAdmin, SecondFactorEditsMixin, require_second_factor
from finn.flags import allowlist_add, allowlist_remove, feature_flag_set
from finn.models import AuditEvent, BetaAllowlistEntry, CspReport, FeatureFlag, WaitlistSignup
from finn.second_factor import admin_audit_context


@admin.register(FeatureFlag)
class FeatureFlagAdmin(SecondFactorEditsMixin, admin.ModelAdmin[FeatureFlag]):
    list_display = ["name", "enabled", "updated_at"]
    readonly_fields = ["updated_at"]

    def save_model(self, request: HttpRequest, obj: FeatureFlag, form: Any, change: bool) -> None:
        require_second_factor(request, "finn.change_featureflag")
        with admin_audit_context(request):
            feature_flag_set(name=obj.name, enabled=obj.enabled, actor=request.user.get_username(), now=clock.now())

    def has_delete_permission(self, request: HttpRequest, obj: FeatureFlag | None = None) -> bool:
        return False


@admin.register(BetaAllowlistEntry)
class BetaAllowlistAdmin(SecondFactorEditsMixin, admin.ModelAdmin[BetaAllowlistEntry]):
    list_display = ["address", "note", "created_at"]
    search_fields = ["=address"]
    readonly_fields = ["created_at"]

    def save_model(self, request: HttpRequest, obj: BetaAllowlistEntry, form: Any, change: bool) -> None:
        require_second_factor(request, "finn.add_betaallowlistentry")
        with admin_audit_context(request):
            allowlist_add(address=obj.address, note=obj.note, actor=request.user.get_username(), now=clock.now())

    def delete_model(self, request: HttpRequest, obj: BetaAllowlistEntry) -> None:
        require_second_factor(request, "finn.delete_betaallowlistentry")
        with admin_audit_context(request):
            allowlist_remove(address=obj.address, actor=request.user.get_username(), now=clock.now())

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for entry in queryset:
            self.delete_model(request, entry)


@admin.register(WaitlistSignup)
class WaitlistSignupAdmin(admin.ModelAdmin[WaitlistSignup]):
    list_display = ["email", "wallet", "created_at"]
    search_fields = ["=email", "=wallet"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WaitlistSignup | None = None) -> bool:
        return False


@admin.register(CspReport)
class CspReportAdmin(admin.ModelAdmin[CspReport]):
    list_display = ["created_at", "violated_directive", "blocked_uri", "document_uri", "disposition"]
    list_filter = ["violated_directive"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: CspReport | None = None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin[AuditEvent]):
    list_display = ["sequence", "event_type", "billing_entry_id", "account_id", "actor", "reason", "created_at"]
    list_filter = ["event_type"]
    search_fields = ["=billing_entry_id", "=correlation_id"]


# django-otp registers an editable TOTP device admin: a password alone could then enroll a second
# factor. Devices are enrolled by an operator (`manage.py finn_otp_enroll`); the admin only shows them.
admin.site.unregister(TOTPDevice)


@admin.register(TOTPDevice)
class TOTPDeviceAdmin(ReadOnlyAdmin[TOTPDevice]):
    list_display = ["user", "name", "confirmed", "last_used_at", "throttling_failure_count"]
    fields = ["user", "name", "confirmed", "created_at", "last_used_at", "throttling_failure_count"]
    raw_id_fields = ["user"]
