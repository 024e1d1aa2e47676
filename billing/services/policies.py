"""Agent budget policies beside the daily cap: per-request maximum, spend and requests per rolling
hour, a model allowlist. Set here (audited); checked by ``billing_spend_policy_check`` inside the
reserve's one round trip and extend's transaction, after the account row is locked (billing/0022).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction

from billing.errors import AccountNotFound, BudgetPolicyExceeded, BudgetPolicyRateLimited
from billing.models import Account, SpendPolicy
from billing.services.ledger import MAX_AMOUNT
from finn.audit import audit_append
from finn.errors import InvalidRequest

MAX_MODELS = 100
RULES = {
    "per_request_max": "this request's hold would pass the agent's per-request maximum",
    "model_allowlist": "the agent's policy does not allow this model (a raw estimate names none)",
    "hourly_requests": "the agent's requests per rolling hour are used up",
    "hourly_spend": "the agent's spend per rolling hour would pass its limit",
}


@dataclass(frozen=True)
class Policy:
    account_id: int
    per_request_max: int | None
    hourly_spend_limit: int | None
    hourly_request_limit: int | None
    allowed_models: list[str] | None

    @classmethod
    def of(cls, row: SpendPolicy | None, account_id: int) -> Policy:
        if row is None:
            return cls(account_id, None, None, None, None)
        return cls(account_id, row.per_request_max, row.hourly_spend_limit, row.hourly_request_limit,
                   None if row.allowed_models is None else list(row.allowed_models))  # fmt: skip


def _limit(name: str, value: Any, maximum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidRequest(f"{name} must be null or an integer from 1 to {maximum}", reason="invalid_policy")
    return value


def _models(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_MODELS:
        raise InvalidRequest(f"allowed_models must be null or a list of at most {MAX_MODELS} names")
    if not all(isinstance(m, str) and 1 <= len(m) <= 100 for m in value):
        raise InvalidRequest("allowed_models must hold model names (1-100 characters)", reason="invalid_policy")
    return sorted(set(value))


def spend_policy_get(*, account_id: int) -> Policy:
    return Policy.of(SpendPolicy.objects.filter(account_id=account_id).first(), account_id)


@transaction.atomic  # not durable: the admin's change form runs it inside its own transaction
def spend_policy_set(
    *,
    account_id: int,
    per_request_max: int | None,
    hourly_spend_limit: int | None,
    hourly_request_limit: int | None,
    allowed_models: list[str] | None,
    actor: str,
    now: datetime,
) -> Policy:
    """Replace an agent account's policy (every rule null: no policy). Audited; applies to the next reserve."""
    after = Policy(
        account_id=account_id,
        per_request_max=_limit("per_request_max", per_request_max, MAX_AMOUNT),
        hourly_spend_limit=_limit("hourly_spend_limit", hourly_spend_limit, MAX_AMOUNT),
        hourly_request_limit=_limit("hourly_request_limit", hourly_request_limit, 2**31 - 1),
        allowed_models=_models(allowed_models),
    )
    fields = {name: getattr(after, name) for name in ("per_request_max", "hourly_spend_limit",
                                                       "hourly_request_limit", "allowed_models")}  # fmt: skip
    account = Account.objects.select_for_update().filter(pk=account_id, kind="agent").first()
    if account is None:
        raise AccountNotFound(f"agent {account_id} not found")
    before = spend_policy_get(account_id=account_id)
    if all(value is None for value in fields.values()):
        SpendPolicy.objects.filter(account_id=account_id).delete()
    else:
        SpendPolicy.objects.update_or_create(
            account_id=account_id, defaults={**fields, "updated_at": now, "updated_by": actor}
        )
    audit_append(
        event_type="billing_spend_policy_set",
        payload={"account_id": str(account_id), "from": _audit(before), "to": _audit(after)},
        correlation_id=f"spend_policy:{account_id}",
        now=now,
        account_id=account_id,
        actor=actor,
    )
    return after


def _audit(policy: Policy) -> dict[str, Any]:
    money = {name: None if value is None else str(value)
             for name, value in (("per_request_max", policy.per_request_max),
                                 ("hourly_spend_limit", policy.hourly_spend_limit))}  # fmt: skip
    return {**money, "hourly_request_limit": policy.hourly_request_limit, "allowed_models": policy.allowed_models}


def policy_refusal(detail: str, *, now: datetime) -> BudgetPolicyExceeded:
    """The typed refusal for ``billing_spend_policy_check``'s DETAIL (cold path)."""
    data = json.loads(detail)
    rule = str(data["rule"])
    extra: dict[str, Any] = {"rule": rule, "limit": data.get("limit"), "used": data.get("used")}
    if data.get("model") is not None:
        extra["model"] = data["model"]
    resets_at = data.get("resets_at")
    retry_after = None
    if resets_at:
        resets = datetime.fromisoformat(resets_at)
        retry_after = max(1, math.ceil((resets - now).total_seconds()))
        extra["resets_at"] = resets.isoformat()
        extra["retry_after"] = retry_after
    else:
        extra["resets_at"] = None
    kind = BudgetPolicyRateLimited if rule == "hourly_requests" else BudgetPolicyExceeded
    error = kind(RULES.get(rule, "the agent's budget policy refuses this"), **extra)
    if retry_after is not None:
        error.headers["Retry-After"] = str(retry_after)
    return error
