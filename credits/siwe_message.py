"""EIP-4361 (Sign-In with Ethereum) messages, parsed in linear time.

The ``siwe`` library parses with an ABNF parser whose time grows with the
square of the message length (a 4,000-character message of zeros took 31.6 s
of CPU before it was refused). Sign-in is public, so finn parses the message
itself: one split into lines, one anchored regular expression per line (each
bounded, possessive where a quantifier could backtrack), a resource count, and
a final check that rendering the parsed fields gives back exactly the message
(so one message has one parse, and the text signed is the text checked).

This parser is stricter than the ABNF (ASCII only; a DNS-name or IPv4 host
without userinfo; RFC 3339 times that Python can read; no empty request id or
resource list; no leading zeros in the chain id) and never looser: the tests
feed every message it accepts to ``siwe.SiweMessage.from_message`` and expect
the same fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from eth_utils import is_checksum_address

from finn.validators import is_eth_address

MAX_MESSAGE_CHARS = 4096
MAX_RESOURCES = 100
HEADER_SUFFIX = " wants you to sign in with your Ethereum account:"


class SiweMessageError(ValueError):
    """The text is not an EIP-4361 message finn accepts (the reason stays in the log)."""


@dataclass(frozen=True)
class SiweFields:
    scheme: str | None
    domain: str
    address: str
    statement: str | None
    uri: str
    version: str
    chain_id: int
    nonce: str
    issued_at: str
    expiration_time: str | None
    not_before: str | None
    request_id: str | None
    resources: tuple[str, ...]

    def render(self) -> str:
        """The message text, exactly as ``siwe.SiweMessage.prepare_message`` writes it."""
        header = f"{self.domain}{HEADER_SUFFIX}"
        if self.scheme:
            header = f"{self.scheme}://{header}"
        prefix = f"{header}\n{self.address}"
        prefix = f"{prefix}\n\n{self.statement}" if self.statement else f"{prefix}\n"
        suffix = [
            f"URI: {self.uri}",
            f"Version: {self.version}",
            f"Chain ID: {self.chain_id}",
            f"Nonce: {self.nonce}",
            f"Issued At: {self.issued_at}",
        ]
        if self.expiration_time:
            suffix.append(f"Expiration Time: {self.expiration_time}")
        if self.not_before:
            suffix.append(f"Not Before: {self.not_before}")
        if self.request_id:
            suffix.append(f"Request ID: {self.request_id}")
        if self.resources:
            suffix.append("\n".join(["Resources:", *(f"- {resource}" for resource in self.resources)]))
        return prefix + "\n\n" + "\n".join(suffix)


_PCHAR = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})"
_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]{0,31}+"
# A DNS name or IPv4 address: labels of letters, digits and hyphens, separated by dots.
_HOST = r"[A-Za-z0-9][A-Za-z0-9\-]{0,62}+(?:\.[A-Za-z0-9][A-Za-z0-9\-]{0,62}+)*+"
# A port is 0-65535 (found by the long fuzz: ":80000" passed here, and the library refuses it).
_PORT = r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})(?![0-9]))?"
_QUERY_FRAGMENT = rf"(?:\?(?:{_PCHAR}|[/?])*+)?(?:#(?:{_PCHAR}|[/?])*+)?"
# RFC 3986 URI: with an authority (``scheme://host[:port]/path``) or, for non-web schemes
# (``urn:``, ``did:``, ``ipfs:``), a path of segments.
_URI = re.compile(
    rf"(?P<scheme>{_SCHEME}):(?:"
    rf"//(?P<host>{_HOST}){_PORT}(?:/{_PCHAR}*+)*+"
    rf"|/?{_PCHAR}++(?:/{_PCHAR}*+)*+"
    rf"){_QUERY_FRAGMENT}"
)
# Web schemes need an authority: the WHATWG URL parser behind pydantic reads "http:x" otherwise.
_AUTHORITY_SCHEMES = {"http", "https", "ws", "wss", "ftp", "file"}
_HEADER = re.compile(rf"(?:(?P<scheme>{_SCHEME})://)?(?P<domain>{_HOST}{_PORT}){re.escape(HEADER_SUFFIX)}")
_STATEMENT = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;= ]{1,1024}")
_CHAIN_ID = re.compile(r"[1-9][0-9]{0,15}")
_NONCE = re.compile(r"[A-Za-z0-9]{8,128}")
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+\-][0-9]{2}:[0-9]{2})"
)
_REQUEST_ID = re.compile(rf"{_PCHAR}{{1,256}}+")
MAX_URI_CHARS = 2048
# The WHATWG URL parser (pydantic's, the library's) reads a host whose last label is a number as
# IPv4 and refuses it unless it is one ("localho.0"; found by the long fuzz). finn accepts only
# dotted quads there, a subset of what that parser reads.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")


def siwe_time(value: str) -> datetime:
    """A time field as a datetime: the siwe library's reading (``.000Z`` and ``Z`` mean UTC)."""
    return datetime.fromisoformat(value.replace(".000Z", "Z").replace("Z", "+00:00"))


