"""The finn client: one billed inference call is reserve → stream → commit (or release).

Retries are safe by construction: a reserve carries one Idempotency-Key for all its tries
(finn applies it once and replays the answer); a commit or release that may have landed is
checked against the entry's state instead of being applied twice.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import httpx

from finn_client.errors import (
    ExceedsHold,
    FinnError,
    InvalidRequest,
    InvalidTransition,
    OutcomeUnknown,
    RateLimited,
    RequestInProgress,
    Unavailable,
    error_from,
)

logger = logging.getLogger("finn_client")
T = TypeVar("T")
RETRIED = (RequestInProgress, Unavailable, RateLimited)


@dataclass(frozen=True)
class Balance:
    account_id: int
    available: int  # µUSD
    held: int


@dataclass(frozen=True)
class Entry:
    id: str
    state: str
    estimated_cost: int  # µUSD
    actual_cost: int | None
    correlation_id: str
    expires_at: str
    release_reason: str
    raw: dict[str, Any]
    model: str | None = None  # metered entries: the model and price version the hold was priced at
    price_version: int | None = None
    usage: dict[str, int] | None = None

    @classmethod
    def of(cls, data: dict[str, Any]) -> Entry:
        return cls(
            id=data["id"], state=data["state"], estimated_cost=int(data["estimated_cost"]),
            actual_cost=None if data.get("actual_cost") is None else int(data["actual_cost"]),
            correlation_id=data.get("correlation_id", ""), expires_at=data.get("expires_at", ""),
            release_reason=data.get("release_reason", ""), raw=data, model=data.get("model"),
            price_version=data.get("price_version"), usage=data.get("usage"),
        )  # fmt: skip


@dataclass(frozen=True)
class Result:
    entry: Entry
    balance: Balance
    replayed: bool


class Finn:
    """``Finn(base_url, api_key)``; use as a context manager or call ``close()``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        verify: bool | str = True,
    ) -> None:
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/api/v1/",
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "finn-client/0.1"},
            timeout=timeout,
            transport=transport,
            verify=verify,
        )

    def __enter__(self) -> Finn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- transport ------------------------------------------------------------------------

    def _once(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._http.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:200], "code": None}
        if response.is_success:
            return {**body, "_replayed": response.headers.get("Idempotent-Replayed") == "true"}
        error = error_from(response.status_code, body)
        error.retry_after = _retry_after(response)  # type: ignore[attr-defined]
        raise error

    def _with_retries(self, call: Callable[[], T], *, what: str) -> T:
        """Retry transport failures, 409 request_in_progress, 429 and 503 with capped exponential backoff."""
        for attempt in range(self.retries + 1):
            try:
                return call()
            except (httpx.TransportError, *RETRIED) as exc:
                if attempt == self.retries:
                    if isinstance(exc, httpx.TransportError):
                        raise OutcomeUnknown(f"{what}: no answer after {attempt + 1} tries ({exc!r})") from exc
                    raise
                wait = getattr(exc, "retry_after", None) or min(self.max_backoff, self.backoff * 2**attempt)
                wait *= 0.5 + random.random() / 2  # jitter: many gateways must not retry in step  # noqa: S311
                logger.info("finn: retrying", extra={"what": what, "attempt": attempt + 1, "wait": round(wait, 3)})
                time.sleep(wait)
        raise AssertionError("unreachable")

    # --- the API ------------------------------------------------------------------------------

    def reserve(
        self,
        estimated_cost: int,
        *,
        correlation_id: str | None = None,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> Result:
        """Hold ``estimated_cost`` µUSD. One Idempotency-Key for every try: at most one hold."""
        _check_amount(estimated_cost, "estimated_cost", minimum=1)
        return self._reserve({"estimated_cost": estimated_cost}, correlation_id, ttl_seconds, idempotency_key)

    def reserve_metered(
        self,
        model: str,
        *,
        input_tokens: int,
        max_output_tokens: int,
        correlation_id: str | None = None,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> Result:
        """Hold what the call can cost at ``model``'s price now; commit_usage then charges at that price."""
        _check_amount(input_tokens, "input_tokens", minimum=0)
        _check_amount(max_output_tokens, "max_output_tokens", minimum=1)
        body = {"model": model, "input_tokens": input_tokens, "max_output_tokens": max_output_tokens}
        return self._reserve(body, correlation_id, ttl_seconds, idempotency_key)

    def _reserve(
        self, body: dict[str, Any], correlation_id: str | None, ttl_seconds: int | None, idempotency_key: str | None
    ) -> Result:
        key = idempotency_key or f"finn-client-{uuid.uuid4()}"
        if correlation_id:
            body["correlation_id"] = correlation_id
        if ttl_seconds:
            body["ttl_seconds"] = ttl_seconds
        data = self._with_retries(
            lambda: self._once("POST", "billing/entries", json=body, headers={"Idempotency-Key": key}), what="reserve"
        )
        return _result(data)

    def commit(self, entry_id: str, actual_cost: int) -> Result:
        """Charge ``actual_cost``; the rest of the hold returns. A retry that finds it committed succeeds."""
        _check_amount(actual_cost, "actual_cost", minimum=0)
        return self._settle(entry_id, "commit", {"actual_cost": actual_cost}, done="COMMITTED", actual=actual_cost)

    def commit_usage(self, entry_id: str, *, input_tokens: int, output_tokens: int) -> Result:
        """Charge a metered entry's usage at the price version it was reserved at (finn does the pricing)."""
        _check_amount(input_tokens, "input_tokens", minimum=0)
        _check_amount(output_tokens, "output_tokens", minimum=0)
        usage = {"input_tokens": input_tokens, "output_tokens": output_tokens}
        return self._settle(entry_id, "commit", {"usage": usage}, done="COMMITTED", actual=None, usage=usage)

    def extend(self, entry_id: str, additional_cost: int, *, ttl_seconds: int | None = None) -> Result:
        """Grow a held reserve (a stream running past its estimate). One Idempotency-Key for every try."""
        _check_amount(additional_cost, "additional_cost", minimum=1)
        key = f"finn-client-{uuid.uuid4()}"
        body: dict[str, Any] = {"additional_cost": additional_cost}
        if ttl_seconds:
            body["ttl_seconds"] = ttl_seconds
        data = self._with_retries(
            lambda: self._once(
                "POST", f"billing/entries/{entry_id}/extend", json=body, headers={"Idempotency-Key": key}
            ),
            what="extend",
        )
        return _result(data)

    def release(self, entry_id: str, reason: str = "pre_stream_failure") -> Result:
        """Give the whole hold back (``pre_stream_failure``, ``user_cancel`` or ``reserve_expired``)."""
        return self._settle(entry_id, "release", {"reason": reason}, done="RELEASED", actual=None)

    def _settle(
        self,
        entry_id: str,
        action: str,
        body: dict[str, Any],
        *,
        done: str,
        actual: int | None,
        usage: dict[str, int] | None = None,
    ) -> Result:
        tried = False

        def call() -> dict[str, Any]:
            nonlocal tried
            try:
                return self._once("POST", f"billing/entries/{entry_id}/{action}", json=body)
            except InvalidTransition:
                if not tried:
                    raise  # the first try was refused: not ours
                # An earlier try may have landed before its answer was lost: is the entry where we put it?
                data = self._once("GET", f"billing/entries/{entry_id}")
                entry = Entry.of(data["entry"])
                later = done == "COMMITTED" and entry.state.startswith("FINALIZE")
                same = (actual is None or entry.actual_cost == actual) and (usage is None or entry.usage == usage)
                if (entry.state == done or later) and same:
                    return {**data, "_replayed": True}
                raise
            finally:
                tried = True

        return _result(self._with_retries(call, what=action))

    def entry(self, entry_id: str) -> Result:
        return _result(self._with_retries(lambda: self._once("GET", f"billing/entries/{entry_id}"), what="entry"))

    def balance(self) -> Balance:
        data = self._with_retries(lambda: self._once("GET", "accounts/me/balance"), what="balance")
        return _balance(data["balance"])

    def hold(
        self,
        *,
        estimated_cost: int,
        correlation_id: str | None = None,
        ttl_seconds: int | None = None,
        overcapture: bool = False,
    ) -> Hold:
        """``with finn.hold(estimated_cost=...) as hold: ... hold.commit(actual)``; see Hold."""
        return Hold(self, estimated_cost, correlation_id, ttl_seconds, overcapture)


class Hold:
    """A reserve for the length of a ``with`` block.

    On entry the estimate is held. In the block, ``commit(actual)`` charges (at most the
    estimate unless ``overcapture=True``; the account must allow overcapture too). If the block
    raises before a commit, the hold is released with ``pre_stream_failure`` and the exception
    goes on; if it ends without a commit, the hold is released with ``user_cancel``.
    """

    def __init__(
        self, finn: Finn, estimated_cost: int, correlation_id: str | None, ttl_seconds: int | None, overcapture: bool
    ) -> None:
        self._finn, self.estimated_cost, self.overcapture = finn, estimated_cost, overcapture
        self._correlation_id, self._ttl = correlation_id, ttl_seconds
        self.entry: Entry | None = None
        self.result: Result | None = None

    def __enter__(self) -> Hold:
        reserved = self._finn.reserve(self.estimated_cost, correlation_id=self._correlation_id, ttl_seconds=self._ttl)
        self.entry = reserved.entry
        return self

    @property
    def settled(self) -> bool:
        return self.result is not None

    def commit(self, actual_cost: int) -> Result:
        if self.entry is None:
            raise RuntimeError("commit() belongs inside the with block")
        if self.settled:
            raise RuntimeError(f"hold {self.entry.id} is already settled")
        if actual_cost > self.estimated_cost and not self.overcapture:
            raise ExceedsHold(
                f"actual cost {actual_cost} exceeds the estimate {self.estimated_cost} (overcapture=False)"
            )
        self.result = self._finn.commit(self.entry.id, actual_cost)
        return self.result

    def extend(self, additional_cost: int, *, ttl_seconds: int | None = None) -> Result:
        """Grow the hold; a refusal (InsufficientFunds, DailyCapExceeded, …) is the signal to stop streaming."""
        if self.entry is None or self.settled:
            raise RuntimeError("extend() belongs inside the with block, before commit")
        result = self._finn.extend(self.entry.id, additional_cost, ttl_seconds=ttl_seconds)
        self.entry, self.estimated_cost = result.entry, result.entry.estimated_cost
        return result

    def release(self, reason: str = "user_cancel") -> Result:
        if self.entry is None:
            raise RuntimeError("release() belongs inside the with block")
        self.result = self._finn.release(self.entry.id, reason)
        return self.result

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.entry is None or self.settled:
            return
        reason = "pre_stream_failure" if kind is not None else "user_cancel"
        try:
            self.release(reason)
        except FinnError as exc:  # the hold expires by itself; the block's own exception matters more
            logger.warning("finn: could not release hold", extra={"entry_id": self.entry.id, "error": exc.code})
            if kind is None:
                raise


def _check_amount(value: int, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRequest(f"{name} must be an integer of µUSD ≥ {minimum}, got {value!r}")


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    try:
        return min(float(raw), 60.0) if raw else None
    except ValueError:
        return None


def _balance(data: dict[str, Any]) -> Balance:
    return Balance(account_id=int(data["account_id"]), available=int(data["available"]), held=int(data["held"]))


def _result(data: dict[str, Any]) -> Result:
    return Result(entry=Entry.of(data["entry"]), balance=_balance(data["balance"]), replayed=bool(data["_replayed"]))
