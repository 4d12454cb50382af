"""Loading a matrix file: YAML nodes -> validated `Matrix`.

Every user error ends in a `MatrixError` naming file and line; nothing here
prints or exits. References between names are checked by `resolve` once the
whole file is read, so a name may be used before it is defined.
"""

from __future__ import annotations

import hashlib
from datetime import date
import re
from typing import Callable, Iterable

import yaml
from netaddr import AddrFormatError, IPAddress, IPNetwork

from fwmatrix.errors import MatrixError, did_you_mean
from fwmatrix.compile.intent import check_management
from fwmatrix.matrix.model import (
    Metadata,
    PROTOCOLS,
    Firewall,
    Group,
    Host,
    Management,
    Matrix,
    Nat,
    Opening,
    Service,
    ServicePart,
    SourceNat,
    Where,
    Zone,
    parse_address,
    parse_network,
    parse_service_literal,
)
from fwmatrix.matrix.accepts import parse_accepts
from fwmatrix.matrix.includes import Part, included_parts
from fwmatrix.matrix.resolve import Resolver
from fwmatrix.matrix.yamlnodes import MAX_FILE_BYTES, Source, compose, kind_of, line_of, read_source
from fwmatrix.targets import interface_name_refusal

FORMAT_VERSION = 1

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,47}\Z")
# Linux interface names (at most 15 bytes; no quotes, spaces or slashes) that pf
# reads as names too: a leading digit reads as a number. pf's keywords: targets.
IFACE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,14}\Z")
# Words a host's address may not be named, because they mean something in the long form.
HOST_KEYS = ("addresses", "roles", "note")
NOTE_MAX = 500

TOP_KEYS = ("fwmatrix", "name", "title", "include", "zones", "hosts", "groups", "services", "firewalls", "openings", "accept")
OPENING_KEYS = ("name", "from", "to", "service", "services", "nat", "snat", "log", "note", "owner", "ticket", "expires")
METADATA_KEYS = ("owner", "ticket", "expires")
FIREWALL_KEYS = ("interfaces", "public", "management", "log", "note")
MANAGEMENT_KEYS = ("from", "to", "service", "services", "note")


