"""Placement: every opening lands on every firewall its path crosses, with the right interfaces."""

from __future__ import annotations

from hypothesis import given, settings
from netaddr import IPAddress, IPNetwork

import pytest

from conftest import ROOT, SEED
from fwmatrix.errors import MatrixError
from fwmatrix.compile.intent import build_intent
from fwmatrix.matrix.loader import load_matrix
from strategies import matrix_yaml

TWO = ROOT / "examples" / "two-firewalls" / "matrix.yaml"


def placements(path) -> dict[str, set[tuple[str, str, str, int]]]:
    intent = build_intent(load_matrix(str(path)))
    return {fw: {(f.opening.name, f.in_iface, f.out_iface, f.family) for f in fi.flows} for fw, fi in intent.firewalls.items()}


def test_seed_placement_follows_the_source_document() -> None:
    assert placements(SEED)["edge"] == {
        ("operator-https", "wan0", "dmz0", 4),
        ("operator-sip", "wan0", "dmz0", 4),
        ("operator-rtp", "wan0", "dmz0", 4),
        ("nginx-to-bal", "dmz0", "lan0", 4),
        ("sipproxy-to-cti1", "dmz1", "lan0", 4),
        ("rtpproxy-to-msa", "dmz1", "lan0", 4),
        ("cti-to-sipproxy", "lan0", "dmz1", 4),
        ("msa-to-rtpproxy", "lan0", "dmz1", 4),
    }


def test_seed_dnat_goes_to_the_ext_addresses() -> None:
    edge = build_intent(load_matrix(str(SEED))).firewalls["edge"]
    got = {(d.opening.name, str(d.public), str(d.target), d.in_iface) for d in edge.dnats}
    assert got == {
        ("operator-https", "203.0.113.10", "172.16.10.10", "wan0"),
        ("operator-sip", "203.0.113.10", "172.16.10.21", "wan0"),
        ("operator-rtp", "203.0.113.10", "172.16.10.22", "wan0"),
    }
    # after the DNAT, the forward path sees the EXT address, not the public one
    flows = {f.opening.name: f for f in edge.flows}
    assert flows["operator-sip"].destinations == (IPNetwork("172.16.10.21/32"),)


def test_two_firewalls_in_a_row() -> None:
    got = placements(TWO)
    # the LAN is behind the internal firewall: web-to-app crosses both
    assert ("web-to-app", "dmz0", "transit0", 4) in got["perimeter"]
    assert ("web-to-app", "dmz6", "transit0", 6) in got["perimeter"]
    assert ("web-to-app", "outside0", "lan0", 4) in got["internal"]
    assert ("web-to-app", "outside0", "lan0", 6) in got["internal"]
    # the public web site is only on the perimeter
    assert ("www", "wan0", "dmz0", 4) in got["perimeter"]
    assert not any(name == "www" for name, *_ in got["internal"])
    # partners reach the API through the internal firewall only
    assert ("partner-api", "partner0", "lan0", 4) in got["internal"]
    assert not any(name == "partner-api" for name, *_ in got["perimeter"])
    # app-to-db stays inside the LAN: on no firewall, with a warning
    assert not any(name == "app-to-db" for fw in got.values() for name, *_ in fw)
    intent = build_intent(load_matrix(str(TWO)))
    assert any("app-to-db" in w.message for w in intent.warnings)


def test_dnat_target_behind_a_second_firewall(write_matrix) -> None:
    text = TWO.read_text() + "  - {name: api, from: internet, to: perimeter.www, service: tcp/8443, nat: {to: app, port: 443}}\n"
    intent = build_intent(load_matrix(write_matrix(text)))
    perimeter, internal = intent.firewalls["perimeter"], intent.firewalls["internal"]
    (dnat,) = [d for d in perimeter.dnats if d.opening.name == "api"]
    assert (str(dnat.target), dnat.target_port, str(dnat.public)) == ("10.30.1.10", 443, "203.0.113.80")
    (on_perimeter,) = [f for f in perimeter.flows if f.opening.name == "api"]
    (on_internal,) = [f for f in internal.flows if f.opening.name == "api"]
    assert (on_perimeter.in_iface, on_perimeter.out_iface) == ("wan0", "transit0")
    assert (on_internal.in_iface, on_internal.out_iface) == ("outside0", "lan0")
    # both see the translated destination and port
    for flow in (on_perimeter, on_internal):
        assert flow.destinations == (IPNetwork("10.30.1.10/32"),)
        assert [str(p) for p in flow.parts] == ["tcp/443"]