def _uri(value: str, what: str) -> str:
    match = _URI.fullmatch(value) if len(value) <= MAX_URI_CHARS else None
    if match is None:
        raise SiweMessageError(f"{what} is not a URI")
    if match["scheme"].lower() in _AUTHORITY_SCHEMES and not value[len(match["scheme"]) + 1 :].startswith("//"):
        raise SiweMessageError(f"{what} needs an authority")
    if (
        match["host"]
        and _NUMERIC_LABEL.fullmatch(match["host"].rsplit(".", 1)[-1])
        and not _IPV4.fullmatch(match["host"])
    ):
        raise SiweMessageError(f"{what} has a host that ends in a number but is not an IPv4 address")
    return value


def _time(value: str, what: str) -> str:
    if _DATETIME.fullmatch(value) is None:
        raise SiweMessageError(f"{what} is not an RFC 3339 time")
    try:
        siwe_time(value)
    except ValueError:
        raise SiweMessageError(f"{what} is not a valid time") from None
    return value


def _field(lines: list[str], index: int, label: str) -> str | None:
    """The value of ``label`` on line ``index``, or None when that line is another field."""
    if index < len(lines) and lines[index].startswith(label):
        return lines[index][len(label) :]
    return None


def siwe_parse(message: object) -> SiweFields:
    """Parse an EIP-4361 message in time linear in its length, or raise ``SiweMessageError``."""
    if not isinstance(message, str) or not message or len(message) > MAX_MESSAGE_CHARS:
        raise SiweMessageError(f"the message must be text of 1 to {MAX_MESSAGE_CHARS} characters")
    if not message.isascii():
        raise SiweMessageError("the message must be ASCII")
    lines = message.split("\n")
    if len(lines) < 9 or len(lines) > 16 + MAX_RESOURCES:
        raise SiweMessageError("wrong number of lines")
    header = _HEADER.fullmatch(lines[0])
    if header is None:
        raise SiweMessageError("header")
    address = lines[1]
    if not is_eth_address(address) or not is_checksum_address(address):
        raise SiweMessageError("address is not an EIP-55 address")
    if lines[2] != "":
        raise SiweMessageError("a blank line must follow the address")
    statement: str | None = None
    index = 4
    if lines[3] != "":
        if _STATEMENT.fullmatch(lines[3]) is None or lines[4] != "":
            raise SiweMessageError("statement")
        statement, index = lines[3], 5

    def required(label: str) -> str:
        nonlocal index
        value = _field(lines, index, label)
        if value is None:
            raise SiweMessageError(f"expected {label.strip()}")
        index += 1
        return value

    def optional(label: str) -> str | None:
        nonlocal index
        value = _field(lines, index, label)
        if value is not None:
            index += 1
        return value

    uri = _uri(required("URI: "), "URI")
    if required("Version: ") != "1":
        raise SiweMessageError("version must be 1")
    chain_id = required("Chain ID: ")
    if _CHAIN_ID.fullmatch(chain_id) is None:
        raise SiweMessageError("chain id")
    nonce = required("Nonce: ")
    if _NONCE.fullmatch(nonce) is None:
        raise SiweMessageError("nonce must be 8 to 128 letters or digits")
    issued_at = _time(required("Issued At: "), "issued at")
    expiration_time = optional("Expiration Time: ")
    if expiration_time is not None:
        _time(expiration_time, "expiration time")
    not_before = optional("Not Before: ")
    if not_before is not None:
        _time(not_before, "not before")
    request_id = optional("Request ID: ")
    if request_id is not None and _REQUEST_ID.fullmatch(request_id) is None:
        raise SiweMessageError("request id")
    resources: list[str] = []
    if index < len(lines) and lines[index] == "Resources:":
        for line in lines[index + 1 :]:
            if not line.startswith("- "):
                raise SiweMessageError("resources are lines of '- <URI>'")
            resources.append(_uri(line[2:], "resource"))
        if not resources:
            raise SiweMessageError("an empty resource list")
        index = len(lines)
    if index != len(lines):
        raise SiweMessageError(f"unexpected line {index + 1}")
    fields = SiweFields(
        scheme=header["scheme"],
        domain=header["domain"],
        address=address,
        statement=statement,
        uri=uri,
        version="1",
        chain_id=int(chain_id),
        nonce=nonce,
        issued_at=issued_at,
        expiration_time=expiration_time,
        not_before=not_before,
        request_id=request_id,
        resources=tuple(resources),
    )
    if fields.render() != message:  # one text, one parse
        raise SiweMessageError("not in canonical form")
    return fields
