"""The loader: valid matrices load, and every user error names its file and line."""

from __future__ import annotations

import textwrap

import pytest
from netaddr import IPAddress, IPNetwork

from conftest import SEED
from fwmatrix.errors import MatrixError
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.matrix.model import Management, PortRange, ServicePart, Where

BASE = """\
fwmatrix: 1
name: test
zones:
  internet: any
  dmz: 172.16.10.0/24
  lan: 10.20.0.0/16
hosts:
  nginx: 172.16.10.10
  sipproxy: {ext: 172.16.10.21, int: 10.20.0.21}
  bal: 10.20.0.10
groups:
  web: [nginx]
services:
  https: tcp/443
  sip: [udp/5060, tcp/5060]
firewalls:
  edge:
    interfaces: {wan0: internet, dmz0: dmz, lan0: lan}
    public: 203.0.113.10
openings:
  - name: web
    from: internet
    to: edge.public
    service: https
    nat: nginx
  - name: web-to-bal
    from: web
    to: bal
    service: tcp/80
"""


def test_seed_matrix_loads_every_row_of_the_source_document() -> None:
    m = load_matrix(str(SEED))
    assert m.name == "contact-highway-7"
    assert [o.name for o in m.openings] == [
        "operator-https", "operator-sip", "operator-rtp", "nginx-to-bal",
        "sipproxy-to-cti1", "rtpproxy-to-msa", "cti-to-sipproxy", "msa-to-rtpproxy",
    ]
    assert m.services["sip-and-tls"].parts == (
        ServicePart("udp", PortRange(5060, 5060)), ServicePart("tcp", PortRange(5060, 5060)), ServicePart("tcp", PortRange(5061, 5061)),
    )
    assert m.hosts["sipproxy"].addresses == {"ext": (IPAddress("172.16.10.21"),), "int": (IPAddress("172.16.20.21"),)}
    assert m.firewalls["edge"].public == {"public": IPAddress("203.0.113.10")}
    assert m.firewalls["edge"].interfaces == {"wan0": "internet", "dmz0": "dmz-ext", "dmz1": "dmz-int", "lan0": "lan"}
    assert m.openings[0].nat is not None and m.openings[0].nat.target == "nginx"
    assert m.openings[0].note.startswith("NAT verso NGINX")
    assert m.zones["internet"].is_any
    assert m.zones["lan"].networks == (IPNetwork("10.20.0.0/16"),)
    assert len(m.content_hash) == 64


def test_base_is_valid(write_matrix) -> None:
    m = load_matrix(write_matrix(BASE))
    assert len(m.openings) == 2


def test_one_host_two_roles(write_matrix) -> None:
    text = BASE.replace(
        "  sipproxy: {ext: 172.16.10.21, int: 10.20.0.21}",
        "  proxy:\n    addresses: {ext: 172.16.10.21, int: 10.20.0.21}\n    roles: [sipproxy, rtpproxy]",
    ) + "  - {from: rtpproxy.int, to: bal, service: udp/4000-9999}\n"
    m = load_matrix(write_matrix(text))
    assert m.roles == {"sipproxy": "proxy", "rtpproxy": "proxy"}


def _bad(text: str) -> str:
    return textwrap.dedent(text)


