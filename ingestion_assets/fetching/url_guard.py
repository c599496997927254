"""SSRF guard: URLs come from a sheet many people edit, so every hop is checked.

A host is refused when any address it resolves to is private, loopback, link-local
(cloud metadata endpoints live there), multicast, reserved or unspecified, unless the
host or address is on the explicit allow-list (tests and the local demo use it).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import PermanentFetchError, TransientFetchError

ALLOWED_SCHEMES = ("http", "https")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
AllowEntry = IPNetwork | str  # a network, or a host name lower-cased without its final dot


def _parse_allow_entry(entry: str) -> AllowEntry:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return entry.lower().rstrip(".")


@dataclass(frozen=True)
class UrlGuard:
    """`allowed_hosts`: host names, addresses or CIDR ranges exempt from the address check."""

    allowed_hosts: tuple[str, ...] = ()
    _entries: tuple[AllowEntry, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        entries = tuple(_parse_allow_entry(e.strip()) for e in self.allowed_hosts if e.strip())
        object.__setattr__(self, "_entries", entries)

    @classmethod
    def from_csv(cls, hosts: str | None) -> UrlGuard:
        return cls(tuple((hosts or "").split(",")))

    def _host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in (e for e in self._entries if isinstance(e, str))

    def _address_allowed(self, address: IPAddress) -> bool:
        return any(
            not isinstance(e, str) and address.version == e.version and address in e
            for e in self._entries
        )

    def check(self, url: str) -> None:
        """Raise PermanentFetchError unless `url` is http(s) and points at a public address."""
        try:  # a redirect's Location is as untrusted as the sheet: a bad port or IPv6 literal
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise PermanentFetchError(f"invalid URL: {exc}") from exc
        scheme = parts.scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            shown = f"'{scheme}://'" if scheme else "no scheme"
            raise PermanentFetchError(
                f"unsupported URL scheme {shown}: only http and https are fetched"
            )
        host = parts.hostname
        if not host:
            raise PermanentFetchError("the URL has no host")
        if self._host_allowed(host):
            return
        for address in _resolve(host, port or (443 if scheme == "https" else 80)):
            if _is_internal(address) and not self._address_allowed(address):
                raise PermanentFetchError(
                    f"refused: host '{host}' resolves to {address}, a private, loopback or "
                    "link-local address (SSRF guard; add it to SSRF_ALLOWED_HOSTS if intended)"
                )


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:  # an ACE label that decodes to nothing ('xn--') encodes, but names no host
        host.encode("idna").decode("idna")
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TransientFetchError(f"cannot resolve host '{host}': {exc.strerror}") from exc
    except UnicodeError as exc:  # IDNA: a label over 63 characters, an empty label
        raise PermanentFetchError(f"invalid host name '{host[:80]}': {exc}") from exc
    # sockaddr[0] is the address text for AF_INET and AF_INET6, the only families asked for
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def _is_internal(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )
