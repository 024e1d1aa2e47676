"""ERC-6551 token-bound account addresses (the registry's CREATE2 address), computed locally.

The registry deploys each account as an ERC-1167 minimal proxy with the
(salt, chainId, tokenContract, tokenId) appended; its address is
``keccak256(0xff ++ registry ++ salt ++ keccak256(creation code))[12:]``
(EIP-1014). keccak is eth-utils' (pycryptodome).
"""

from __future__ import annotations

from eth_utils import keccak, to_checksum_address

from finn.validators import is_eth_address

CANONICAL_REGISTRY = "0x000000006551c19487814612e58FE06813775758"
# Creation prefix (PUSH1 0xad ... RETURN) + ERC-1167 header; then the implementation; then the footer.
_CREATION_PREFIX = bytes.fromhex("3d60ad80600a3d3981f3" + "363d3d373d3d3d363d73")
_ERC1167_FOOTER = bytes.fromhex("5af43d82803e903d91602b57fd5bf3")
UINT256_MAX = 2**256 - 1


def _address_bytes(name: str, value: str) -> bytes:
    if not isinstance(value, str) or not is_eth_address(value):
        raise ValueError(f"{name} must be a 0x-prefixed 20-byte hex address")
    return bytes.fromhex(value[2:])


def _word(value: int) -> bytes:
    if not 0 <= value <= UINT256_MAX:
        raise ValueError("a uint256 is between 0 and 2**256 - 1")
    return value.to_bytes(32, "big")


def create2_address(*, deployer: str, salt: bytes, init_code: bytes) -> str:
    """EIP-1014: the address a CREATE2 from ``deployer`` with ``salt`` and ``init_code`` gets."""
    if len(salt) != 32:
        raise ValueError("salt is 32 bytes")
    digest = keccak(b"\xff" + _address_bytes("deployer", deployer) + salt + keccak(init_code))
    return to_checksum_address(digest[12:])


def account_creation_code(
    *, implementation: str, salt: int, chain_id: int, token_contract: str, token_id: int
) -> bytes:
    return (
        _CREATION_PREFIX
        + _address_bytes("implementation", implementation)
        + _ERC1167_FOOTER
        + _word(salt)
        + _word(chain_id)
        + b"\x00" * 12
        + _address_bytes("token_contract", token_contract)
        + _word(token_id)
    )


def token_bound_account(
    *,
    token_contract: str,
    token_id: int,
    chain_id: int,
    implementation: str,
    salt: int = 0,
    registry: str = CANONICAL_REGISTRY,
) -> str:
    """The token-bound account address of an NFT (checksummed)."""
    code = account_creation_code(
        implementation=implementation, salt=salt, chain_id=chain_id, token_contract=token_contract, token_id=token_id
    )
    return create2_address(deployer=registry, salt=_word(salt), init_code=code)
