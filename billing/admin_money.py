"""Money as money in the admin: integer amounts shown as USD (6 decimals), USDC or CU.

Every amount column is a display of the integer column, sortable by it (``ordering``), and
each money list can filter on a range of it. The rows stay integers; only the rendering
changes (``billing.units.format_amount``: exact, no float).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from billing.units import format_amount

# Range buckets of a 6-decimal amount (USD, USDC), in micro-units: key, label, low, high (None: open).
RANGES: tuple[tuple[str, str, int | None, int | None], ...] = (
    ("zero", "0", 0, 0),
    ("lt-0.01", "under 0.01", 0, 10_000),
    ("0.01-1", "0.01 to 1", 10_000, 1_000_000),
    ("1-100", "1 to 100", 1_000_000, 100_000_000),
    ("100-10k", "100 to 10,000", 100_000_000, 10_000_000_000),
    ("10k+", "10,000 and more", 10_000_000_000, None),
    ("negative", "negative", None, 0),
)


def money(field: str, description: str, *, denomination: str = "micro_usd") -> Callable[[Any, Any], str]:
    """An admin column showing ``field`` (an integer amount) as money, sorted by the integer."""

    @admin.display(description=description, ordering=field)
    def show(model_admin: Any, obj: Any) -> str:
        return format_html('<span class="money">{}</span>', format_amount(getattr(obj, field), denomination))

    show.__name__ = f"{field}_money"
    return show


def amount_range_filter(field: str, title: str) -> type[admin.SimpleListFilter]:
    """A list filter on ranges of ``field`` (a 6-decimal amount: µUSD, µUSDC), compared as integers."""

    def bounds(label: str) -> Q | None:
        for key, _, low, high in RANGES:
            if key != label:
                continue
            if low is None:
                return Q(**{f"{field}__lt": 0})
            if high == low:
                return Q(**{field: 0})
            q = Q(**{f"{field}__gt" if low == 0 else f"{field}__gte": low})
            return q & Q(**{f"{field}__lt": high}) if high is not None else q
        return None

    class AmountRange(admin.SimpleListFilter):
        parameter_name = f"{field}_range"

        def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
            return [(key, label) for key, label, _, _ in RANGES]

        def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
            condition = bounds(self.value() or "")
            return queryset.filter(condition) if condition is not None else queryset

    AmountRange.title = title
    AmountRange.__name__ = f"{field.title().replace('_', '')}RangeFilter"
    return AmountRange
