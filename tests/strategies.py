"""Hypothesis strategies: random but valid matrices, as YAML text.

A matrix has an `internet` zone (any), a few inside zones (IPv4, some with an
IPv6 network too), one or two firewalls in a row, hosts inside the zones,
groups, named and literal services, and openings between them, some of them
port forwards of the first firewall's public addresses (each forward gets its
own public port, so two forwards never conflict).
"""

from __future__ import annotations

import yaml
from hypothesis import strategies as st

PROTOS = ("tcp", "udp", "sctp")


@st.composite
def service_literal(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["port", "range", "icmp"]))
    if kind == "icmp":
        return "icmp"
    proto = draw(st.sampled_from(PROTOS))
    low = draw(st.integers(1, 65000))
    if kind == "port":
        return f"{proto}/{low}"
    return f"{proto}/{low}-{draw(st.integers(low, min(65535, low + 5000)))}"


@st.composite
def matrix_yaml(draw: st.DrawFn, max_openings: int = 12) -> str:
    n_zones = draw(st.integers(2, 4))
    two_firewalls = draw(st.booleans())
    zones: dict[str, object] = {"internet": "any"}
    zone_names = []
    for z in range(n_zones):
        name = f"z{z}"
        nets = [f"10.{z}.0.0/16"]
        if draw(st.booleans()):
            nets.append(f"fd00:{z}::/48")
        zones[name] = nets
        zone_names.append(name)

    hosts: dict[str, object] = {}
    host_refs: list[tuple[str, str]] = []  # (reference, zone)
    for h in range(draw(st.integers(2, 8))):
        zone = draw(st.integers(0, n_zones - 1))
        addr4 = f"10.{zone}.{draw(st.integers(0, 255))}.{h + 1}"
        if draw(st.integers(0, 3)) == 0:
            other = draw(st.integers(0, n_zones - 1))
            hosts[f"h{h}"] = {"ext": addr4, "int": f"10.{other}.200.{h + 1}"}
            host_refs += [(f"h{h}.ext", f"z{zone}"), (f"h{h}.int", f"z{other}")]
        else:
            v6 = isinstance(zones[f"z{zone}"], list) and len(zones[f"z{zone}"]) == 2 and draw(st.booleans())  # type: ignore[arg-type]
            hosts[f"h{h}"] = [addr4, f"fd00:{zone}::{h + 1:x}"] if v6 else addr4
            host_refs.append((f"h{h}", f"z{zone}"))

    groups = {}
    if len(host_refs) >= 2 and draw(st.booleans()):
        members = draw(st.lists(st.sampled_from([r for r, _ in host_refs]), min_size=1, max_size=3, unique=True))
        groups["g0"] = members

    services = {"svc0": draw(st.lists(service_literal(), min_size=1, max_size=3, unique=True))}

    # firewall fw0 joins the internet and the first zones; with two
    # firewalls, fw1 sits behind z0 and joins the rest.
    if two_firewalls and n_zones >= 3:
        fw0_zones = ["internet", "z0", "z1"]
        fw1_zones = ["z0"] + zone_names[2:]
        firewalls = {
            "fw0": {"interfaces": {f"if{i}": z for i, z in enumerate(fw0_zones)}, "public": {"pub": "203.0.113.1", "pub6": "2001:db8::1"}},
            "fw1": {"interfaces": {f"in{i}": z for i, z in enumerate(fw1_zones)}},
        }
    else:
        firewalls = {"fw0": {"interfaces": {"wan0": "internet", **{f"if{i}": z for i, z in enumerate(zone_names)}}, "public": {"pub": "203.0.113.1", "pub6": "2001:db8::1"}}}

    refs = [r for r, _ in host_refs] + zone_names + ["internet"] + list(groups) + ["10.0.5.0/24"]
    openings = []
    next_public_port = 1000
    for i in range(draw(st.integers(1, max_openings))):
        if draw(st.integers(0, 4)) == 0:
            target = draw(st.sampled_from([r for r, _ in host_refs]))
            n_ports = draw(st.integers(1, 3))
            ports = [f"{draw(st.sampled_from(('tcp', 'udp')))}/{next_public_port + k}" for k in range(n_ports)]
            next_public_port += n_ports
            openings.append({"name": f"o{i}", "from": "internet", "to": "fw0.pub", "service": ports, "nat": target})
            continue
        src = draw(st.sampled_from(refs))
        dst = draw(st.sampled_from(refs))
        service = draw(st.one_of(st.just("svc0"), service_literal()))
        openings.append({"name": f"o{i}", "from": src, "to": dst, "service": service, "note": f"random row {i}"})

    doc = {
        "fwmatrix": 1,
        "name": "generated",
        "zones": zones,
        "hosts": hosts,
        "groups": groups,
        "services": services,
        "firewalls": firewalls,
        "openings": openings,
    }
    return yaml.safe_dump(doc, sort_keys=False)
