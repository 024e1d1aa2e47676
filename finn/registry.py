"""Named breakers and checks, registered by the apps that own them.

Shared tooling (``gate_check``, health pages) asks for breakers and checks by name here
instead of importing domain modules, so ``finn`` stays below every app. Each app
registers its own in its ``AppConfig.ready``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from finn.breaker import CircuitBreaker

BreakerFactory = Callable[[], CircuitBreaker]


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    summary: str


_breakers: dict[str, BreakerFactory] = {}
_checks: dict[str, Callable[[], CheckResult]] = {}


def breaker_register(name: str) -> Callable[[BreakerFactory], BreakerFactory]:
    """Decorator: ``factory`` builds the breaker called ``name``."""

    def register(factory: BreakerFactory) -> BreakerFactory:
        _breakers[name] = factory
        return factory

    return register


def breakers() -> dict[str, CircuitBreaker]:
    """Every registered breaker, by name (cheap: breakers keep their state in Redis)."""
    return {name: factory() for name, factory in sorted(_breakers.items())}


def check_register(name: str, check: Callable[[], CheckResult]) -> None:
    _checks[name] = check


def check_run(name: str) -> CheckResult:
    if name not in _checks:
        return CheckResult(ok=False, summary=f"no check named {name!r} is registered")
    return _checks[name]()