# (what, matrix text, expected line, words the message must contain)
BAD_INPUTS = [
    ("empty file", "", 1, "empty"),
    ("only a comment", "# nothing\n", 1, "empty"),
    ("yaml syntax", BASE.replace("  bal: 10.20.0.10", "  bal: [10.20.0.10"), 11, "YAML syntax error"),
    ("top level is a list", "- a\n- b\n", 1, "must be a mapping"),
    ("unknown top key", BASE + "zonez: {}\n", 30, "unknown key 'zonez'"),
    ("wrong version", BASE.replace("fwmatrix: 1", "fwmatrix: 9"), 1, "version 9"),
    ("missing openings", BASE[: BASE.index("openings:")], 1, "no 'openings'"),
    ("unknown name with hint", BASE.replace("to: bal", "to: bla"), 28, "unknown name 'bla' (did you mean"),
    ("unknown service", BASE.replace("service: https", "service: htps"), 24, "unknown service 'htps' (did you mean 'https'?)"),
    ("duplicate host key", BASE.replace("  bal: 10.20.0.10", "  bal: 10.20.0.10\n  bal: 10.20.0.11"), 11, "duplicate name 'bal'"),
    ("name used twice across kinds", BASE.replace("  web: [nginx]", "  bal: [nginx]"), 12, "duplicate name 'bal': already a host on line 10"),
    ("duplicate opening name", BASE.replace("name: web-to-bal", "name: web"), 26, "duplicate opening name 'web'"),
    ("bad CIDR", BASE.replace("172.16.10.0/24", "172.16.10.0/33"), 5, "not a valid CIDR"),
    ("host bits set", BASE.replace("172.16.10.0/24", "172.16.10.1/24"), 5, "did you mean 172.16.10.0/24"),
    ("bad address", BASE.replace("nginx: 172.16.10.10", "nginx: 172.16.10.300"), 8, "not an IP address"),
    ("port zero", BASE.replace("service: tcp/80", "service: tcp/0"), 29, "port 0 is out of range"),
    ("port too big", BASE.replace("https: tcp/443", "https: tcp/70000"), 14, "port 70000 is out of range"),
    ("reversed range", BASE.replace("https: tcp/443", "https: udp/30000-10000"), 14, "reversed"),
    ("not a service", BASE.replace("https: tcp/443", "https: http/443"), 14, "is not a service"),
    ("nat to a zone", BASE.replace("nat: nginx", "nat: dmz"), 25, "is a zone, not a host"),
    ("nat to a group", BASE.replace("nat: nginx", "nat: web"), 25, "is a group, not a host"),
    ("nat to a literal", BASE.replace("nat: nginx", "nat: 172.16.10.10"), 25, "not a host"),
    ("nat not to a public address", BASE.replace("to: edge.public", "to: nginx"), 23, "not a public address of a firewall"),
    ("public address without nat", BASE.replace("    nat: nginx\n", ""), 23, "has no 'nat'"),
    ("host with named addresses used bare", BASE.replace("to: bal", "to: sipproxy"), 28, "name one of sipproxy.ext, sipproxy.int"),
    ("unknown address name", BASE.replace("to: bal", "to: sipproxy.inner"), 28, "no address named 'inner'"),
    ("wrong type for from", BASE.replace("from: web\n", "from: {a: 1}\n"), 27, "must be a string"),
    ("wrong type for zones", BASE.replace("zones:\n  internet: any\n  dmz: 172.16.10.0/24\n  lan: 10.20.0.0/16\n", "zones: [a, b]\n"), 3, "'zones' must be a mapping"),
    ("number for a port", BASE.replace("nat: nginx", "nat: {to: nginx, port: eighty}"), 25, "whole number"),
    ("nat port on several ports", BASE.replace("service: https\n    nat: nginx", "service: [https, tcp/80]\n    nat: {to: nginx, port: 8443}"), 25, "has ports 80, 443"),
    ("nat port out of range", BASE.replace("nat: nginx", "nat: {to: nginx, port: 65536}"), 25, "out of range"),
    ("unknown zone of interface", BASE.replace("dmz0: dmz,", "dmz0: dmzz,"), 18, "unknown zone 'dmzz' (did you mean 'dmz'?)"),
    ("injection in a name", BASE.replace("name: web-to-bal", 'name: "x\\" accept; #"'), 26, "not a valid name"),
    ("injection in an interface", BASE.replace("lan0: lan", '"lan0\\" accept": lan'), 18, "not a valid name"),
    ("interface name too long", BASE.replace("lan0: lan", "averyveryverylongifname: lan"), 18, "not a valid name"),
    ("two any zones", BASE.replace("  lan: 10.20.0.0/16", "  lan: any"), 6, "only one zone may cover every address"),
    ("anchors", BASE.replace("  https: tcp/443", "  https: &p tcp/443\n  other: *p"), 14, "aliases"),
    ("group cycle", BASE.replace("  web: [nginx]", "  web: [nginx, web2]\n  web2: [web]"), 12, "contains itself"),
    ("mixed families", BASE.replace("to: bal", "to: 2001:db8::1"), 28, "no address family in common"),
    ("one interface", BASE.replace("{wan0: internet, dmz0: dmz, lan0: lan}", "{wan0: internet}"), 18, "at least two interfaces"),
    ("opening without service", BASE.replace("    service: tcp/80\n", ""), 26, "exactly one of 'service' or 'services'"),
    ("icmp with port", BASE.replace("service: tcp/80", "service: icmp/8"), 29, "has no ports"),
    ("not utf-8", None, 2, "not UTF-8"),
]


