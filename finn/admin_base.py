"""Admin base classes every app's admin uses: read-only ledger views and a capped paginator."""

from __future__ import annotations

from typing import Any, TypeVar

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Model
from django.http import HttpRequest
from django.utils.functional import cached_property

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
