"""Which addresses the hub may send outbound requests to (pure: no I/O, no DNS).

A user who sets a webhook URL or registers a push endpoint chooses where the hub connects. Without a
guard that lets anyone with an account reach what the hub can reach: its own loopback services, the
private network, a cloud's metadata service (server-side request forgery). `OutboundPolicy` refuses
every address that is not on the public internet, unless the operator's allow-list names it:

- loopback (127.0.0.0/8, ::1), unspecified (0.0.0.0/8, ::), private (10/8, 172.16/12, 192.168/16,
  100.64/10 CGNAT, fec0::/10), link-local (169.254/16, fe80::/10), unique-local (fc00::/7), multicast
  (224/4, ff00::/8), reserved (240/4 and broadcast, documentation, benchmarking, IETF blocks, anything
  else `ipaddress` does not call global), and cloud metadata services (169.254.169.254, 169.254.170.2,
  100.100.100.200, 168.63.129.16, 192.0.0.192, fd00:ec2::254);
- IPv6 forms that embed an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`,
  NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by that IPv4 address.

`check_host` judges a URL's host before any resolution: an address literal in any form a resolver
accepts (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`, `0`, `[::ffff:127.0.0.1]`), or a name that is
local by definition (`localhost`, `*.localhost`, the metadata names). Any other name is left to
`check_address` on every address it resolves to, at connection time.

Verdicts are `None` (allowed) or a short reason such as `"private address"`, which reveals nothing
about the target beyond what the user typed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["IPAddress", "IPNetwork", "OutboundPolicy", "parse_allow_list", "parse_host_address"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK = "loopback address"
PRIVATE = "private address"
LINK_LOCAL = "link-local address"
UNIQUE_LOCAL = "unique-local address"
MULTICAST = "multicast address"
UNSPECIFIED = "unspecified address"
RESERVED = "reserved address"
METADATA = "metadata address"
INVALID_HOST = "invalid host name"

_METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ... instance metadata
    "169.254.170.2",  # AWS ECS task metadata
    "169.254.169.253",  # AWS VPC DNS
    "100.100.100.200",  # Alibaba Cloud
    "168.63.129.16",  # Azure wire server (a public address)
    "192.0.0.192",  # Oracle Cloud
    "fd00:ec2::254",  # AWS IMDS over IPv6
))
_METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
                             "instance-data.ec2.internal", "metadata.azure.internal"})

# Most specific first: the first network that holds the address gives the reason.
_V4_BLOCKS: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple((ipaddress.IPv4Network(n), r) for n, r in (
    ("0.0.0.0/8", UNSPECIFIED),
    ("127.0.0.0/8", LOOPBACK),
    ("10.0.0.0/8", PRIVATE),
    ("172.16.0.0/12", PRIVATE),
    ("192.168.0.0/16", PRIVATE),
    ("100.64.0.0/10", PRIVATE),  # carrier-grade NAT (RFC 6598)
    ("169.254.0.0/16", LINK_LOCAL),
    ("224.0.0.0/4", MULTICAST),
    ("240.0.0.0/4", RESERVED),  # and 255.255.255.255
    ("192.0.0.0/24", RESERVED),  # IETF protocol assignments
    ("192.0.2.0/24", RESERVED),  # documentation
    ("198.51.100.0/24", RESERVED),
    ("203.0.113.0/24", RESERVED),
    ("198.18.0.0/15", RESERVED),  # benchmarking
    ("192.88.99.0/24", RESERVED),  # 6to4 relay anycast
))
_V6_BLOCKS: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple((ipaddress.IPv6Network(n), r) for n, r in (
    ("::/128", UNSPECIFIED),
    ("::1/128", LOOPBACK),
    ("fe80::/10", LINK_LOCAL),
    ("fec0::/10", PRIVATE),  # site-local (deprecated)
    ("fc00::/7", UNIQUE_LOCAL),
    ("ff00::/8", MULTICAST),
    ("64:ff9b:1::/48", PRIVATE),  # local-use NAT64
    ("::/8", RESERVED),
    ("100::/64", RESERVED),  # discard-only
    ("2001::/23", RESERVED),  # IETF protocol assignments (Teredo, benchmarking, ORCHID)
    ("2001:db8::/32", RESERVED),  # documentation
))
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_V4_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


def parse_allow_list(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDR blocks (`10.0.0.0/8`, `fd00::/8`) or single addresses (`192.168.1.20`, as /32 or /128).
    Host bits must be zero. Raises ValueError naming the first entry that is not one."""
    networks: list[IPNetwork] = []
    for entry in entries:
        text = entry.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=True))
        except ValueError:
            raise ValueError(f"outbound_allow: {text!r} is not a CIDR block such as 10.0.0.0/8 or fd00::/8 "
                             f"(host bits must be zero)") from None
    return tuple(networks)


