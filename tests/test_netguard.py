"""Address policy and guarded resolver (THREATS.md D1–D4, S13)."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from fedi.netguard import (
    AddressPolicy,
    BlockedAddress,
    BlockedResolution,
    GuardedResolver,
    check_host,
    literal_address,
)

D1 = [
    "127.0.0.1", "127.255.255.254", "10.0.0.1", "10.255.255.255", "172.16.0.1",
    "172.31.255.255", "192.168.0.1", "192.168.255.255", "169.254.169.254", "169.254.0.1",
    "100.64.0.1", "100.127.255.254", "0.0.0.0", "0.1.2.3", "198.18.0.1", "198.19.255.255",
    "224.0.0.1", "239.255.255.250", "240.0.0.1", "254.255.255.255", "255.255.255.255",
]
D2 = [
    "::1", "[::1]", "::", "[::]", "::ffff:127.0.0.1", "[::ffff:127.0.0.1]", "::ffff:7f00:1",
    "::127.0.0.1", "[::127.0.0.1]", "64:ff9b::7f00:1", "2002:7f00:1::", "fe80::1", "fe80::1%eth0",
    "fd00::1", "fc00::1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe",
    "2002:a9fe:a9fe::1",
]
DOCUMENTATION_AND_OTHER = [
    "192.0.2.1", "198.51.100.7", "203.0.113.9", "2001:db8::1", "3fff::1", "fec0::1",
    "ff02::1", "ff05::2", "100::1", "2001::1", "64:ff9b:1::7f00:1", "192.0.0.8",
]
D3 = ["2130706433", "0x7f.1", "127.1", "0177.0.0.1", "0x7f000001", "017700000001", "0x7f.0.0.1"]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1", "2001:4860:4860::8888",
          "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("ip", D1 + D2 + DOCUMENTATION_AND_OTHER)
def test_non_public_addresses_are_refused(ip: str) -> None:
    with pytest.raises(BlockedAddress):
        AddressPolicy(()).check(ip)


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_pass(ip: str) -> None:
    AddressPolicy(()).check(ip)


@pytest.mark.parametrize("host", D3)
def test_non_canonical_ipv4_spellings_are_refused(host: str) -> None:
    assert literal_address(host) == "127.0.0.1"
    with pytest.raises(BlockedAddress):
        check_host(AddressPolicy(()), host)


@pytest.mark.parametrize("host", D1 + D2)
def test_check_host_refuses_literals(host: str) -> None:
    with pytest.raises(BlockedAddress):
        check_host(AddressPolicy(()), host)


@pytest.mark.parametrize("host", D3 + ["0x08.0x08.0x08.0x08", "134744072"])
def test_non_canonical_spellings_refused_even_when_allowed(host: str) -> None:
    with pytest.raises(BlockedAddress, match="non-canonical"):
        check_host(AddressPolicy(["0.0.0.0/0"]), host)


def test_check_host_refuses_literal_lookalikes_it_cannot_parse() -> None:
    # aiohttp treats these as literals (no resolver), so they must not pass unchecked.
    for host in ("127.0.0.1.", "1.2.3.4.5", "99999999999", "::zz"):
        with pytest.raises(BlockedAddress):
            check_host(AddressPolicy(()), host)


def test_check_host_leaves_names_to_the_resolver() -> None:
    check_host(AddressPolicy(()), "example.com")
    check_host(AddressPolicy(()), "alpha.test")
    check_host(AddressPolicy(()), "8.8.8.8")


def test_not_an_address() -> None:
    with pytest.raises(BlockedAddress):
        AddressPolicy(()).check("example.com")


def test_allow_list_admits_only_its_networks() -> None:
    policy = AddressPolicy(["127.0.0.0/8"])
    policy.check("127.0.0.1")
    policy.check("127.3.4.5")
    policy.check("::ffff:127.0.0.1")
    policy.check("8.8.8.8")
    for ip in ("169.254.169.254", "::ffff:169.254.169.254", "10.0.0.1", "::1", "fd00::1"):
        with pytest.raises(BlockedAddress):
            policy.check(ip)


def test_allow_list_cannot_admit_non_unicast() -> None:
    policy = AddressPolicy(["0.0.0.0/0", "::/0"])
    policy.check("10.0.0.1")
    for ip in ("0.0.0.0", "255.255.255.255", "224.0.0.1", "::", "ff02::1"):
        with pytest.raises(BlockedAddress):
            policy.check(ip)


def test_allow_list_ipv6() -> None:
    policy = AddressPolicy(["fd00::/8"])
    policy.check("fd00::1")
    with pytest.raises(BlockedAddress):
        policy.check("fe80::1")


class FixedResolver(AbstractResolver):
    """A real resolver with a fixed answer: stands in for a DNS server under attack."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.calls = 0

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        self.calls += 1
        return [
            ResolveResult(hostname=host, host=ip, port=port,
                          family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                          proto=0, flags=socket.AI_NUMERICHOST)
            for ip in self.answers
        ]

    async def close(self) -> None:
        pass


async def test_resolver_host_map_is_checked() -> None:
    resolver = GuardedResolver(AddressPolicy(()), host_map={"alpha.test": "127.0.0.1"})
    with pytest.raises(BlockedResolution) as info:
        await resolver.resolve("alpha.test", 80)
    assert isinstance(info.value, OSError)
    allowed = GuardedResolver(AddressPolicy(["127.0.0.0/8"]), host_map={"alpha.test": "127.0.0.1"})
    [result] = await allowed.resolve("ALPHA.test", 8080)
    assert (result["host"], result["port"]) == ("127.0.0.1", 8080)
    await resolver.close()
    await allowed.close()


async def test_resolver_drops_private_answers() -> None:
    base = FixedResolver(["10.0.0.5", "93.184.216.34", "::1"])
    resolver = GuardedResolver(AddressPolicy(()), base=base)
    results = await resolver.resolve("mixed.example", 443)
    assert [r["host"] for r in results] == ["93.184.216.34"]


async def test_resolver_checks_every_resolution_dns_rebinding() -> None:
    base = FixedResolver(["93.184.216.34"])
    resolver = GuardedResolver(AddressPolicy(()), base=base)
    await resolver.resolve("rebind.example", 443)
    base.answers = ["169.254.169.254"]  # the second answer turns private
    with pytest.raises(BlockedResolution):
        await resolver.resolve("rebind.example", 443)
    assert base.calls == 2


async def test_resolver_falls_through_to_system_dns() -> None:
    resolver = GuardedResolver(AddressPolicy(()), host_map={"alpha.test": "8.8.8.8"})
    with pytest.raises(BlockedResolution):
        await resolver.resolve("localhost", 80)
    await resolver.close()


def test_remembered_verdicts_stay_the_same() -> None:
    """The policy remembers its verdict per address text: asked again, it answers as the first time."""
    policy = AddressPolicy(["127.0.0.0/8"])
    for _ in range(3):
        for refused in ("10.0.0.1", "169.254.169.254", "::ffff:10.0.0.1", "not-an-ip"):
            with pytest.raises(BlockedAddress):
                policy.check(refused)
        for allowed in ("127.0.0.1", "93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"):
            policy.check(allowed)
    with pytest.raises(BlockedAddress, match="127.0.0.1"):
        AddressPolicy().check("127.0.0.1")  # another policy, another verdict
