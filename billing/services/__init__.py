"""All writes to the billing ledger, one module per noun (re-exported here).

| module | owns |
|---|---|
| ``ledger`` | system accounts, amounts, ``_post`` (journal + postings), balance-row updates, ``_require_transaction`` |
| ``entry_state`` | compare-and-set transitions of entries, their audit rows, finalize exposure |
| ``entries`` | reserve, commit, release, void |
| ``entry_finalize`` | finalize states (pending, ack, fail, reschedule, escalate) and the one finalize enqueue |
| ``holds`` | hold expiry (set-based, advisory-locked) |
| ``daily_caps`` | agent wallets' daily caps and the low-balance event |
| ``policies`` | agent budget policies (per request, per rolling hour, model allowlist) |
| ``accounts`` | account creation, credit minted from the treasury, reserves frozen |
| ``usdc`` | credit minted from USDC, x402 revenue and credit-note journals |
| ``subscriptions`` | subscriptions changed by provider webhooks |
| ``purchases`` | boosts and badges (from webhooks, or paid from prepaid credit) |

Three transaction styles, each named in its docstring: public services are
``@transaction.atomic(durable=True)`` (the outermost business transaction); helpers whose
name starts with ``_`` open none; ``*_in_transaction``, ``subscription_*``, ``*_record``,
``credit_mint_from_usdc`` and ``x402_*_post`` must run inside the caller's transaction and
refuse to run outside one.
"""

from __future__ import annotations

from billing.errors import AccountNotFound
from billing.results import EntryResult
from billing.services.accounts import (
    account_create,
    account_credit_mint,
    account_credit_mint_in_transaction,
    account_reserves_freeze,
)
from billing.services.daily_caps import utc_day
from billing.services.entries import entry_commit, entry_release, entry_reserve, entry_void
from billing.services.entry_finalize import (
    FINALIZE_TASK,
    entry_finalize_ack,
    entry_finalize_enqueue,
    entry_finalize_escalate,
    entry_finalize_fail,
    entry_finalize_replay_request,
    entry_finalize_request,
    entry_finalize_reschedule,
)
from billing.services.extend import entry_extend
from billing.services.holds import holds_expire, holds_expire_batch
from billing.services.ledger import (
    MAX_AMOUNT,
    RATE_QUANTUM,
    SYSTEM_ACCOUNT_CODES,
    SYSTEM_CREDIT_NOTES,
    SYSTEM_FX_CLEARING,
    SYSTEM_REVENUE,
    TREASURY_USDC_RECEIVED,
    _post,
    system_account_cache_clear,
    system_account_id,
)
from billing.services.outbound import (
    OutboundEvent,
    deliveries_replay,
    endpoint_create,
    endpoint_disable,
    endpoint_secret_rotate,
    outbound_events_record,
)
from billing.services.policies import Policy, spend_policy_get, spend_policy_set
from billing.services.purchases import (
    BOOST_BUNDLE_CENTS,
    MICRO_USD_PER_CENT,
    PURCHASE_LOCK_SECONDS,
    badge_price,
    badge_purchase_record,
    badge_purchase_with_credit,
    boost_price,
    boost_purchase_record,
    boost_purchase_with_credit,
)
from billing.services.snapshots import ledger_check_record, ledger_snapshot_record
from billing.services.subscriptions import GRACE_PERIOD, subscription_apply, subscription_payment
from billing.services.usdc import credit_mint_from_usdc, usd_of, x402_credit_note_post, x402_payment_post

__all__ = [
    "BOOST_BUNDLE_CENTS",
    "FINALIZE_TASK",
    "GRACE_PERIOD",
    "MAX_AMOUNT",
    "MICRO_USD_PER_CENT",
    "PURCHASE_LOCK_SECONDS",
    "RATE_QUANTUM",
    "SYSTEM_ACCOUNT_CODES",
    "SYSTEM_CREDIT_NOTES",
    "SYSTEM_FX_CLEARING",
    "SYSTEM_REVENUE",
    "TREASURY_USDC_RECEIVED",
    "AccountNotFound",
    "EntryResult",
    "OutboundEvent",
    "Policy",
    "_post",
    "account_create",
    "account_credit_mint",
    "account_credit_mint_in_transaction",
    "account_reserves_freeze",
    "badge_price",
    "badge_purchase_record",
    "badge_purchase_with_credit",
    "boost_price",
    "boost_purchase_record",
    "boost_purchase_with_credit",
    "credit_mint_from_usdc",
    "deliveries_replay",
    "endpoint_create",
    "endpoint_disable",
    "endpoint_secret_rotate",
    "entry_commit",
    "entry_extend",
    "entry_finalize_ack",
    "entry_finalize_enqueue",
    "entry_finalize_escalate",
    "entry_finalize_fail",
    "entry_finalize_replay_request",
    "entry_finalize_request",
    "entry_finalize_reschedule",
    "entry_release",
    "entry_reserve",
    "entry_void",
    "holds_expire",
    "holds_expire_batch",
    "ledger_check_record",
    "ledger_snapshot_record",
    "outbound_events_record",
    "spend_policy_get",
    "spend_policy_set",
    "subscription_apply",
    "subscription_payment",
    "system_account_cache_clear",
    "system_account_id",
    "usd_of",
    "utc_day",
    "x402_credit_note_post",
    "x402_payment_post",
]
