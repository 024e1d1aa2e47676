"""Validators every app shares: one definition of an Ethereum address."""

from __future__ import annotations

import re

# 0x + 20 bytes of hex, either case (checksums are checked where EIP-55 is required).
ETH_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def is_eth_address(value: object) -> bool:
    """True for a string that is exactly ``0x`` and 40 hex digits (no surrounding text, no newline)."""
    return isinstance(value, str) and ETH_ADDRESS.fullmatch(value) is not None
