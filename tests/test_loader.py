"""The loader: valid matrices load, and every user error names its file and line."""

from __future__ import annotations

import textwrap

import pytest
from netaddr import IPAddress, IPNetwork

from conftest import SEED
from fwmatrix.errors import MatrixError
from fwmatrix.loader import load_matrix
from fwmatrix.model import PortRange, ServicePart

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
    import fwmatrix.yamlnodes as yamlnodes

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
