"""Admin base classes every app's admin uses: read-only ledger views, a capped paginator, and the
confirmation page (second factor, reason, audit context) of every money or policy action."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.functional import cached_property

from finn.errors import DomainError
from finn.second_factor import admin_audit_context, is_verified, money_action_refused

LIST_COUNT_CAP = 10_000


class CappedPaginator(Paginator):
    """Counts at most LIST_COUNT_CAP + 1 rows: a COUNT(*) over millions of rows is not a page view."""

    @cached_property
    def count(self) -> int:
        object_list: Any = self.object_list
        return int(object_list[: LIST_COUNT_CAP + 1].count())


M = TypeVar("M", bound=Model)


class ReadOnlyAdmin(admin.ModelAdmin[M]):
    """No add, change or delete: finance staff look; services write."""

    show_full_result_count = False
    paginator = CappedPaginator
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: M | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: M | None = None) -> bool:
        return False


@dataclass(frozen=True)
class ConfirmRow:
    """One selected object on a confirmation page: its primary key, cells shown, what will happen."""

    pk: Any
    cells: list[Any]
    what: str


def confirm_with_reason(
    model_admin: admin.ModelAdmin[Any],
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    action: str,
    permission: str,
    title: str,
    explanation: str,
    headers: list[str],
    row: Callable[[Any], ConfirmRow],
    submit_label: str,
    apply: Callable[[Any, str], object],
    noun: tuple[str, str] = ("item", "items"),
) -> HttpResponse | None:
    """An admin action that moves money or changes policy: second factor, reason, audit context.

    Refused (403) unless the user holds ``permission`` and verified a TOTP token in this login
    (checked here, on the server, at every step — not only by the action list). The first POST
    shows a confirmation page that asks for a reason; the confirmed POST applies ``apply`` per
    object, inside :func:`finn.second_factor.admin_audit_context` so each audit row names the
    actor, IP and second factor. A service's refusal (DomainError) leaves that object unchanged.
    """
    refused = money_action_refused(request, permission)
    if refused is not None:
        return refused
    reason = (request.POST.get("reason") or "").strip()
    error = ""
    if request.POST.get("confirmed") == "yes":
        if reason:
            done, left = 0, []
            with admin_audit_context(request):
                for obj in queryset.order_by("pk"):
                    try:
                        apply(obj, reason)
                        done += 1
                    except DomainError as exc:
                        left.append(f"{obj.pk}: {exc.message}")
            model_admin.message_user(request, f"{done} {noun[0] if done == 1 else noun[1]} done.")
            if left:
                model_admin.message_user(request, "Left unchanged: " + "; ".join(left), messages.ERROR)
            return None
        error = "A reason is required."
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "explanation": explanation,
        "headers": headers,
        "rows": [row(obj) for obj in queryset.order_by("pk")],
        "action": action,
        "reason": reason,
        "error": error,
        "submit_label": submit_label,
        "opts": model_admin.model._meta,
    }
    return TemplateResponse(request, "admin/confirm_action.html", context)


class SecondFactorEditsMixin:
    """Add, change and delete need the second factor in this login (viewing does not).

    Each save or delete also re-checks on the server and runs inside the admin audit context.
    """

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return bool(super().has_add_permission(request, *args) and is_verified(request))  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(super().has_change_permission(request, obj) and is_verified(request))  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(super().has_delete_permission(request, obj) and is_verified(request))  # type: ignore[misc]


def require_second_factor(request: HttpRequest, permission: str) -> None:
    """Raise PermissionDenied (403) unless ``permission`` is held and the login is verified."""
    if money_action_refused(request, permission) is not None:
        raise PermissionDenied("this change needs the permission and a verified second factor")
