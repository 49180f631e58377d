"""The pure outbound policy: which destinations a user-set URL may make the hub call, in every spelling."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openmanager.core.netguard import OutboundPolicy, parse_allow_list, parse_host_address

DEFAULT = OutboundPolicy()


@pytest.mark.parametrize(("host", "address"), [
    ("127.0.0.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),  # one 32-bit number
    ("0x7f.1", "127.0.0.1"),  # hex, the last part fills three bytes
    ("0x7F000001", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"),  # octal
    ("0177.1", "127.0.0.1"),
    ("127.1", "127.0.0.1"),
    ("127.0.1", "127.0.0.1"),
    ("0", "0.0.0.0"),
    ("0x", "0.0.0.0"),
    ("169.254.169.254.", "169.254.169.254"),  # a trailing dot
    ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
    ("2852039166", "169.254.169.254"),
    ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
    ("::ffff:7f00:1", "::ffff:7f00:1"),
    ("[fe80::1%25eth0]", "fe80::1"),  # a zone, as httpx leaves it
    ("fe80::1%eth0", "fe80::1"),
    ("[::]", "::"),
])
def test_literal_forms_are_parsed_like_a_resolver_would(host: str, address: str) -> None:
    assert parse_host_address(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "0177.0.0.1", "127.1", "0", "0xa9.0xfe.0xa9.0xfe"])
def test_the_parser_agrees_with_inet_aton(host: str) -> None:
    assert str(parse_host_address(host)) == socket.inet_ntoa(socket.inet_aton(host))


@pytest.mark.parametrize("host", ["example.com", "hooks.slack.com", "1.2.3.256", "256.1", "08", "1.2.3.4.5", "",
                                  "0x1g", "::zz"])
def test_names_and_non_addresses_are_not_literals(host: str) -> None:
    assert parse_host_address(host) is None


@pytest.mark.parametrize(("host", "reason"), [
    ("127.0.0.1", "loopback address"),
    ("127.254.3.9", "loopback address"),
    ("2130706433", "loopback address"),
    ("0x7f.1", "loopback address"),
    ("[::ffff:127.0.0.1]", "loopback address"),
    ("::1", "loopback address"),
    ("localhost", "loopback address"),
    ("LOCALHOST.", "loopback address"),
    ("api.localhost", "loopback address"),
    ("0", "unspecified address"),
    ("0.0.0.0", "unspecified address"),
    ("[::]", "unspecified address"),
    ("10.1.2.3", "private address"),
    ("172.16.0.1", "private address"),
    ("172.31.255.255", "private address"),
    ("192.168.1.1", "private address"),
    ("100.64.0.1", "private address"),  # carrier-grade NAT
    ("100.127.255.254", "private address"),
    ("[fec0::1]", "private address"),
    ("169.254.1.1", "link-local address"),
    ("[fe80::1%25eth0]", "link-local address"),
    ("fc00::1", "unique-local address"),
    ("fd12:3456::1", "unique-local address"),
    ("224.0.0.1", "multicast address"),
    ("239.255.255.250", "multicast address"),
    ("ff02::1", "multicast address"),
    ("240.0.0.1", "reserved address"),
    ("255.255.255.255", "reserved address"),
    ("192.0.2.10", "reserved address"),
    ("198.18.0.1", "reserved address"),
    ("2001:db8::1", "reserved address"),
    ("169.254.169.254", "metadata address"),
    ("2852039166", "metadata address"),
    ("169.254.170.2", "metadata address"),
    ("100.100.100.200", "metadata address"),
    ("168.63.129.16", "metadata address"),  # Azure's: a public address, refused by name
    ("fd00:ec2::254", "metadata address"),
    ("[::ffff:169.254.169.254]", "metadata address"),
    ("metadata.google.internal", "metadata address"),
    ("64:ff9b::a9fe:a9fe", "metadata address"),  # NAT64 of 169.254.169.254
    ("2002:7f00:1::", "loopback address"),  # 6to4 of 127.0.0.1
    ("::7f00:1", "loopback address"),  # IPv4-compatible
    ("%31%32%37.0.0.1", "invalid host name"),  # percent-encoding is not a host name
    ("1.2.3.256", "invalid host name"),  # numeric, yet no address
    ("bad_host!", "invalid host name"),
])
def test_refused_hosts_and_their_reasons(host: str, reason: str) -> None:
    assert DEFAULT.check_host(host) == reason


@pytest.mark.parametrize("host", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "[::ffff:8.8.8.8]",
                                  "example.com", "hooks.slack.com", "fcm.googleapis.com", "100.128.0.1",
                                  "172.32.0.1", "2002:808:808::"])
def test_public_destinations_and_plain_names_pass(host: str) -> None:
    assert DEFAULT.check_host(host) is None


def test_the_allow_list_opens_exactly_its_blocks() -> None:
    policy = OutboundPolicy.from_strings(["127.0.0.1/32", "10.20.0.0/16", "fd00:1::/64"])
    for host in ("127.0.0.1", "2130706433", "[::ffff:127.0.0.1]", "localhost", "10.20.3.4", "fd00:1::9"):
        assert policy.check_host(host) is None, host
    for host, reason in (("127.0.0.2", "loopback address"), ("10.21.0.1", "private address"),
                         ("::1", "loopback address"), ("169.254.169.254", "metadata address"),
                         ("fd00:2::1", "unique-local address")):
        assert policy.check_host(host) == reason, host


def test_an_allow_listed_metadata_address_is_the_operators_call() -> None:
    assert OutboundPolicy.from_strings(["169.254.169.254/32"]).check_host("169.254.169.254") is None
    assert OutboundPolicy.from_strings(["169.254.0.0/16"]).check_host("metadata.google.internal") is None


def test_allowlisted_host_is_only_for_literals_and_localhost() -> None:
    policy = OutboundPolicy.from_strings(["127.0.0.1/32"])
    assert policy.allowlisted_host("127.0.0.1") and policy.allowlisted_host("localhost")
    assert not policy.allowlisted_host("push.example.com")  # a name could resolve anywhere
    assert not policy.allowlisted_host("127.0.0.2")
    assert not DEFAULT.allowlisted_host("127.0.0.1")


def test_check_address_takes_resolver_output() -> None:
    assert DEFAULT.check_address("10.0.0.1") == "private address"
    assert DEFAULT.check_address("fe80::1%2") == "link-local address"  # getaddrinfo keeps the zone
    assert DEFAULT.check_address("8.8.8.8") is None
    assert DEFAULT.check_address("not-an-address") == "invalid host name"


@pytest.mark.parametrize("entries", [["10.0.0.1/8"], ["nonsense"], ["10.0.0.0/33"], ["::1/200"]])
def test_allow_list_entries_must_be_cidr_blocks(entries: list[str]) -> None:
    with pytest.raises(ValueError, match="outbound_allow"):
        parse_allow_list(entries)


def test_allow_list_accepts_single_addresses_and_blanks() -> None:
    assert [str(n) for n in parse_allow_list(["192.168.1.20", " ", "fd00::/8"])] == ["192.168.1.20/32", "fd00::/8"]


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_ipv4_spelling_gets_one_verdict(number: int) -> None:
    address = ipaddress.IPv4Address(number)
    verdict = DEFAULT.check_address(address)
    spellings = [str(address), str(number), hex(number), f"0{number:o}",
                 f"{number >> 24}.{number & 0xFFFFFF}", f"[::ffff:{address}]"]
    for spelling in spellings:
        assert DEFAULT.check_host(spelling) == verdict, spelling


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_any_ipv6_address_gets_a_verdict_and_mapped_forms_follow_ipv4(number: int) -> None:
    address = ipaddress.IPv6Address(number)
    verdict = DEFAULT.check_host(f"[{address}]")
    assert verdict is None or verdict.endswith("address")
    if address.ipv4_mapped is not None:
        assert verdict == DEFAULT.check_address(address.ipv4_mapped)
    elif not address.is_global:
        assert verdict is not None