class _Reader:
    """Typed access to YAML nodes, raising errors with file:line."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, node: yaml.Node, message: str) -> MatrixError:
        return MatrixError(message, self.path, line_of(node))

    def where(self, node: yaml.Node) -> Where:
        return Where(self.path, line_of(node))

    def mapping(self, node: yaml.Node, what: str, allowed: Iterable[str] | None = None) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """A mapping as {key: (key node, value node)}; refuses duplicate and unknown keys."""
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping, not {kind_of(node)}")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        allowed = tuple(allowed) if allowed is not None else None
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, f"a key in {what} must be a plain word, not {kind_of(key_node)}")
            key = str(key_node.value)
            if key in out:
                first = line_of(out[key][0])
                raise self.fail(key_node, f"duplicate name '{key}' in {what} (first defined on line {first})")
            if allowed is not None and key not in allowed:
                raise self.fail(key_node, f"unknown key '{key}' in {what}{did_you_mean(key, allowed)}; expected one of: {', '.join(allowed)}")
            out[key] = (key_node, value_node)
        return out

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list, not {kind_of(node)}")
        return list(node.value)

    def texts(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        """`scalars` without the nodes: the strings of an opening's from, to and service (three
        a row, 30,000 at 10,000 openings), each checked as `text` checks it."""
        if node.__class__ is yaml.ScalarNode and not node.tag.endswith(":null"):  # one, as most are
            return (str(node.value),)
        items = node.value if isinstance(node, yaml.SequenceNode) else (node,)
        if not items:
            raise self.fail(node, f"{what} is an empty list")
        for item in items:
            if item.__class__ is not yaml.ScalarNode or item.tag.endswith(":null"):
                self.text(item, what)  # raises its error
        return tuple([str(item.value) for item in items])

    def scalars(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node]]:
        """A string, or a list of strings, as [(text, node)]."""
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if isinstance(node, yaml.SequenceNode) and not items:
            raise self.fail(node, f"{what} is an empty list")
        return [(self.text(item, what), item) for item in items]

    def text(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag.endswith(":null"):
            raise self.fail(node, f"{what} must be a string, not {kind_of(node)}")
        return str(node.value)

    def integer(self, node: yaml.Node, what: str) -> int:
        if not isinstance(node, yaml.ScalarNode) or not re.fullmatch(r"[0-9]+", str(node.value)):
            raise self.fail(node, f"{what} must be a whole number, not {kind_of(node)} '{getattr(node, 'value', '')}'")
        return int(node.value)

    def flag(self, node: yaml.Node, what: str) -> bool:
        """`true` or `false` (YAML's booleans, as written: a quoted "true" is a string)."""
        if not isinstance(node, yaml.ScalarNode) or not node.tag.endswith(":bool"):
            raise self.fail(node, f"{what} must be true or false, not {kind_of(node)} '{getattr(node, 'value', '')}'")
        return str(node.value).lower() in ("true", "yes", "on")

    def note(self, node: yaml.Node | None) -> str:
        if node is None:
            return ""
        note = self.text(node, "a note")
        if len(note) > NOTE_MAX:
            raise self.fail(node, f"a note may have at most {NOTE_MAX} characters (this one has {len(note)})")
        return note

    def long_form(self, value: yaml.Node, what: str, key: str) -> tuple[yaml.Node, str]:
        """A value written short (`lan: 10.0.0.0/8`) or long (`lan: {networks: ..., note: ...}`):
        the value's node and the note."""
        if not isinstance(value, yaml.MappingNode):
            return value, ""
        fields = self.mapping(value, what, (key, "note"))
        if key not in fields:
            raise self.fail(value, f"{what} has no '{key}'")
        return fields[key][1], self.note(fields["note"][1]) if "note" in fields else ""

    def date(self, node: yaml.Node, what: str) -> date:
        try:
            return date.fromisoformat(self.text(node, what))
        except ValueError:
            raise self.fail(node, f"{what} must be a date written YYYY-MM-DD, not '{node.value}'") from None

    def metadata(self, fields: dict[str, tuple[yaml.Node, yaml.Node]], what: str) -> Metadata | None:
        """`owner`, `ticket` and `expires` of an opening or a group, when it has any."""
        if "owner" not in fields and "ticket" not in fields and "expires" not in fields:  # METADATA_KEYS, on every row
            return None
        owner = self.note(fields["owner"][1]) if "owner" in fields else ""
        ticket = self.note(fields["ticket"][1]) if "ticket" in fields else ""
        expires = self.date(fields["expires"][1], f"'expires' of {what}") if "expires" in fields else None
        return Metadata(owner, ticket, expires, line_of(fields["expires"][1]) if "expires" in fields else 0)

    def name(self, node: yaml.Node, what: str, pattern: re.Pattern[str] = NAME_RE) -> str:
        value = self.text(node, what)
        if not pattern.match(value):
            if pattern is IFACE_RE:
                rule = "1 to 15 letters, digits, '_', '.' or '-', starting with a letter"
            else:
                rule = "a letter, then up to 47 letters, digits, '_' or '-'"
            raise self.fail(node, f"{what} '{value}' is not a valid name: use {rule}")
        return value

    def address(self, node: yaml.Node, what: str) -> IPAddress:
        value = self.text(node, what)
        try:
            if "/" in value:
                raise AddrFormatError("a network, not one address")
            return parse_address(value)
        except (AddrFormatError, ValueError, TypeError) as exc:
            raise self.fail(node, f"{what} '{value}' is not an IP address ({exc})") from None

    def network(self, node: yaml.Node, what: str) -> IPNetwork:
        value = self.text(node, what)
        try:
            net = parse_network(value)
        except (AddrFormatError, ValueError, TypeError) as exc:
            raise self.fail(node, f"{what} '{value}' is not a valid CIDR network ({exc})") from None
        if net.ip != net.network:
            raise self.fail(node, f"{what} '{value}' has host bits set: did you mean {net.cidr}?")
        return net


def load_matrix(path: str) -> Matrix:
    return load_source(read_source(path))


def load_text(data: bytes, label: str, read: Callable[[str], Source] | None = None, path: str | None = None) -> Matrix:
    """A matrix from bytes that are not a file here (a git revision): errors name `label`.
    Its includes are read by `read` (e.g. from the same revision), relative to `path`."""
    if len(data) > MAX_FILE_BYTES:
        raise MatrixError(f"{len(data)} bytes, more than the {MAX_FILE_BYTES} a matrix may have", label)
    return load_source(Source(label, data), read, path)


def load_source(source: Source, read: Callable[[str], Source] | None = None, location: str | None = None) -> Matrix:
    """A matrix; `read` reads the files it includes (default: from disk), relative to
    `location` (default: the source's path)."""
    matrix = _read_matrix(source, read, location)  # its YAML nodes are freed by now, before the names are resolved
    Resolver(matrix).check_all()
    check_management(matrix)
    return matrix


def _read_matrix(source: Source, read: Callable[[str], Source] | None, location: str | None) -> Matrix:
    """The matrix as its files write it, each definition checked on its own (references are for `load_source`)."""
    path = source.path
    root = compose(source)
    reader = _Reader(path)
    top = reader.mapping(root, "the matrix", TOP_KEYS)

    def section(key: str, required: bool = True) -> yaml.Node | None:
        if key not in top:
            if required:
                raise MatrixError(f"the matrix has no '{key}' section", path, line_of(root))
            return None
        return top[key][1]

    version_node = section("fwmatrix")
    assert version_node is not None
    version = reader.integer(version_node, "'fwmatrix' (the format version)")
    if version != FORMAT_VERSION:
        raise reader.fail(version_node, f"format version {version} is not supported (this fwmatrix reads version {FORMAT_VERSION})")
    name_node = section("name")
    assert name_node is not None
    name = reader.name(name_node, "the matrix name")
    title_node = section("title", required=False)
    title = reader.note(title_node) if title_node is not None else name

    names: dict[str, tuple[str, Where]] = {}  # every defined name -> (kind, where)

    def claimer(part_reader: _Reader) -> Claim:
        def claim(name_: str, kind: str, node: yaml.Node) -> None:
            if name_ in names:
                other_kind, other = names[name_]
                at = f"line {other.line}" if other.file == part_reader.path else f"{other.file}:{other.line}"
                raise part_reader.fail(node, f"duplicate name '{name_}': already a {other_kind} on {at}")
            names[name_] = (kind, part_reader.where(node))

        return claim

    # the shared definitions of the included files first, then the matrix's own
    main = Part(reader, top, source.data)
    parts = included_parts(main, location or path, read or read_source, _Reader, FORMAT_VERSION) + [main]
    if not any("zones" in part.sections for part in parts):
        raise MatrixError("the matrix has no 'zones' section", path, line_of(root))
    zones, hosts, roles, groups, services = {}, {}, {}, {}, {}
    for part in parts:
        claim = claimer(part.reader)
        if "zones" in part.sections:
            zones.update(_load_zones(part.reader, part.section("zones"), claim, zones))
        part_hosts, part_roles = _load_hosts(part.reader, part.section("hosts"), claim)
        hosts.update(part_hosts)
        roles.update(part_roles)
        groups.update(_load_groups(part.reader, part.section("groups"), claim))
        services.update(_load_services(part.reader, part.section("services"), claim))
    claim = claimer(reader)
    firewalls = _load_firewalls(reader, section("firewalls"), claim, zones)
    openings = _load_openings(reader, section("openings"))

    matrix = Matrix(
        name=name,
        title=title,
        file=path,
        content_hash=hashlib.sha256(b"".join(part.data for part in ([main] + parts[:-1]))).hexdigest(),
        zones=zones,
        hosts=hosts,
        groups=groups,
        services=services,
        firewalls=firewalls,
        openings=openings,
        roles=roles,
        accepts=parse_accepts(reader, section("accept", required=False)),
    )
    return matrix


Claim = Callable[[str, str, yaml.Node], None]


def _entries(reader: _Reader, node: yaml.Node | None, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
        return []
    return [(key, key_node, value) for key, (key_node, value) in reader.mapping(node, what).items()]


def _load_zones(reader: _Reader, node: yaml.Node | None, claim: Claim, earlier: dict[str, Zone] | None = None) -> dict[str, Zone]:
    """The zones of one file (`earlier`: those of the files it comes after, for the one 'any')."""
    zones: dict[str, Zone] = {}
    any_zone: Zone | None = next((z for z in (earlier or {}).values() if z.is_any), None)
    entries = _entries(reader, node, "'zones'")
    if not entries:
        raise MatrixError("'zones' must define at least one zone", reader.path, line_of(node) if node else 1)
    for key, key_node, value in entries:
        name = reader.name(key_node, "zone name")
        claim(name, "zone", key_node)
        value, note = reader.long_form(value, f"zone '{name}'", "networks")
        items = reader.scalars(value, f"the networks of zone '{name}'")
        if any(text == "any" for text, _ in items):
            if len(items) != 1:
                raise reader.fail(value, f"zone '{name}': 'any' cannot be listed with other networks")
            if any_zone is not None:
                at = f"line {any_zone.where.line}" if any_zone.where.file == reader.path else str(any_zone.where)
                raise reader.fail(value, f"zone '{name}' is 'any', but zone '{any_zone.name}' ({at}) already is: only one zone may cover every address")
            zone = Zone(name, (), True, reader.where(key_node), note)
            any_zone = zone
        else:
            nets = tuple(reader.network(item, f"network of zone '{name}'") for _, item in items)
            zone = Zone(name, nets, False, reader.where(key_node), note)
        zones[name] = zone
    return zones


def _load_addresses(reader: _Reader, node: yaml.Node, what: str) -> tuple[IPAddress, ...]:
    items = reader.scalars(node, what)
    addrs = tuple(reader.address(item, what) for _, item in items)
    seen: set[IPAddress] = set()
    for addr, (_, item) in zip(addrs, items):
        if addr in seen:
            raise reader.fail(item, f"{what}: address {addr} is listed twice")
        seen.add(addr)
    return addrs


def _load_hosts(reader: _Reader, node: yaml.Node | None, claim: Claim) -> tuple[dict[str, Host], dict[str, str]]:
    hosts: dict[str, Host] = {}
    roles: dict[str, str] = {}
    for key, key_node, value in _entries(reader, node, "'hosts'"):
        name = reader.name(key_node, "host name")
        claim(name, "host", key_node)
        note = ""
        host_roles: list[str] = []
        if isinstance(value, yaml.MappingNode) and any(str(k.value) in HOST_KEYS for k, _ in value.value):
            fields = reader.mapping(value, f"host '{name}'", HOST_KEYS)
            if "addresses" not in fields:
                raise reader.fail(value, f"host '{name}' has no 'addresses'")
            note = reader.note(fields["note"][1]) if "note" in fields else ""
            if "roles" in fields:
                for _, role_node in reader.scalars(fields["roles"][1], f"the roles of host '{name}'"):
                    role = reader.name(role_node, "role name")
                    claim(role, f"role of host '{name}'", role_node)
                    host_roles.append(role)
                    roles[role] = name
            value = fields["addresses"][1]
        addresses: dict[str, tuple[IPAddress, ...]] = {}
        if isinstance(value, yaml.MappingNode):
            for addr_name, (addr_key, addr_value) in reader.mapping(value, f"the addresses of host '{name}'").items():
                reader.name(addr_key, f"address name of host '{name}'")
                addresses[addr_name] = _load_addresses(reader, addr_value, f"address '{name}.{addr_name}'")
            if not addresses:
                raise reader.fail(value, f"host '{name}' has no addresses")
        else:
            addresses[""] = _load_addresses(reader, value, f"address of host '{name}'")
        hosts[name] = Host(name, addresses, tuple(host_roles), reader.where(key_node), note)
    return hosts, roles


def _load_groups(reader: _Reader, node: yaml.Node | None, claim: Claim) -> dict[str, Group]:
    groups: dict[str, Group] = {}
    for key, key_node, value in _entries(reader, node, "'groups'"):
        name = reader.name(key_node, "group name")
        claim(name, "group", key_node)
        meta, note = None, ""
        if isinstance(value, yaml.MappingNode):  # the long form, with a note, owner, ticket, expires
            fields = reader.mapping(value, f"group '{name}'", ("members", "note") + METADATA_KEYS)
            if "members" not in fields:
                raise reader.fail(value, f"group '{name}' has no 'members'")
            meta = reader.metadata(fields, f"group '{name}'")
            note = reader.note(fields["note"][1]) if "note" in fields else ""
            value = fields["members"][1]
        members = reader.scalars(value, f"the members of group '{name}'")
        groups[name] = Group(
            name,
            tuple(text for text, _ in members),
            reader.where(key_node),
            member_lines=tuple(line_of(member) for _, member in members),
            note=note,
            meta=meta,
        )
    return groups


def _load_services(reader: _Reader, node: yaml.Node | None, claim: Claim) -> dict[str, Service]:
    services: dict[str, Service] = {}
    for key, key_node, value in _entries(reader, node, "'services'"):
        name = reader.name(key_node, "service name")
        if parse_service_literal_or_none(name) is not None:
            raise reader.fail(key_node, f"service name '{name}' reads as a protocol: pick another name")
        claim(name, "service", key_node)
        value, note = reader.long_form(value, f"service '{name}'", "ports")
        parts = tuple(_service_literal(reader, text, item) for text, item in reader.scalars(value, f"service '{name}'"))
        services[name] = Service(name, parts, reader.where(key_node), note)
    return services


def parse_service_literal_or_none(text: str) -> ServicePart | None:
    try:
        return parse_service_literal(text)
    except ValueError:
        return ServicePart("tcp")  # malformed, but still reads as a literal


def _service_literal(reader: _Reader, text: str, node: yaml.Node) -> ServicePart:
    try:
        part = parse_service_literal(text)
    except ValueError as exc:
        raise reader.fail(node, f"bad service {exc}") from None
    if part is None:
        raise reader.fail(node, f"'{text}' is not a service: write protocol/port or protocol/low-high, e.g. tcp/443 or udp/10000-30000 (protocols: {', '.join(PROTOCOLS)})")
    return part


def _load_firewalls(reader: _Reader, node: yaml.Node | None, claim: Claim, zones: dict[str, Zone]) -> dict[str, Firewall]:
    firewalls: dict[str, Firewall] = {}
    entries = _entries(reader, node, "'firewalls'")
    if not entries:
        raise MatrixError("'firewalls' must define at least one firewall", reader.path, line_of(node) if node else 1)
    for key, key_node, value in entries:
        name = reader.name(key_node, "firewall name")
        claim(name, "firewall", key_node)
        fields = reader.mapping(value, f"firewall '{name}'", FIREWALL_KEYS)
        if "interfaces" not in fields:
            raise reader.fail(value, f"firewall '{name}' has no 'interfaces'")
        interfaces: dict[str, str] = {}
        own: dict[str, tuple[IPAddress, ...]] = {}
        for iface, (iface_node, zone_node) in reader.mapping(fields["interfaces"][1], f"the interfaces of firewall '{name}'").items():
            reader.name(iface_node, "interface name", IFACE_RE)
            refusal = interface_name_refusal(iface)
            if refusal is not None:
                raise reader.fail(iface_node, f"interface name '{iface}' of firewall '{name}' cannot be written for every target ({refusal}): rename it")
            if isinstance(zone_node, yaml.MappingNode):  # long form: {zone: lan, address: 10.40.0.1}
                iface_fields = reader.mapping(zone_node, f"interface '{iface}' of firewall '{name}'", ("zone", "address"))
                if "zone" not in iface_fields:
                    raise reader.fail(zone_node, f"interface '{iface}' of firewall '{name}' has no 'zone'")
                if "address" in iface_fields:
                    own[iface] = _load_addresses(reader, iface_fields["address"][1], f"address of interface '{name}.{iface}'")
                zone_node = iface_fields["zone"][1]
            zone = reader.text(zone_node, f"the zone of interface '{iface}'")
            if zone not in zones:
                raise reader.fail(zone_node, f"interface '{iface}' of firewall '{name}': unknown zone '{zone}'{did_you_mean(zone, zones)}")
            interfaces[iface] = zone
        if len(interfaces) < 2:
            raise reader.fail(fields["interfaces"][1], f"firewall '{name}' needs at least two interfaces to forward anything")
        public: dict[str, IPAddress] = {}
        if "public" in fields:
            pub_node = fields["public"][1]
            if isinstance(pub_node, yaml.MappingNode):
                for pub_name, (pub_key, pub_value) in reader.mapping(pub_node, f"the public addresses of firewall '{name}'").items():
                    reader.name(pub_key, "public address name")
                    public[pub_name] = reader.address(pub_value, f"public address '{name}.{pub_name}'")
            else:
                public["public"] = reader.address(pub_node, f"public address of firewall '{name}'")
        for iface in own:
            if iface in public:
                raise reader.fail(fields["public"][1], f"firewall '{name}': '{name}.{iface}' would name both an interface and a public address: rename one")
        note = reader.note(fields["note"][1]) if "note" in fields else ""
        management = _load_management(reader, fields["management"][1], name) if "management" in fields else ()
        log = reader.flag(fields["log"][1], f"'log' of firewall '{name}'") if "log" in fields else False
        firewalls[name] = Firewall(name, interfaces, public, reader.where(key_node), note, management, own, log)
    seen_public: dict[IPAddress, str] = {}
    for fw in firewalls.values():
        for pub_name, addr in fw.public.items():
            if addr in seen_public:
                raise MatrixError(f"public address {addr} of '{fw.name}.{pub_name}' is also '{seen_public[addr]}'", fw.where.file, fw.where.line)
            seen_public[addr] = f"{fw.name}.{pub_name}"
    return firewalls


def _load_management(reader: _Reader, node: yaml.Node, firewall: str) -> tuple[Management, ...]:
    """A firewall's `management`: the accesses administrators have to the firewall itself.
    References are checked by `resolve` (names, services) and `intent` (the paths to the firewall)."""
    what = f"'management' of firewall '{firewall}'"
    items = reader.sequence(node, what)
    if not items:
        raise reader.fail(node, f"{what} is an empty list: list the accesses ({{from: ..., service: ...}}), or leave the key out")
    accesses: list[Management] = []
    for index, item in enumerate(items, start=1):
        access = f"management access #{index} of firewall '{firewall}'"
        fields = reader.mapping(item, access, MANAGEMENT_KEYS)
        if "from" not in fields:
            raise reader.fail(item, f"{access} has no 'from'")
        if ("service" in fields) == ("services" in fields):
            raise reader.fail(item, f"{access} needs exactly one of 'service' or 'services'")
        service_node = fields.get("service", fields.get("services"))[1]  # type: ignore[index]
        accesses.append(
            Management(
                index=index,
                sources=tuple(text for text, _ in reader.scalars(fields["from"][1], "'from'")),
                destinations=tuple(text for text, _ in reader.scalars(fields["to"][1], "'to'")) if "to" in fields else (),
                services=tuple(text for text, _ in reader.scalars(service_node, "'service'")),
                note=reader.note(fields["note"][1]) if "note" in fields else "",
                where=reader.where(item),
                field_lines={("service" if key == "services" else key): line_of(value) for key, (_, value) in fields.items()},
            )
        )
    return tuple(accesses)


def _load_openings(reader: _Reader, node: yaml.Node | None) -> tuple[Opening, ...]:
    assert node is not None
    items = reader.sequence(node, "'openings'")
    if not items:
        raise reader.fail(node, "'openings' is an empty list")
    openings: list[Opening] = []
    seen_names: dict[str, int] = {}
    path = reader.path
    texts = reader.texts
    for index, item in enumerate(items, start=1):
        fields, field_lines = _row_fields(reader, item, index)
        for required in ("from", "to"):
            if required not in fields:
                raise reader.fail(item, f"opening #{index} has no '{required}'")
        if ("service" in fields) == ("services" in fields):
            raise reader.fail(item, f"opening #{index} needs exactly one of 'service' or 'services'")
        name = reader.name(fields["name"][1], "opening name") if "name" in fields else f"row{index}"
        if name in seen_names:
            raise reader.fail(fields["name"][1], f"duplicate opening name '{name}' (first used by opening #{seen_names[name]})")
        seen_names[name] = index
        service_node = fields["service"][1] if "service" in fields else fields["services"][1]
        nat = _load_nat(reader, fields["nat"][1]) if "nat" in fields else None
        snat = SourceNat(reader.text(fields["snat"][1], "'snat'"), reader.where(fields["snat"][1])) if "snat" in fields else None
        openings.append(
            Opening(
                index,
                name,
                texts(fields["from"][1], "'from'"),
                texts(fields["to"][1], "'to'"),
                texts(service_node, "'service'"),
                nat,
                reader.note(fields["note"][1]) if "note" in fields else "",
                Where(path, item.start_mark.line + 1),
                field_lines,
                snat,
                # METADATA_KEYS, asked here before the description is written: most rows have none
                reader.metadata(fields, f"opening '{name}'") if "owner" in fields or "ticket" in fields or "expires" in fields else None,
                reader.flag(fields["log"][1], f"'log' of opening #{index}") if "log" in fields else False,
            )
        )
    return tuple(openings)


_OPENING_KEY_SET = frozenset(OPENING_KEYS)


def _row_fields(reader: _Reader, item: yaml.Node, index: int) -> tuple[dict[str, tuple[yaml.Node, yaml.Node]], dict[str, int]]:
    """`reader.mapping(item, "opening #INDEX", OPENING_KEYS)`, written out for the rows that are
    right (10,000 at 10,000 openings), and the line of each field's value (Opening.field_lines);
    any other row goes to `mapping`, for its error."""
    fields: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    lines: dict[str, int] = {}
    if item.__class__ is yaml.MappingNode:
        for pair in item.value:
            key_node = pair[0]
            if key_node.__class__ is not yaml.ScalarNode:
                break
            key = key_node.value
            if key in fields or key not in _OPENING_KEY_SET:
                break
            fields[key] = pair
            lines["service" if key == "services" else key] = pair[1].start_mark.line + 1
        else:
            return fields, lines
    fields = reader.mapping(item, f"opening #{index}", OPENING_KEYS)
    return fields, {("service" if key == "services" else key): value.start_mark.line + 1 for key, (_, value) in fields.items()}


def _load_nat(reader: _Reader, node: yaml.Node) -> Nat:
    if isinstance(node, yaml.MappingNode):
        fields = reader.mapping(node, "'nat'", ("to", "port"))
        if "to" not in fields:
            raise reader.fail(node, "'nat' has no 'to' (the host the traffic is translated to)")
        port = None
        if "port" in fields:
            port = reader.integer(fields["port"][1], "the NAT port")
            if not 1 <= port <= 65535:
                raise reader.fail(fields["port"][1], f"NAT port {port} is out of range (1-65535)")
        return Nat(reader.text(fields["to"][1], "the NAT target"), port, reader.where(fields["to"][1]))
    return Nat(reader.text(node, "the NAT target"), None, reader.where(node))