@pytest.mark.parametrize(("what", "text", "line", "words"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_names_file_and_line(write_matrix, tmp_path, what: str, text: str | None, line: int, words: str) -> None:
    if text is None:
        path = tmp_path / "bad.yaml"
        path.write_bytes(b"fwmatrix: 1\nname: \xff\xfe\n")
        path = str(path)
    else:
        path = write_matrix(text)
    with pytest.raises(MatrixError) as caught:
        load_matrix(path)
    err = caught.value
    assert words in err.message, str(err)
    assert err.file == path
    assert err.line == line, f"{what}: expected line {line}, got {err}"
    assert str(err).startswith(f"{path}:{line}: ")
    assert "\n" not in str(err)


def test_missing_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(MatrixError, match="cannot read"):
        load_matrix(str(tmp_path / "nope.yaml"))


def test_billion_laughs_is_refused_quickly(write_matrix) -> None:
    lines = ["fwmatrix: 1", "name: lol", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        prev = f"*a{i-1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    with pytest.raises(MatrixError):
        load_matrix(write_matrix("\n".join(lines) + "\n"))


def test_huge_file_is_refused_before_reading(tmp_path, monkeypatch) -> None:
    import fwmatrix.matrix.yamlnodes as yamlnodes

    monkeypatch.setattr(yamlnodes, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.yaml"
    path.write_text(BASE + "#" * 2000 + "\n")
    with pytest.raises(MatrixError, match="more than the 1000"):
        load_matrix(str(path))


def test_group_member_lines_and_note(write_matrix) -> None:
    text = BASE.replace("  web: [nginx]", "  web:\n    members: [nginx, bal]\n    note: the web tier")
    group = load_matrix(write_matrix(text)).groups["web"]
    assert group.note == "the web tier"
    assert group.member_lines == (13, 13)
    bad = BASE.replace("  web: [nginx]", "  web:\n    members:\n      - nginx\n      - nosuch\n    note: x")
    with pytest.raises(MatrixError) as caught:
        load_matrix(write_matrix(bad))
    assert caught.value.line == 15 and "nosuch" in caught.value.message


# -- management: how administrators reach a firewall itself --------------------------------------

PUBLIC_LINE = "    public: 203.0.113.10\n"  # line 19 of BASE: `management` goes right after it


def _with_management(management: str, text: str = BASE) -> str:
    return text.replace(PUBLIC_LINE, PUBLIC_LINE + textwrap.indent(textwrap.dedent(management), "    "))


def test_management_accesses_load_with_their_lines(write_matrix) -> None:
    text = _with_management("""\
        management:
          - from: lan
            service: [tcp/22, https]
            note: the admins' desks
          - from: [internet]
            to: edge.public
            services: tcp/22
        """)
    m = load_matrix(write_matrix(text))
    first, second = m.firewalls["edge"].management
    assert first == Management(1, ("lan",), (), ("tcp/22", "https"), "the admins' desks", Where(m.file, 21))
    assert first.field_lines == {"from": 21, "service": 22, "note": 23}
    assert second == Management(2, ("internet",), ("edge.public",), ("tcp/22",), "", Where(m.file, 24))
    assert second.field_lines == {"from": 24, "to": 25, "service": 26}
    assert second.label("edge") == "internet → edge.public tcp/22" and first.label("edge") == "lan → edge tcp/22, https"
    assert [o.name for o in m.openings] == ["web", "web-to-bal"]
    assert load_matrix(write_matrix(BASE, "plain.yaml")).firewalls["edge"].management == ()


def test_management_in_a_flow_mapping(write_matrix) -> None:
    text = BASE.replace("  edge:\n    interfaces: {wan0: internet, dmz0: dmz, lan0: lan}\n" + PUBLIC_LINE,
                        "  edge: {management: [{from: bal, service: tcp/22}], interfaces: {wan0: internet, dmz0: dmz, lan0: lan}, public: 203.0.113.10}\n")
    (access,) = load_matrix(write_matrix(text)).firewalls["edge"].management
    assert (access.sources, access.services, access.where.line) == (("bal",), ("tcp/22",), 17)


ISLAND = BASE.replace("  lan: 10.20.0.0/16\n", "  lan: 10.20.0.0/16\n  island: 192.168.99.0/24\n")  # no firewall faces it
CORE = BASE.replace("openings:\n", "  core:\n    interfaces: {lan0: lan, dmz0: dmz}\n    public: 198.51.100.1\nopenings:\n")

# (what, management (under the firewall `edge`, line 20 on), expected line, the whole message); BASE unless a text is given
BAD_MANAGEMENT = [
    ("not a list", "management: {from: lan, service: tcp/22}\n", 20,
     "'management' of firewall 'edge' must be a list, not a mapping"),
    ("empty list", "management: []\n", 20,
     "'management' of firewall 'edge' is an empty list: list the accesses ({from: ..., service: ...}), or leave the key out"),
    ("item not a mapping", "management: [lan]\n", 20,
     "management access #1 of firewall 'edge' must be a mapping, not a string"),
    ("unknown key", "management:\n  - {from: lan, service: tcp/22}\n  - {from: lan, servce: tcp/22}\n", 22,
     "unknown key 'servce' in management access #2 of firewall 'edge' (did you mean 'service'?); expected one of: from, to, service, services, note"),
    ("missing from", "management:\n  - to: 10.20.0.1\n    service: tcp/22\n", 21,
     "management access #1 of firewall 'edge' has no 'from'"),
    ("both service and services", "management: [{from: lan, service: tcp/22, services: [tcp/22]}]\n", 20,
     "management access #1 of firewall 'edge' needs exactly one of 'service' or 'services'"),
    ("neither service nor services", "management:\n  - from: lan\n", 21,
     "management access #1 of firewall 'edge' needs exactly one of 'service' or 'services'"),
    ("unknown name in from", "management:\n  - service: tcp/22\n    from: [lan, sipprox]\n", 22,
     "unknown name 'sipprox' (did you mean 'sipproxy'?)"),
    ("unknown name in to", "management:\n  - from: lan\n    service: tcp/22\n    to: ngnix\n", 23,
     "unknown name 'ngnix' (did you mean 'nginx'?)"),
    ("bad service literal", "management:\n  - from: lan\n    service: tcp/70000\n", 22,
     "bad service 'tcp/70000': port 70000 is out of range (1-65535)"),
    ("unknown service", "management:\n  - from: lan\n    services: [https, htps]\n", 22,
     "unknown service 'htps' (did you mean 'https'?); a literal looks like tcp/443 or udp/10000-30000"),
    ("a mapping for from", "management:\n  - from: {a: 1}\n    service: tcp/22\n", 21,
     "'from' must be a string, not a mapping"),
    ("no address family in common", "management:\n  - from: lan\n    service: tcp/22\n    to: 2001:db8::1\n", 23,
     "management access #1 of firewall 'edge' goes from IPv4 sources to IPv6 destinations: no address family in common"),
    ("public address of another firewall", ("management:\n  - from: lan\n    service: tcp/22\n    to: core.public\n", CORE), 23,
     "management access #1 of firewall 'edge' goes to 'core.public', a public address of firewall 'core', not of 'edge'"),
    ("zone with no path to the firewall", ("management:\n  - from: [lan, island]\n    service: tcp/22\n", ISLAND), 22,
     "management access #1 of firewall 'edge': zone 'island' (of 'island') has no path to the firewall"),
]


@pytest.mark.parametrize(("what", "management", "line", "message"), BAD_MANAGEMENT, ids=[b[0] for b in BAD_MANAGEMENT])
def test_bad_management_names_file_and_line(write_matrix, what: str, management: str | tuple[str, str], line: int, message: str) -> None:
    key, text = management if isinstance(management, tuple) else (management, BASE)
    path = write_matrix(_with_management(key, text))
    with pytest.raises(MatrixError) as caught:
        load_matrix(path)
    assert str(caught.value) == f"{path}:{line}: {message}", what


def test_nat_port_on_one_port_of_several_protocols_loads(write_matrix) -> None:
    """udp/5060 and tcp/5060 share their port: one NAT port serves both."""
    m = load_matrix(write_matrix(BASE.replace("service: https\n    nat: nginx", "service: sip\n    nat: {to: nginx, port: 5070}")))
    assert m.openings[0].nat is not None and m.openings[0].nat.port == 5070


ADDRESS_TEXTS = ["10.0.0.1", "2001:db8::1", "::", "::ffff:10.0.0.1", "0.0.0.0", "010.0.0.1", "10.0.0", "1", "2001:db8::g",
                 "fe80::1%eth0", "", " 10.0.0.1", "10.0.0.1/24", "2001:db8::/32", "x:y"]
NETWORK_TEXTS = ADDRESS_TEXTS + ["10.0.0.0/8", "10.0.0.0/255.0.0.0", "10.0.0.0/0.255.255.255", "10.0.0.0/33", "2001:db8::/129",
                                 "10.0.0.0/ffff::", "2001:db8::/64", "::/0", "10.0.0.0/", "10/8", "2001:db8::1/ff:ff"]


def _outcome(parse, text: str) -> tuple[str, object]:
    try:
        value = parse(text)
    except Exception as exc:  # noqa: BLE001 - the error is what is compared
        return type(exc).__name__, str(exc)
    return type(value).__name__, (value.version, str(value))


@pytest.mark.parametrize("text", ADDRESS_TEXTS)
def test_parse_address_is_netaddrs_parse(text: str) -> None:
    """The version told from a ':' gives what netaddr's own detection gives, error for error."""
    from fwmatrix.matrix.model import parse_address

    assert _outcome(parse_address, text) == _outcome(lambda t: IPAddress(t, flags=0), text)


@pytest.mark.parametrize("text", NETWORK_TEXTS)
def test_parse_network_is_netaddrs_parse(text: str) -> None:
    from fwmatrix.matrix.model import parse_network

    assert _outcome(parse_network, text) == _outcome(lambda t: IPNetwork(t, flags=0), text)


def test_loading_leaves_no_reference_cycles(write_matrix) -> None:
    """A loaded matrix's YAML tree is freed by reference counting, not left to the cyclic
    collector (commands pause it: see fwmatrix/gcpause.py). IPv6 addresses and networks,
    literals, groups and interfaces (checked against pf's names) all go through the loader."""
    import gc

    from fwmatrix.gcpause import gc_paused

    text = BASE.replace("  bal: 10.20.0.10", "  bal: [10.20.0.10, 2001:db8::10]").replace(
        "  lan: 10.20.0.0/16", "  lan: [10.20.0.0/16, 2001:db8::/64]") + "  - {from: lan, to: 2001:db8::10, service: tcp/22}\n"
    path = write_matrix(text)
    load_matrix(path)  # imports what loading imports: module-level cycles are not the loader's
    with gc_paused():
        gc.collect()
        matrix = load_matrix(path)
        assert gc.collect() == 0
    assert matrix.hosts["bal"].addresses[""][1] == IPAddress("2001:db8::10")
