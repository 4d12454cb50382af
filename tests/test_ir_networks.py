"""ir.merge_cidrs, which the iptables and pf writers merge address sets with, against netaddr's
cidr_merge: the same fewest CIDRs for any union of IPv4 and IPv6 networks (nested, adjacent,
overlapping, repeated, alone)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from netaddr import IPNetwork, cidr_merge

from fwmatrix.ir import merge_cidrs


def _network(version: int, bits: int, prefix: int, base: int) -> tuple[int, int, int]:
    # networks of at most 4,096 addresses within the first 4,096 of the family: they meet, nest and touch
    return version, base >> (bits - prefix) << (bits - prefix), prefix


networks = st.one_of(
    st.builds(_network, st.just(4), st.just(32), st.integers(20, 32), st.integers(0, 4095)),
    st.builds(_network, st.just(6), st.just(128), st.integers(116, 128), st.integers(0, 4095)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(networks, max_size=12))
def test_merge_cidrs_is_cidr_merge(given_networks: list[tuple[int, int, int]]) -> None:
    expected = sorted((net.version, net.first, net.prefixlen) for net in cidr_merge(
        [IPNetwork((first, prefix), version=version) for version, first, prefix in given_networks]))
    assert list(merge_cidrs(given_networks)) == expected