def test_dnat_before_the_owner_sees_the_public_address(write_matrix) -> None:
    # a client in the LAN reaches the public address through the internal firewall first
    text = TWO.read_text() + "  - {name: hairpin, from: admin-ws, to: perimeter.www, service: https, nat: web}\n"
    intent = build_intent(load_matrix(write_matrix(text)))
    (inner,) = [f for f in intent.firewalls["internal"].flows if f.opening.name == "hairpin"]
    assert inner.destinations == (IPNetwork("203.0.113.80/32"),)
    (outer,) = [f for f in intent.firewalls["perimeter"].flows if f.opening.name == "hairpin"]
    assert (outer.in_iface, outer.out_iface, outer.destinations) == ("transit0", "dmz0", (IPNetwork("192.0.2.10/32"),))


def test_network_straddling_zones_is_split(write_matrix) -> None:
    text = """\
fwmatrix: 1
name: split
zones: {internet: any, lan: 10.20.0.0/16}
firewalls:
  fw: {interfaces: {wan0: internet, lan0: lan}}
openings:
  - {from: 10.0.0.0/8, to: 192.0.2.1, service: tcp/22}
"""
    fw = build_intent(load_matrix(write_matrix(text))).firewalls["fw"]
    (flow,) = fw.flows
    assert (flow.in_iface, flow.out_iface) == ("lan0", "wan0")
    assert flow.sources == (IPNetwork("10.20.0.0/16"),)
    # the rest of 10/8 is in the internet zone, as is the destination: no firewall crossed


def test_address_in_no_zone_is_an_error(write_matrix) -> None:
    text = """\
fwmatrix: 1
name: nozone
zones: {dmz: 172.16.0.0/16, lan: 10.20.0.0/16}
firewalls:
  fw: {interfaces: {dmz0: dmz, lan0: lan}}
openings:
  - {from: 10.20.0.1, to: 192.0.2.1, service: tcp/22}
"""
    with pytest.raises(MatrixError, match="is in no zone") as caught:
        build_intent(load_matrix(write_matrix(text)))
    assert caught.value.line == 7


def test_unreachable_zone_is_an_error(write_matrix) -> None:
    text = """\
fwmatrix: 1
name: islands
zones: {a: 10.1.0.0/16, b: 10.2.0.0/16, c: 10.3.0.0/16}
firewalls:
  fw: {interfaces: {a0: a, b0: b}}
openings:
  - {from: 10.1.0.1, to: 10.3.0.1, service: tcp/22}
"""
    with pytest.raises(MatrixError, match="no firewall joins zone 'a' to zone 'c'"):
        build_intent(load_matrix(write_matrix(text)))


@settings(max_examples=60, deadline=None)
@given(text=matrix_yaml())
def test_generated_flows_stay_inside_their_zones(tmp_path_factory, text: str) -> None:
    """Every flow enters by an interface facing a zone that holds its sources (or the
    path towards them) and leaves towards its destinations; never in and out the same way."""
    path = tmp_path_factory.mktemp("m") / "m.yaml"
    path.write_text(text)
    matrix = load_matrix(str(path))
    intent = build_intent(matrix)
    for name, fi in intent.firewalls.items():
        ifaces = matrix.firewalls[name].interfaces
        for flow in fi.flows:
            assert flow.in_iface in ifaces and flow.out_iface in ifaces
            assert ifaces[flow.in_iface] != ifaces[flow.out_iface]
            assert all(n.version == flow.family for n in flow.sources + flow.destinations)
        for dnat in fi.dnats:
            assert dnat.public in {IPAddress(a) for a in matrix.firewalls[name].public.values()}


@pytest.mark.parametrize("name", ["matrices/contact-highway-7.yaml", "examples/perimeter/matrix.yaml"])
def test_placing_leaves_no_reference_cycles(name: str) -> None:
    """The intent is freed by reference counting, not left to the cyclic collector, which
    commands pause (fwmatrix/gcpause.py) and which then spent up to 0.15 s at exit: no cache
    of a bound method, no recursive closure."""
    import gc

    from fwmatrix.gcpause import gc_paused

    matrix = load_matrix(ROOT / name)
    with gc_paused():
        gc.collect()
        intent = build_intent(matrix)
        flows = sum(len(fw.flows) for fw in intent.firewalls.values())
        del intent
        assert gc.collect() == 0
    assert flows > 0
