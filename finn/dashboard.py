"""The finance dashboard: panels registered by the apps that own the numbers, rendered by finn.

Each app registers a panel builder in its ``AppConfig.ready`` (``panel_register``), so ``finn``
imports no app. Builders run bounded queries (each through an index; the README lists them);
the assembled panels are cached in Redis for ``DASHBOARD_CACHE_SECONDS`` (≤ 60 s) and built
afresh when Redis is down (the page never fails for want of its cache).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.contrib import admin
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET

from finn import clock
from finn.registry import breakers

logger = logging.getLogger(__name__)
CACHE_KEY = "dashboard:panels:v1"


@dataclass(frozen=True)
class Tile:
    label: str
    value: str
    alert: bool = False  # shown highlighted: someone should look
    href: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    tiles: list[Tile]
    charts: list[SafeString] = field(default_factory=list)


@dataclass(frozen=True)
class Dashboard:
    built_at: datetime
    panels: list[Panel]
    cached: bool


PanelBuilder = Callable[[datetime], list[Panel]]
_builders: dict[str, tuple[int, PanelBuilder]] = {}


def panel_register(name: str, *, order: int, build: PanelBuilder) -> None:
    _builders[name] = (order, build)


def _breaker_panel(now: datetime) -> list[Panel]:
    tiles = []
    for name, breaker in breakers().items():
        try:
            state = breaker.state()
        except Exception as exc:  # Redis down: the breakers' state is unknown, say so
            logger.warning("dashboard: breaker state unreadable", extra={"error": type(exc).__name__})
            state = "unknown"
        tiles.append(Tile(name, state, alert=state != "CLOSED"))
    return [Panel("Circuit breakers", tiles)]


panel_register("breakers", order=90, build=_breaker_panel)


def _build(now: datetime) -> list[Panel]:
    ordered = sorted(_builders.items(), key=lambda item: (item[1][0], item[0]))
    return [panel for _, (_, build) in ordered for panel in build(now)]


def dashboard(*, refresh: bool = False) -> Dashboard:
    """The panels, from the cache when younger than DASHBOARD_CACHE_SECONDS."""
    if not refresh:
        try:
            hit = cache.get(CACHE_KEY)
        except Exception as exc:  # Redis down: build it (bounded queries), do not fail the page
            logger.warning("dashboard: cache unreadable", extra={"error": type(exc).__name__})
            hit = None
        if hit is not None:
            built_at, panels = hit
            return Dashboard(built_at, panels, cached=True)
    now = clock.now()
    panels = _build(now)
    try:
        cache.set(CACHE_KEY, (now, panels), timeout=settings.DASHBOARD_CACHE_SECONDS)
    except Exception as exc:
        logger.warning("dashboard: cache unwritable", extra={"error": type(exc).__name__})
    return Dashboard(now, panels, cached=False)


@require_GET
def dashboard_view(request: HttpRequest) -> HttpResponse:
    """/admin/dashboard/ (staff only: wrapped in admin_view); ``?refresh=1`` skips the cache."""
    board = dashboard(refresh=request.GET.get("refresh") == "1")
    context = {
        **admin.site.each_context(request),
        "title": "Finance dashboard",
        "board": board,
        "cache_seconds": settings.DASHBOARD_CACHE_SECONDS,
    }
    return TemplateResponse(request, "admin/finn_dashboard.html", context)
