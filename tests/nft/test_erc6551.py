"""ERC-6551 token-bound account addresses: CREATE2 checked against EIP-1014's published vectors."""

from __future__ import annotations

import pytest

from nft.erc6551 import account_creation_code, create2_address, token_bound_account

ZERO = "0x" + "00" * 20
DEADBEEF_HI = "0xdeadbeef" + "00" * 16
DEADBEEF_LO = "0x" + "00" * 16 + "deadbeef"
CAFEBABE = bytes.fromhex("00" * 28 + "cafebabe")


@pytest.mark.parametrize(
    ("deployer", "salt", "init_code", "expected"),
    [
        # EIP-1014 (CREATE2), "Examples", all seven.
        (ZERO, bytes(32), "00", "0x4D1A2e2bB4F88F0250f26Ffff098B0b30B26BF38"),
        (DEADBEEF_HI, bytes(32), "00", "0xB928f69Bb1D91Cd65274e3c79d8986362984fDA3"),
        (
            DEADBEEF_HI,
            bytes.fromhex("000000000000000000000000feed" + "00" * 18),
            "00",
            "0xD04116cDd17beBE565EB2422F2497E06cC1C9833",
        ),
        (ZERO, bytes(32), "deadbeef", "0x70f2b2914A2a4b783FaEFb75f459A580616Fcb5e"),
        (DEADBEEF_LO, CAFEBABE, "deadbeef", "0x60f3f640a8508fC6a86d45DF051962668E1e8AC7"),
        (DEADBEEF_LO, CAFEBABE, "deadbeef" * 11, "0x1d8bfDC5D46DC4f61D6b6115972536eBE6A8854C"),
        (ZERO, bytes(32), "", "0xE33C0C7F7df4809055C3ebA6c09CFe4BaF1BD9e0"),
    ],
)
def test_create2_matches_the_eip_1014_vectors(deployer: str, salt: bytes, init_code: str, expected: str) -> None:
    assert create2_address(deployer=deployer, salt=salt, init_code=bytes.fromhex(init_code)) == expected


def test_the_account_creation_code_has_the_eip_6551_layout() -> None:
    implementation, token = "0x" + "11" * 20, "0x" + "22" * 20
    code = account_creation_code(
        implementation=implementation, salt=7, chain_id=8453, token_contract=token, token_id=42
    )
    assert len(code) == 10 + 0xAD  # creation prefix + runtime (PUSH1 0xad in the prefix)
    runtime = code[10:]
    assert runtime[:10].hex() == "363d3d373d3d3d363d73"  # ERC-1167 header
    assert runtime[10:30] == bytes.fromhex("11" * 20)  # implementation
    assert runtime[30:45].hex() == "5af43d82803e903d91602b57fd5bf3"  # ERC-1167 footer
    salt, chain_id, contract, token_id = (runtime[45 + 32 * i : 45 + 32 * (i + 1)] for i in range(4))
    assert (int.from_bytes(salt), int.from_bytes(chain_id), int.from_bytes(token_id)) == (7, 8453, 42)
    assert contract == bytes(12) + bytes.fromhex("22" * 20)


def test_the_address_depends_on_every_input_and_is_deterministic() -> None:
    base = {"token_contract": "0x" + "22" * 20, "token_id": 1, "chain_id": 8453, "implementation": "0x" + "11" * 20}
    address = token_bound_account(**base)  # type: ignore[arg-type]
    assert address == token_bound_account(**base)  # type: ignore[arg-type]
    for change in ({"token_id": 2}, {"chain_id": 1}, {"salt": 1}, {"implementation": "0x" + "33" * 20}):
        assert token_bound_account(**{**base, **change}) != address  # type: ignore[arg-type]
    assert token_bound_account(**base, registry="0x" + "44" * 20) != address  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [{"token_contract": "0x12"}, {"token_id": -1}, {"token_id": 2**256}])
def test_bad_inputs_are_refused(bad: dict[str, object]) -> None:
    args = {"token_contract": "0x" + "22" * 20, "token_id": 1, "chain_id": 1, "implementation": "0x" + "11" * 20, **bad}
    with pytest.raises(ValueError):
        token_bound_account(**args)  # type: ignore[arg-type]
