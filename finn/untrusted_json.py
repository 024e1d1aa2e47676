"""One way to decode JSON from outside: bounded size, bounded nesting, no NaN.

Python's ``json`` decoder recurses once per nested array or object, so a body of
60,000 ``[`` raises ``RecursionError`` (not ``ValueError``) deep inside the C
scanner and a handler that catches ``ValueError`` answers 500. Every route that
decodes bytes it did not produce (request bodies, base64 payment headers, CSP
reports, webhook bodies, answers of remote services) goes through
``json_loads_untrusted``, which measures the nesting in one linear pass before
decoding and raises ``UntrustedJsonError`` (a ``ValueError``) for anything it
will not decode.

The depth pass is one regular expression that skips strings (so brackets inside
them do not count) and yields only brackets; an unterminated string swallows the
rest of the input instead of being retried from every quote, which keeps it
linear on hostile input.

Strings may not hold U+0000 or an unpaired surrogate (``"\\u0000"``, ``"\\ud800"``): PostgreSQL
stores neither (text and jsonb refuse NUL; UTF-8 has no surrogates), so such a body would fail
at the database as a 500 instead of being refused here as bad input.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_BYTES = 1024 * 1024
# Every document finn reads is a few levels deep (a Stripe event is ~6, an x402 payload 4).
MAX_DEPTH = 32

# Each match ends at one bracket (or at the end); strings and every other byte are consumed
# inside the regex engine. Possessive quantifiers and a match that always succeeds: no
# backtracking and no retry from a later position, so one pass over the input.
_BRACKETS = re.compile(rb'(?:"[^"\\]*+(?:\\.[^"\\]*+)*+"?|[^"\[\]{}])*+([\[\]{}]|\Z)', re.DOTALL)


# Only escapes can put these in a decoded string (raw control bytes and invalid UTF-8 are
# refused by the decoder), so the walk below runs only when the input has such an escape.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class UntrustedJsonError(ValueError):
    """Input that is not JSON finn will decode; ``code`` names the reason."""

    def __init__(self, message: str, *, code: str = "malformed_json") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _reject_constant(name: str) -> Any:
    raise UntrustedJsonError(f"{name} is not JSON")


def _finite_float(literal: str) -> float:
    """``1e999`` would decode to infinity (json refuses only the literal ``Infinity``)."""
    value = float(literal)
    if not math.isfinite(value):
        raise UntrustedJsonError("numbers must be finite")
    return value


def json_depth_exceeds(raw: bytes, max_depth: int) -> bool:
    """True when arrays/objects nest deeper than ``max_depth`` (linear; stops at the first excess)."""
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return False
    depth = 0
    for match in _BRACKETS.finditer(raw):
        bracket = match.group(1)
        if not bracket:
            break
        if bracket in b"[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


def json_loads_untrusted(raw: bytes | str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Decode ``raw`` or raise ``UntrustedJsonError``: too large, too deep, not UTF-8, not JSON."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data) > max_bytes:
        raise UntrustedJsonError(f"JSON documents are limited to {max_bytes} bytes", code="payload_too_large")
    if json_depth_exceeds(data, max_depth):
        raise UntrustedJsonError(f"JSON nesting is limited to {max_depth} levels", code="malformed_json")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UntrustedJsonError("JSON must be UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except UntrustedJsonError:
        raise
    except (ValueError, RecursionError) as exc:  # RecursionError: belt and braces behind the depth pass
        raise UntrustedJsonError(f"not valid JSON: {str(exc)[:120]}") from None
    if _SUSPECT_ESCAPE.search(data) and _holds_unstorable(value):
        raise UntrustedJsonError("JSON strings must not contain U+0000 or unpaired surrogates")
    return value


def _holds_unstorable(value: Any) -> bool:
    """True when a string anywhere in ``value`` (keys too) has NUL or a lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