def parse_host_address(host: str) -> IPAddress | None:
    """The address a URL host denotes when it is a literal, in any form `inet_aton` and URL parsers
    accept: dotted quads with 1 to 4 parts, each decimal, octal (leading 0) or hex (0x), the last part
    filling the remaining bytes (`127.1`, `2130706433`, `0x7f.1`, `0`); an IPv6 address, with or
    without brackets and zone (`[::ffff:127.0.0.1]`, `fe80::1%eth0`). None for a name."""
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        text = text.split("%", 1)[0]  # a zone id (`%eth0`, `%25eth0`) names an interface, not an address
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    if text.endswith("."):
        text = text[:-1]
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_V4_PART.fullmatch(p) for p in parts):
        return None
    values = [_v4_part(p) for p in parts]
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        return None
    number = 0
    for v in head:
        number = number * 256 + v
    number = (number << (8 * (5 - len(values)))) | last
    return ipaddress.IPv4Address(number)


def _v4_part(part: str) -> int:
    if part.startswith("0x"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    return int(part)


def _unzoned(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return ipaddress.IPv6Address(str(address).split("%", 1)[0])
    return address


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _reason(address: IPAddress) -> str | None:
    if address in _METADATA_ADDRESSES:
        return METADATA
    if isinstance(address, ipaddress.IPv4Address):
        for v4, reason in _V4_BLOCKS:
            if address in v4:
                return reason
    else:
        for v6, reason in _V6_BLOCKS:
            if address in v6:
                return reason
    return None if address.is_global else RESERVED


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Refuse non-public addresses except those inside `allow` (the operator's `outbound_allow`). An
    allow-listed block wins over every category, metadata included: naming it is the operator's call."""

    allow: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_strings(cls, entries: Iterable[str]) -> OutboundPolicy:
        """Raises ValueError for an entry that is not a CIDR block."""
        return cls(parse_allow_list(entries))

    def allowlisted(self, address: IPAddress) -> bool:
        address = _unzoned(address)
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and (v4 := _embedded_v4(address)) is not None:
            candidates.append(v4)
        return any(a.version == n.version and a in n for a in candidates for n in self.allow)

    def check_address(self, address: IPAddress | str) -> str | None:
        """None when the hub may connect to `address`; otherwise the reason (`"loopback address"`,
        `"private address"`, `"link-local address"`, `"unique-local address"`, `"multicast address"`,
        `"unspecified address"`, `"reserved address"`, `"metadata address"`). A string that is not an
        address is `"invalid host name"`."""
        if isinstance(address, str):
            parsed = parse_host_address(address)
            if parsed is None:
                return INVALID_HOST
            address = parsed
        address = _unzoned(address)
        if self.allowlisted(address):
            return None
        if isinstance(address, ipaddress.IPv6Address) and (embedded := _embedded_v4(address)) is not None:
            return self.check_address(embedded)  # mapped, compatible, NAT64, 6to4: where it really goes
        return _reason(address)

    def check_host(self, host: str) -> str | None:
        """The verdict on a URL host before resolution: an address literal is judged by
        `check_address`; `localhost`, `*.localhost` and the cloud metadata names are judged as the
        addresses they stand for; a malformed name is `"invalid host name"`; any other name is None
        here and judged by the addresses it resolves to when the hub connects."""
        literal = parse_host_address(host)
        if literal is not None:
            return self.check_address(literal)
        name = host.strip().lower()
        name = name[:-1] if name.endswith(".") else name
        labels = name.split(".")
        if not name or len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
            return INVALID_HOST
        if _NUMERIC_LABEL.fullmatch(labels[-1]):  # `1.2.3.256`, `08`: neither an address nor a name
            return INVALID_HOST
        if name == "localhost" or name.endswith(".localhost") or name == "localhost.localdomain":
            loopback = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))
            return None if any(self.allowlisted(a) for a in loopback) else LOOPBACK
        if name in _METADATA_NAMES:
            return None if self.allowlisted(ipaddress.IPv4Address("169.254.169.254")) else METADATA
        return None

    def allowlisted_host(self, host: str) -> bool:
        """Whether `host` is an address literal (or `localhost`) inside the allow-list: such a target
        is the operator's own, so plain `http://` is accepted for it where `https://` is otherwise
        required (Web Push endpoints)."""
        literal = parse_host_address(host)
        if literal is not None:
            return self.allowlisted(literal)
        name = host.strip().lower().rstrip(".")
        if name == "localhost" or name.endswith(".localhost"):
            return any(self.allowlisted(a) for a in (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")))
        return False
